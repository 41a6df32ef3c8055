//! Contract section 6: the hub's page under `/app/`, over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// A response with its body as bytes (gzip bodies are not text).
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn get(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: hub.lan\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Raw {
        status,
        head,
        body: buf[end..].to_vec(),
    }
}

const ASSETS: [(&str, &str); 7] = [
    ("/app/", "text/html"),
    ("/app/app.js", "text/javascript"),
    ("/app/app.css", "text/css"),
    ("/app/icon.svg", "image/svg+xml"),
    ("/app/kdf-worker.js", "text/javascript"),
    ("/app/status", "text/html"),
    ("/app/status.js", "text/javascript"),
];

#[test]
fn app_redirects_to_app_slash() {
    let srv = Server::start(&[]);
    for method in ["GET", "HEAD"] {
        let r = get(srv.port, method, "/app", &[]);
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location").as_deref(), Some("/app/"));
        assert!(r.body.is_empty());
    }
    // `/` and `/health` stay the health endpoint.
    assert!(
        get(srv.port, "GET", "/", &[])
            .head
            .contains("application/json")
    );
}

#[test]
fn assets_identity_and_gzip_agree() {
    let srv = Server::start(&[]);
    for (path, ctype) in ASSETS {
        let plain = get(srv.port, "GET", path, &[]);
        assert_eq!(plain.status, 200, "{path}");
        assert!(plain.header("content-type").unwrap().starts_with(ctype));
        assert_eq!(plain.header("content-encoding"), None, "{path}");
        assert_eq!(
            plain
                .header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap(),
            plain.body.len()
        );
        let gz = get(
            srv.port,
            "GET",
            path,
            &[("Accept-Encoding", "gzip, deflate, br")],
        );
        assert_eq!(gz.status, 200);
        assert_eq!(gz.header("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(gz.header("vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(&gz.body[..2], &[0x1f, 0x8b], "{path}");
        assert!(gz.body.len() < plain.body.len(), "{path}");
        // The gzip trailer's length field is the identity body's length.
        let n = gz.body.len();
        let isize = u32::from_le_bytes(gz.body[n - 4..].try_into().unwrap());
        assert_eq!(isize as usize, plain.body.len(), "{path}");
        assert_ne!(plain.header("etag"), gz.header("etag"), "{path}");
        let refused = get(srv.port, "GET", path, &[("Accept-Encoding", "gzip;q=0")]);
        assert_eq!(refused.header("content-encoding"), None);
    }
}

#[test]
fn etag_revalidation_gives_304() {
    let srv = Server::start(&[]);
    let first = get(
        srv.port,
        "GET",
        "/app/app.js",
        &[("Accept-Encoding", "gzip")],
    );
    let tag = first.header("etag").unwrap();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    assert_eq!(first.header("cache-control").as_deref(), Some("no-cache"));
    for inm in [tag.clone(), format!("W/{tag}"), format!("\"other\", {tag}")] {
        let again = get(
            srv.port,
            "GET",
            "/app/app.js",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &inm)],
        );
        assert_eq!(again.status, 304, "{inm}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(tag.clone()));
    }
    let stale = get(
        srv.port,
        "GET",
        "/app/app.js",
        &[("If-None-Match", "\"0000000000000000\"")],
    );
    assert_eq!(stale.status, 200);
    assert!(!stale.body.is_empty());
    // The gzip copy's tag does not validate the plain copy (found by a
    // black-box probe): a cache holding one must not be told it has the other.
    let plain = get(srv.port, "GET", "/app/app.js", &[("If-None-Match", &tag)]);
    assert_eq!(plain.status, 200);
    assert!(!plain.body.is_empty());
}

#[test]
fn security_headers_on_every_page_response() {
    let srv = Server::start(&[]);
    for (path, _) in ASSETS {
        let r = get(srv.port, "GET", path, &[]);
        let csp = r.header("content-security-policy").unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
    }
    let html = String::from_utf8(get(srv.port, "GET", "/app/", &[]).body).unwrap();
    assert!(html.contains("<script type=\"module\" src=\"app.js\"></script>"));
    assert!(!html.contains("<script>") && !html.contains(" style="));
}

#[test]
fn head_gets_the_headers_of_get_and_no_body() {
    let srv = Server::start(&[]);
    for enc in ["identity", "gzip"] {
        let g = get(srv.port, "GET", "/app/", &[("Accept-Encoding", enc)]);
        let h = get(srv.port, "HEAD", "/app/", &[("Accept-Encoding", enc)]);
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        for name in ["content-length", "content-type", "etag", "content-encoding"] {
            assert_eq!(h.header(name), g.header(name), "{enc} {name}");
        }
    }
}

#[test]
fn unknown_paths_and_methods_under_app() {
    let srv = Server::start(&[]);
    for path in [
        "/app/nope.js",
        "/app/../health",
        "/app/app.js/",
        "/app/index.html",
    ] {
        let r = get(srv.port, "GET", path, &[]);
        assert_eq!(r.status, 404, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], "NOT_FOUND");
    }
    assert_eq!(get(srv.port, "GET", "/apps", &[]).status, 404);
    let r = get(srv.port, "POST", "/app/", &[("Content-Length", "0")]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
}

#[test]
fn hub_json_gives_addresses_only_to_local_clients() {
    let srv = Server::start(&[
        ("HOST", "127.0.0.1"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("RATE_LIMIT_MAX_MESSAGE_SIZE", "4096"),
    ]);
    let local = get(srv.port, "GET", "/app/hub.json", &[]);
    assert_eq!(local.status, 200);
    assert_eq!(local.header("cache-control").as_deref(), Some("no-store"));
    let v: serde_json::Value = serde_json::from_slice(&local.body).unwrap();
    assert_eq!(v["max_message_bytes"], 4096);
    assert!(v["addresses"].is_array());
    if let Some(name) = v["hostname"].as_str() {
        assert!(name.ends_with(".local"), "{name}");
    }
    // Behind a trusted proxy the client is the forwarded address: not local.
    let proxied = get(
        srv.port,
        "GET",
        "/app/hub.json",
        &[("X-Forwarded-For", "192.168.1.50")],
    );
    let v: serde_json::Value = serde_json::from_slice(&proxied.body).unwrap();
    assert_eq!(v["addresses"].as_array().unwrap().len(), 0);
    assert!(v["hostname"].is_null());
}

#[test]
fn health_reports_memory_against_the_bound() {
    let srv = Server::start(&[]);
    let v = srv.health();
    let rss = v["stats"]["rss_bytes"].as_u64().unwrap();
    let bound = v["stats"]["memory_bound_bytes"].as_u64().unwrap();
    assert!(rss > 0 && rss < bound, "{rss} {bound}");
    // The README: about 42 MiB at the defaults.
    assert!((41 << 20..43 << 20).contains(&bound), "{bound}");
}
