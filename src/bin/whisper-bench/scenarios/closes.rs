//! `closes`: issue 7's second finding as a benchmark. Trials of the two
//! closes a client provokes, against a client that keeps sending: a frame
//! flood past `RATE_LIMIT_FRAME_LIMIT=10` (close 1008) and a message over
//! `RATE_LIMIT_MAX_MESSAGE_SIZE=1000` (close 1009), each followed by frames
//! already in flight and more sent until the client has read the close
//! frame; it then answers the close and reads until the end. Figures: close
//! frames with the right code, resets seen (ECONNRESET/EPIPE on a read or a
//! write, or pending on the socket after EOF), streams that did not end in
//! EOF, time from the provoking frame to EOF.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;
use smol::future::{self, FutureExt};

use super::Lab;
use crate::client::{self, ConnectOptions, OP_CLOSE, OP_TEXT, Reader, Writer};
use crate::relay::Relay;
use crate::report::Metric;
use crate::stats::Histogram;
use crate::wire::Dialect;

const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 4 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};
/// Trials at once.
const CONCURRENCY: u32 = 10;
/// Frames sent in the same write right behind the provoking one.
const IN_FLIGHT: u32 = 50;
/// Pings the writer may add before it sees the close frame.
const MAX_EXTRA: u64 = 100_000;
/// After its answer, a client that has not seen EOF half-closes after this
/// long (as one that gives up would), and gives up entirely at `TRIAL_LIMIT`.
const HALF_CLOSE_AFTER: Duration = Duration::from_secs(2);
const TRIAL_LIMIT: Duration = Duration::from_secs(10);
const PING: &[u8] = br#"{"type":"ping"}"#;

#[derive(Clone, Copy, Debug)]
enum Provoke {
    Flood,
    Oversize,
}

impl Provoke {
    fn name(self) -> &'static str {
        match self {
            Provoke::Flood => "flood close",
            Provoke::Oversize => "oversize close",
        }
    }

    fn code(self) -> u16 {
        match self {
            Provoke::Flood => 1008,
            Provoke::Oversize => 1009,
        }
    }
}

/// How one trial ended.
#[derive(Default)]
struct Trial {
    code: Option<u16>,
    eof: bool,
    reset: bool,
    /// Another failure, for the notes.
    other: Option<String>,
    /// From the provoking write to EOF.
    to_eof: Option<Duration>,
}

fn is_reset(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let env: Vec<(&str, String)> = vec![
        ("RATE_LIMIT_FRAME_LIMIT", "10".into()),
        ("RATE_LIMIT_MAX_MESSAGE_SIZE", "1000".into()),
        ("BLOCK_STRIKE_LIMIT", "64".into()),
    ];
    for how in [Provoke::Flood, Provoke::Oversize] {
        lab.with_relay(&env, async |relay: &mut Relay| {
            trials(lab, relay, how).await;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

async fn trials(lab: &Lab<'_>, relay: &Relay, how: Provoke) {
    let n = lab.params.close_trials;
    let mut results = Vec::with_capacity(n as usize);
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..n.min(next + CONCURRENCY))
            .map(|i| lab.ex.spawn(trial(relay.addr, i, how)))
            .collect();
        next += batch.len() as u32;
        for t in batch {
            results.push(t.await);
        }
    }
    let name = |s: &str| format!("{}: {s}", how.name());
    let right = results
        .iter()
        .filter(|t| t.code == Some(how.code()))
        .count();
    let resets = results.iter().filter(|t| t.reset).count();
    let no_eof = results.iter().filter(|t| !t.eof).count();
    lab.metric(Metric::new(
        name(&format!("close frames with {} (of {n})", how.code())),
        "trials",
        right as f64,
    ));
    lab.metric(Metric::new(name("resets seen"), "trials", resets as f64));
    lab.metric(Metric::new(name("no EOF"), "trials", no_eof as f64));
    let mut to_eof = Histogram::default();
    for t in &results {
        if let Some(d) = t.to_eof {
            to_eof.record(d.as_micros() as u64);
        }
    }
    if let Some(p50) = to_eof.quantile(0.5) {
        lab.metric(Metric::new(name("time to EOF p50"), "µs", p50));
    }
    let mut others: Vec<&String> = results.iter().filter_map(|t| t.other.as_ref()).collect();
    others.dedup();
    if !others.is_empty() {
        lab.note(format!(
            "{}: other outcomes: {}",
            how.name(),
            others
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

/// A loopback source address per trial (127.1.0.1, 127.1.0.2, ...): each
/// close is a strike, and a shared IP would soon be blocked.
fn source(trial: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (trial / 250) as u8,
        0,
        1 + (trial % 250) as u8,
    ))
}

async fn trial(addr: SocketAddr, i: u32, how: Provoke) -> Trial {
    let (reader, mut writer) = match client::connect_from(addr, source(i), OPTS).await {
        Ok(pair) => pair,
        Err(e) => {
            return Trial {
                other: Some(format!("connect: {e}")),
                ..Trial::default()
            };
        }
    };
    let t0 = Instant::now();
    let provoked = match how {
        Provoke::Flood => {
            let mut r = Ok(());
            for _ in 0..11 + IN_FLIGHT {
                r = r.and(writer.send(OP_TEXT, PING).await);
            }
            r
        }
        Provoke::Oversize => {
            let big = format!(r#"{{"type":"ping","p":"{}"}}"#, "x".repeat(2000));
            let mut r = writer.send(OP_TEXT, big.as_bytes()).await;
            for _ in 0..IN_FLIGHT {
                r = r.and(writer.send(OP_TEXT, PING).await);
            }
            r
        }
    };
    let mut t = Trial::default();
    if let Err(e) = provoked {
        t.reset |= is_reset(e.kind());
    }
    let close_seen = Rc::new(Cell::new(false));
    let both = future::zip(
        read_to_end(reader, close_seen.clone(), t0),
        keep_sending(writer, close_seen, how.code()),
    );
    let limit = async {
        Timer::after(TRIAL_LIMIT + Duration::from_secs(2)).await;
        None
    };
    match async { Some(both.await) }.or(limit).await {
        Some((read, write_error)) => {
            let (code, eof, read_reset, to_eof, other) = read;
            t.code = code;
            t.eof = eof;
            t.reset |= read_reset;
            t.to_eof = to_eof;
            t.other = other;
            if let Some(kind) = write_error {
                if is_reset(kind) {
                    t.reset = true;
                } else {
                    t.other.get_or_insert(format!("write: {kind:?}"));
                }
            }
        }
        None => t.other = Some("trial timed out".into()),
    }
    t
}

/// What the reading side saw: close code, EOF, reset, time to EOF, other.
type ReadOutcome = (Option<u16>, bool, bool, Option<Duration>, Option<String>);

/// Reads until EOF (after the close frame) or an error; half-closes when
/// the relay has not ended the stream `HALF_CLOSE_AFTER` after the close
/// frame. A reset left pending after EOF counts too.
async fn read_to_end(mut reader: Reader, close_seen: Rc<Cell<bool>>, t0: Instant) -> ReadOutcome {
    let mut code = None;
    let mut closed_at: Option<Instant> = None;
    let mut half_closed = false;
    loop {
        let wait = match closed_at {
            Some(at) if !half_closed => HALF_CLOSE_AFTER.saturating_sub(at.elapsed()),
            _ => TRIAL_LIMIT.saturating_sub(t0.elapsed()),
        };
        let next = async {
            Some(
                reader
                    .next_frame()
                    .await
                    .map(|f| f.map(|f| (f.opcode, client::close_code(f.payload)))),
            )
        };
        let timeout = async {
            Timer::after(wait).await;
            None
        };
        match next.or(timeout).await {
            Some(Ok(Some((OP_CLOSE, c)))) if code.is_none() => {
                code = Some(c);
                closed_at = Some(Instant::now());
                close_seen.set(true);
            }
            Some(Ok(Some(_))) => {}
            Some(Ok(None)) => {
                close_seen.set(true);
                let to_eof = t0.elapsed();
                // A reset that arrived after the EOF (an answer that met a
                // closed socket) is left as the socket's pending error.
                Timer::after(Duration::from_millis(50)).await;
                let pending = pending_reset(&reader);
                return (code, true, pending, Some(to_eof), None);
            }
            Some(Err(e)) => {
                close_seen.set(true);
                let reset = is_reset(e.kind());
                let other = (!reset).then(|| format!("read: {e}"));
                return (code, false, reset, None, other);
            }
            None if closed_at.is_some() && !half_closed => {
                let _ = reader.stream().shutdown(Shutdown::Write);
                half_closed = true;
            }
            None => {
                close_seen.set(true);
                return (code, false, false, None, Some("no EOF in time".into()));
            }
        }
    }
}

/// Whether the socket holds a pending ECONNRESET or EPIPE.
fn pending_reset(reader: &Reader) -> bool {
    use nix::sys::socket::{getsockopt, sockopt};
    match getsockopt(reader.stream(), sockopt::SocketError) {
        Ok(errno) => matches!(
            nix::errno::Errno::from_raw(errno),
            nix::errno::Errno::ECONNRESET | nix::errno::Errno::EPIPE
        ),
        Err(_) => false,
    }
}

/// Sends pings until the close frame was read, then answers it with `code`.
async fn keep_sending(
    mut writer: Writer,
    close_seen: Rc<Cell<bool>>,
    code: u16,
) -> Option<io::ErrorKind> {
    let t0 = Instant::now();
    let mut sent = 0u64;
    while !close_seen.get() && sent < MAX_EXTRA && t0.elapsed() < TRIAL_LIMIT {
        if let Err(e) = writer.send(OP_TEXT, PING).await {
            return Some(e.kind());
        }
        sent += 1;
        if sent % 16 == 0 {
            future::yield_now().await;
        }
    }
    while !close_seen.get() && t0.elapsed() < TRIAL_LIMIT {
        Timer::after(Duration::from_millis(5)).await;
    }
    writer.send_close(code).await.err().map(|e| e.kind())
}
