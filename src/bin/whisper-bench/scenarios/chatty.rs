//! `chatty`: many small rooms in which every member talks.

use std::time::{Duration, Instant};

use super::{Lab, capacity_env, fanout::FILLER, measure, traffic_metrics, unlimited_rates};
use crate::client::ConnectOptions;
use crate::relay::Relay;
use crate::traffic::{self, Seat};
use crate::wire::Dialect;

const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 2 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let p = lab.params;
    let conns = p.chatty_rooms * p.chatty_members;
    let mut env = capacity_env(conns, p.chatty_rooms, p.chatty_members);
    // Two messages a second is over the default 30 a minute.
    unlimited_rates(&mut env);
    lab.with_relay(&env, async |relay: &mut Relay| talk(lab, relay).await)
        .await
}

async fn talk(lab: &Lab<'_>, relay: &Relay) -> Result<(), String> {
    let p = lab.params;
    let (rooms, members) = (p.chatty_rooms, p.chatty_members);
    let conns = rooms * members;
    let seats = (0..conns)
        .map(|i| Seat {
            room: format!("chat{}", i % rooms),
            user: format!("u{i}"),
            opts: OPTS,
        })
        .collect();
    let joined = traffic::open_all(lab.ex, relay.addr, seats, p.setup_limit(conns)).await?;
    let crowd = traffic::start_receivers(lab.ex, joined, members, FILLER);
    let (tally, control) = (crowd.tally.clone(), crowd.control.clone());
    let (outboxes, readers) = (crowd.outboxes, crowd.readers);
    let period = Duration::from_secs_f64(1.0 / p.chatty_rate);
    let phase = measure(lab, relay, &tally, &control, p.chatty_phase, || {
        let first = Instant::now();
        outboxes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                // Members start evenly spread over one period.
                let at = first + period.mul_f64(k as f64 / conns as f64);
                let send =
                    traffic::send_every(s.clone(), tally.clone(), control.clone(), at, period);
                lab.ex.spawn(send)
            })
            .collect()
    })
    .await;
    traffic_metrics(lab, "", &phase, &tally);
    traffic::cancel_all(readers).await;
    Ok(())
}
