//! `memory`: where the bytes of one idle joined connection go. The relay is
//! the allocator probe (`probe.rs`: the library's relay inside this
//! executable, counting the system allocator); connections are taken
//! through the stages of their life one stage at a time for all of them,
//! and after each stage the probe's live counts, the process's RSS and the
//! kernel's socket memory are read. The differences, divided by the number
//! of connections, are what one connection adds at that stage; the live
//! blocks by size tell which allocations they are.
//!
//! Stages: upgraded (the 101 read, no frame sent), after a first frame (a
//! `ping` request and its answer), joined (rooms of ten), closed (all gone:
//! what is left is what the relay keeps for good).

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout};
use std::time::Duration;

use smol::Timer;

use super::{Lab, capacity_env};
use crate::client::{self, ConnectOptions, OP_TEXT, Reader, Writer};
use crate::probe::{Counts, class_size};
use crate::proc;
use crate::relay::Relay;
use crate::report::Metric;
use crate::wire::{self, Dialect, Incoming};

const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 512,
    rcvbuf: None,
    dialect: Dialect::V2,
};
/// Let the relay finish start-up (and each stage its work) before a reading.
const SETTLE: Duration = Duration::from_millis(300);
/// Members per room at the joined stage.
const ROOM_SIZE: u32 = 10;

/// The probe's query pipe.
struct Probe {
    ask: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl Probe {
    fn take(relay: &mut Relay) -> Result<Probe, String> {
        let ask = relay
            .child
            .stdin
            .take()
            .ok_or("the probe has no stdin pipe")?;
        let out = relay.child.stdout.take().ok_or("the probe has no stdout")?;
        Ok(Probe {
            ask,
            answers: BufReader::new(out),
        })
    }

    fn counts(&mut self) -> Result<Counts, String> {
        let mut line = String::new();
        writeln!(self.ask, "counts")
            .and_then(|()| self.ask.flush())
            .and_then(|()| self.answers.read_line(&mut line))
            .map_err(|e| format!("asking the probe: {e}"))?;
        Counts::parse(&line).ok_or_else(|| format!("unreadable probe answer {line:?}"))
    }
}

/// One reading: the allocator's counts, RSS, the kernel's socket memory.
struct Reading {
    counts: Counts,
    rss_kib: u64,
    kernel: Kernel,
}

async fn read(probe: &mut Probe, relay: &Relay) -> Result<Reading, String> {
    Timer::after(SETTLE).await;
    let mem = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"))?;
    Ok(Reading {
        counts: probe.counts()?,
        rss_kib: mem.rss_kib,
        kernel: Kernel::read(relay.addr.port()),
    })
}

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    for &(conns, rooms) in &lab.params.idle_sets {
        let rooms = rooms.max(conns.div_ceil(ROOM_SIZE));
        let env = capacity_env(conns, rooms, ROOM_SIZE);
        let mut relay = lab.launcher.start_probe(&env)?;
        let result = stages(lab, &mut relay, conns).await;
        let exit = relay.stop();
        lab.record_exit(exit);
        result?;
    }
    Ok(())
}

/// Reads frames until a text frame; `Err` if it is an error or the stream ends.
async fn answer(reader: &mut Reader) -> Result<(), String> {
    loop {
        let frame = reader
            .next_frame()
            .await
            .map_err(|e| format!("read: {e}"))?
            .ok_or("closed")?;
        if frame.opcode == OP_TEXT {
            return match wire::classify(frame.payload) {
                Incoming::Error(code) => Err(format!("refused: {code}")),
                _ => Ok(()),
            };
        }
    }
}

async fn stages(lab: &Lab<'_>, relay: &mut Relay, conns: u32) -> Result<(), String> {
    let mut probe = Probe::take(relay)?;
    let mut readings = vec![("start", read(&mut probe, relay).await?)];
    let mut open: Vec<(Reader, Writer)> = Vec::with_capacity(conns as usize);
    for _ in 0..conns {
        let c = client::connect(relay.addr, OPTS)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        open.push(c);
    }
    readings.push(("upgraded", read(&mut probe, relay).await?));
    for (reader, writer) in &mut open {
        writer
            .send(OP_TEXT, br#"{"type":"ping"}"#)
            .await
            .map_err(|e| format!("send ping: {e}"))?;
        answer(reader).await.map_err(|e| format!("ping: {e}"))?;
    }
    readings.push(("first frame", read(&mut probe, relay).await?));
    for (i, (reader, writer)) in open.iter_mut().enumerate() {
        let room = format!("mem{}", i as u32 / ROOM_SIZE);
        let join = wire::join_request(&room, &format!("u{i}"), Dialect::V2);
        writer
            .send(OP_TEXT, join.as_bytes())
            .await
            .map_err(|e| format!("send join: {e}"))?;
        answer(reader).await.map_err(|e| format!("join: {e}"))?;
    }
    readings.push(("joined", read(&mut probe, relay).await?));
    drop(open);
    Timer::after(SETTLE).await;
    readings.push(("closed", read(&mut probe, relay).await?));
    report(lab, conns, &readings);
    Ok(())
}

/// Metrics per connection for each stage against the one before it (and
/// `closed` against `start`), and a note of the blocks each stage adds.
fn report(lab: &Lab<'_>, conns: u32, readings: &[(&str, Reading)]) {
    let n = f64::from(conns);
    let prefix = |s: &str| format!("n={conns} {s}");
    for pair in readings.windows(2) {
        let (stage, now) = (&pair[1].0, &pair[1].1);
        let before = if *stage == "closed" {
            &readings[0].1
        } else {
            &pair[0].1
        };
        let d = now.counts.since(&before.counts);
        let rss = now.rss_kib as f64 - before.rss_kib as f64;
        let per = |v: i64| v as f64 / n;
        lab.metric(Metric::new(
            prefix(&format!("{stage}: heap requested")),
            "B",
            per(d.requested),
        ));
        lab.metric(Metric::new(
            prefix(&format!("{stage}: heap usable")),
            "B",
            per(d.usable),
        ));
        if d.in_use != 0 {
            lab.metric(Metric::new(
                prefix(&format!("{stage}: mallinfo2 in use")),
                "B",
                per(d.in_use),
            ));
        }
        lab.metric(Metric::new(
            prefix(&format!("{stage}: blocks")),
            "",
            per(d.blocks),
        ));
        lab.metric(Metric::new(
            prefix(&format!("{stage}: rss")),
            "B",
            rss * 1024.0 / n,
        ));
        lab.note(prefix(&format!(
            "{stage}: blocks per connection by size: {}",
            by_size(&d, n)
        )));
    }
    let start = &readings[0].1;
    if let Some((_, joined)) = readings.iter().find(|(s, _)| *s == "joined") {
        let rss = (joined.rss_kib as f64 - start.rss_kib as f64) * 1024.0 / n;
        lab.metric(Metric::new(prefix("idle joined: rss"), "B", rss));
        joined.kernel.report(lab, &start.kernel, conns);
    }
    lab.note(layout());
}

/// The size classes whose live blocks changed by at least a tenth of a
/// block per connection: `+1.00x512` is one more block of up to 512 bytes.
fn by_size(d: &Counts, n: f64) -> String {
    let parts: Vec<String> = d
        .by_size
        .iter()
        .enumerate()
        .filter(|(_, v)| (**v as f64 / n).abs() >= 0.1)
        .map(|(c, v)| format!("{:+.2}x{}", *v as f64 / n, class_size(c)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// The sizes of the relay's per-connection types (what `size_of` says).
fn layout() -> String {
    use rtce2ee_whisper::footprint;
    let parts: Vec<String> = footprint::layout()
        .iter()
        .map(|(name, bytes)| format!("{name} {bytes} B"))
        .collect();
    format!("layout: {}", parts.join(", "))
}

/// The kernel's memory for the relay's sockets: their buffers (`ss -tm`,
/// skmem: receive, send, forward-allocated, queued, options, backlog), TCP's
/// page count (/proc/net/sockstat) and the socket objects' slab caches
/// (/proc/slabinfo, both ends of every loopback connection).
#[derive(Default)]
struct Kernel {
    sockets: u64,
    skmem: u64,
    tcp_pages: u64,
    slab: u64,
}

/// Slab caches that grow with each TCP socket and its descriptor.
const SLABS: [&str; 6] = [
    "TCP",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
];

impl Kernel {
    fn read(port: u16) -> Kernel {
        let mut k = Kernel::default();
        let filter = format!("sport = :{port}");
        if let Ok(out) = std::process::Command::new("ss")
            .args(["-tmnH", "state", "established", &filter])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(mem) = skmem(line) {
                    k.sockets += 1;
                    k.skmem += mem;
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/net/sockstat") {
            k.tcp_pages = text
                .lines()
                .find(|l| l.starts_with("TCP:"))
                .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        if let Ok(text) = std::fs::read_to_string("/proc/slabinfo") {
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 3 && SLABS.contains(&f[0]) {
                    let (active, size) = (f[1].parse::<u64>(), f[3].parse::<u64>());
                    if let (Ok(a), Ok(s)) = (active, size) {
                        k.slab += a * s;
                    }
                }
            }
        }
        k
    }

    fn report(&self, lab: &Lab<'_>, start: &Kernel, conns: u32) {
        let n = f64::from(conns);
        let name = |s: &str| format!("n={conns} idle joined: {s}");
        if self.sockets > 0 {
            let per = self.skmem as f64 / self.sockets as f64;
            lab.metric(Metric::new(name("kernel skmem per socket"), "B", per));
        }
        let pages = self.tcp_pages as f64 - start.tcp_pages as f64;
        lab.metric(Metric::new(
            name("kernel TCP pages (both ends)"),
            "B",
            pages * 4096.0 / n,
        ));
        if self.slab > 0 {
            let slab = (self.slab as f64 - start.slab as f64) / 2.0;
            lab.metric(Metric::new(
                name("kernel socket objects (half of both ends)"),
                "B",
                slab / n,
            ));
        }
    }
}

/// The bytes a socket's `skmem:(...)` field of `ss -m` says it holds: every
/// field but the limits (`rb`, `tb`) and the drop count (`d`).
fn skmem(line: &str) -> Option<u64> {
    let inner = line.split("skmem:(").nth(1)?.split(')').next()?;
    let mut total = 0;
    for field in inner.split(',') {
        let key: String = field
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        if matches!(key.as_str(), "rb" | "tb" | "d") {
            continue;
        }
        total += field[key.len()..].parse::<u64>().unwrap_or(0);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skmem_adds_all_but_the_limits() {
        let line =
            "0 0 127.0.0.1:8080 127.0.0.1:5555 skmem:(r0,rb131072,t0,tb87040,f4096,w0,o0,bl0,d7)";
        assert_eq!(skmem(line), Some(4096));
        assert_eq!(skmem("no memory here"), None);
    }
}
