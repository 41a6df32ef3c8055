//! `idle`: the relay's resident memory per idle joined connection.

use std::time::{Duration, Instant};

use smol::Timer;

use super::{Lab, capacity_env};
use crate::client::ConnectOptions;
use crate::proc;
use crate::relay::Relay;
use crate::report::Metric;
use crate::traffic::{self, Seat};
use crate::wire::Dialect;

/// Idle members read nothing after their `userList`: a small buffer will do.
const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 512,
    rcvbuf: None,
    dialect: Dialect::V2,
};
/// Let the relay finish start-up before the first reading.
const START_SETTLE: Duration = Duration::from_millis(200);

/// Runs every idle set with clients of `dialect`.
pub async fn run(lab: &Lab<'_>, dialect: Dialect) -> Result<(), String> {
    let opts = ConnectOptions { dialect, ..OPTS };
    for &(conns, rooms) in &lab.params.idle_sets {
        let env = capacity_env(conns, rooms, conns.div_ceil(rooms));
        lab.with_relay(&env, async |relay: &mut Relay| {
            hold(lab, relay, conns, rooms, opts).await
        })
        .await?;
    }
    Ok(())
}

/// Opens `conns` members spread over `rooms`, holds them, reads RSS.
async fn hold(
    lab: &Lab<'_>,
    relay: &Relay,
    conns: u32,
    rooms: u32,
    opts: ConnectOptions,
) -> Result<(), String> {
    let name = |s: &str| format!("n={conns} {s}");
    Timer::after(START_SETTLE).await;
    let before = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"))?;
    let seats = (0..conns)
        .map(|i| Seat {
            room: format!("idle{}", i % rooms),
            user: format!("u{i}"),
            opts,
        })
        .collect();
    let t0 = Instant::now();
    let members =
        traffic::open_all(lab.ex, relay.addr, seats, lab.params.setup_limit(conns)).await?;
    let opened_per_sec = conns as f64 / t0.elapsed().as_secs_f64();
    Timer::after(lab.params.idle_settle).await;
    let held = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"))?;
    drop(members);
    let per_conn = held.rss_kib.saturating_sub(before.rss_kib) as f64 / f64::from(conns);
    lab.metric(Metric::new(
        name("rss before"),
        "KiB",
        before.rss_kib as f64,
    ));
    lab.metric(Metric::new(name("rss held"), "KiB", held.rss_kib as f64));
    lab.metric(Metric::new(name("per connection"), "KiB", per_conn));
    lab.metric(Metric::new(
        name("open+join rate"),
        "conn/s",
        opened_per_sec,
    ));
    Ok(())
}
