//! The HTTP side of the listener: request heads, routing, the health and
//! metrics bodies, and JSON error responses.
//!
//! Only what the relay serves is implemented: one request per connection,
//! answered with `Connection: close`, except `/ws`, which becomes a WebSocket.

use std::fmt::Write;

use crate::clock;

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A parsed request head. Header names are kept as sent; lookups ignore case.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
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
    Health {
        head: bool,
    },
    Metrics {
        head: bool,
    },
    WebSocket,
    /// `/app` and everything under it: the hub's page (`page.rs`).
    Page,
    NotFound,
    /// A known path with a method it does not take; the value is `Allow`.
    MethodNotAllowed(&'static str),
}

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

/// The numbers `/health` and `/metrics` report.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub shutting_down: bool,
    pub uptime_seconds: u64,
    pub active_connections: u32,
    pub active_rooms: usize,
    pub total_users: u32,
    /// Open connections by dialect (`/metrics` only: `/health` keeps its shape).
    pub connections_v2: u32,
    pub connections_legacy: u32,
    pub max_connections: u32,
    pub max_rooms: u32,
    pub queued_bytes: usize,
    /// Bytes of the shared budget for reading large frames in use.
    pub read_buffer_bytes: usize,
    pub blocked_ips: usize,
    pub strikes_total: u64,
    pub ip_blocks_total: u64,
    /// Resident memory now, and the README's worst-case bound at this configuration.
    pub rss_bytes: u64,
    pub memory_bound_bytes: u64,
    pub stats: crate::relay::Stats,
    /// The HTTP phase (`/metrics` only).
    pub http: HttpPhase,
}

/// The HTTP phase's table and what ended connections in it early.
#[derive(Debug, Clone, Default)]
pub struct HttpPhase {
    /// Connections whose request head is being read now.
    pub pending: u32,
    /// Refused on accept: their IP's share of the table was used (429).
    pub refused_per_ip: u64,
    /// Evicted from a full table (408).
    pub evicted: u64,
    /// Heads arriving below the minimum rate (408).
    pub too_slow: u64,
    /// Heads not complete within `HANDSHAKE_TIMEOUT_SECS` (408).
    pub timed_out: u64,
}

/// The `/health` JSON body.
pub fn health_body(s: &Snapshot) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(if s.shutting_down {
        "{\"status\":\"shutting_down\",\"timestamp\":\""
    } else {
        "{\"status\":\"healthy\",\"timestamp\":\""
    });
    clock::write_rfc3339(&mut out, clock::unix_millis(), false);
    let st = &s.stats;
    let _ = write!(
        out,
        "\",\"stats\":{{\"uptime_seconds\":{},\"active_connections\":{},\"active_rooms\":{},\"total_users\":{},\
\"max_connections\":{},\"max_rooms\":{},\"connections_total\":{},\"messages_relayed\":{},\"reactions_relayed\":{},\
\"deliveries\":{},\"queued_bytes\":{},\"rate_limited\":{},\"protocol_errors\":{},\"oversize_messages\":{},\
\"flood_closes\":{},\"slow_consumer_closes\":{},\"heartbeat_timeouts\":{},\"strikes\":{},\"ip_blocks\":{},\
\"blocked_ips\":{},\"rejected_connections\":{},\"read_buffer_bytes\":{},\"rss_bytes\":{},\"memory_bound_bytes\":{}}}}}",
        s.uptime_seconds,
        s.active_connections,
        s.active_rooms,
        s.total_users,
        s.max_connections,
        s.max_rooms,
        st.connections_total,
        st.messages_relayed,
        st.reactions_relayed,
        st.deliveries,
        s.queued_bytes,
        st.rate_limited,
        st.protocol_errors,
        st.oversize_messages,
        st.flood_closes,
        st.slow_consumer_closes,
        st.heartbeat_timeouts,
        s.strikes_total,
        s.ip_blocks_total,
        s.blocked_ips,
        st.rejected_ip_blocked
            + st.rejected_too_many_connections
            + st.rejected_server_full
            + st.rejected_origin,
        s.read_buffer_bytes,
        s.rss_bytes,
        s.memory_bound_bytes,
    );
    out
}

/// The `/metrics` body in Prometheus text format 0.0.4.
pub fn metrics_body(s: &Snapshot) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP whisper_{name} {help}\n# TYPE whisper_{name} {kind}\nwhisper_{name} {value}\n"
        );
    };
    let st = &s.stats;
    metric(
        "up",
        "gauge",
        "1 while serving, 0 while shutting down.",
        u64::from(!s.shutting_down),
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since start.",
        s.uptime_seconds,
    );
    metric(
        "connections_active",
        "gauge",
        "Open WebSocket connections.",
        s.active_connections.into(),
    );
    metric(
        "rooms_active",
        "gauge",
        "Rooms with at least one member.",
        s.active_rooms as u64,
    );
    metric(
        "users_in_rooms",
        "gauge",
        "Connections that are in a room.",
        s.total_users.into(),
    );
    metric(
        "connections_max",
        "gauge",
        "MAX_CONNECTIONS.",
        s.max_connections.into(),
    );
    metric(
        "queued_bytes",
        "gauge",
        "Outbound bytes waiting for slow sockets.",
        s.queued_bytes as u64,
    );
    metric(
        "read_buffer_bytes",
        "gauge",
        "Bytes of the shared budget for reading large frames in use.",
        s.read_buffer_bytes as u64,
    );
    metric(
        "blocked_ips",
        "gauge",
        "Client IPs blocked right now.",
        s.blocked_ips as u64,
    );
    metric(
        "connections_total",
        "counter",
        "WebSocket connections accepted.",
        st.connections_total,
    );
    metric(
        "messages_relayed_total",
        "counter",
        "Chat messages relayed to a room.",
        st.messages_relayed,
    );
    metric(
        "reactions_relayed_total",
        "counter",
        "Reactions relayed to a room.",
        st.reactions_relayed,
    );
    metric(
        "deliveries_total",
        "counter",
        "Room frames written to members.",
        st.deliveries,
    );
    metric(
        "rate_limited_total",
        "counter",
        "Frames answered with RATE_LIMITED.",
        st.rate_limited,
    );
    metric(
        "protocol_errors_total",
        "counter",
        "Frames answered with an error code.",
        st.protocol_errors,
    );
    metric(
        "oversize_messages_total",
        "counter",
        "Connections closed for an oversize message.",
        st.oversize_messages,
    );
    metric(
        "flood_closes_total",
        "counter",
        "Connections closed for exceeding the frame limit.",
        st.flood_closes,
    );
    metric(
        "slow_consumer_closes_total",
        "counter",
        "Connections closed with 1013 as slow consumers.",
        st.slow_consumer_closes,
    );
    metric(
        "heartbeat_timeouts_total",
        "counter",
        "Connections dropped for silence.",
        st.heartbeat_timeouts,
    );
    metric(
        "strikes_total",
        "counter",
        "Abuse strikes counted against client IPs.",
        s.strikes_total,
    );
    metric(
        "ip_blocks_total",
        "counter",
        "Client IPs blocked.",
        s.ip_blocks_total,
    );
    let _ = write!(
        out,
        "# HELP whisper_rejected_connections_total WebSocket upgrades refused, by reason.\n\
# TYPE whisper_rejected_connections_total counter\n\
whisper_rejected_connections_total{{reason=\"ip_blocked\"}} {}\n\
whisper_rejected_connections_total{{reason=\"too_many_connections\"}} {}\n\
whisper_rejected_connections_total{{reason=\"server_full\"}} {}\n\
whisper_rejected_connections_total{{reason=\"origin_not_allowed\"}} {}\n",
        st.rejected_ip_blocked,
        st.rejected_too_many_connections,
        st.rejected_server_full,
        st.rejected_origin
    );
    let h = &s.http;
    let _ = write!(
        out,
        "# HELP whisper_http_pending Connections whose request head is being read.\n\
# TYPE whisper_http_pending gauge\n\
whisper_http_pending {}\n\
# HELP whisper_http_ended_total Connections ended in their HTTP phase, by reason.\n\
# TYPE whisper_http_ended_total counter\n\
whisper_http_ended_total{{reason=\"ip_share\"}} {}\n\
whisper_http_ended_total{{reason=\"evicted\"}} {}\n\
whisper_http_ended_total{{reason=\"too_slow\"}} {}\n\
whisper_http_ended_total{{reason=\"timeout\"}} {}\n",
        h.pending, h.refused_per_ip, h.evicted, h.too_slow, h.timed_out
    );
    let _ = write!(
        out,
        "# HELP whisper_connections Open WebSocket connections by dialect.\n\
# TYPE whisper_connections gauge\n\
whisper_connections{{dialect=\"v2\"}} {}\n\
whisper_connections{{dialect=\"legacy\"}} {}\n",
        s.connections_v2, s.connections_legacy
    );
    out
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
    fn health_is_json_with_required_keys() {
        let body = health_body(&Snapshot::default());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "healthy");
        for key in [
            "uptime_seconds",
            "active_connections",
            "active_rooms",
            "total_users",
            "rss_bytes",
            "memory_bound_bytes",
        ] {
            assert!(v["stats"][key].is_u64(), "{key}");
        }
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
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
