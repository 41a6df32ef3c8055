//! rtce2ee-whisper: a WebSocket relay for end-to-end encrypted chat rooms.
//!
//! The relay binary (`src/main.rs`) and the benchmark (`whisper-bench`) are thin
//! binaries over this library; the integration tests and the fuzz targets use its
//! framing and types. Everything runs on one `smol` executor thread: shared
//! state is `Rc<RefCell<…>>`, never behind a lock.
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | [`server`] | process lifecycle; `server::{admission, head, routes, refusals, timers}` take a connection from accept to upgrade |
//! | [`http`] | request heads, routing, response writing |
//! | [`ws_reader`] | step 1, the socket reader: frame tracking, the shared read budget |
//! | [`session`] | step 2, one connection: budgets, dispatch, the close sequence |
//! | [`protocol`] | step 3, a frame's text in, a typed request or an error code out; one file per dialect |
//! | [`hub`] | step 4, membership only: who is in which room |
//! | [`outbound`] | step 5, room logs, outboxes, pacing and eviction, step 6 the socket write |
//! | [`relay`] | the shared state (connections, hub, outbound, IP table, stats) and what spans its parts |
//! | [`conns`] | the connection table and its one [`conns::ConnId`] |
//! | [`history`], [`fdstore`] | catch-up retention, and its hand-over across restarts |
//! | [`frame`] | WebSocket framing, shared by the relay, tests, bench and fuzz targets |
//! | [`config`], [`limits`], [`status`], [`board`], [`page`] | settings, rate limits, health and metrics, the machine's facts, the embedded page |
//! | [`systemd`], [`shutdown`], [`logging`], [`clock`], [`handshake`] | the operating system's side |
//!
//! # The path of one message
//!
//! 1. [`ws_reader::WsIo`] reads bytes under the read budget; tungstenite yields a frame.
//! 2. [`session`] charges the connection's budgets and asks [`protocol::parse_request`].
//! 3. The typed request goes to the [`hub`], which names the room and its members.
//! 4. [`outbound`] builds the frame once, appends it to the room log and wakes readers.
//! 5. Each member's session flushes its outbox with one vectored write.
#![warn(missing_docs)]

pub mod board;
pub mod clock;
pub mod config;
pub mod conns;
pub mod fdstore;
pub mod footprint;
pub mod frame;
pub mod handshake;
pub mod health_check;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod outbound;
pub mod page;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod systemd;
pub mod ws_reader;

/// Helpers shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;

    /// Counts the wakes of the waker made with it.
    pub(crate) struct WakeCount(pub(crate) AtomicUsize);

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A waker and the count of its wakes.
    pub(crate) fn counting_waker() -> (Arc<WakeCount>, Waker) {
        let count = Arc::new(WakeCount(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }
}
