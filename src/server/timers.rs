//! The server's clocks: the heartbeat, the stall sweep and the systemd
//! watchdog while serving, and the wait for connections to close at
//! shutdown.

use std::rc::Rc;
use std::time::Duration;

use smol::Timer;
use smol::future::FutureExt;

use super::Shared;
use crate::{clock, systemd};

/// Taken off `SHUTDOWN_TIMEOUT_SECS` for the way in and out of the drain.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(200);

/// How often stalled sockets are looked for and paused senders re-checked.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

/// Starts the timers that run while serving: the heartbeat, the stall sweep,
/// and the watchdog when systemd asks for one.
pub(super) fn start(shared: &Rc<Shared>, notify: &systemd::Notifier) {
    shared.ex.spawn(heartbeat(shared.clone())).detach();
    shared.ex.spawn(stall_sweep(shared.clone())).detach();
    if let Some(period) = notify.watchdog_period() {
        shared
            .ex
            .spawn(watchdog(shared.clone(), notify.clone(), period))
            .detach();
    }
}

/// The heartbeat's tick and how long (µs) a connection may stay silent, for
/// a ping every `interval_secs`: four ticks an interval, silent for 2.5
/// intervals.
fn heartbeat_timing(interval_secs: u32) -> (Duration, u64) {
    let interval_us = u64::from(interval_secs) * 1_000_000;
    (Duration::from_micros(interval_us / 4), interval_us * 5 / 2)
}

/// Pings every connection each interval and drops those silent for 2.5
/// intervals. Ticks four times per interval so the drop is timely.
async fn heartbeat(shared: Rc<Shared>) {
    let (tick, dead_after) = heartbeat_timing(shared.cfg.heartbeat_interval_secs);
    let mut n: u64 = 0;
    loop {
        Timer::after(tick).await;
        n += 1;
        let mut hub = shared.hub.borrow_mut();
        if hub.shutting_down {
            return;
        }
        hub.heartbeat(clock::now_micros(), n % 4 == 0, dead_after);
    }
}

/// Four times a second, closes the connections whose sockets took no byte for the
/// stall time while bytes waited (`SLOW_CONSUMER_STALL_SECS`), and drops
/// catch-up history older than `HISTORY_SECS`.
async fn stall_sweep(shared: Rc<Shared>) {
    loop {
        Timer::after(SWEEP_PERIOD).await;
        let mut hub = shared.hub.borrow_mut();
        if hub.shutting_down {
            return;
        }
        hub.evict_stalled(clock::now_micros());
        hub.outbound.expire_history();
    }
}

/// Sends `WATCHDOG=1` from the event loop itself, so a stuck loop stops the pings.
async fn watchdog(shared: Rc<Shared>, notify: systemd::Notifier, period: Duration) {
    loop {
        Timer::after(period).await;
        let (conns, rooms, stopping) = {
            let hub = shared.hub.borrow();
            (
                hub.open_connections(),
                hub.active_rooms(),
                hub.shutting_down,
            )
        };
        // The pings go on while the connections drain: the status says so.
        notify.send(&if stopping {
            format!("WATCHDOG=1\nSTATUS=shutting down, {conns} connections left")
        } else {
            format!("WATCHDOG=1\nSTATUS=serving, {conns} connections in {rooms} rooms")
        });
    }
}

/// Waits, once the shutdown has begun, until every connection is closed or
/// `SHUTDOWN_TIMEOUT_SECS` (less a margin) has passed, and logs which.
pub(super) async fn drain(shared: &Shared) {
    // A margin for noticing the signal and for the exit itself, so the
    // process is gone within SHUTDOWN_TIMEOUT_SECS of the signal.
    let limit = Duration::from_secs(shared.cfg.shutdown_timeout_secs.into())
        .saturating_sub(SHUTDOWN_MARGIN);
    let drained = async {
        while !shared.hub.borrow().all_closed() {
            Timer::after(Duration::from_millis(20)).await;
        }
        true
    };
    let in_time = drained.or(async {
        Timer::after(limit).await;
        false
    });
    if in_time.await {
        log::info!("all connections closed");
    } else {
        let left = shared.hub.borrow().open_connections();
        log::warn!("shutdown timeout: dropping {left} connections");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_ticks_four_times_an_interval() {
        assert_eq!(
            heartbeat_timing(30),
            (Duration::from_millis(7_500), 75_000_000)
        );
        assert_eq!(heartbeat_timing(1), (Duration::from_millis(250), 2_500_000));
    }
}
