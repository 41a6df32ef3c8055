//! The hub's own chat page under `/app/`: files built from `web/` (see
//! `web/build.mjs`) embedded in the binary, each with a gzip copy made at
//! build time, served with validators and a strict Content-Security-Policy.
//!
//! Building the relay needs only the committed `web/dist/`, never node.

use std::fmt::Write;
use std::sync::OnceLock;

use crate::http::{self, Request};

/// Scripts, styles, workers and fetches from this origin only (so `ws:` to
/// this host and port, and nothing else); no inline script or style, no
/// plugins, no framing. `data:` images are the favicon badge drawn on a canvas.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers every page response carries, each line ending in CRLF.
const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\n\
X-Frame-Options: DENY\r\n\
Cross-Origin-Resource-Policy: same-origin\r\n\
Permissions-Policy: camera=(), microphone=(), geolocation=()\r\n";

/// One embedded file and its gzip copy.
pub struct Asset {
    /// Its path under `/app/`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The file as built.
    pub raw: &'static [u8],
    /// Its gzip copy, served to clients that accept it.
    pub gz: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $ct:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            raw: include_bytes!(concat!("../web/dist/", $file)),
            gz: include_bytes!(concat!("../web/dist/", $file, ".gz")),
        }
    };
}

/// Every file of the page, embedded from `web/dist/`.
pub static ASSETS: [Asset; 7] = [
    asset!("/app/", "index.html", "text/html; charset=utf-8"),
    asset!("/app/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/app/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/app/icon.svg", "icon.svg", "image/svg+xml"),
    asset!(
        "/app/kdf-worker.js",
        "kdf-worker.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("/app/status", "status.html", "text/html; charset=utf-8"),
    asset!(
        "/app/status.js",
        "status.js",
        "text/javascript; charset=utf-8"
    ),
];

/// The dynamic part of the page: the hub's addresses and limits.
pub const HUB_JSON_PATH: &str = "/app/hub.json";

/// FNV-1a, 64 bits: a validator only needs to change when the bytes do.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Strong validators of each asset: identity, then gzip (two representations,
/// two tags). Computed once, on first use.
fn etags() -> &'static [(String, String)] {
    static TAGS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let h = fnv1a(a.raw);
                (format!("\"{h:016x}\""), format!("\"{h:016x}-gz\""))
            })
            .collect()
    })
}

/// Whether the client accepts gzip: `gzip`/`x-gzip` or `*` with a non-zero
/// quality, an explicit `gzip;q=0` winning over `*`.
pub fn accepts_gzip(req: &Request) -> bool {
    let mut gzip = None;
    let mut star = None;
    for item in req.headers("accept-encoding").flat_map(|v| v.split(',')) {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q > 0.0);
        } else if coding == "*" {
            star = Some(q > 0.0);
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// Whether `If-None-Match` names `tag`, the ETag of the representation
/// about to be sent (weak comparison, as RFC 9110 asks for this header; the
/// gzip and plain copies have tags of their own, so one never validates the
/// other).
fn not_modified(req: &Request, tag: &str) -> bool {
    req.headers("if-none-match")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| {
            let t = t.strip_prefix("W/").unwrap_or(t);
            t == "*" || t == tag
        })
}

fn head(out: &mut String, status: u16, reason: &str) {
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n{SECURITY_HEADERS}");
}

/// The response to a request for `req.path` under `/app`. `local` says the
/// client is on the board itself (see `board::hub_json`).
pub fn respond(req: &Request, cfg: &crate::config::Config, local: bool) -> Vec<u8> {
    if req.path == "/app" {
        let mut out = String::with_capacity(400);
        head(&mut out, 301, "Moved Permanently");
        out.push_str(
            "Location: /app/\r\nContent-Length: 0\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        );
        return method_checked(req, out.into_bytes());
    }
    if req.path == HUB_JSON_PATH {
        let body = crate::board::hub_json(cfg, local);
        let mut out = String::with_capacity(600 + body.len());
        head(&mut out, 200, "OK");
        let _ = write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return method_checked(req, out.into_bytes());
    }
    let Some(i) = ASSETS.iter().position(|a| a.path == req.path) else {
        return http::error_response(404, "NOT_FOUND", "no such path", "");
    };
    let asset = &ASSETS[i];
    let tags = &etags()[i];
    let gzip = accepts_gzip(req);
    let (body, tag) = if gzip {
        (asset.gz, &tags.1)
    } else {
        (asset.raw, &tags.0)
    };
    let mut out = String::with_capacity(700);
    let validators = format!(
        "ETag: {tag}\r\nCache-Control: no-cache\r\nVary: Accept-Encoding\r\nContent-Security-Policy: {CSP}\r\n"
    );
    if not_modified(req, tag) {
        head(&mut out, 304, "Not Modified");
        let _ = write!(out, "{validators}Connection: close\r\n\r\n");
        return method_checked(req, out.into_bytes());
    }
    head(&mut out, 200, "OK");
    let _ = write!(
        out,
        "Content-Type: {}\r\nContent-Length: {}\r\n{}{validators}Connection: close\r\n\r\n",
        asset.content_type,
        body.len(),
        if gzip {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        },
    );
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    method_checked(req, bytes)
}

/// `reply` for GET and HEAD (the caller strips HEAD bodies), 405 otherwise.
fn method_checked(req: &Request, reply: Vec<u8>) -> Vec<u8> {
    match req.method.as_str() {
        "GET" | "HEAD" => reply,
        _ => http::error_response(
            405,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this path",
            "Allow: GET, HEAD\r\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request head from its lines (the blank line ends it).
    fn req(text: &str) -> Request {
        let raw = format!("{}\r\n\r\n", text.trim_end());
        http::parse_head(raw.as_bytes()).unwrap()
    }

    #[test]
    fn gzip_negotiation() {
        let cases = [
            ("", false),
            ("Accept-Encoding: gzip", true),
            ("Accept-Encoding: deflate, gzip;q=0.5", true),
            ("Accept-Encoding: br, GZIP", true),
            ("Accept-Encoding: x-gzip", true),
            ("Accept-Encoding: gzip;q=0", false),
            ("Accept-Encoding: *", true),
            ("Accept-Encoding: *;q=0", false),
            ("Accept-Encoding: gzip;q=0, *", false),
            ("Accept-Encoding: identity", false),
            ("Accept-Encoding: br\r\nAccept-Encoding: gzip", true),
        ];
        for (header, expected) in cases {
            let r = req(&format!("GET /app/ HTTP/1.1\r\n{header}"));
            assert_eq!(accepts_gzip(&r), expected, "{header:?}");
        }
    }

    #[test]
    fn every_asset_is_embedded_with_a_matching_gzip_copy() {
        for a in &ASSETS {
            assert!(!a.raw.is_empty(), "{}", a.path);
            assert_eq!(&a.gz[..3], &[0x1f, 0x8b, 8], "{} gzip magic", a.path);
            let isize = u32::from_le_bytes(a.gz[a.gz.len() - 4..].try_into().unwrap());
            assert_eq!(isize as usize, a.raw.len(), "{} gzip length", a.path);
            assert!(a.gz.len() < a.raw.len(), "{}", a.path);
        }
        let tags = etags();
        for (i, t) in tags.iter().enumerate() {
            assert!(tags[i + 1..].iter().all(|u| u.0 != t.0));
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        let html = std::str::from_utf8(ASSETS[0].raw).unwrap();
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains("style="), "inline style");
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
        for a in &ASSETS {
            let text = String::from_utf8_lossy(a.raw);
            assert!(!text.contains("https://"), "{} names a remote URL", a.path);
        }
    }
}
