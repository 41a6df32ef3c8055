//! `slowloris`: 300 connections from 30 addresses (127.0.0.12 and up), each
//! sending its request head one byte a second and reopened as soon as the
//! relay closes it, while a client from another address polls `/health`
//! four times a second and opens a WebSocket every second, each with 1 s to
//! succeed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::storm::{connect_from, loopback};
use super::{Lab, capacity_env};
use crate::relay::Relay;
use crate::report::Metric;

const ATTACKERS: u32 = 300;
const ADDRESSES: u32 = 30;
const HEAD: &[u8] =
    b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// What a poll may take to count as answered.
const BUDGET: Duration = Duration::from_secs(1);

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let env = capacity_env(4096, 64, 8);
    lab.with_relay(&env, async |relay: &mut Relay| attack(lab, relay).await)
        .await
}

/// One attacker connection, reopened whenever the relay ends it.
async fn trickler(to: std::net::SocketAddr, n: u32, stop: Rc<Cell<bool>>, reopens: Rc<Cell<u32>>) {
    let src = loopback(10 + n % ADDRESSES);
    while !stop.get() {
        let Ok(mut s) = connect_from(src, to).await else {
            Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let mut sent = 0;
        while !stop.get() {
            if s.write_all(&HEAD[sent % HEAD.len()..][..1]).await.is_err() {
                break;
            }
            sent += 1;
            // A second, unless the relay answers or closes first.
            let mut scratch = [0u8; 256];
            // Data (the 408), EOF or a reset: this connection is over.
            let closed = async {
                let _ = s.read(&mut scratch).await;
                true
            }
            .or(async {
                Timer::after(Duration::from_secs(1)).await;
                false
            })
            .await;
            if closed {
                break;
            }
        }
        reopens.set(reopens.get() + 1);
    }
}

/// `GET /health` from `src`; its time when answered 200 within the budget.
async fn poll_health(to: std::net::SocketAddr, src: std::net::Ipv4Addr) -> Option<Duration> {
    let t = Instant::now();
    let get = async {
        let mut s = connect_from(src, to).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf.starts_with(b"HTTP/1.1 200 ").then_some(())
    };
    let done = async { get.await.is_some() }
        .or(async {
            Timer::after(BUDGET).await;
            false
        })
        .await;
    done.then(|| t.elapsed())
}

/// A WebSocket upgrade from `src`; its time when it got its 101 within the budget.
async fn try_upgrade(to: std::net::SocketAddr, src: std::net::Ipv4Addr) -> Option<Duration> {
    let t = Instant::now();
    let up = async {
        let mut s = connect_from(src, to).await.ok()?;
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: d2hpc3Blci1iZW5jaC0xMw==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .ok()?;
        let mut head = [0u8; 13];
        s.read_exact(&mut head).await.ok()?;
        (&head == b"HTTP/1.1 101 ").then_some(())
    };
    let done = async { up.await.is_some() }
        .or(async {
            Timer::after(BUDGET).await;
            false
        })
        .await;
    done.then(|| t.elapsed())
}

async fn attack(lab: &Lab<'_>, relay: &Relay) -> Result<(), String> {
    let to = relay.addr;
    let stop = Rc::new(Cell::new(false));
    let reopens = Rc::new(Cell::new(0u32));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|n| lab.ex.spawn(trickler(to, n, stop.clone(), reopens.clone())))
        .collect();
    // Let the attack fill the relay's table first.
    Timer::after(Duration::from_secs(3)).await;
    let phase = Duration::from_secs(if lab.params.quick { 5 } else { 15 });
    let reopens_before = reopens.get();
    let before = lab.sample(relay);
    let t0 = Instant::now();
    let (mut polls, mut answered, mut slowest) = (0u32, 0u32, Duration::ZERO);
    let (mut upgrades, mut upgraded, mut slowest_upgrade) = (0u32, 0u32, Duration::ZERO);
    while t0.elapsed() < phase {
        polls += 1;
        if let Some(d) = poll_health(to, loopback(200)).await {
            answered += 1;
            slowest = slowest.max(d);
        }
        if polls % 4 == 0 {
            upgrades += 1;
            if let Some(d) = try_upgrade(to, loopback(201)).await {
                upgraded += 1;
                slowest_upgrade = slowest_upgrade.max(d);
            }
        }
        Timer::after(Duration::from_millis(250)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let reopened = reopens.get() - reopens_before;
    let used = lab.sample(relay).since(&before);
    stop.set(true);
    for a in attackers {
        a.cancel().await;
    }
    let pct = |a: u32, n: u32| {
        if n == 0 {
            0.0
        } else {
            f64::from(a) * 100.0 / f64::from(n)
        }
    };
    lab.metric(Metric::new("/health answered", "%", pct(answered, polls)));
    lab.metric(Metric::new(
        "/health slowest",
        "ms",
        slowest.as_secs_f64() * 1e3,
    ));
    lab.metric(Metric::new("upgrades in 1 s", "%", pct(upgraded, upgrades)));
    lab.metric(Metric::new(
        "upgrade slowest",
        "ms",
        slowest_upgrade.as_secs_f64() * 1e3,
    ));
    lab.metric(Metric::new(
        "attacker reopens/s",
        "1/s",
        f64::from(reopened) / secs,
    ));
    if used.cpu_ns > 0 {
        lab.metric(Metric::new(
            "relay cpu",
            "%",
            used.cpu_ns as f64 / 1e7 / secs,
        ));
    }
    if answered < polls {
        lab.note(format!(
            "/health unanswered in {} of {polls} polls",
            polls - answered
        ));
    }
    Ok(())
}
