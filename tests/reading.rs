//! Memory for reading client frames: large messages give their buffers back,
//! and frames being read that need more than a read chunk share one bounded
//! budget (README, "Memory").

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A `ping` text frame of exactly `len` payload bytes, masked with a zero
/// key (so the payload is sent as it is).
fn ping_frame(len: usize) -> Vec<u8> {
    let shell = r#"{"type":"ping","p":""}"#.len();
    let payload = format!(r#"{{"type":"ping","p":"{}"}}"#, "x".repeat(len - shell));
    let mut out = vec![0x81];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload.as_bytes());
    out
}

/// An upgraded raw socket.
fn raw_ws(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(upgrade_request(&[]).as_bytes()).unwrap();
    assert_eq!(parse_response(&read_head(&mut s)).status, 101);
    s
}

/// Whether a `pong` text frame arrives on `s` within `limit`.
fn pong_within(s: &mut TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"pong") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

fn rss_kib(srv: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn large_messages_give_their_read_buffers_back() {
    let srv = Server::start(&[
        ("MAX_CONNECTIONS", "1000"),
        ("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "1000"),
    ]);
    let n = 400;
    let mut clients: Vec<_> = (0..n).map(|_| srv.connect()).collect();
    // Warm up: one large message through the path, so allocator growth that
    // any first use costs is not counted.
    clients[0].send_text(&format!(
        r#"{{"type":"ping","p":"{}"}}"#,
        "x".repeat(10_000)
    ));
    assert_eq!(clients[0].recv()["type"], "pong");
    let before = rss_kib(&srv);
    for c in &mut clients {
        c.send_text(&format!(
            r#"{{"type":"ping","p":"{}"}}"#,
            "x".repeat(10_000)
        ));
        assert_eq!(c.recv()["type"], "pong");
    }
    let grown = rss_kib(&srv).saturating_sub(before);
    // Kept buffers would be n × 10 KB = 4,000 KiB.
    assert!(
        grown < 1_500,
        "RSS grew by {grown} KiB after {n} large messages"
    );
    assert_eq!(srv.health()["stats"]["read_buffer_bytes"], 0);
}

#[test]
fn half_sent_large_frames_share_one_bounded_budget() {
    // Budget: 4 messages of the largest size (2,400,000 bytes > 2 MiB).
    let max = 600_000;
    let srv = Server::start(&[
        ("RATE_LIMIT_MAX_MESSAGE_SIZE", "600000"),
        ("HEARTBEAT_INTERVAL_SECS", "60"),
    ]);
    let frame = ping_frame(max);
    let mut holders: Vec<TcpStream> = (0..4).map(|_| raw_ws(srv.port)).collect();
    for h in &mut holders {
        h.write_all(&frame[..1000]).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || srv.health()["stats"]
        ["read_buffer_bytes"]
        == json!(4 * max)));
    // A fifth large message waits for a share; small frames do not.
    let mut waiting = raw_ws(srv.port);
    let writer = {
        let mut w = waiting.try_clone().unwrap();
        let frame = frame.clone();
        std::thread::spawn(move || w.write_all(&frame).unwrap())
    };
    let mut small = srv.connect();
    small.send(json!({"type":"ping"}));
    assert_eq!(small.recv()["type"], "pong");
    assert!(!pong_within(&mut waiting, Duration::from_millis(800)));
    // One holder completes its message: its share goes to the waiter.
    holders[0].write_all(&frame[1000..]).unwrap();
    assert!(pong_within(&mut holders[0], Duration::from_secs(5)));
    assert!(pong_within(&mut waiting, Duration::from_secs(5)));
    writer.join().unwrap();
    assert!(eventually(Duration::from_secs(5), || srv.health()["stats"]
        ["read_buffer_bytes"]
        == json!(3 * max)));
    // A holder that goes away gives its share back.
    drop(holders.pop());
    assert!(eventually(Duration::from_secs(5), || srv.health()["stats"]
        ["read_buffer_bytes"]
        == json!(2 * max)));
}
