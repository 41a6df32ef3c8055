//! `fanout`: rooms of many members with one sender each, first at a fixed
//! offered rate, then closed-loop at the relay's maximum.

use std::time::{Duration, Instant};

use super::{Lab, capacity_env, measure, traffic_metrics, unlimited_rates};
use crate::client::ConnectOptions;
use crate::relay::Relay;
use crate::traffic::{self, Seat};
use crate::wire::Dialect;

/// Members read a lot: a buffer that takes a full vectored write of the relay.
const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 16 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};
/// Filler characters per message: relayed frames of about 200 bytes.
pub const FILLER: usize = 32;

/// Runs both phases with clients of `dialect`.
pub async fn run(lab: &Lab<'_>, dialect: Dialect) -> Result<(), String> {
    let p = lab.params;
    let mut env = capacity_env(
        p.fanout_rooms * p.fanout_members,
        p.fanout_rooms,
        p.fanout_members,
    );
    unlimited_rates(&mut env);
    lab.with_relay(&env, async |relay: &mut Relay| {
        phases(lab, relay, dialect).await
    })
    .await
}

async fn phases(lab: &Lab<'_>, relay: &Relay, dialect: Dialect) -> Result<(), String> {
    let p = lab.params;
    let (rooms, members) = (p.fanout_rooms, p.fanout_members);
    let seats = (0..rooms * members)
        .map(|i| Seat {
            room: format!("fan{}", i % rooms),
            user: format!("u{i}"),
            opts: ConnectOptions { dialect, ..OPTS },
        })
        .collect();
    let joined =
        traffic::open_all(lab.ex, relay.addr, seats, p.setup_limit(rooms * members)).await?;
    // A legacy sender gets no echo of its own messages.
    let receivers = match dialect {
        Dialect::V2 => members,
        Dialect::Legacy => members - 1,
    };
    let crowd = traffic::start_receivers(lab.ex, joined, receivers, FILLER);
    let (tally, control) = (crowd.tally.clone(), crowd.control.clone());
    // Seat i joins room i % rooms: the first `rooms` seats cover each once.
    let senders = crowd.outboxes[..rooms as usize].to_vec();
    if dialect == Dialect::Legacy {
        // Without echoes, the room's next member paces the closed loop.
        for (k, sender) in senders.iter().enumerate() {
            sender.set_pacer(k as u32 + rooms);
        }
    }
    let readers = crowd.readers;

    let period = Duration::from_secs(1) / p.fanout_rate;
    let phase = measure(lab, relay, &tally, &control, p.fanout_phase, || {
        let first = Instant::now();
        senders
            .iter()
            .enumerate()
            .map(|(k, s)| {
                // Spread the senders over one period.
                let at = first + period * k as u32 / rooms;
                let send =
                    traffic::send_every(s.clone(), tally.clone(), control.clone(), at, period);
                lab.ex.spawn(send)
            })
            .collect()
    })
    .await;
    traffic_metrics(lab, &format!("{}/s/sender ", p.fanout_rate), &phase, &tally);

    tally.reset();
    control.closed_loop.set(true);
    let phase = measure(lab, relay, &tally, &control, p.fanout_phase, || {
        senders
            .iter()
            .map(|s| {
                lab.ex.spawn(traffic::send_burst(
                    s.clone(),
                    tally.clone(),
                    p.fanout_window,
                ))
            })
            .collect()
    })
    .await;
    traffic_metrics(lab, &format!("max W={} ", p.fanout_window), &phase, &tally);
    traffic::cancel_all(readers).await;
    Ok(())
}
