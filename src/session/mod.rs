//! Step 2 of a message's path: the session, one WebSocket connection after
//! the upgrade, driven as one future.
//!
//! - this file: the connection's life: each poll reads (unless pacing holds
//!   reading back), flushes what is queued for the connection, and runs the
//!   close sequence;
//! - `read.rs`: frames from tungstenite over the socket reader ([`WsIo`]),
//!   the per-connection budgets, the protocol's typed request in the
//!   connection's dialect (whose state the session keeps), and dispatch:
//!   membership to the [hub](crate::hub), frames to the
//!   [outbound side](crate::outbound);
//! - `refuse.rs`: error replies, rate limiting and the closes for floods,
//!   oversize messages and framing errors.
//!
//! A session is one hand-written future rather than a reader task and a
//! writer task: one allocation per connection, and one wake-up serves both
//! directions. Reading is gated on socket readiness so that being woken to
//! write never costs an extra `read` syscall.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{self, Message};
use smol::stream::Stream;
use smol::{Async, Timer};

use crate::config::Config;
use crate::conns::{Close, ConnId};
use crate::protocol::DialectState;
use crate::relay::Relay;
use crate::ws_reader::{WsIo, ws_config};
use read::Budgets;
#[cfg(test)]
pub(crate) use read::speak;

mod read;
mod refuse;

/// Frames handled in one poll before yielding to other tasks, so one busy
/// connection cannot starve the writers of the rooms it feeds.
const READ_BATCH: usize = 16;
/// How long a closing connection may take to flush its close frame (and, for
/// a server-initiated close, to answer it) before the TCP connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Kernel send buffer of every client socket (Linux doubles it). Fixed rather
/// than autotuned up to megabytes: it bounds the kernel memory a client that
/// stops reading can pin, and makes such a client visible as slow sooner.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// A WebSocket connection's future. It completes when the connection is done;
/// dropping it removes the connection from the relay.
pub struct Session {
    id: ConnId,
    relay: Rc<RefCell<Relay>>,
    cfg: Rc<Config>,
    sock: Arc<Async<TcpStream>>,
    /// tungstenite's state, held only while a frame may be under way: none
    /// while the connection is idle between messages (see [`crate::ws_reader`]).
    ws: Option<Box<Ws>>,
    /// The request and frame budgets while one of them is not full; none
    /// while idle with full budgets (cold state, out of the session's layout).
    budgets: Option<Box<Budgets>>,
    /// The dialect its frames are read and answered in, and whether a frame
    /// fixed it.
    dialect: DialectState,
    /// The peer sent its close frame: once ours is out, the TCP connection
    /// can be closed.
    peer_closed: bool,
    /// tungstenite reported an error: its framing can no longer be trusted,
    /// so what follows is read raw and discarded.
    stream_broken: bool,
    /// Our close frame is out and the write side is shut.
    write_shut: bool,
    /// tungstenite may hold a complete frame or the socket may be readable;
    /// false only after tungstenite asked for more bytes.
    may_have_frames: bool,
    /// Messages tungstenite returned since it was (re)built.
    messages_read: u32,
    /// The grace period of a close that could not finish at once (rare:
    /// boxed, out of the session's own layout).
    deadline: Option<Box<Timer>>,
}

/// tungstenite's stream over the socket reader.
type Ws = WebSocketStream<WsIo>;

impl Session {
    /// Wraps an upgraded socket. `leftover` holds bytes read past the request head.
    pub async fn new(
        id: ConnId,
        relay: Rc<RefCell<Relay>>,
        cfg: Rc<Config>,
        sock: Arc<Async<TcpStream>>,
        leftover: Vec<u8>,
    ) -> Session {
        // The socket's send buffer size and TCP_NODELAY were inherited from
        // the listener (`server::tune_listener`).
        // The client waits for the 101 before it sends frames: unless it
        // sent some early, there is no tungstenite state until the socket
        // is readable.
        let (budget, dialect) = {
            let relay = relay.borrow();
            (relay.read_budget.clone(), relay.conns.dialect(id))
        };
        let early = !leftover.is_empty();
        let ws = if early {
            let mut io = WsIo::new(sock.clone(), true, cfg.max_message_size, budget);
            // Bytes read with the request head reach tungstenite directly.
            io.observe(&leftover);
            let role = tungstenite::protocol::Role::Server;
            let config = Some(ws_config(&cfg));
            let ws = WebSocketStream::from_partially_read(io, leftover, role, config).await;
            Some(Box::new(ws))
        } else {
            None
        };
        Session {
            id,
            relay,
            cfg,
            sock,
            ws,
            budgets: None,
            dialect: DialectState::starting(dialect),
            peer_closed: false,
            stream_broken: false,
            write_shut: false,
            may_have_frames: early,
            messages_read: 0,
            deadline: None,
        }
    }

    /// tungstenite's stream, built over a fresh reader if the connection
    /// was idle (the socket is then tried at once).
    fn reader(&mut self) -> &mut Ws {
        if self.ws.is_none() {
            let budget = self.relay.borrow().read_budget.clone();
            let io = WsIo::new(self.sock.clone(), true, self.cfg.max_message_size, budget);
            self.replace_reader(io);
        }
        self.ws.as_mut().expect("a reader was just built")
    }

    /// Whether the reader waits for a share of the read budget (its waker
    /// is registered there) rather than for the socket.
    fn waits_for_share(&self) -> bool {
        (self.ws.as_ref()).is_some_and(|ws| ws.get_ref().frames().share_needed().is_some())
    }

    /// After tungstenite asked for more bytes: waits for the socket to be
    /// readable with this task's own waker. Ready when it is (the reader, if
    /// any, is told to read again).
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = std::task::ready!(self.sock.poll_readable(cx));
        if let Some(ws) = self.ws.as_mut() {
            ws.get_mut().set_readable();
        }
        Poll::Ready(())
    }

    /// One poll: read unless paced, flush, and close once the close frame
    /// is out. Ready when the connection is done.
    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let close = self.relay.borrow().conns.close_state(self.id);
        match close {
            Close::Drop => return Poll::Ready(()),
            Close::Open => {
                // Pacing: while much is queued for this connection, its
                // frames wait in the kernel and TCP slows the sender down.
                let paced = {
                    let mut relay = self.relay.borrow_mut();
                    let paced = relay.is_paced(self.id);
                    relay.conns.set_paused(self.id, paced);
                    paced
                };
                if !paced && self.poll_frames(cx).is_ready() {
                    return Poll::Ready(());
                }
                // A reset or a dead peer: leave at once.
                if self.relay.borrow().conns.close_state(self.id) == Close::Drop {
                    return Poll::Ready(());
                }
            }
            Close::Drain(..) | Close::Now(..) => {}
        }
        let close_sent = {
            let mut relay = self.relay.borrow_mut();
            match self.poll_flush(&mut relay, cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => relay.outbound.close_sent(self.id),
                Poll::Pending => false,
            }
        };
        {
            let mut relay = self.relay.borrow_mut();
            if relay.conns.is_paused(self.id) && !relay.is_paced(self.id) {
                // What held reading back went down: read again.
                relay.conns.set_paused(self.id, false);
                cx.waker().wake_by_ref();
            }
        }
        if close_sent {
            if self.peer_closed {
                return Poll::Ready(());
            }
            if !self.write_shut {
                self.write_shut = true;
                let _ = self.sock.get_ref().shutdown(Shutdown::Write);
            }
            if self.poll_linger(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        // A closing connection that could not finish at once gets a bounded
        // grace period; the timer is armed only then, so the common case (a
        // client's close answered in one write) costs no timer.
        if self.relay.borrow().conns.close_state(self.id) != Close::Open {
            let deadline = self
                .deadline
                .get_or_insert_with(|| Box::new(Timer::after(CLOSE_GRACE)));
            if Pin::new(&mut **deadline).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    /// Writes what is queued for this connection, putting its close frame
    /// in the queue once it is due. Ready when nothing is left.
    fn poll_flush(&self, relay: &mut Relay, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        loop {
            if relay.conns.close_state(id) != Close::Open {
                relay.queue_close_if_due(id);
            }
            let Relay {
                hub,
                outbound,
                conns,
                stats,
                ..
            } = &mut *relay;
            std::task::ready!(
                outbound.poll_flush(id, &self.sock, cx, conns, stats, |r| { hub.members(r) })
            )?;
            // Drained: a close may be due now.
            if relay.conns.close_state(id) != Close::Open && !relay.outbound.close_queued(id) {
                relay.queue_close_if_due(id);
                if relay.outbound.close_queued(id) {
                    continue;
                }
            }
            return Poll::Ready(Ok(()));
        }
    }

    /// After our close frame (and FIN): read and discard until the peer's
    /// close frame or EOF. Closing with unread bytes in the kernel's receive
    /// queue would send a TCP reset, and a client whose write then fails may
    /// never read the close frame it was sent. Ready when the peer is done.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..READ_BATCH {
            if self.stream_broken {
                return self.reader().get_mut().poll_discard(cx);
            }
            match Pin::new(self.reader()).poll_next(cx) {
                Poll::Pending => {
                    if self.waits_for_share() || self.poll_readable(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Poll::Ready(None | Some(Ok(Message::Close(_)))) => return Poll::Ready(()),
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(tungstenite::Error::Io(_)))) => return Poll::Ready(()),
                Poll::Ready(Some(Err(_))) => self.stream_broken = true,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Future for Session {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.relay.borrow_mut().conns.enter(this.id, cx.waker());
        let result = this.poll_session(cx);
        this.relay.borrow_mut().conns.exit();
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut relay) = self.relay.try_borrow_mut() {
            relay.remove_conn(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Per-connection state is part of the README's memory formula: keep it small.
    #[test]
    fn per_connection_state_stays_small() {
        let session = std::mem::size_of::<super::Session>();
        // Its slot in each table indexed by connection (the hub's seat is
        // a pointer).
        let conn = std::mem::size_of::<Option<crate::conns::Conn>>()
            + std::mem::size_of::<crate::outbound::outbox::Outbox>()
            + std::mem::size_of::<Option<Box<()>>>();
        // tungstenite's state is boxed, and held only while a frame is
        // under way.
        assert!(session <= 96, "Session is {session} bytes");
        assert!(conn <= 160, "a connection's table entries are {conn} bytes");
    }
}
