//! `worst-case`: every connection slot taken, every room full, one member
//! per room that never reads, everyone else talking at the default message
//! limit. Peak memory against the README's formula, and no losses for the
//! members that do read.

use std::time::{Duration, Instant};

use super::{Lab, capacity_env, health, health_stat, measure, traffic_metrics};
use crate::client::ConnectOptions;
use crate::formula;
use crate::proc;
use crate::relay::Relay;
use crate::report::Metric;
use crate::traffic::{self, Joined, Seat, Tally};
use crate::wire::Dialect;

/// Readers take a frame or two per read.
const READER: ConnectOptions = ConnectOptions {
    read_buffer: 4 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};
/// Non-readers advertise a tiny window, so the relay's queue for them fills.
const NON_READER: ConnectOptions = ConnectOptions {
    read_buffer: 512,
    rcvbuf: Some(2048),
    dialect: Dialect::V2,
};
/// Filler characters per message: frames of about 2 KiB, large enough for
/// a non-reader to stall its room's log within a few seconds.
const FILLER: usize = 2000;
/// `RATE_LIMIT_MAX_MESSAGE_SIZE`, left at its default.
const MAX_MESSAGE: u64 = 10_240;
/// `RATE_LIMIT_MESSAGE_LIMIT`, left at its default: 30 a minute.
const SEND_PERIOD: Duration = Duration::from_secs(2);
/// Non-readers' user ids start with this.
const NON_READER_PREFIX: &str = "nr";

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let p = lab.params;
    let rooms = p.worst_connections / p.worst_room_users;
    let env = capacity_env(p.worst_connections, rooms, p.worst_room_users);
    lab.with_relay(&env, async |relay: &mut Relay| {
        load(lab, relay, rooms).await
    })
    .await
}

/// Seats: first one non-reader per room, then the readers, round-robin.
fn seats(conns: u32, rooms: u32) -> Vec<Seat> {
    let non_readers = (0..rooms).map(|r| Seat {
        room: format!("full{r}"),
        user: format!("{NON_READER_PREFIX}{r}"),
        opts: NON_READER,
    });
    let readers = (0..conns - rooms).map(|i| Seat {
        room: format!("full{}", i % rooms),
        user: format!("u{i}"),
        opts: READER,
    });
    non_readers.chain(readers).collect()
}

async fn load(lab: &Lab<'_>, relay: &mut Relay, rooms: u32) -> Result<(), String> {
    let p = lab.params;
    let conns = p.worst_connections;
    let readers_per_room = p.worst_room_users - 1;
    let mut joined = traffic::open_all(
        lab.ex,
        relay.addr,
        seats(conns, rooms),
        p.setup_limit(conns),
    )
    .await?;
    let readers: Vec<Joined> = joined.split_off(rooms as usize);
    let _silent = joined;

    let crowd = traffic::start_receivers(lab.ex, readers, readers_per_room, FILLER);
    let (tally, control) = (crowd.tally.clone(), crowd.control.clone());
    let (outboxes, tasks) = (crowd.outboxes, crowd.readers);
    let phase = measure(lab, relay, &tally, &control, p.worst_phase, || {
        let first = Instant::now();
        let n = outboxes.len() as f64;
        outboxes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let at = first + SEND_PERIOD.mul_f64(k as f64 / n);
                let send =
                    traffic::send_every(s.clone(), tally.clone(), control.clone(), at, SEND_PERIOD);
                lab.ex.spawn(send)
            })
            .collect()
    })
    .await;

    let memory = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"));
    let stats = health(relay.addr).await;
    let survived = relay.alive();
    traffic_metrics(lab, "", &phase, &tally);
    traffic::cancel_all(tasks).await;
    report_memory(lab, memory?, conns, rooms);
    report_evictions(lab, &tally, rooms);
    match stats {
        Ok(doc) => {
            if let Some(n) = health_stat(&doc, "slow_consumer_closes") {
                lab.metric(Metric::new("relay slow_consumer_closes", "conns", n));
            }
        }
        Err(e) => lab.note(e),
    }
    lab.metric(Metric::new(
        "relay survived",
        "yes=1",
        if survived { 1.0 } else { 0.0 },
    ));
    Ok(())
}

fn report_memory(lab: &Lab<'_>, memory: proc::Memory, conns: u32, rooms: u32) {
    let bound_kib = formula::formula_bytes(conns.into(), rooms.into(), MAX_MESSAGE) as f64 / 1024.0;
    let peak = memory.hwm_kib as f64;
    lab.metric(Metric::new("peak rss (VmHWM)", "KiB", peak));
    lab.metric(Metric::new("formula bound", "KiB", bound_kib));
    lab.metric(Metric::new("peak / bound", "%", 100.0 * peak / bound_kib));
}

/// Who the readers saw leave: non-readers (expected, closed with 1013) and
/// readers (never expected).
fn report_evictions(lab: &Lab<'_>, tally: &Tally, rooms: u32) {
    let left = tally.left.borrow();
    let non_readers = left
        .iter()
        .filter(|u| u.starts_with(NON_READER_PREFIX))
        .count();
    let readers = left.len() - non_readers;
    lab.metric(Metric::new(
        format!("non-readers closed (of {rooms})"),
        "conns",
        non_readers as f64,
    ));
    lab.metric(Metric::new("readers evicted", "conns", readers as f64));
}
