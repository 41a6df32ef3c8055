//! The read side of a session: frames from tungstenite over the socket
//! reader, charged to the per-connection budgets, parsed by the protocol in
//! the connection's dialect, and dispatched: joins and leaves through the
//! relay, room frames from the sender the hub names to the outbound side.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{self, Message};
use smol::stream::Stream;

use super::{READ_BATCH, Session};
use crate::clock;
use crate::conns::{Close, ConnId, Conns};
use crate::hub::Speaker;
use crate::limits::Budget;
use crate::outbound::Outbound;
use crate::protocol::{self, ErrorCode, Request};
use crate::relay::Relay;
use crate::ws_reader::{WsIo, ws_config};

/// The request budgets (the frame budget is checked for every frame).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `message` and `reaction`.
    Messages,
    Joins,
}

/// Per-connection budgets (message + reaction, join, all frames). Kept by
/// the session only while one of them is not full (`Session::budgets`).
#[derive(Default)]
pub(super) struct Budgets {
    pub(super) messages: Budget,
    pub(super) joins: Budget,
    frames: Budget,
}

impl Budgets {
    /// Budgets as new: every bucket full.
    pub(super) const FULL: Budgets = Budgets {
        messages: Budget::new(),
        joins: Budget::new(),
        frames: Budget::new(),
    };

    /// Whether every bucket is full at `now`.
    fn all_full(&self, now: u64) -> bool {
        [&self.messages, &self.joins, &self.frames]
            .iter()
            .all(|b| b.is_full(now))
    }
}

impl Session {
    /// Reads and handles up to `READ_BATCH` frames. Ready(()) when the peer is gone.
    pub(super) fn poll_frames(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A frame waiting for its share of the read budget: not even the
        // socket's readiness matters until the share is there.
        if let Some(ws) = self.ws.as_mut()
            && !ws.get_mut().take_share(cx)
        {
            return Poll::Pending;
        }
        // Woken to write, with tungstenite holding no complete frame: skip the
        // whole read path unless the socket has news.
        if !self.may_have_frames {
            if self.poll_readable(cx).is_pending() {
                self.release_full_budgets();
                return Poll::Pending;
            }
            self.may_have_frames = true;
        }
        for _ in 0..READ_BATCH {
            match Pin::new(self.reader()).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    if self.charge_frames(1) {
                        self.on_message(msg);
                    }
                    self.messages_read = self.messages_read.wrapping_add(1);
                    let read = self.messages_read;
                    if self.reader().get_mut().frames_mut().take_fresh(read) {
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
                    let frames = self.reader().get_ref().frames();
                    let (oversize, at_rest) = (frames.oversize(), frames.at_rest());
                    // A fragment's header may already show the message is
                    // too large: no need to wait for the fragment.
                    if oversize {
                        self.refuse_oversize();
                        return Poll::Pending;
                    }
                    // Between messages tungstenite holds nothing: its state
                    // goes until the socket has data again.
                    if at_rest {
                        self.ws = None;
                        self.release_full_budgets();
                    }
                    if self.waits_for_share() {
                        return Poll::Pending;
                    }
                    // Wait for readiness with this task's own waker; data
                    // that came meanwhile is read at once.
                    if self.poll_readable(cx).is_pending() {
                        self.may_have_frames = false;
                        return Poll::Pending;
                    }
                    continue;
                }
            }
            if self.reader().get_ref().frames().oversize() {
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

    /// Charges frames to the frame budget: `messages` (0 or 1) for the
    /// frame that completed a message, plus the fragments read since the
    /// last call, which tungstenite joins without handing them out. Past the
    /// budget the connection is closed with 1008 and a strike counted; false
    /// then.
    fn charge_frames(&mut self, messages: u32) -> bool {
        let Some(ws) = self.ws.as_mut() else {
            return true;
        };
        let frames = messages + ws.get_mut().frames_mut().take_fragments();
        if frames == 0 {
            return true;
        }
        let now = clock::now_micros();
        let limit = self.cfg.frame_limit;
        let budgets = self.budgets_mut();
        if (0..frames).all(|_| budgets.frames.try_take(limit, now)) {
            return true;
        }
        self.refuse_flood();
        false
    }

    /// The budgets, made (full) if the session held none.
    fn budgets_mut(&mut self) -> &mut Budgets {
        self.budgets.get_or_insert_with(Box::default)
    }

    /// While idle: budgets that are all full again are let go (rate limits
    /// are cold state: an idle connection holds none). Checked against the
    /// last clock reading, not the clock: it runs on every wake-up to write.
    fn release_full_budgets(&mut self) {
        if self
            .budgets
            .as_ref()
            .is_some_and(|b| b.all_full(clock::recent_micros()))
        {
            self.budgets = None;
        }
    }

    /// Takes a token from a request budget.
    fn take(&mut self, limit: Limit, now: u64) -> bool {
        match limit {
            Limit::Messages => {
                let limit = self.cfg.message_limit;
                self.budgets_mut().messages.try_take(limit, now)
            }
            Limit::Joins => {
                let limit = self.cfg.join_limit;
                self.budgets_mut().joins.try_take(limit, now)
            }
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
                relay.send_control(self.id, &crate::frame::pong_control_frame(&payload))
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

    /// Replaces tungstenite's state by a fresh one, giving back the read
    /// buffer a large message grew. Called only when tungstenite holds no
    /// unread byte and no partial message ([`crate::ws_reader::FrameTracker::take_fresh`]).
    fn renew_reader(&mut self) {
        let io = self.reader().get_ref().renewed();
        self.replace_reader(io);
    }

    /// Builds a fresh tungstenite stream over `io`.
    pub(super) fn replace_reader(&mut self, io: WsIo) {
        let role = tungstenite::protocol::Role::Server;
        let fresh = WebSocketStream::from_raw_socket(io, role, Some(ws_config(&self.cfg)));
        let mut fresh = std::pin::pin!(fresh);
        // Building the stream does no I/O: it is ready at once.
        if let Poll::Ready(ws) = fresh
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            self.ws = Some(Box::new(ws));
            self.messages_read = 0;
        }
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
