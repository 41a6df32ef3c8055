//! `fanout`: rooms of many members with one sender each, first at a fixed
//! offered rate, then closed-loop at the relay's maximum.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Lab, capacity_env, measure, traffic_metrics, unlimited_rates};
use crate::client::ConnectOptions;
use crate::relay::Relay;
use crate::traffic::{self, Control, Outbox, Seat, Tally};

/// Members read a lot: a buffer that takes a full vectored write of the relay.
const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 16 << 10,
    rcvbuf: None,
};
/// Filler characters per message: relayed frames of about 200 bytes.
pub const FILLER: usize = 32;

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let p = lab.params;
    let mut env = capacity_env(
        p.fanout_rooms * p.fanout_members,
        p.fanout_rooms,
        p.fanout_members,
    );
    unlimited_rates(&mut env);
    lab.with_relay(&env, async |relay: &mut Relay| phases(lab, relay).await)
        .await
}

async fn phases(lab: &Lab<'_>, relay: &Relay) -> Result<(), String> {
    let p = lab.params;
    let (rooms, members) = (p.fanout_rooms, p.fanout_members);
    let seats = (0..rooms * members)
        .map(|i| Seat {
            room: format!("fan{}", i % rooms),
            user: format!("u{i}"),
            opts: OPTS,
        })
        .collect();
    let joined =
        traffic::open_all(lab.ex, relay.addr, seats, p.setup_limit(rooms * members)).await?;
    let tally = Rc::new(Tally::default());
    let control = Rc::new(Control::default());
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (i, member) in joined.into_iter().enumerate() {
        let outbox = Outbox::new(i as u32, member.writer, members, FILLER);
        let receive = traffic::receive_loop(
            member.reader,
            outbox.clone(),
            tally.clone(),
            control.clone(),
        );
        readers.push(lab.ex.spawn(receive));
        // Seat i joins room i % rooms: the first `rooms` seats cover each once.
        if i < rooms as usize {
            senders.push(outbox);
        }
    }

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
