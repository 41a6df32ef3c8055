//! Contract section 1: the HTTP surface and admission.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn health_get_and_head() {
    let srv = Server::start(&[]);
    for path in ["/", "/health"] {
        let r = http(srv.port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let v = r.json();
        assert_eq!(v["status"], "healthy");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z'));
        for key in [
            "uptime_seconds",
            "active_connections",
            "active_rooms",
            "total_users",
        ] {
            assert!(v["stats"][key].is_u64(), "{key}");
        }
        for key in ["messages_relayed", "rate_limited", "strikes", "blocked_ips"] {
            assert!(v["stats"][key].is_u64(), "{key}");
        }
        let h = http(
            srv.port,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        assert_eq!(h.status, 200);
        assert_eq!(
            h.header("content-type").as_deref(),
            Some("application/json")
        );
        assert!(
            h.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap()
                > 0
        );
        assert_eq!(h.body, "");
    }
}

#[test]
fn metrics_are_prometheus_text() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    a.join("r", "a", "A");
    a.message("QUJD");
    a.recv_type("message");
    let r = http(srv.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        r.body
            .contains("# TYPE whisper_connections_active gauge\nwhisper_connections_active 1\n")
    );
    assert!(r.body.contains("whisper_messages_relayed_total 1\n"));
    // Every sample line is `name{labels} value`.
    for line in r.body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("whisper_"), "{line}");
        value.parse::<f64>().unwrap();
    }
}

#[test]
fn error_statuses_have_json_bodies() {
    let srv = Server::start(&[]);
    let r = http(srv.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.json()["type"], "error");
    assert!(r.json()["code"].is_string() && r.json()["message"].is_string());

    let r = http(
        srv.port,
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    assert_eq!(r.json()["type"], "error");

    let r = http(srv.port, "DELETE /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));

    let r = http(srv.port, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 426);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );

    let r = http(srv.port, "this is not http\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
}

#[test]
fn oversized_request_head_gets_431() {
    let srv = Server::start(&[]);
    let mut req = String::from("GET /health HTTP/1.1\r\n");
    while req.len() < 9000 {
        req.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    req.push_str("\r\n");
    let r = http(srv.port, &req);
    assert_eq!(r.status, 431);
    // A head just under the limit is fine.
    let mut req = String::from("GET /health HTTP/1.1\r\n");
    while req.len() < 8000 {
        req.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    req.push_str("\r\n");
    assert_eq!(http(srv.port, &req).status, 200);
    // Under 8 KiB but more than 128 header lines: 431 too.
    let mut req = String::from("GET /health HTTP/1.1\r\n");
    for i in 0..129 {
        req.push_str(&format!("X-{i}: a\r\n"));
    }
    req.push_str("\r\n");
    assert!(req.len() < 8192);
    let r = http(srv.port, &req);
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["code"], "HEADERS_TOO_LARGE");
}

#[test]
fn incomplete_request_head_times_out_with_408() {
    let srv = Server::start(&[("HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let elapsed = start.elapsed();
    assert_eq!(parse_response(&buf).status, 408);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    // A silent connection is closed too, within the deadline.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(parse_response(&buf).status, 408);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
}

#[test]
fn websocket_upgrade_answers_101_with_accept_key() {
    let srv = Server::start(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request(&[]).as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let r = parse_response(&buf[..n]);
    assert_eq!(r.status, 101);
    // RFC 6455's sample key and answer.
    assert_eq!(
        r.header("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
}

#[test]
fn per_ip_connection_limit() {
    let srv = Server::start(&[("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "2")]);
    let _a = srv.connect();
    let b = srv.connect();
    let r = Client::try_connect(srv.port, &[])
        .err()
        .expect("third connection refused");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "TOO_MANY_CONNECTIONS");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    drop(b);
    assert!(eventually(Duration::from_secs(5), || Client::try_connect(
        srv.port,
        &[]
    )
    .is_ok()));
}

#[test]
fn server_full() {
    let srv = Server::start(&[("MAX_CONNECTIONS", "2")]);
    let _a = srv.connect();
    let _b = srv.connect();
    let r = Client::try_connect(srv.port, &[]).err().expect("refused");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "SERVER_FULL");
    assert!(r.header("retry-after").is_some());
    // Health still answers while full.
    assert_eq!(srv.health()["stats"]["active_connections"], 2);
}

#[test]
fn allowed_origins() {
    let srv = Server::start(&[("ALLOWED_ORIGINS", "https://chat.example,http://pi.lan:8080")]);
    let r = Client::try_connect(srv.port, &[("Origin", "https://evil.example")])
        .err()
        .expect("refused");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "ORIGIN_NOT_ALLOWED");
    let r = Client::try_connect(srv.port, &[])
        .err()
        .expect("no origin refused");
    assert_eq!(r.status, 403);
    // A second Origin header is checked too (found by a black-box probe).
    let r = Client::try_connect(
        srv.port,
        &[
            ("Origin", "http://pi.lan:8080"),
            ("Origin", "https://evil.example"),
        ],
    )
    .err()
    .expect("two origins, one not allowed");
    assert_eq!(r.status, 403);
    let mut ok = Client::connect(srv.port, &[("Origin", "http://pi.lan:8080")]);
    ok.send(json!({"type":"ping"}));
    assert_eq!(ok.recv()["type"], "pong");
    // Without ALLOWED_ORIGINS any origin is accepted.
    let open = Server::start(&[]);
    Client::connect(open.port, &[("Origin", "https://anything.example")]);
}

#[test]
fn trusted_proxy_forwarded_for_is_the_client_ip() {
    let srv = Server::start(&[
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "1"),
    ]);
    let _a = Client::connect(srv.port, &[("X-Forwarded-For", "203.0.113.9, 10.0.0.1")]);
    // Another client behind the same proxy is another IP.
    let _b = Client::connect(srv.port, &[("X-Forwarded-For", "10.0.0.2")]);
    let r = Client::try_connect(srv.port, &[("X-Forwarded-For", "10.0.0.2")])
        .err()
        .expect("refused");
    assert_eq!(r.json()["code"], "TOO_MANY_CONNECTIONS");

    // An untrusted peer's X-Forwarded-For is ignored.
    let plain = Server::start(&[("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "1")]);
    let _c = Client::connect(plain.port, &[("X-Forwarded-For", "10.0.0.3")]);
    let r = Client::try_connect(plain.port, &[("X-Forwarded-For", "10.0.0.4")])
        .err()
        .expect("refused");
    assert_eq!(r.json()["code"], "TOO_MANY_CONNECTIONS");
}

#[test]
fn bad_websocket_version_or_key() {
    let srv = Server::start(&[]);
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let r = http(srv.port, req);
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version").as_deref(), Some("13"));
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http(srv.port, req).status, 400);
}

#[test]
fn refused_request_with_a_body_still_gets_its_answer() {
    let srv = Server::start(&[]);
    let body = "x".repeat(20_000);
    let req = format!(
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..5 {
        let r = http(srv.port, &req);
        assert_eq!(r.status, 405);
        assert_eq!(r.json()["type"], "error");
    }
}

#[test]
fn head_requests_never_get_a_body() {
    let srv = Server::start(&[]);
    for path in ["/nope", "/ws", "/metrics", "/health"] {
        let r = http(
            srv.port,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        assert!(r.status >= 200, "{path}");
        assert_eq!(r.body, "", "{path}");
        assert!(r.header("content-length").is_some(), "{path}");
    }
    assert_eq!(http(srv.port, "HEAD /nope HTTP/1.1\r\n\r\n").status, 404);
    // HEAD /ws is answered like GET /ws without an upgrade, even with the
    // upgrade headers; error answers to HEAD have no body either.
    let r = http(srv.port, &upgrade_request(&[]).replacen("GET", "HEAD", 1));
    assert_eq!((r.status, r.body.as_str()), (426, ""));
    let r = http(srv.port, "HEAD /health HTTP/1.1\r\nBad\r\n\r\n");
    assert_eq!((r.status, r.body.as_str()), (400, ""));
    let big = format!("HEAD /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let r = http(srv.port, &big);
    assert_eq!((r.status, r.body.as_str()), (431, ""));
}

#[test]
fn bare_line_feeds_absolute_form_and_metrics_type() {
    let srv = Server::start(&[]);
    let r = http(srv.port, "GET /health HTTP/1.1\nHost: x\n\n");
    assert_eq!(
        r.status, 200,
        "answered at once, not after the slow-head timer"
    );
    let r = http(
        srv.port,
        "GET http://hub.lan/health HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("healthy"))
    );
    let r = http(srv.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4")
    );
}
