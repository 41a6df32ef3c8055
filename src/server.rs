//! The process lifecycle: signal handlers, the executor, systemd's
//! notifications, and the shutdown sequence around the listener.
//!
//! The listener's work is split by concern, in the order a connection meets
//! it (the timers run beside):
//!
//! | module | concern |
//! |---|---|
//! | `admission` | listener tuning, the accept loop, the HTTP-phase table and its per-IP shares |
//! | `head` | reading one request head (deadline, minimum rate, eviction) and the lingering replies |
//! | `routes` | what a head asks for, the upgrade checks, the client's address, the status snapshot |
//! | `refusals` | every refusal of the HTTP phase as one table: status, code, message, header, counter |
//! | `timers` | heartbeat, stall sweep, watchdog, and the wait for connections to close at shutdown |

mod admission;
mod head;
mod refusals;
mod routes;
mod timers;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use smol::LocalExecutor;
use smol::future::FutureExt;

use crate::config::Config;
use crate::fdstore::{self, Restored};
use crate::relay::Relay;
use crate::status::HttpPhase;
use crate::{shutdown, systemd};

/// What every task of the server shares.
struct Shared {
    cfg: Rc<Config>,
    hub: Rc<RefCell<Relay>>,
    ex: Rc<LocalExecutor<'static>>,
    /// Connections whose request head is being read (`HTTP_PENDING_LIMIT`).
    table: admission::Table,
    /// Answered connections waiting for the client to close (at most
    /// `HTTP_PENDING_LIMIT` wait; past that they close at once).
    lingering: Cell<u32>,
    /// Counters for `/metrics` (`pending` is filled in by the snapshot).
    http_phase: RefCell<HttpPhase>,
}

impl Shared {
    /// `HANDSHAKE_TIMEOUT_SECS`: the head's deadline, and the bound on
    /// writing an answer.
    fn handshake_limit(&self) -> Duration {
        Duration::from_secs(self.cfg.handshake_timeout_secs.into())
    }
}

/// Runs the server on `listener`, with the catch-up history `restored` from
/// the previous process (or an empty one), until a shutdown signal; returns
/// the exit code.
pub fn run(cfg: Config, listener: std::net::TcpListener, restored: Restored) -> i32 {
    let signals = match shutdown::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let ex = Rc::new(LocalExecutor::new());
    let mut relay = Relay::new(&cfg);
    relay
        .outbound
        .install_history(restored.history, restored.ids);
    let shared = Rc::new(Shared {
        hub: Rc::new(RefCell::new(relay)),
        cfg: Rc::new(cfg),
        ex: ex.clone(),
        table: admission::Table::new(),
        lingering: Cell::new(0),
        http_phase: RefCell::new(HttpPhase::default()),
    });
    smol::block_on(ex.run(serve(shared, listener, signals)))
}

/// Serves until a signal (or the accept loop's end), then closes every
/// connection within `SHUTDOWN_TIMEOUT_SECS`.
async fn serve(
    shared: Rc<Shared>,
    listener: std::net::TcpListener,
    signals: shutdown::Signals,
) -> i32 {
    admission::tune_listener(&listener);
    let listener = match smol::Async::new(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot use the listening socket: {e}");
            return 1;
        }
    };
    if let Ok(addr) = listener.get_ref().local_addr() {
        log::info!("listening on {addr}");
    }
    let notify = systemd::Notifier::from_env();
    notify.send("READY=1\nSTATUS=serving, 0 connections");
    timers::start(&shared, &notify);

    let accepting = admission::accept_loop(shared.clone(), listener);
    let signal = signals.wait();
    let name = accepting.or(signal).await;
    log::info!("{name}: shutting down");
    notify.send("STOPPING=1\nSTATUS=shutting down");

    shared.hub.borrow_mut().begin_shutdown();
    timers::drain(&shared).await;
    hand_over(&shared, &notify);
    0
}

/// After the drain: the catch-up history to systemd's file descriptor
/// store, for the next process (see [`fdstore`]).
fn hand_over(shared: &Shared, notify: &systemd::Notifier) {
    let relay = shared.hub.borrow();
    let history = relay.outbound.history();
    match fdstore::hand_over(history, relay.outbound.ids(), notify) {
        Ok(true) => log::info!(
            "history handed to systemd: {} rooms, {} frames, {} bytes",
            history.rooms(),
            history.frames(),
            history.bytes()
        ),
        Ok(false) => {}
        Err(e) => log::warn!("history hand-over failed ({e}); the next start has none"),
    }
}
