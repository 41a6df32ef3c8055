//! Step 5 of a message's path: the outbound side. Everything queued for the
//! connections, and the decisions about it:
//!
//! - this file: the [`Outbound`] state, the room frames (built once, with
//!   the message ids, and appended to the room's log) and the private
//!   replies of one connection;
//! - [`log`]: a room's log of frames;
//! - [`outbox`]: one connection's position in its room's log and its
//!   private buffer, and the flush that writes them;
//! - [`policy`]: pacing and the slow-consumer rules, decided from progress
//!   rather than from a momentarily full socket;
//! - [`write`](mod@write): step 6, the socket write itself;
//! - `catchup.rs`: catch-up (`PROTOCOL.md` section 7): relayed `message` and
//!   `reaction` frames retained in [`History`], and replays streamed to a
//!   joiner from those copies between its private buffer and its room log.
//!
//! The outbound side knows which log each connection reads, but not who is
//! in a room: callers pass a room's members from [`crate::hub`]. It decides
//! who is a slow consumer; closing one is [`crate::relay`]'s business.

mod catchup;
pub mod log;
pub mod outbox;
pub mod policy;
pub mod write;

#[cfg(test)]
mod tests;

use std::rc::Rc;

use crate::clock;
use crate::config::Config;
use crate::conns::{Close, ConnId, Conns};
use crate::frame::FrameBuilder;
use crate::history::{self, History, MessageIds};
use crate::hub::{RoomId, Speaker};
use crate::protocol::{self, Dialect, ErrorCode, Reaction};
use log::RoomLog;
use outbox::Outbox;
pub use policy::Policy;

/// A reply was not queued: the connection is over the per-connection bound
/// and is to be closed as a slow consumer.
#[derive(Debug, PartialEq, Eq)]
pub struct SlowConsumer;

/// Room logs and outboxes. See the module documentation.
pub struct Outbound {
    /// By room.
    logs: Vec<RoomLog>,
    /// By connection.
    boxes: Vec<Outbox>,
    frames: FrameBuilder,
    /// Message ids: a per-process prefix unlike the previous process's, so
    /// ids stay unique across restarts.
    ids: MessageIds,
    /// Catch-up: the retained frames of the rooms that asked for them.
    history: History,
    /// Bytes of every room log and unsent private buffer.
    queued_bytes: usize,
    policy: Policy,
    /// Rooms whose logs grew since the last [`take_grown`](Self::take_grown);
    /// when it overflows, every room is checked.
    grown: heapless::Vec<RoomId, 4>,
    grown_overflow: bool,
}

impl Outbound {
    /// Nothing queued, with the configured slow-consumer rules.
    pub fn new(cfg: &Config) -> Outbound {
        Outbound {
            logs: Vec::new(),
            // Reserved, not touched: untouched capacity costs no resident memory.
            boxes: Vec::with_capacity(cfg.max_connections as usize),
            frames: FrameBuilder::new(),
            ids: MessageIds::new(None),
            history: History::new(history::Limits::new(cfg)),
            queued_bytes: 0,
            policy: Policy::new(cfg),
            grown: heapless::Vec::new(),
            grown_overflow: false,
        }
    }

    /// Bytes of every room log and unsent private buffer.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    #[inline]
    fn outbox(&self, id: ConnId) -> &Outbox {
        &self.boxes[id.index()]
    }

    #[inline]
    fn log(&self, r: Option<RoomId>) -> Option<&RoomLog> {
        r.map(|r| &self.logs[r.index()])
    }

    /// Everything queued for `id`.
    #[inline]
    fn backlog(&self, id: ConnId) -> usize {
        let out = self.outbox(id);
        out.backlog(self.log(out.room))
    }

    // ------------------------------------------------------- connections

    /// An empty outbox for a new connection.
    pub fn open(&mut self, id: ConnId) {
        if id.index() == self.boxes.len() {
            self.boxes.push(Outbox::default());
        } else {
            self.boxes[id.index()] = Outbox::default();
        }
    }

    /// Forgets a connection that left its room: its unsent private bytes go.
    pub fn close(&mut self, id: ConnId) {
        let out = std::mem::take(&mut self.boxes[id.index()]);
        self.queued_bytes -= out.private_pending() + out.pinned_bytes();
    }

    /// Member `id` starts receiving room `r`'s log from its next entry.
    pub fn enter(&mut self, id: ConnId, r: RoomId) {
        if self.logs.len() <= r.index() {
            self.logs.resize_with(r.index() + 1, RoomLog::default);
        }
        let out = &mut self.boxes[id.index()];
        out.room = Some(r);
        out.enter(&self.logs[r.index()]);
    }

    /// Member `id` left room `r` (see [`Outbox::leave`] for what happens to
    /// its queue); with `emptied`, the room is gone and so is its log.
    /// Whether the log shrank below the pacing limit (its paused members
    /// may be read again).
    pub fn leave(&mut self, id: ConnId, r: RoomId, emptied: bool) -> bool {
        self.end_replay(id);
        let out = &mut self.boxes[id.index()];
        out.room = None;
        let log = &mut self.logs[r.index()];
        self.queued_bytes += out.leave(log, id);
        let before = log.bytes();
        self.queued_bytes -= log.trim();
        let eased = before > self.policy.pace && log.bytes() <= self.policy.pace;
        if emptied {
            self.queued_bytes -= std::mem::take(log).bytes();
        }
        eased
    }

    // --------------------------------------------------------- room frames

    /// Appends a frame to room `r`'s log, for every member but `target`
    /// (or, with `only`, for `target` alone) and wakes them. The policy is
    /// applied later, by the caller: evicting here could empty the room
    /// under its feet.
    fn push_entry(
        &mut self,
        r: RoomId,
        members: &[ConnId],
        frame: Rc<[u8]>,
        (target, only): (ConnId, bool),
        conns: &Conns,
    ) {
        let len = frame.len();
        let target_is_member = target != ConnId::NOBODY && members.contains(&target);
        let remaining = if only {
            u32::from(target_is_member)
        } else {
            members.len() as u32 - u32::from(target_is_member)
        };
        if remaining == 0 {
            return;
        }
        if self.logs.len() <= r.index() {
            self.logs.resize_with(r.index() + 1, RoomLog::default);
        }
        self.logs[r.index()].push(frame, target, only, remaining);
        self.queued_bytes += len;
        if !self.grown.contains(&r) && self.grown.push(r).is_err() {
            self.grown_overflow = true;
        }
        for &m in members {
            if (m == target) == only {
                conns.wake(m);
            }
        }
    }

    /// Tells room `r`'s `members` (the joiner not yet among them) that
    /// `member` joined.
    pub fn user_joined(
        &mut self,
        r: RoomId,
        members: &[ConnId],
        dialect: Dialect,
        member: &str,
        conns: &Conns,
    ) {
        protocol::write_user_joined(self.frames.begin(), dialect, member);
        let frame = self.frames.finish_shared();
        self.push_entry(r, members, frame, (ConnId::NOBODY, false), conns);
    }

    /// Tells room `r`'s `members` that `user_id` left.
    pub fn user_left(
        &mut self,
        r: RoomId,
        members: &[ConnId],
        dialect: Dialect,
        user_id: &str,
        conns: &Conns,
    ) {
        protocol::write_user_left(self.frames.begin(), dialect, user_id);
        let frame = self.frames.finish_shared();
        self.push_entry(r, members, frame, (ConnId::NOBODY, false), conns);
    }

    /// Pushes the frame built since `frames.begin()` from `from` to its room,
    /// skipping `skip` (the sender itself or nobody). A sender moves past
    /// frames that skip it at once: otherwise its position would rest there
    /// until it had something else to write, and it would not count as
    /// drained (a shutdown's close frame waits for that).
    /// With `retain`, a room with history keeps the frame (the same `Rc`).
    fn push_from(&mut self, from: &Speaker<'_>, skip: ConnId, conns: &Conns, retain: bool) {
        let frame = self.frames.finish_shared();
        self.frames.shrink();
        if retain {
            self.retain(from.room, &frame);
        }
        self.push_entry(from.room, from.members, frame, (skip, false), conns);
        if skip == from.id {
            let log = &self.logs[from.room.index()];
            self.boxes[from.id.index()].skip_foreign(log, from.id);
        }
    }

    /// Who gets a relayed message or reaction: everyone in v2, the others in
    /// legacy rooms (as `push_from`'s `skip`).
    fn relay_skip(from: &Speaker<'_>) -> ConnId {
        if from.dialect.echoes_to_sender() {
            ConnId::NOBODY
        } else {
            from.id
        }
    }

    /// `message`: relays already-validated ciphertext to the sender's room,
    /// with the next message id.
    pub fn relay_message(&mut self, from: &Speaker<'_>, content: &str, conns: &Conns) {
        let out = self.frames.begin();
        match from.dialect {
            Dialect::V2 => {
                let now = clock::unix_millis();
                let seq = self.ids.next_seq();
                protocol::write_message(out, from.json, self.ids.prefix(), seq, content, now);
            }
            Dialect::Legacy => protocol::write_legacy_message(out, content),
        }
        self.push_from(from, Self::relay_skip(from), conns, true);
    }

    /// `typing`: tells the other members.
    pub fn typing(&mut self, from: &Speaker<'_>, is_typing: bool, conns: &Conns) {
        protocol::write_typing(self.frames.begin(), from.dialect, from.json, is_typing);
        self.push_from(from, from.id, conns, false);
    }

    /// `reaction`: relayed to the room like a message.
    pub fn reaction(&mut self, from: &Speaker<'_>, reaction: &Reaction<'_>, conns: &Conns) {
        let out = self.frames.begin();
        protocol::write_reaction(out, from.dialect, from.json, from.user_id, reaction);
        self.push_from(from, Self::relay_skip(from), conns, true);
    }

    // ----------------------------------------------------- private replies

    /// Appends a frame built by `build` to `id`'s private queue: its private
    /// buffer, or, while room frames are still queued for it, the room log
    /// (so that replies keep the order of requests). A connection already
    /// over the per-connection bound gets nothing: [`SlowConsumer`].
    fn reply(
        &mut self,
        id: ConnId,
        conns: &Conns,
        build: impl FnOnce(&mut Vec<u8>, &mut FrameBuilder),
    ) -> Result<(), SlowConsumer> {
        let out = self.outbox(id);
        if out.close_queued || conns.close_state(id) == Close::Drop {
            return Ok(());
        }
        if self.policy.over_queue(self.backlog(id)) {
            return Err(SlowConsumer);
        }
        if let Some(r) = out.room
            && out.behind(&self.logs[r.index()])
        {
            let mut bytes = Vec::new();
            build(&mut bytes, &mut self.frames);
            let only_id = std::slice::from_ref(&id);
            self.push_entry(r, only_id, Rc::from(bytes), (id, true), conns);
            return Ok(());
        }
        let private = self.boxes[id.index()].private_mut();
        let before = private.len();
        build(private, &mut self.frames);
        self.queued_bytes += private.len() - before;
        conns.wake(id);
        Ok(())
    }

    /// An error in `dialect`; `reset_ms` is the legacy `resetTime` (v2
    /// errors carry no such field).
    pub fn error(
        &mut self,
        id: ConnId,
        conns: &Conns,
        dialect: Dialect,
        code: ErrorCode,
        message: &str,
        reset_ms: Option<u64>,
    ) -> Result<(), SlowConsumer> {
        self.reply(id, conns, |out, frames| {
            protocol::write_error(frames.begin(), dialect, code, message, reset_ms);
            frames.finish_into(out);
        })
    }

    /// The answer to a `ping` request.
    pub fn pong(&mut self, id: ConnId, conns: &Conns) -> Result<(), SlowConsumer> {
        self.reply(id, conns, |out, frames| {
            frames.begin().extend_from_slice(br#"{"type":"pong"}"#);
            frames.finish_into(out);
        })
    }

    /// A raw control frame (a WebSocket pong or ping).
    pub fn control(&mut self, id: ConnId, conns: &Conns, frame: &[u8]) -> Result<(), SlowConsumer> {
        self.reply(id, conns, |out, _| out.extend_from_slice(frame))
    }

    /// The member list a joiner gets, `members` in join order.
    pub fn user_list<'a>(
        &mut self,
        id: ConnId,
        conns: &Conns,
        dialect: Dialect,
        members: impl Iterator<Item = &'a str>,
    ) -> Result<(), SlowConsumer> {
        protocol::write_user_list(self.frames.begin(), dialect, members);
        let result = self.reply(id, conns, |out, frames| frames.finish_into(out));
        self.frames.shrink();
        result
    }
}
