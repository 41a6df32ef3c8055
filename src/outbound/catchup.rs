//! Catch-up on the outbound side (`PROTOCOL.md` section 7).
//!
//! - Retention: a room whose log holds a history key keeps each relayed
//!   `message` and `reaction` frame in [`History`], as the same `Rc` the log
//!   holds (no second copy). Rooms without history pay one `Option` test per
//!   frame.
//! - Replay: a `join` with `since` gives the joiner a [`Replay`] cursor at
//!   the moment it enters the room log, so that the replay ends exactly
//!   where its live traffic begins. The cursor is written as the socket
//!   drains, straight from the retained copies, in this order: the rest of
//!   a replayed frame begun, the private buffer (`userList`, replies), the
//!   replayed frames, and, once none is left, the history frame, which goes
//!   into the private buffer and so precedes the room log. Replayed bytes
//!   are not the joiner's backlog (only a frame the cursor pins is), so a
//!   replay never makes anyone a slow consumer or paces anyone.
//! - A joiner that leaves or is closed mid-replay gets the rest of a frame
//!   begun (the stream stays well formed) and no history frame.

use super::Outbound;
use super::outbox::Iov;
use crate::clock;
use crate::conns::{ConnId, Conns};
use crate::history::{History, MessageIds, Since, write_history_json};
use crate::hub::RoomId;
use std::io::IoSlice;
use std::rc::Rc;

/// The clock retention runs on: the process's monotonic milliseconds (the
/// one [`crate::fdstore`] uses across a hand-over).
fn now_ms() -> u64 {
    clock::now_micros() / 1000
}

impl Outbound {
    /// Takes over a history and message ids (from the previous process, at
    /// start). Nothing may be queued yet.
    pub fn install_history(&mut self, history: History, ids: MessageIds) {
        self.history = history;
        self.ids = ids;
    }

    /// The retained frames (`history_rooms`, `history_bytes`, the hand-over).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The message ids this process hands out (for the hand-over).
    pub fn ids(&self) -> &MessageIds {
        &self.ids
    }

    /// Drops the frames older than `HISTORY_SECS` (the sweep timer calls it;
    /// one comparison when nothing expired).
    pub fn expire_history(&mut self) {
        self.history.expire(now_ms());
    }

    /// Keeps `frame`, just relayed to room `r`, if the room has history.
    #[inline]
    pub(super) fn retain(&mut self, r: RoomId, frame: &Rc<[u8]>) {
        let Some(log) = self.logs.get_mut(r.index()) else {
            return;
        };
        if let Some(key) = log.history
            && !self.history.retain(key, frame, now_ms())
        {
            // The room lost its history to `HISTORY_ROOMS`.
            log.history = None;
        }
    }

    /// A v2 `join` of `id` into room `r`, named `room`, has been answered
    /// with `userList`. A room keeps retaining if it has history; with
    /// `since` it starts one, and the joiner's replay begins here: its
    /// position in the room log was taken in the same step, so replay and
    /// live traffic neither overlap nor leave a gap.
    pub fn catch_up(
        &mut self,
        id: ConnId,
        r: RoomId,
        room: &str,
        since: Option<&Since>,
        conns: &Conns,
    ) {
        let now = now_ms();
        let log = &mut self.logs[r.index()];
        let Some(since) = since else {
            if log.history.is_none() {
                log.history = self.history.key(room);
            }
            return;
        };
        log.history = self.history.enable(room, now);
        match log.history {
            Some(key) => {
                let replay = self.history.replay(key, since, now);
                self.boxes[id.index()].replay = Some(Box::new(replay));
                self.finish_replay(id);
            }
            // History is off: an empty, incomplete history at once.
            None => self.push_history_frame(id, 0, false),
        }
        conns.wake(id);
    }

    /// Ends `id`'s replay with the history frame if nothing is left of it.
    pub(super) fn finish_replay(&mut self, id: ConnId) {
        let Some(r) = self.boxes[id.index()].replay.as_deref_mut() else {
            return;
        };
        if !self.history.replay_done(r) {
            return;
        }
        let (count, complete) = (r.count(), r.complete());
        self.boxes[id.index()].replay = None;
        self.push_history_frame(id, count, complete);
    }

    /// `{"type":"history",...}` into `id`'s private buffer: after what is
    /// there, before its room log.
    fn push_history_frame(&mut self, id: ConnId, count: u32, complete: bool) {
        write_history_json(self.frames.begin(), count, complete);
        let private = self.boxes[id.index()].private_mut();
        let before = private.len();
        self.frames.finish_into(private);
        self.queued_bytes += private.len() - before;
    }

    /// Abandons `id`'s replay, if any (it left the room, is closed, or the
    /// relay shuts down): a replayed frame begun is finished from the
    /// private buffer, nothing else of the replay is sent, nor its history
    /// frame.
    pub fn end_replay(&mut self, id: ConnId) {
        let out = &mut self.boxes[id.index()];
        let Some(r) = out.replay.take() else {
            return;
        };
        let pinned = r.pinned_bytes();
        if pinned > 0 {
            let rest = self.history.replay_frames(&r).next().unwrap_or_default();
            out.finish_first(rest);
            self.queued_bytes += rest.len();
        }
        self.queued_bytes -= pinned;
    }

    /// What `id` has to write next, in order (see the module documentation
    /// for a replay). Fills `iov` in place.
    pub(super) fn gather<'a>(&'a self, id: ConnId, iov: &mut Iov<'a>) {
        let out = self.outbox(id);
        let Some(r) = out.replay.as_deref() else {
            out.gather(self.log(out.room), id, iov);
            return;
        };
        iov.clear();
        let mut frames = self.history.replay_frames(r);
        if r.pinned_bytes() > 0
            && let Some(rest) = frames.next()
        {
            let _ = iov.push(IoSlice::new(rest));
        }
        let private = out.private_unsent();
        if !private.is_empty() {
            let _ = iov.push(IoSlice::new(private));
        }
        for frame in frames {
            if iov.push(IoSlice::new(frame)).is_err() {
                break;
            }
        }
    }

    /// Advances `id`, which is replaying, past `n` written bytes in the
    /// order [`gather`](Self::gather) gave them.
    pub(super) fn consume_replay(&mut self, id: ConnId, mut n: usize) {
        let out = &mut self.boxes[id.index()];
        let mut r = out.replay.take().expect("a replay under way");
        let pinned_before = r.pinned_bytes();
        if pinned_before > 0 {
            let rest = self.history.replay_frames(&r).next().map_or(0, <[u8]>::len);
            let k = n.min(rest);
            self.history.replay_consume(&mut r, k);
            n -= k;
        }
        let k = out.consume_private(n);
        self.queued_bytes -= k;
        n -= k;
        if n > 0 {
            self.history.replay_consume(&mut r, n);
        }
        self.queued_bytes = self.queued_bytes + r.pinned_bytes() - pinned_before;
        out.replay = Some(r);
        out.note_write(true, false, 0);
        self.finish_replay(id);
    }
}
