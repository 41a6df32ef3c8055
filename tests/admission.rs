//! Admission under bursts and slow requests (issue 7, findings 3 and 4), over
//! real loopback sockets from several source addresses (127.0.0.2 and up):
//! every accepted connection gets an answer (101, or a refusal with
//! `Retry-After`), and connections that trickle their request head cannot keep
//! other clients out.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;

/// Raises this process's open-file limit to its hard limit (the server it
/// spawns inherits it): a storm of 1,000 connections needs more than the
/// usual soft limit of 1,024 on both sides.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

/// A TCP connection to 127.0.0.1:`port` from source address `src`.
/// `nonblocking` returns at once (the connection completes in the background).
fn connect_from(src: Ipv4Addr, port: u16, nonblocking: bool) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let flags = if nonblocking {
        SockFlag::SOCK_NONBLOCK
    } else {
        SockFlag::empty()
    };
    let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    let to = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    match connect(fd.as_raw_fd(), &to) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(TcpStream::from(fd))
}

/// A sample of `/metrics`, e.g. `whisper_http_ended_total{reason="evicted"}`.
fn metric(port: u16, sample: &str) -> u64 {
    let r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics"))
}

fn addr(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + n)
}

/// How one upgrade attempt ended.
enum Outcome {
    Connected(TcpStream),
    /// Refused (status) with a `Retry-After` in seconds.
    RetryAfter(u16, u64),
    /// Anything else: no response, a response without `Retry-After`, a reset.
    Silent(String),
}

/// Reads the answer to an upgrade request already sent on `s`.
fn outcome(mut s: TcpStream) -> Outcome {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = read_head(&mut s);
    let resp = parse_response(&head);
    match resp.status {
        101 => Outcome::Connected(s),
        0 => Outcome::Silent(format!("no response ({} bytes)", head.len())),
        status => {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            match resp.header("retry-after").and_then(|v| v.parse().ok()) {
                Some(secs) => Outcome::RetryAfter(status, secs),
                None => Outcome::Silent(format!("{status} without Retry-After")),
            }
        }
    }
}

/// Figures of one storm.
struct Storm {
    connected_at_once: usize,
    retry_after: usize,
    silent: Vec<String>,
    all_connected_after: Option<Duration>,
    /// Refusals with `429 TOO_MANY_PENDING` (the per-IP share), retries included.
    refused_per_ip: usize,
    /// The connected clients, kept open.
    clients: Vec<TcpStream>,
}

/// `n` clients upgrade at once, client `i` from `src(i)` with `headers(i)`;
/// the refused ones retry after their `Retry-After` until all are connected
/// or `limit` has passed. Connected clients stay connected.
fn storm(
    port: u16,
    n: usize,
    src: impl Fn(usize) -> Ipv4Addr,
    headers: impl Fn(usize) -> Vec<(String, String)>,
    limit: Duration,
) -> Storm {
    let request = |i: usize| {
        let h = headers(i);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        upgrade_request(&h)
    };
    let start = Instant::now();
    // All connect, then all send their request: the relay sees the whole
    // burst in its accept queue at once, as after a restart.
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        socks.push((i, connect_from(src(i), port, false).expect("connect")));
    }
    for (i, s) in socks.iter_mut() {
        // A refused client may already be closed: what it got is read below.
        let _ = s.write_all(request(*i).as_bytes());
    }
    let mut connected = Vec::new();
    let mut waiting = Vec::new(); // (client, retry at)
    let mut silent = Vec::new();
    let mut statuses = Vec::new();
    for (i, s) in socks {
        match outcome(s) {
            Outcome::Connected(s) => connected.push(s),
            Outcome::RetryAfter(status, secs) => {
                statuses.push(status);
                waiting.push((i, Instant::now() + Duration::from_secs(secs)))
            }
            Outcome::Silent(why) => silent.push(format!("client {i}: {why}")),
        }
    }
    let connected_at_once = connected.len();
    let retry_after = waiting.len();
    // Retries honouring Retry-After (a bounded number of rounds).
    let mut rounds = 0;
    while !waiting.is_empty() && start.elapsed() < limit && rounds < 1000 {
        rounds += 1;
        let now = Instant::now();
        let due: Vec<_> = waiting
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(i, _)| *i)
            .collect();
        if due.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        waiting.retain(|(_, at)| *at > now);
        let mut tries = Vec::new();
        for i in due {
            let mut s = connect_from(src(i), port, false).expect("connect");
            let _ = s.write_all(request(i).as_bytes());
            tries.push((i, s));
        }
        for (i, s) in tries {
            match outcome(s) {
                Outcome::Connected(s) => connected.push(s),
                Outcome::RetryAfter(status, secs) => {
                    statuses.push(status);
                    waiting.push((i, Instant::now() + Duration::from_secs(secs)))
                }
                Outcome::Silent(why) => silent.push(format!("client {i} (retry): {why}")),
            }
        }
    }
    let all_connected_after = (connected.len() == n).then(|| start.elapsed());
    eprintln!(
        "storm of {n}: {connected_at_once} connected at once, {retry_after} answered with Retry-After, \
         {} silent drops, all {n} connected after {:?}",
        silent.len(),
        all_connected_after
    );
    Storm {
        connected_at_once,
        retry_after,
        silent,
        all_connected_after,
        clients: connected,
        refused_per_ip: statuses.iter().filter(|&&s| s == 429).count(),
    }
}

fn storm_server(extra: &[(&str, &str)]) -> Server {
    raise_nofile();
    let mut env = vec![
        ("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "2000"),
        ("MAX_CONNECTIONS", "4096"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

fn assert_storm(s: &Storm, n: usize) {
    assert!(
        s.silent.is_empty(),
        "silent drops: {:?}",
        &s.silent[..s.silent.len().min(5)]
    );
    assert_eq!(s.connected_at_once + s.retry_after, n);
    assert_eq!(s.clients.len(), n);
    let after = s
        .all_connected_after
        .expect("every client connected in the end");
    assert!(
        after < Duration::from_secs(10),
        "all connected only after {after:?}"
    );
}

#[test]
fn reconnect_storm_from_one_address_is_answered() {
    let srv = storm_server(&[]);
    let s = storm(
        srv.port,
        1000,
        |_| addr(0),
        |_| vec![],
        Duration::from_secs(20),
    );
    assert_storm(&s, 1000);
    assert_eq!(srv.health()["stats"]["active_connections"], 1000);
}

#[test]
fn reconnect_storm_from_fifty_addresses_is_answered() {
    let srv = storm_server(&[]);
    let s = storm(
        srv.port,
        1000,
        |i| addr((i % 50) as u32),
        |_| vec![],
        Duration::from_secs(20),
    );
    assert_storm(&s, 1000);
}

#[test]
fn reconnect_storm_through_a_trusted_proxy_is_answered() {
    let srv = storm_server(&[("TRUSTED_PROXIES", "127.0.0.2")]);
    let s = storm(
        srv.port,
        1000,
        |_| addr(0),
        |i| {
            vec![(
                "X-Forwarded-For".into(),
                format!("10.0.{}.{}", i / 250, 1 + i % 250),
            )]
        },
        Duration::from_secs(20),
    );
    assert_storm(&s, 1000);
    // The proxy is exempt from the per-IP share of the HTTP-phase table
    // (what Retry-After there is comes from evictions: 408).
    assert_eq!(
        s.refused_per_ip, 0,
        "clients behind a trusted proxy got 429"
    );
}

#[test]
fn pending_cap_per_ip_is_configurable_and_answers_429() {
    let srv = Server::start(&[
        ("HTTP_PENDING_LIMIT_PER_IP", "2"),
        ("HTTP_PENDING_LIMIT", "4"),
    ]);
    // Two connections from one address sit in their HTTP phase, so the
    // table is half full and the per-IP share binds...
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect_from(addr(3), srv.port, false).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // ...so a third from it is refused with an answer, another address is not.
    let mut third = connect_from(addr(3), srv.port, false).unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = third.read_to_end(&mut buf);
    let r = parse_response(&buf);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["code"], "TOO_MANY_PENDING");
    assert!(r.header("retry-after").is_some());
    let mut other = connect_from(addr(4), srv.port, false).unwrap();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = other.read_to_end(&mut buf);
    assert_eq!(parse_response(&buf).status, 200);
    assert_eq!(
        metric(srv.port, r#"whisper_http_ended_total{reason="ip_share"}"#),
        1
    );
    held.clear();
}

#[test]
fn a_full_table_evicts_the_stalest_connection_with_408() {
    let srv = Server::start(&[("HTTP_PENDING_LIMIT", "20")]);
    // 20 silent connections fill the table (no byte: the rate rule never
    // starts, only the 10 s deadline would end them).
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|i| connect_from(addr(60 + i % 5), srv.port, false).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    let mut s = connect_from(addr(70), srv.port, false).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(parse_response(&buf).status, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The first silent connection (the stalest) was told why, with Retry-After.
    let first = &mut silent[0];
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = first.read_to_end(&mut buf);
    let r = parse_response(&buf);
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    silent.clear();
    assert!(metric(srv.port, r#"whisper_http_ended_total{reason="evicted"}"#) >= 1);
}

/// An attacker's connection: trickles a request head that never ends.
struct Trickler {
    src: Ipv4Addr,
    sock: TcpStream,
    sent: usize,
}

const TRICKLE: &[u8] = b"GET /health HTTP/1.1\r\nHost: attacker\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn slow_requests_cannot_lock_others_out() {
    raise_nofile();
    let srv = Server::start(&[]);
    let port = srv.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_attack = stop.clone();
    // 300 connections from 30 addresses, one byte a second each; a connection
    // the server closes is reopened at once.
    let attacker = std::thread::spawn(move || {
        let mut conns: Vec<Trickler> = (0..300)
            .map(|i| {
                let src = addr(10 + (i % 30));
                Trickler {
                    src,
                    sock: connect_from(src, port, true).unwrap(),
                    sent: 0,
                }
            })
            .collect();
        let mut reopened = 0u32;
        let mut tick = 0;
        while !stop_attack.load(std::sync::atomic::Ordering::Relaxed) && tick < 60 {
            tick += 1;
            for c in conns.iter_mut() {
                let mut scratch = [0u8; 512];
                let closed = match c.sock.read(&mut scratch) {
                    Ok(_) => true, // EOF, or the server's answer (408)
                    Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected),
                };
                let byte = [TRICKLE[c.sent % TRICKLE.len()]];
                let failed = !closed
                    && match c.sock.write(&byte) {
                        Ok(_) => {
                            c.sent += 1;
                            false
                        }
                        Err(e) => {
                            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected)
                        }
                    };
                if closed || failed {
                    if let Ok(s) = connect_from(c.src, port, true) {
                        c.sock = s;
                        c.sent = 0;
                        reopened += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        reopened
    });
    // Let the attack fill the table.
    std::thread::sleep(Duration::from_secs(3));

    // Meanwhile: /health from another address, twice a second, 1 s each.
    let victim = addr(200);
    let poll = || -> bool {
        let Ok(mut s) = connect_from(victim, port, false) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        parse_response(&buf).status == 200
    };
    let mut answered = 0;
    let polls = 24;
    let mut slowest = Duration::ZERO;
    for _ in 0..polls {
        let t = Instant::now();
        if poll() {
            answered += 1;
        }
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    // And a WebSocket client from yet another address connects within 1 s.
    let t = Instant::now();
    let mut ws = connect_from(addr(201), port, false).unwrap();
    ws.write_all(upgrade_request(&[]).as_bytes()).unwrap();
    let connected = matches!(outcome(ws), Outcome::Connected(_));
    let ws_time = t.elapsed();

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reopened = attacker.join().unwrap();
    eprintln!(
        "slow requests: /health answered {answered} of {polls} polls (slowest {slowest:?}), \
         WebSocket connect {ws_time:?} ({connected}), attacker reopened {reopened} connections"
    );
    assert!(
        answered * 100 >= polls * 95,
        "/health answered {answered} of {polls}"
    );
    assert!(
        connected && ws_time < Duration::from_secs(1),
        "{connected} {ws_time:?}"
    );
    // The attack really ran: its connections were closed and reopened.
    assert!(reopened > 0);
}

#[test]
fn a_trickled_head_is_closed_by_the_rate_rule_with_408() {
    let srv = Server::start(&[]);
    let mut s = connect_from(addr(80), srv.port, false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    // Three bytes a second: far below the minimum rate, long before the
    // 10 s deadline.
    for byte in TRICKLE.iter().take(30) {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !got.is_empty() {
            break;
        }
    }
    let r = parse_response(&got);
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("too slowly"), "{r:?}");
    assert_eq!(
        metric(srv.port, r#"whisper_http_ended_total{reason="too_slow"}"#),
        1
    );
    assert_eq!(metric(srv.port, "whisper_http_pending"), 0);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
