//! `count`: a fixed amount of fan-out, for counting the relay's instructions
//! per delivery under callgrind (`.ci/callgrind` runs it twice with different
//! message counts; the difference cancels start-up and set-up). Runs only
//! when named: `--only count --messages N`.

use std::time::Instant;

use super::{Lab, capacity_env, unlimited_rates};
use crate::client::ConnectOptions;
use crate::relay::Relay;
use crate::report::Metric;
use crate::traffic::{self, Seat};
use crate::wire::Dialect;

/// Members of the one room (the sender included).
const MEMBERS: u32 = 50;
/// Messages in flight: the sender sends the next one when its echo arrives.
const WINDOW: u32 = 8;
const FILLER: usize = 32;
const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 16 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};

/// Runs with clients of `dialect` (legacy: the sender gets no echo, so each
/// message makes `MEMBERS - 1` deliveries).
pub async fn run(lab: &Lab<'_>, dialect: Dialect) -> Result<(), String> {
    let mut env = capacity_env(MEMBERS + 8, 4, MEMBERS);
    unlimited_rates(&mut env);
    lab.with_relay(&env, async |relay: &mut Relay| {
        deliver(lab, relay, dialect).await
    })
    .await
}

async fn deliver(lab: &Lab<'_>, relay: &Relay, dialect: Dialect) -> Result<(), String> {
    let n = u64::from(lab.params.count_messages);
    let seats = (0..MEMBERS)
        .map(|i| Seat {
            room: "count".into(),
            user: format!("u{i}"),
            opts: ConnectOptions { dialect, ..OPTS },
        })
        .collect();
    let joined =
        traffic::open_all(lab.ex, relay.addr, seats, lab.params.setup_limit(MEMBERS)).await?;
    let receivers = match dialect {
        Dialect::V2 => MEMBERS,
        Dialect::Legacy => MEMBERS - 1,
    };
    let crowd = traffic::start_receivers(lab.ex, joined, receivers, FILLER);
    if dialect == Dialect::Legacy {
        // No echo: the second member paces the sender.
        crowd.outboxes[0].set_pacer(1);
    }
    let (tally, control) = (crowd.tally.clone(), crowd.control.clone());
    control.closed_loop.set(true);
    control.limit.set(Some(n));
    let before = lab.sample(relay);
    let t0 = Instant::now();
    let first = u32::try_from(n).unwrap_or(u32::MAX).min(WINDOW);
    let burst = lab.ex.spawn(traffic::send_burst(
        crowd.outboxes[0].clone(),
        tally.clone(),
        first,
    ));
    let want = n * u64::from(receivers);
    let limit = lab.params.drain_limit * 20;
    let done = traffic::wait_for(limit, || tally.received.get() >= want).await;
    let secs = t0.elapsed().as_secs_f64();
    let used = lab.sample(relay).since(&before);
    burst.await;
    traffic::cancel_all(crowd.readers).await;
    if !done {
        return Err(format!(
            "{} of {want} deliveries within {} s",
            tally.received.get(),
            limit.as_secs()
        ));
    }
    lab.metric(Metric::new("messages", "", tally.sent.get() as f64));
    lab.metric(Metric::new("deliveries", "", tally.received.get() as f64));
    lab.metric(Metric::new(
        "deliveries/s",
        "1/s",
        tally.received.get() as f64 / secs,
    ));
    if used.cpu_ns > 0 {
        lab.metric(Metric::cpu_per_delivery(
            "cpu/delivery",
            used.cpu_ns as f64 / tally.received.get() as f64,
        ));
    }
    Ok(())
}
