//! The scenarios, and what they share: a fresh relay per run, measured
//! traffic phases, and the relay's own counters from `/health`.

mod burst;
mod catchup;
mod chatty;
mod churn;
mod closes;
mod count;
mod fanout;
mod floor;
mod idle;
mod memory;
mod slowloris;
mod storm;
mod wifi;
mod worst;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{LocalExecutor, Task, Timer};

use crate::cli::Params;
use crate::proc::{self, Sample};
use crate::relay::{Launcher, Relay};
use crate::report::{Metric, Run};
use crate::traffic::{self, Control, Tally};
use crate::wire::Dialect;

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Floor,
    Idle,
    /// Where the bytes of an idle joined connection go (the allocator probe).
    Memory,
    /// `idle` with legacy clients (upgraded on `/`, `payload` frames).
    IdleLegacy,
    Fanout,
    /// `fanout` with legacy clients: no echo to the sender.
    FanoutLegacy,
    Chatty,
    Churn,
    WorstCase,
    Burst,
    Wifi,
    Closes,
    Storm,
    Slowloris,
    CatchUp,
    /// Not in `ALL`: runs only when named.
    Count,
    /// `count` with legacy clients; only when named.
    CountLegacy,
}

impl Scenario {
    pub const ALL: [Scenario; 15] = [
        Scenario::Floor,
        Scenario::Idle,
        Scenario::Memory,
        Scenario::IdleLegacy,
        Scenario::Fanout,
        Scenario::FanoutLegacy,
        Scenario::Chatty,
        Scenario::Churn,
        Scenario::WorstCase,
        Scenario::Burst,
        Scenario::Wifi,
        Scenario::Closes,
        Scenario::Storm,
        Scenario::Slowloris,
        Scenario::CatchUp,
    ];

    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Floor => "floor",
            Scenario::Idle => "idle",
            Scenario::Memory => "memory",
            Scenario::IdleLegacy => "idle-legacy",
            Scenario::Fanout => "fanout",
            Scenario::FanoutLegacy => "fanout-legacy",
            Scenario::Chatty => "chatty",
            Scenario::Churn => "churn",
            Scenario::WorstCase => "worst-case",
            Scenario::Burst => "burst",
            Scenario::Wifi => "wifi",
            Scenario::Closes => "closes",
            Scenario::Storm => "storm",
            Scenario::Slowloris => "slowloris",
            Scenario::CatchUp => "catch-up",
            Scenario::Count => "count",
            Scenario::CountLegacy => "count-legacy",
        }
    }

    /// The name in the figures table and the JSON document.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::IdleLegacy => "idle (legacy)",
            Scenario::FanoutLegacy => "fanout (legacy)",
            Scenario::CountLegacy => "count (legacy)",
            other => other.name(),
        }
    }

    /// The scenarios named in `only` (all when `None`), in running order.
    pub fn select(only: Option<&[String]>) -> Result<Vec<Scenario>, String> {
        let Some(names) = only else {
            return Ok(Scenario::ALL.to_vec());
        };
        let known = || {
            Scenario::ALL
                .into_iter()
                .chain([Scenario::Count, Scenario::CountLegacy])
        };
        if let Some(bad) = names
            .iter()
            .find(|n| !known().any(|s| s.name() == n.as_str()))
        {
            let known: Vec<_> = known().map(|s| s.name()).collect();
            return Err(format!(
                "unknown scenario {bad:?} (known: {})",
                known.join(", ")
            ));
        }
        Ok(known()
            .filter(|s| names.iter().any(|n| n == s.name()))
            .collect())
    }
}

/// CPUs for the relay and for the generator, when there are two.
#[derive(Clone, Copy, Debug)]
pub struct Pinning {
    pub relay: usize,
    pub generator: usize,
}

/// What one scenario run works with, and what it has produced so far.
pub struct Lab<'a> {
    pub ex: &'a LocalExecutor<'static>,
    pub params: &'a Params,
    pub pinning: Option<Pinning>,
    launcher: &'a Launcher,
    run: RefCell<Run>,
}

impl Lab<'_> {
    pub fn metric(&self, m: Metric) {
        self.run.borrow_mut().metrics.push(m);
    }

    pub fn note(&self, note: impl Into<String>) {
        self.run.borrow_mut().notes.push(note.into());
    }

    /// Starts a relay with `env`, runs `body` against it, then stops it and
    /// records how it ended, whatever `body` returned.
    pub async fn with_relay<T>(
        &self,
        env: &[(&str, String)],
        body: impl AsyncFnOnce(&mut Relay) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut relay = self.launcher.start(env)?;
        let result = body(&mut relay).await;
        let exit = relay.stop();
        self.run.borrow_mut().exits.push(exit);
        result
    }

    /// Records how a relay started outside [`Lab::with_relay`] ended.
    pub fn record_exit(&self, exit: crate::relay::Exit) {
        self.run.borrow_mut().exits.push(exit);
    }

    /// Samples the relay's counters, noting (once per run) when unreadable.
    pub fn sample(&self, relay: &Relay) -> Sample {
        let (sample, problem) = proc::sample(relay.pid);
        if let Some(p) = problem {
            let mut run = self.run.borrow_mut();
            if !run.notes.contains(&p) {
                run.notes.push(p);
            }
        }
        sample
    }
}

/// Runs one scenario once with its own executor.
pub fn run(
    scenario: Scenario,
    params: &Params,
    launcher: &Launcher,
    pinning: Option<Pinning>,
) -> Run {
    let ex = LocalExecutor::new();
    let lab = Lab {
        ex: &ex,
        params,
        pinning,
        launcher,
        run: RefCell::new(Run::default()),
    };
    let result = smol::block_on(ex.run(async {
        match scenario {
            Scenario::Floor => floor::run(&lab).await,
            Scenario::Idle => idle::run(&lab, Dialect::V2).await,
            Scenario::Memory => memory::run(&lab).await,
            Scenario::IdleLegacy => idle::run(&lab, Dialect::Legacy).await,
            Scenario::Fanout => fanout::run(&lab, Dialect::V2).await,
            Scenario::FanoutLegacy => fanout::run(&lab, Dialect::Legacy).await,
            Scenario::Chatty => chatty::run(&lab).await,
            Scenario::Churn => churn::run(&lab).await,
            Scenario::WorstCase => worst::run(&lab).await,
            Scenario::Burst => burst::run(&lab).await,
            Scenario::Wifi => wifi::run(&lab).await,
            Scenario::Closes => closes::run(&lab).await,
            Scenario::Count => count::run(&lab, Dialect::V2).await,
            Scenario::CountLegacy => count::run(&lab, Dialect::Legacy).await,
            Scenario::Storm => storm::run(&lab).await,
            Scenario::Slowloris => slowloris::run(&lab).await,
            Scenario::CatchUp => catchup::run(&lab).await,
        }
    }));
    let mut run = lab.run.into_inner();
    if let Err(e) = result {
        run.error = Some(e);
    }
    run
}

/// Relay variables every load scenario needs: one client IP may hold all
/// connections, and the capacities fit the scenario.
pub fn capacity_env(connections: u32, rooms: u32, room_users: u32) -> Vec<(&'static str, String)> {
    vec![
        ("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "65536".into()),
        ("MAX_CONNECTIONS", connections.to_string()),
        ("MAX_ROOMS", rooms.to_string()),
        ("MAX_ROOM_USERS", room_users.to_string()),
    ]
}

/// Lifts the per-connection message and frame budgets out of the way.
pub fn unlimited_rates(env: &mut Vec<(&'static str, String)>) {
    env.push(("RATE_LIMIT_MESSAGE_LIMIT", "1000000".into()));
    env.push(("RATE_LIMIT_FRAME_LIMIT", "1000000".into()));
}

/// What a measured traffic phase produced besides the tally.
pub struct Phase {
    /// From the first send to the stop.
    pub secs: f64,
    /// Deliveries received by the stop.
    pub by_stop: u64,
    /// Relay CPU and write syscalls from the first send to the end of the drain.
    pub relay: Sample,
    /// The generator's own CPU use while sending, % of one CPU (a figure
    /// near 100 means the generator, not the relay, set the pace).
    pub generator_pct: Option<f64>,
    /// Loopback trouble during the phase (drain included).
    pub net: Option<proc::NetCounters>,
}

/// Runs one traffic phase: `start` spawns the senders, which run for
/// `duration`; then the stop switch is set and deliveries still in flight
/// are awaited (up to the drain limit).
pub async fn measure(
    lab: &Lab<'_>,
    relay: &Relay,
    tally: &Tally,
    control: &Control,
    duration: Duration,
    start: impl FnOnce() -> Vec<Task<()>>,
) -> Phase {
    let before = lab.sample(relay);
    let own = std::process::id() as i32;
    let own_before = proc::cpu_ns(own).ok();
    let net_before = proc::net_counters();
    let t0 = Instant::now();
    control.stop.set(false);
    let senders = start();
    Timer::after(duration).await;
    control.stop.set(true);
    let by_stop = tally.received.get();
    let secs = t0.elapsed().as_secs_f64();
    let generator_pct = own_before
        .zip(proc::cpu_ns(own).ok())
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e7 / secs);
    // A relay that died will not deliver the rest: stop waiting for it.
    let done = || tally.missing() == 0 || !proc::is_running(relay.pid);
    let drained = traffic::wait_for(lab.params.drain_limit, done).await && tally.missing() == 0;
    let after = lab.sample(relay);
    let net = net_before
        .zip(proc::net_counters())
        .map(|(a, b)| b.since(&a));
    traffic::cancel_all(senders).await;
    if !drained {
        lab.note(format!(
            "{} of {} expected deliveries never arrived (waited up to {} s after the senders stopped)",
            tally.missing(),
            tally.expected.get(),
            lab.params.drain_limit.as_secs()
        ));
    }
    Phase {
        secs,
        by_stop,
        relay: after.since(&before),
        generator_pct,
        net,
    }
}

/// The usual metrics of a traffic phase, names prefixed with `prefix`.
pub fn traffic_metrics(lab: &Lab<'_>, prefix: &str, phase: &Phase, tally: &Tally) {
    let name = |s: &str| format!("{prefix}{s}");
    let rate = phase.by_stop as f64 / phase.secs;
    lab.metric(Metric::new(name("deliveries/s"), "1/s", rate));
    latency_metrics(lab, prefix, tally);
    cost_metrics(lab, prefix, phase, tally.received.get());
    let sent = tally.sent.get() as f64;
    lab.metric(Metric::new(name("messages sent"), "", sent));
    let lost = tally.missing() as f64;
    lab.metric(Metric::new(name("lost"), "msgs", lost));
    let duplicated = tally.duplicates.get() as f64;
    lab.metric(Metric::new(name("duplicated"), "msgs", duplicated));
    note_anomalies(lab, prefix, tally);
}

/// Latency p50, p99 and max, measured at the receivers.
fn latency_metrics(lab: &Lab<'_>, prefix: &str, tally: &Tally) {
    let latency = tally.latency.borrow();
    for (label, q) in [("latency p50", 0.5), ("latency p99", 0.99)] {
        if let Some(v) = latency.quantile(q) {
            lab.metric(Metric::new(format!("{prefix}{label}"), "µs", v));
        }
    }
    if latency.count() > 0 {
        let max = latency.max() as f64;
        lab.metric(Metric::new(format!("{prefix}latency max"), "µs", max));
    }
}

/// What the deliveries cost: relay CPU per delivery, frames per write
/// syscall, plus the loopback's and the generator's state for context.
fn cost_metrics(lab: &Lab<'_>, prefix: &str, phase: &Phase, delivered: u64) {
    let name = |s: &str| format!("{prefix}{s}");
    if delivered > 0 && phase.relay.cpu_ns > 0 {
        let per = phase.relay.cpu_ns as f64 / delivered as f64;
        lab.metric(Metric::cpu_per_delivery(name("cpu/delivery"), per));
    }
    if phase.relay.syscw > 0 {
        let per = delivered as f64 / phase.relay.syscw as f64;
        lab.metric(Metric::new(name("frames/write"), "", per));
    }
    if let Some(net) = phase.net {
        let retransmits = net.tcp_retransmits as f64;
        lab.metric(Metric::new(name("tcp retransmits"), "segs", retransmits));
        let drops = net.backlog_drops as f64;
        lab.metric(Metric::new(name("backlog drops"), "pkts", drops));
    }
    if let Some(pct) = phase.generator_pct {
        lab.metric(Metric::new(name("generator cpu"), "%", pct));
    }
}

/// Notes what members saw that a healthy run does not produce.
fn note_anomalies(lab: &Lab<'_>, prefix: &str, tally: &Tally) {
    let errors = tally.errors.get();
    if errors > 0 {
        let first = tally.first_error.borrow().clone().unwrap_or_default();
        lab.note(format!("{prefix}{errors} error frames (first: {first})"));
    }
    for (what, n) in [
        ("close frames received by members", tally.closes.get()),
        ("member connections ended", tally.disconnects.get()),
        ("failed sends", tally.send_failures.get()),
        ("messages without a readable stamp", tally.unreadable.get()),
    ] {
        if n > 0 {
            lab.note(format!("{prefix}{n} {what}"));
        }
    }
}

/// The relay's `/health` document.
pub async fn health(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let fetch = async {
        let mut s = async_net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = Vec::new();
        s.take(1 << 20).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let raw = fetch.await.map_err(|e| format!("GET /health: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or("GET /health: no body")?;
    serde_json::from_str(body).map_err(|e| format!("GET /health: {e}"))
}

/// A counter from `/health`'s `stats`.
pub fn health_stat(doc: &serde_json::Value, key: &str) -> Option<f64> {
    doc.get("stats")?.get(key)?.as_f64()
}
