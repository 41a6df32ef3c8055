//! `storm`: 1,000 clients upgrading at once (every phone reconnecting after a
//! restart), from one address, from 50 (127.0.0.2 and up) and through a
//! trusted proxy. Each client is either connected or answered with
//! `Retry-After`, which it honours; anything else is a silent drop.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::{Lab, capacity_env};
use crate::relay::Relay;
use crate::report::Metric;

pub const CLIENTS: u32 = 1_000;
/// Retry rounds one client may take before it counts as never connected.
const MAX_TRIES: u32 = 30;

/// A TCP connection to `to` from source address `src` (loopback only).
pub async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<async_net::TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = nix::sys::socket::socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
    nix::sys::socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
    )?;
    match nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let sock = smol::Async::new(std::net::TcpStream::from(fd))?;
    sock.writable().await?;
    if let Some(e) = sock.get_ref().take_error()? {
        return Err(e);
    }
    Ok(async_net::TcpStream::from(sock))
}

/// 127.0.0.2 + `n`.
pub fn loopback(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + n)
}

/// How one upgrade attempt ended.
enum Answer {
    Upgraded(async_net::TcpStream),
    RetryAfter(u64),
    Silent,
}

async fn attempt(to: SocketAddr, src: Ipv4Addr, extra: &str) -> Answer {
    let Ok(mut s) = connect_from(src, to).await else {
        return Answer::Silent;
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: d2hpc3Blci1iZW5jaC0xMw==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let _ = s.write_all(request.as_bytes()).await;
    // The head, byte by byte (a 101 is followed by nothing; a refusal by its body).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    };
    read.or(async {
        Timer::after(Duration::from_secs(20)).await;
    })
    .await;
    let text = String::from_utf8_lossy(&head);
    if text.starts_with("HTTP/1.1 101 ") {
        return Answer::Upgraded(s);
    }
    let retry = text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().parse::<u64>().ok())?
    });
    match retry {
        Some(secs) => Answer::RetryAfter(secs),
        None => Answer::Silent,
    }
}

/// Counters of one storm.
#[derive(Default)]
struct Tally {
    at_once: Cell<u32>,
    retry_after: Cell<u32>,
    silent: Cell<u32>,
    connected: Cell<u32>,
    last_connected_us: Cell<u64>,
    most_tries: Cell<u32>,
}

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    type Source = fn(u32) -> Ipv4Addr;
    let variants: [(&str, Source, bool); 3] = [
        ("1 address: ", |_| loopback(0), false),
        ("50 addresses: ", |i| loopback(i % 50), false),
        ("trusted proxy: ", |_| loopback(0), true),
    ];
    for (prefix, src, proxy) in variants {
        let mut env = capacity_env(4096, 64, 8);
        if proxy {
            env.push(("TRUSTED_PROXIES", loopback(0).to_string()));
        }
        lab.with_relay(&env, async |relay: &mut Relay| {
            storm(lab, relay, prefix, src, proxy).await
        })
        .await?;
    }
    Ok(())
}

async fn storm(
    lab: &Lab<'_>,
    relay: &Relay,
    prefix: &str,
    src: fn(u32) -> Ipv4Addr,
    proxy: bool,
) -> Result<(), String> {
    let tally = Rc::new(Tally::default());
    let t0 = Instant::now();
    let to = relay.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let tally = tally.clone();
            lab.ex.spawn(async move {
                let extra = if proxy {
                    format!("X-Forwarded-For: 10.0.{}.{}\r\n", i / 250, 1 + i % 250)
                } else {
                    String::new()
                };
                for tries in 1..=MAX_TRIES {
                    match attempt(to, src(i), &extra).await {
                        Answer::Upgraded(s) => {
                            if tries == 1 {
                                tally.at_once.set(tally.at_once.get() + 1);
                            }
                            tally.connected.set(tally.connected.get() + 1);
                            tally.last_connected_us.set(t0.elapsed().as_micros() as u64);
                            tally.most_tries.set(tally.most_tries.get().max(tries));
                            return Some(s);
                        }
                        Answer::RetryAfter(secs) => {
                            if tries == 1 {
                                tally.retry_after.set(tally.retry_after.get() + 1);
                            }
                            Timer::after(Duration::from_secs(secs)).await;
                        }
                        Answer::Silent => {
                            tally.silent.set(tally.silent.get() + 1);
                            return None;
                        }
                    }
                }
                None
            })
        })
        .collect();
    // Keep every upgraded connection open until all are done.
    let mut open = Vec::new();
    for c in clients {
        open.extend(c.await);
    }
    let m =
        |name: &str, unit: &'static str, v: f64| Metric::new(format!("{prefix}{name}"), unit, v);
    lab.metric(m("connected at once", "", f64::from(tally.at_once.get())));
    lab.metric(m(
        "answered Retry-After",
        "",
        f64::from(tally.retry_after.get()),
    ));
    lab.metric(m("silent drops", "", f64::from(tally.silent.get())));
    lab.metric(m(
        "connected in the end",
        "",
        f64::from(tally.connected.get()),
    ));
    lab.metric(m(
        "all connected after",
        "ms",
        tally.last_connected_us.get() as f64 / 1000.0,
    ));
    lab.metric(m("most tries", "", f64::from(tally.most_tries.get())));
    if tally.connected.get() < CLIENTS {
        lab.note(format!(
            "{prefix}{} of {CLIENTS} clients never connected",
            CLIENTS - tally.connected.get()
        ));
    }
    drop(open);
    Ok(())
}
