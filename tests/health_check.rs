//! `rtce2ee-whisper --health-check` against a running relay, a closed port, a
//! listener that answers wrongly and one that never answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `--health-check` in `dir` with exactly `env` (nothing inherited).
fn health_check(dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = server_command();
    cmd.arg("--health-check")
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run --health-check")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A port nothing listens on: bound once, then released.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn exits_0_against_a_running_relay() {
    let server = Server::start(&[]);
    let port = server.port.to_string();
    let dir = temp_dir("hc-ok");
    for host in ["127.0.0.1", "0.0.0.0"] {
        let out = health_check(&dir, &[("HOST", host), ("PORT", &port)]);
        assert_eq!(out.status.code(), Some(0), "HOST={host}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_the_port_from_dotenv_like_the_server() {
    let server = Server::start(&[]);
    let dir = temp_dir("hc-dotenv");
    std::fs::write(
        dir.join(".env"),
        format!("HOST=127.0.0.1\nPORT={}\n", server.port),
    )
    .unwrap();
    let out = health_check(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exits_1_against_a_closed_port_with_one_line() {
    let dir = temp_dir("hc-closed");
    let port = closed_port().to_string();
    let out = health_check(&dir, &[("HOST", "127.0.0.1"), ("PORT", &port)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("health check failed") && err.contains(&port),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exits_1_without_a_fixed_port_or_with_bad_configuration() {
    let dir = temp_dir("hc-config");
    let out = health_check(&dir, &[("PORT", "0")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("PORT=0"), "{}", stderr(&out));
    let out = health_check(&dir, &[("PORT", "eighty")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("PORT"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-connection listener that answers the first request with `answer`
/// (or never answers when it is `None`, holding the connection open).
fn fake_listener(answer: Option<&'static str>) -> (u16, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        match answer {
            Some(a) => s.write_all(a.as_bytes()).unwrap(),
            // Keep the connection open until the client gives up.
            None => while s.read(&mut byte).unwrap_or(0) == 1 {},
        }
        String::from_utf8_lossy(&head).to_string()
    });
    (port, handle)
}

#[test]
fn exits_1_when_the_relay_is_shutting_down() {
    let body = r#"{"status":"shutting_down","stats":{}}"#;
    let answer: &'static str = Box::leak(
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (port, handle) = fake_listener(Some(answer));
    let dir = temp_dir("hc-503");
    let out = health_check(&dir, &[("HOST", "127.0.0.1"), ("PORT", &port.to_string())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
    let request = handle.join().unwrap();
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gives_up_on_a_silent_listener_within_the_timeout() {
    let (port, handle) = fake_listener(None);
    let dir = temp_dir("hc-silent");
    let started = Instant::now();
    let out = health_check(&dir, &[("HOST", "127.0.0.1"), ("PORT", &port.to_string())]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    // 3 s budget; generous headroom for a slow emulated run.
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    handle.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
