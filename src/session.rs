//! Step 2 of a message's path: the session, one WebSocket connection after
//! the upgrade. It reads frames through async-tungstenite over the socket
//! reader ([`WsIo`]), charges the per-connection budgets, has the protocol
//! turn each text frame into a typed request (keeping the connection's
//! dialect state), and dispatches it: membership to the
//! [hub](crate::hub), frames to the [`Outbound`] side. It also flushes what is queued for its connection
//! and runs its close sequence.
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
use async_tungstenite::tungstenite::{self, Message, error::CapacityError};
use smol::stream::Stream;
use smol::{Async, Timer};

use crate::clock;
use crate::config::Config;
use crate::limits::Budget;

use crate::conns::{Close, ConnId, Conns};
use crate::hub::Speaker;
use crate::outbound::Outbound;
use crate::protocol::{self, Dialect, ErrorCode, Reading, Request};
use crate::relay::Relay;
use crate::ws_reader::{WsIo, ws_config};

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

/// The request budgets (the frame budget is checked for every frame).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `message` and `reaction`.
    Messages,
    Joins,
}

/// Per-connection budgets (message + reaction, join, all frames).
#[derive(Default)]
struct Budgets {
    messages: Budget,
    joins: Budget,
    frames: Budget,
}

/// A WebSocket connection's future. It completes when the connection is done;
/// dropping it removes the connection from the relay.
pub struct Session {
    id: ConnId,
    relay: Rc<RefCell<Relay>>,
    cfg: Rc<Config>,
    sock: Arc<Async<TcpStream>>,
    ws: WebSocketStream<WsIo>,
    budgets: Budgets,
    /// The dialect its frames are read and answered in, and whether a frame
    /// fixed it.
    dialect: Reading,
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
    deadline: Option<Timer>,
}

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
        // sent some early, wait for readiness instead of trying a read.
        let (budget, dialect) = {
            let relay = relay.borrow();
            (relay.read_budget.clone(), relay.conns.dialect(id))
        };
        let mut io = WsIo::new(
            sock.clone(),
            !leftover.is_empty(),
            cfg.max_message_size,
            budget,
        );
        // Bytes read with the request head reach tungstenite directly.
        io.observe(&leftover);
        let role = tungstenite::protocol::Role::Server;
        let config = Some(ws_config(&cfg));
        let ws = if leftover.is_empty() {
            WebSocketStream::from_raw_socket(io, role, config).await
        } else {
            WebSocketStream::from_partially_read(io, leftover, role, config).await
        };
        Session {
            id,
            relay,
            cfg,
            sock,
            ws,
            budgets: Budgets::default(),
            dialect: Reading::starting(dialect),
            peer_closed: false,
            stream_broken: false,
            write_shut: false,
            may_have_frames: true,
            messages_read: 0,
            deadline: None,
        }
    }

    /// Sends an error with its standard text; those the contract counts as
    /// strikes are counted.
    fn reject(&self, relay: &mut Relay, code: ErrorCode) {
        self.reject_without_strike(relay, code);
        if code.is_strike() {
            let ip = relay.conns.ip_of(self.id);
            relay.strike(ip);
        }
    }

    /// Sends an error with its standard text, never counting a strike.
    fn reject_without_strike(&self, relay: &mut Relay, code: ErrorCode) {
        relay.stats.protocol_errors += 1;
        relay.send_error(self.id, self.dialect.dialect, code);
    }

    /// `RATE_LIMITED` for a request whose budget is spent: the text says when
    /// to retry; legacy message budgets add `resetTime` in milliseconds.
    fn reject_rate_limited(&self, relay: &mut Relay, limit: Limit, what: &str, now: u64) {
        let (budget, per_minute) = match limit {
            Limit::Messages => (&self.budgets.messages, self.cfg.message_limit),
            Limit::Joins => (&self.budgets.joins, self.cfg.join_limit),
        };
        let wait = budget.retry_after_secs(per_minute, now);
        let text = format!("too many {what} frames; retry in {wait} s");
        let dialect = self.dialect.dialect;
        let reset_ms = (limit == Limit::Messages && dialect == Dialect::Legacy)
            .then(|| budget.retry_after_millis(per_minute, now));
        relay.stats.protocol_errors += 1;
        relay.stats.rate_limited += 1;
        let code = ErrorCode::RateLimited;
        relay.send_error_text(self.id, dialect, code, &text, reset_ms);
        let ip = relay.conns.ip_of(self.id);
        relay.strike(ip);
    }

    /// Takes a token from a request budget.
    fn take(&mut self, limit: Limit, now: u64) -> bool {
        match limit {
            Limit::Messages => self.budgets.messages.try_take(self.cfg.message_limit, now),
            Limit::Joins => self.budgets.joins.try_take(self.cfg.join_limit, now),
        }
    }

    fn on_message(&mut self, msg: Message) {
        let relay_rc = self.relay.clone();
        let mut relay = relay_rc.borrow_mut();
        let now = clock::now_micros();
        relay.conns.touch(self.id, now);
        match msg {
            Message::Text(text) => self.on_text(&mut relay, text.as_str(), now),
            Message::Binary(_) => self.reject(&mut relay, ErrorCode::InvalidMessage),
            Message::Ping(payload) => {
                relay.send_control(self.id, &protocol::pong_control_frame(&payload))
            }
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                self.peer_closed = true;
                let code = frame.map(|f| u16::from(f.code)).unwrap_or(1000);
                // Echo the peer's code, as RFC 6455 suggests.
                let code = if matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999) {
                    code
                } else {
                    1000
                };
                relay.begin_close(self.id, Close::Now(code, ""));
            }
        }
    }

    /// One text frame, in either dialect: parsed into one typed request (the
    /// frame may fix the connection's dialect), then checked in the
    /// contract's order: budget, membership, then the body's own errors.
    fn on_text(&mut self, relay: &mut Relay, text: &str, now: u64) {
        let before = self.dialect.dialect;
        let parsed = protocol::parse_request(text, &mut self.dialect);
        if self.dialect.dialect != before {
            relay.conns.set_dialect(self.id, self.dialect.dialect);
        }
        let req = match parsed {
            Ok(req) => req,
            Err(code) => return self.reject(relay, code),
        };
        let budget = match &req {
            Request::Join(_) => Some(Limit::Joins),
            Request::Message(_) | Request::Reaction(_) => Some(Limit::Messages),
            _ => None,
        };
        if let Some(limit) = budget
            && !self.take(limit, now)
        {
            return self.reject_rate_limited(relay, limit, req.name(), now);
        }
        if let Err(code) = self.dispatch(relay, req) {
            self.reject(relay, code);
        }
    }

    /// Carries out a request within its budget: joins and leaves through the
    /// relay; a room frame from the sender the hub names, queued by the
    /// outbound side.
    fn dispatch(&self, relay: &mut Relay, req: Request<'_>) -> Result<(), ErrorCode> {
        let id = self.id;
        let dialect = self.dialect.dialect;
        let outside = !relay.hub.in_room(id);
        match req {
            Request::Ping => {
                relay.send_pong(id);
                Ok(())
            }
            Request::Join(join) => relay.join(id, dialect, join?),
            // Legacy ignores these outside a room.
            Request::Leave | Request::Typing(_) if outside && dialect.quiet_outside_room() => {
                Ok(())
            }
            Request::Leave | Request::Message(_) | Request::Typing(_) if outside => {
                Err(ErrorCode::NotInRoom)
            }
            Request::Leave => relay.leave(id),
            Request::Message(content) => {
                let content = content?;
                speak(relay, id, |out, from, conns| {
                    out.relay_message(from, &content, conns)
                })?;
                relay.stats.messages_relayed += 1;
                Ok(())
            }
            Request::Typing(flag) => {
                let flag = flag?;
                speak(relay, id, |out, from, conns| out.typing(from, flag, conns))
            }
            // Validated first, then NOT_IN_ROOM (from the hub).
            Request::Reaction(reaction) => {
                let reaction = reaction?;
                speak(relay, id, |out, from, conns| {
                    out.reaction(from, &reaction, conns)
                })?;
                relay.stats.reactions_relayed += 1;
                Ok(())
            }
            Request::FileTransfer => {
                self.reject_without_strike(relay, ErrorCode::InvalidMessage);
                Ok(())
            }
            Request::Unknown => Err(ErrorCode::InvalidMessage),
        }
    }

    fn on_error(&mut self, err: tungstenite::Error) {
        let frames = self.ws.get_ref().frames();
        let close = match err {
            // tungstenite takes a length with its top bit set for a size.
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. })
                if frames.bad_length() =>
            {
                Close::Now(1002, "protocol error")
            }
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
                return self.refuse_oversize();
            }
            tungstenite::Error::Utf8(_) => Close::Now(1007, "invalid UTF-8"),
            tungstenite::Error::Protocol(_) | tungstenite::Error::Capacity(_) => {
                Close::Now(1002, "protocol error")
            }
            _ => Close::Drop,
        };
        self.relay.borrow_mut().begin_close(self.id, close);
        // The stream is unusable after an error; what follows is raw reading.
        self.stream_broken = true;
        self.abandon_reader();
    }

    /// A message over `RATE_LIMIT_MAX_MESSAGE_SIZE`: `MESSAGE_TOO_LARGE`, a
    /// strike and close 1009. Reading goes on raw, discarding the rest.
    fn refuse_oversize(&mut self) {
        let mut relay = self.relay.borrow_mut();
        if relay.conns.close_state(self.id) == Close::Open {
            relay.stats.oversize_messages += 1;
            relay.send_error(self.id, self.dialect.dialect, ErrorCode::MessageTooLarge);
            relay.begin_close(self.id, Close::Now(1009, "message too large"));
            let ip = relay.conns.ip_of(self.id);
            relay.strike(ip);
        }
        drop(relay);
        self.stream_broken = true;
        self.abandon_reader();
    }

    /// Charges frames to the frame budget: `messages` (0 or 1) for the
    /// frame that completed a message, plus the fragments read since the
    /// last call, which tungstenite joins without handing them out. Past the
    /// budget the connection is closed with 1008 and a strike counted; false
    /// then.
    fn charge_frames(&mut self, messages: u32) -> bool {
        let frames = messages + self.ws.get_mut().frames_mut().take_fragments();
        if frames == 0 {
            return true;
        }
        let now = clock::now_micros();
        if (0..frames).all(|_| self.budgets.frames.try_take(self.cfg.frame_limit, now)) {
            return true;
        }
        let mut relay = self.relay.borrow_mut();
        if relay.conns.close_state(self.id) == Close::Open {
            relay.stats.flood_closes += 1;
            relay.begin_close(self.id, Close::Now(1008, "frame rate limit exceeded"));
            let ip = relay.conns.ip_of(self.id);
            relay.strike(ip);
        }
        false
    }

    /// Replaces tungstenite's state by a fresh one, giving back the read
    /// buffer a large message grew. Called only when tungstenite holds no
    /// unread byte and no partial message ([`crate::ws_reader::FrameTracker::take_fresh`]).
    fn renew_reader(&mut self) {
        let io = self.ws.get_ref().renewed();
        self.replace_reader(io);
    }

    /// After a framing error: tungstenite's state (and whatever partial
    /// message it holds) is dropped at once and its budget shares given
    /// back. The frame tracker is kept, as it still tells where the client's
    /// close frame is in what follows.
    fn abandon_reader(&mut self) {
        let io = self.ws.get_mut().abandoned();
        self.replace_reader(io);
    }

    /// Builds a fresh tungstenite stream over `io`.
    fn replace_reader(&mut self, io: WsIo) {
        let role = tungstenite::protocol::Role::Server;
        let fresh = WebSocketStream::from_raw_socket(io, role, Some(ws_config(&self.cfg)));
        let mut fresh = std::pin::pin!(fresh);
        // Building the stream does no I/O: it is ready at once.
        if let Poll::Ready(ws) = fresh
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            self.ws = ws;
            self.messages_read = 0;
        }
    }

    /// Reads and handles up to `READ_BATCH` frames. Ready(()) when the peer is gone.
    fn poll_frames(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A frame waiting for its share of the read budget: not even the
        // socket's readiness matters until the share is there.
        if !self.ws.get_mut().take_share(cx) {
            return Poll::Pending;
        }
        // Woken to write, with tungstenite holding no complete frame: skip the
        // whole read path unless the socket has news.
        if !self.may_have_frames {
            match self.sock.poll_readable(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(_) => {
                    // The readiness event is consumed here: tell the reader
                    // to try `read` rather than wait for another one.
                    self.may_have_frames = true;
                    self.ws.get_mut().set_readable();
                }
            }
        }
        for _ in 0..READ_BATCH {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    if self.charge_frames(1) {
                        self.on_message(msg);
                    }
                    self.messages_read = self.messages_read.wrapping_add(1);
                    if self
                        .ws
                        .get_mut()
                        .frames_mut()
                        .take_fresh(self.messages_read)
                    {
                        self.renew_reader();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.on_error(e);
                    return Poll::Pending;
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {
                    // tungstenite needs more bytes: nothing complete is
                    // buffered. Fragments read so far count already.
                    self.charge_frames(0);
                    self.may_have_frames = false;
                    // A fragment's header may already show the message is
                    // too large: no need to wait for the fragment.
                    if self.ws.get_ref().frames().oversize() {
                        self.refuse_oversize();
                    }
                    return Poll::Pending;
                }
            }
            if self.ws.get_ref().frames().oversize() {
                self.refuse_oversize();
                return Poll::Pending;
            }
            let mut relay = self.relay.borrow_mut();
            if relay.conns.close_state(self.id) != Close::Open {
                return Poll::Pending;
            }
            if relay.is_paced(self.id) {
                relay.conns.set_paused(self.id, true);
                return Poll::Pending;
            }
        }
        // More may be buffered: come back after the others had a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// After our close frame (and FIN): read and discard until the peer's
    /// close frame or EOF. Closing with unread bytes in the kernel's receive
    /// queue would send a TCP reset, and a client whose write then fails may
    /// never read the close frame it was sent. Ready when the peer is done.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..READ_BATCH {
            if self.stream_broken {
                return self.ws.get_mut().poll_discard(cx);
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None | Some(Ok(Message::Close(_)))) => return Poll::Ready(()),
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(tungstenite::Error::Io(_)))) => return Poll::Ready(()),
                Poll::Ready(Some(Err(_))) => self.stream_broken = true,
            }
        }
        cx.waker().wake_by_ref();
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
                .get_or_insert_with(|| Timer::after(CLOSE_GRACE));
            if Pin::new(deadline).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

/// A room frame from `id`: the hub names its room and members (`NOT_IN_ROOM`
/// outside one), `queue` has the outbound side build and queue the frame,
/// and the slow-consumer rules are applied to what grew.
pub(crate) fn speak(
    relay: &mut Relay,
    id: ConnId,
    queue: impl FnOnce(&mut Outbound, &Speaker<'_>, &Conns),
) -> Result<(), ErrorCode> {
    let Relay {
        hub,
        outbound,
        conns,
        ..
    } = &mut *relay;
    let from = hub.speaker(id).ok_or(ErrorCode::NotInRoom)?;
    queue(outbound, &from, conns);
    relay.settle();
    Ok(())
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
        // One slot in each table indexed by connection.
        let conn = std::mem::size_of::<Option<crate::conns::Conn>>()
            + std::mem::size_of::<crate::outbound::outbox::Outbox>()
            + std::mem::size_of::<Option<Box<()>>>();
        assert!(session <= 512, "Session is {session} bytes");
        assert!(conn <= 160, "a connection's table entries are {conn} bytes");
    }
}
