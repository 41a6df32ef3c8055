//! What one connection has to write, and writing it: its position in its
//! room's log and its private buffer ([`Outbox`]), gathered into one
//! vectored write per flush ([`Outbound::poll_flush`]).
//!
//! A room frame is framed once and shared by the members' outboxes, which
//! hold only a cursor into the room's log, so fan-out costs one pointer per
//! room, not one copy per member. Replies for one connection (pong, errors,
//! the member list) go into its private buffer, which exists only while it
//! holds bytes.

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::task::{Context, Poll};

use smol::Async;

use super::log::RoomLog;
use super::{Outbound, write};
use crate::clock;
use crate::conns::{ConnId, Conns};
use crate::history::Replay;
use crate::hub::RoomId;
use crate::status::Stats;

/// Vectored writes gather at most this many slices.
pub const IOV_MAX: usize = 64;

/// The slices of one vectored write, built in place.
pub type Iov<'a> = heapless::Vec<IoSlice<'a>, IOV_MAX>;

/// What one connection has to write: its position in its room's log and its
/// private buffer.
#[derive(Default)]
pub struct Outbox {
    /// Sequence number of the next room log entry to send.
    cursor: u64,
    /// Bytes of the entry at `cursor` already written.
    partial: usize,
    /// Frames for this connection only, already framed.
    private: Vec<u8>,
    private_sent: usize,
    /// Leading bytes of `private` that finish a room frame begun before the
    /// connection left its room (they start with no frame header).
    private_tail: usize,
    /// When a write last found the socket full with bytes still to send
    /// (µs), or 0 while the socket keeps taking what it is given.
    pub(super) stalled_since: u64,
    /// The room whose log this outbox reads, if any.
    pub(super) room: Option<RoomId>,
    /// A catch-up replay under way: written after the private buffer and
    /// before the room log (see `catchup.rs`). Boxed: rare, and an outbox
    /// is per connection.
    pub(super) replay: Option<Box<Replay>>,
    /// The close frame has been put into `private`.
    pub close_queued: bool,
}

/// What [`Outbox::consume`] did.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Consumed {
    /// Room entries completed.
    pub delivered: u64,
    /// Private bytes written.
    pub private_bytes: usize,
    /// An entry completed was the log's oldest: the log may be trimmed.
    pub passed_front: bool,
}

impl Outbox {
    /// Unsent bytes of the private buffer.
    #[inline]
    pub fn private_pending(&self) -> usize {
        self.private.len() - self.private_sent
    }

    /// Bytes of a half-written replayed frame that only the replay may
    /// keep alive (see [`Replay::pinned_bytes`]).
    #[inline]
    pub fn pinned_bytes(&self) -> usize {
        self.replay.as_ref().map_or(0, |r| r.pinned_bytes())
    }

    /// Everything queued for this connection: private bytes plus the room
    /// log from its position, plus a replayed frame it pins. The rest of a
    /// replay is not counted: it is read from the retained copies.
    #[inline]
    pub fn backlog(&self, log: Option<&RoomLog>) -> usize {
        let room = log.map_or(0, |l| {
            l.bytes_from(self.cursor).saturating_sub(self.partial)
        });
        self.private_pending() + room + self.pinned_bytes()
    }

    /// Whether nothing is left to write (a replay under way is something).
    pub fn is_drained(&self, log: Option<&RoomLog>) -> bool {
        log.is_none_or(|l| !self.behind(l)) && self.private_pending() == 0 && self.replay.is_none()
    }

    /// The unsent bytes of the private buffer.
    pub(super) fn private_unsent(&self) -> &[u8] {
        &self.private[self.private_sent..]
    }

    /// Puts `rest`, the end of a frame already begun, before everything in
    /// the private buffer (nothing of which has been written yet), so the
    /// byte stream stays well formed.
    pub(super) fn finish_first(&mut self, rest: &[u8]) {
        debug_assert_eq!(self.private_sent, 0);
        self.private.splice(0..0, rest.iter().copied());
        self.private_tail += rest.len();
    }

    /// Whether the room log has frames queued for this member (a reply must
    /// then wait behind them, in the log).
    pub fn behind(&self, log: &RoomLog) -> bool {
        self.cursor.max(log.base) < log.end()
    }

    /// The private buffer, to append frames to.
    pub fn private_mut(&mut self) -> &mut Vec<u8> {
        &mut self.private
    }

    /// Starts receiving `log` from its next entry.
    pub fn enter(&mut self, log: &RoomLog) {
        self.cursor = log.end();
        self.partial = 0;
    }

    /// Leaves `log`: entries not yet written are released, except replies to
    /// this connection, which move to the private buffer; a frame half
    /// written is finished from the private buffer so the byte stream stays
    /// well formed. Returns the bytes added to the private buffer.
    #[must_use]
    pub fn leave(&mut self, log: &mut RoomLog, id: ConnId) -> usize {
        let mut added = 0;
        if self.partial > 0 {
            // The invariant of `gather`: with a half-written room frame,
            // nothing of the private buffer has been written yet.
            let entry = log.entry(self.cursor);
            self.finish_first(&entry.frame[self.partial..]);
            added += entry.frame.len() - self.partial;
            self.partial = 0;
        }
        // Entries before `base` were trimmed: they were never this member's to send.
        for seq in self.cursor.max(log.base)..log.end() {
            let entry = &mut log.entries[(seq - log.base) as usize];
            if entry.is_for(id) {
                entry.remaining -= 1;
                if entry.only {
                    self.private.extend_from_slice(&entry.frame);
                    added += entry.frame.len();
                }
            }
        }
        added
    }

    /// What to write next, in order: the rest of a half-written room frame,
    /// the private buffer, then the room frames this member is behind on.
    /// Fills `iov` in place: a vector of slices is a kilobyte, too big to
    /// return by value on every write.
    pub fn gather<'a>(&'a self, log: Option<&'a RoomLog>, id: ConnId, iov: &mut Iov<'a>) {
        iov.clear();
        // A cursor may lag behind `base` only over trimmed entries that
        // skipped this member.
        let mut seq = log.map_or(self.cursor, |l| self.cursor.max(l.base));
        if let Some(log) = log
            && self.partial > 0
        {
            let _ = iov.push(IoSlice::new(&log.entry(seq).frame[self.partial..]));
            seq += 1;
        }
        if self.private_pending() > 0 {
            let _ = iov.push(IoSlice::new(&self.private[self.private_sent..]));
        }
        if let Some(log) = log {
            while seq < log.end() && !iov.is_full() {
                let e = log.entry(seq);
                if e.is_for(id) {
                    let _ = iov.push(IoSlice::new(&e.frame));
                }
                seq += 1;
            }
        }
    }

    /// Advances past `n` written bytes, in the order `gather` produced them.
    pub fn consume(&mut self, mut log: Option<&mut RoomLog>, id: ConnId, mut n: usize) -> Consumed {
        let mut done = Consumed::default();
        if let Some(log) = log.as_deref() {
            self.cursor = self.cursor.max(log.base);
        }
        // 1. The rest of a half-written room frame.
        if let Some(log) = log.as_deref_mut()
            && self.partial > 0
        {
            self.finish_entry(log, &mut n, &mut done);
        }
        // 2. The private buffer.
        let take = self.consume_private(n);
        n -= take;
        done.private_bytes = take;
        // 3. Room frames, skipping entries not meant for this connection.
        if let Some(log) = log {
            while self.cursor < log.end() {
                if !log.entry(self.cursor).is_for(id) {
                    self.cursor += 1;
                    continue;
                }
                if n == 0 {
                    break;
                }
                self.finish_entry(log, &mut n, &mut done);
            }
        }
        debug_assert_eq!(n, 0, "wrote more than was gathered");
        done
    }

    /// Counts up to `n` written bytes against the private buffer; returns
    /// how many it took.
    pub(super) fn consume_private(&mut self, n: usize) -> usize {
        let take = n.min(self.private_pending());
        self.private_sent += take;
        if self.private_pending() == 0 && !self.private.is_empty() {
            // Give the buffer back: an idle connection holds none.
            self.private = Vec::new();
            self.private_sent = 0;
            self.private_tail = 0;
        }
        take
    }

    /// Counts up to `*n` written bytes against the entry at the cursor; when
    /// they complete it, the member moves past it.
    #[inline]
    fn finish_entry(&mut self, log: &mut RoomLog, n: &mut usize, done: &mut Consumed) {
        let base = log.base;
        let entry = &mut log.entries[(self.cursor - base) as usize];
        let rest = entry.frame.len() - self.partial;
        if *n < rest {
            self.partial += *n;
            *n = 0;
            return;
        }
        *n -= rest;
        entry.remaining -= 1;
        done.passed_front |= self.cursor == base;
        done.delivered += 1;
        self.cursor += 1;
        self.partial = 0;
    }

    /// Drops the private bytes not yet written, except the rest of a frame
    /// already begun, so the byte stream stays well formed. Returns the
    /// bytes freed. Used on connections closed to keep the process budget.
    #[must_use]
    pub fn discard_unsent(&mut self) -> usize {
        let tail = self.private_tail;
        let keep = tail
            + frame_end_from(
                &self.private[tail..],
                self.private_sent.saturating_sub(tail),
            );
        let freed = self.private.len() - keep;
        self.private.truncate(keep);
        if self.private_pending() == 0 {
            self.private = Vec::new();
            self.private_sent = 0;
            self.private_tail = 0;
        }
        freed
    }

    /// Moves past the entries at the end of the log that are not for this
    /// member (its own `userTyping`, replies to others), so that a member
    /// with nothing to write counts as drained.
    pub fn skip_foreign(&mut self, log: &RoomLog, id: ConnId) {
        self.cursor = self.cursor.max(log.base);
        while self.partial == 0 && self.cursor < log.end() && !log.entry(self.cursor).is_for(id) {
            self.cursor += 1;
        }
    }

    /// Records the outcome of a write attempt at time `now` (µs): whether the
    /// socket took bytes, and whether it is full with bytes still waiting.
    pub fn note_write(&mut self, took_bytes: bool, blocked: bool, now: u64) {
        if took_bytes {
            self.stalled_since = 0;
        }
        if blocked && self.stalled_since == 0 {
            self.stalled_since = now.max(1);
        } else if !blocked && !took_bytes {
            // Nothing to write at all.
            self.stalled_since = 0;
        }
    }
}

/// The end of the server frame (unmasked) that contains byte `pos - 1` of
/// `buf`, a run of whole frames: where a stream cut at `pos` may stop.
fn frame_end_from(buf: &[u8], pos: usize) -> usize {
    let mut at = 0;
    while at < pos {
        let Some(header) = crate::frame::parse_header(&buf[at..]) else {
            break;
        };
        at += header.header_len + header.len as usize;
    }
    at.min(buf.len())
}

// ------------------------------------------------------------ writing

impl Outbound {
    /// Whether `id` has nothing left to write.
    pub fn is_drained(&self, id: ConnId) -> bool {
        let out = self.outbox(id);
        out.is_drained(self.log(out.room))
    }

    /// Whether `id`'s close frame is queued.
    pub fn close_queued(&self, id: ConnId) -> bool {
        self.outbox(id).close_queued
    }

    /// Whether the close frame has been queued and everything written.
    pub fn close_sent(&self, id: ConnId) -> bool {
        self.close_queued(id) && self.is_drained(id)
    }

    /// Puts the close frame in `id`'s private buffer; nothing may follow it.
    pub fn queue_close(&mut self, id: ConnId, code: u16, reason: &str) {
        let frame = crate::frame::close_frame(code, reason);
        self.queued_bytes += frame.len();
        let out = &mut self.boxes[id.index()];
        out.private_mut().extend_from_slice(&frame);
        out.close_queued = true;
    }

    /// Writes as much of `id`'s pending output as the socket takes, gathering
    /// all queued frames into one vectored write. Ready when nothing is left.
    /// `members` names a room's members: those paused are woken when the
    /// room's log shrinks below the pacing limit.
    pub fn poll_flush<'m>(
        &mut self,
        id: ConnId,
        sock: &Async<TcpStream>,
        cx: &mut Context<'_>,
        conns: &Conns,
        stats: &mut Stats,
        members: impl Fn(RoomId) -> &'m [ConnId],
    ) -> Poll<io::Result<()>> {
        loop {
            // Retention may have dropped what a replay had left.
            self.finish_replay(id);
            // With everything gathered (the slices did not run out) and
            // everything written, there is nothing to gather again.
            let (written, everything) = {
                let mut iov = Iov::new();
                self.gather(id, &mut iov);
                if iov.is_empty() {
                    (None, 0)
                } else {
                    let all = if iov.is_full() {
                        usize::MAX
                    } else {
                        iov.iter().map(|s| s.len()).sum()
                    };
                    (Some(write::poll_write_vectored(sock, &iov, cx)), all)
                }
            };
            match written {
                None => {
                    let out = &mut self.boxes[id.index()];
                    out.note_write(false, false, 0);
                    if let Some(r) = out.room {
                        out.skip_foreign(&self.logs[r.index()], id);
                    }
                    return Poll::Ready(Ok(()));
                }
                Some(Poll::Ready(Ok(0))) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Some(Poll::Ready(Ok(n))) => {
                    let replaying = self.outbox(id).replay.is_some();
                    self.consume(id, n, conns, stats, &members);
                    // `consume` moved past the foreign entries at the end
                    // and reset the stall clock, as the empty round would.
                    if n == everything && !replaying {
                        return Poll::Ready(Ok(()));
                    }
                }
                Some(Poll::Ready(Err(e))) => return Poll::Ready(Err(e)),
                Some(Poll::Pending) => {
                    let now = clock::now_micros();
                    // Only a replay waiting is no stall: replays are not
                    // charged (a ping or live traffic behind it is).
                    let out = self.outbox(id);
                    let waiting = out.replay.is_none() || self.backlog(id) > out.pinned_bytes();
                    self.boxes[id.index()].note_write(false, waiting, now);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Advances `id`'s queues by `n` written bytes.
    pub(super) fn consume<'m>(
        &mut self,
        id: ConnId,
        n: usize,
        conns: &Conns,
        stats: &mut Stats,
        members: impl Fn(RoomId) -> &'m [ConnId],
    ) {
        if self.outbox(id).replay.is_some() {
            self.consume_replay(id, n);
            return;
        }
        let out = &mut self.boxes[id.index()];
        let r = out.room;
        let mut log = r.map(|r| &mut self.logs[r.index()]);
        let done = out.consume(log.as_deref_mut(), id, n);
        out.note_write(true, false, 0);
        self.queued_bytes -= done.private_bytes;
        stats.deliveries += done.delivered;
        if done.passed_front
            && let (Some(r), Some(log)) = (r, log)
        {
            let before = log.bytes();
            self.queued_bytes -= log.trim();
            if before > self.policy.pace && log.bytes() <= self.policy.pace {
                conns.wake_paused(members(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    const NOBODY: ConnId = ConnId::NOBODY;

    fn id(n: usize) -> ConnId {
        ConnId::from_index(n)
    }

    fn frame(len: usize) -> Rc<[u8]> {
        Rc::from(vec![b'x'; len])
    }

    fn written(out: &Outbox, log: Option<&RoomLog>, id: ConnId) -> Vec<u8> {
        let mut iov = Iov::new();
        out.gather(log, id, &mut iov);
        iov.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn backlog_counts_the_log_from_the_cursor_and_private_bytes() {
        let mut log = RoomLog::default();
        let mut a = Outbox::default();
        a.enter(&log);
        log.push(frame(100), NOBODY, false, 1);
        log.push(frame(50), NOBODY, false, 1);
        assert_eq!(a.backlog(Some(&log)), 150);
        a.private_mut().extend_from_slice(&[1, 2, 3]);
        assert_eq!(a.backlog(Some(&log)), 153);
        // The socket takes the private bytes and 30 bytes of the first frame.
        let done = a.consume(Some(&mut log), id(0), 33);
        assert_eq!(done.private_bytes, 3);
        assert_eq!(a.backlog(Some(&log)), 120);
        let done = a.consume(Some(&mut log), id(0), 120);
        assert_eq!(done.delivered, 2);
        assert!(done.passed_front);
        assert_eq!(log.trim(), 150);
        assert_eq!((a.backlog(Some(&log)), log.bytes()), (0, 0));
        assert!(a.is_drained(Some(&log)));
        // b skipped an entry that was trimmed: its position is before `base`.
        let mut b = Outbox::default();
        b.enter(&log);
        log.push(frame(10), id(1), false, 1);
        let _ = a.consume(Some(&mut log), id(0), 10);
        assert_eq!(log.trim(), 10);
        assert_eq!(b.backlog(Some(&log)), 0);
        assert!(!b.behind(&log) && b.is_drained(Some(&log)));
    }

    #[test]
    fn entries_for_others_are_skipped_and_replies_survive_leaving() {
        let mut log = RoomLog::default();
        let (mut a, mut b) = (Outbox::default(), Outbox::default());
        a.enter(&log);
        b.enter(&log);
        log.push(Rc::from(&b"ab"[..]), id(0), false, 1); // for all but a
        log.push(Rc::from(&b"cd"[..]), id(0), true, 1); // for a only
        log.push(Rc::from(&b"ef"[..]), NOBODY, false, 2);
        assert_eq!(written(&a, Some(&log), id(0)), b"cdef");
        assert_eq!(written(&b, Some(&log), id(1)), b"abef");
        // b writes half a frame, then leaves: the rest is finished privately,
        // and survives discarding what was not begun.
        let _ = b.consume(Some(&mut log), id(1), 1);
        assert_eq!(b.leave(&mut log, id(1)), 1);
        assert_eq!(written(&b, None, id(1)), b"b");
        assert_eq!(b.discard_unsent(), 0);
        assert_eq!(written(&b, None, id(1)), b"b");
        // a leaves with nothing written: its reply stays, the rest goes.
        assert_eq!(a.leave(&mut log, id(0)), 2);
        assert_eq!(written(&a, None, id(0)), b"cd");
        assert_eq!(log.trim(), 6);
    }

    #[test]
    fn discarding_keeps_the_frame_being_written() {
        let mut o = Outbox::default();
        let frames: Vec<u8> = [
            crate::frame::close_frame(1000, "a"),
            vec![0x81, 126, 0, 200],
            vec![b'x'; 200],
            vec![0x81, 3, b'a', b'b', b'c'],
        ]
        .concat();
        let first = crate::frame::close_frame(1000, "a").len();
        o.private_mut().extend_from_slice(&frames);
        // Nothing written: everything goes.
        let mut fresh = Outbox::default();
        fresh.private_mut().extend_from_slice(&frames);
        assert_eq!(fresh.discard_unsent(), frames.len());
        assert_eq!(fresh.private_pending(), 0);
        // Half of the second frame written: the rest of it stays.
        let _ = o.consume(None, id(0), first + 10);
        assert_eq!(o.discard_unsent(), 5);
        assert_eq!(o.private_pending(), 204 - 10);
    }
}
