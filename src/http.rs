//! The HTTP side of the listener: request heads, routing, and responses
//! (JSON error responses among them).
//!
//! Only what the relay serves is implemented: one request per connection,
//! answered with `Connection: close`, except `/ws`, which becomes a WebSocket.

use std::fmt::Write;

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A parsed request head. Header names are kept as sent; lookups ignore case.
#[derive(Debug)]
pub struct Request {
    /// The method, upper case (`GET`, `HEAD`, ...).
    pub method: String,
    /// The path, without query or fragment (the absolute form is reduced to it).
    pub path: String,
    /// The minor HTTP version: 0 or 1.
    pub version_minor: u8,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Where the head ends (the index just past the blank line), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    // A blank line ends the head; like httparse, accept bare LF line ends.
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

/// Most header lines a head may have (hyper's default is 100; browsers send
/// about 20). More is answered like an oversized head (431).
pub const MAX_HEADERS: usize = 128;

/// Why a complete head was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not a well-formed HTTP/1.0 or 1.1 request head.
    Malformed,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
}

/// Parses a complete request head (up to and including its blank line) with
/// `httparse`, the parser hyper uses, into slots on the stack (4 KiB). On top
/// of HTTP's grammar the relay requires an upper-case method, an origin-form
/// target (`/...`) and UTF-8 header values.
pub fn parse_head(head: &[u8]) -> Result<Request, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        _ => return Err(HeadError::Malformed),
    }
    let bad = HeadError::Malformed;
    let (Some(method), Some(target), Some(version_minor)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad);
    }
    // The absolute form (`GET http://hub/health HTTP/1.1`), which HTTP/1.1
    // servers must accept, names the same path.
    let target = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => target,
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(bad);
    }
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?;
        headers.push((h.name.to_string(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        version_minor,
        headers,
    })
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/health` (and a plain `/`): the status JSON.
    Health {
        /// A HEAD request: the headers without the body.
        head: bool,
    },
    /// `/metrics`: Prometheus text.
    Metrics {
        /// A HEAD request: the headers without the body.
        head: bool,
    },
    /// `/ws`: a WebSocket upgrade.
    WebSocket,
    /// `/app` and everything under it: the relay's page (`page.rs`).
    Page,
    /// No such path.
    NotFound,
    /// A known path with a method it does not take; the value is `Allow`.
    MethodNotAllowed(&'static str),
}

/// What a request for `path` with `method` asks for.
pub fn route(method: &str, path: &str) -> Route {
    match path {
        "/" | "/health" => match method {
            "GET" => Route::Health { head: false },
            "HEAD" => Route::Health { head: true },
            _ => Route::MethodNotAllowed("GET, HEAD"),
        },
        "/metrics" => match method {
            "GET" => Route::Metrics { head: false },
            "HEAD" => Route::Metrics { head: true },
            _ => Route::MethodNotAllowed("GET, HEAD"),
        },
        // HEAD gets what a GET without an upgrade gets (426), without a body.
        "/ws" => match method {
            "GET" | "HEAD" => Route::WebSocket,
            _ => Route::MethodNotAllowed("GET, HEAD"),
        },
        p if p == "/app" || p.starts_with("/app/") => Route::Page,
        _ => Route::NotFound,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete response with `Content-Length` and `Connection: close`.
/// `extra` holds additional header lines, each ending in `\r\n`.
pub fn response(
    status: u16,
    content_type: &str,
    extra: &str,
    body: &str,
    head_only: bool,
) -> Vec<u8> {
    let mut out = String::with_capacity(160 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra}\r\n",
        reason(status),
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

/// An error response with the contract's JSON body.
pub fn error_response(status: u16, code: &str, message: &str, extra: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + message.len());
    crate::protocol::write_error_json(&mut body, code, message);
    let body = String::from_utf8(body).expect("JSON is UTF-8");
    response(status, "application/json", extra, &body, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_websocket_request() {
        let raw = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n";
        let end = head_end(raw).unwrap();
        assert_eq!(end, raw.len());
        let req = parse_head(&raw[..end]).unwrap();
        assert_eq!(req.version_minor, 1);
        assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/ws"));
        assert!(req.header_has_token("connection", "upgrade"));
        assert!(req.header_has_token("UPGRADE", "websocket"));
        assert_eq!(req.headers("x-forwarded-for").count(), 2);
        assert_eq!(req.header("host"), Some("a"));
    }

    #[test]
    fn bare_line_feeds_and_the_absolute_form() {
        // Found by a black-box probe: a head with bare LF line ends waited
        // for a CRLF blank line that never came (408 instead of an answer).
        let raw = b"GET http://hub.lan:8080/health?x HTTP/1.1\nHost: x\n\nrest";
        let end = head_end(raw).unwrap();
        assert_eq!(&raw[end..], b"rest");
        let req = parse_head(&raw[..end]).unwrap();
        assert_eq!(req.path, "/health");
        assert_eq!(req.header("host"), Some("x"));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\n"), Some(23));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(
            parse_head(b"GET http://x HTTP/1.1\r\n\r\n").unwrap().path,
            "/"
        );
    }

    #[test]
    fn rejects_malformed_heads() {
        for raw in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET nothing HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
            b"GET / HTTP/1.1\r\nA B: c\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\nextra",
        ] {
            assert_eq!(
                parse_head(raw).err(),
                Some(HeadError::Malformed),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn header_count_limit_and_http_1_0() {
        let head = |n: usize| {
            let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            raw
        };
        let last = format!("x-{}", MAX_HEADERS - 1);
        assert_eq!(
            parse_head(&head(MAX_HEADERS))
                .unwrap()
                .headers(&last)
                .count(),
            1
        );
        assert_eq!(
            parse_head(&head(MAX_HEADERS + 1)).err(),
            Some(HeadError::TooManyHeaders)
        );
        let ok = b"HEAD /health?x HTTP/1.0\r\nHost: a\r\n\r\n";
        let req = parse_head(ok).unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("HEAD", "/health")
        );
        assert_eq!(req.version_minor, 0);
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/"), Route::Health { head: false });
        assert_eq!(route("HEAD", "/health"), Route::Health { head: true });
        assert_eq!(
            route("POST", "/health"),
            Route::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(route("GET", "/metrics"), Route::Metrics { head: false });
        assert_eq!(route("GET", "/ws"), Route::WebSocket);
        assert_eq!(route("PUT", "/ws"), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route("HEAD", "/ws"), Route::WebSocket);
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert_eq!(route("GET", "/app"), Route::Page);
        assert_eq!(route("POST", "/app/x"), Route::Page);
        assert_eq!(route("GET", "/apple"), Route::NotFound);
    }

    #[test]
    fn error_response_shape() {
        let r = String::from_utf8(error_response(404, "NOT_FOUND", "no such path", "")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.contains("Content-Type: application/json\r\n"));
        assert!(r.ends_with(r#"{"type":"error","code":"NOT_FOUND","message":"no such path"}"#));
    }

    #[test]
    fn head_parser_survives_random_input() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let alphabet = b"GET /ws HTTP/1.1\r\n:aZ \t\xff";
        for _ in 0..20_000 {
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = head_end(&bytes);
            let _ = parse_head(&bytes);
            x = x.wrapping_add(1);
        }
    }
}
