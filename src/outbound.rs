//! The outbound side: room logs, each connection's position in its room's
//! log and its private buffer, vectored flushing, and the slow-consumer policy.
//!
//! A room frame is framed once and appended to the room's [`RoomLog`] as a
//! shared `Rc<[u8]>`; a member's [`Outbox`] holds only a cursor into that log,
//! so fan-out costs one pointer per room, not one copy per member. Replies for
//! one connection (pong, errors, the member list) go into its private buffer,
//! which exists only while it holds bytes.
//!
//! [`Policy`] decides, from progress rather than from a momentarily full
//! socket, who is a slow consumer and whose frames are not read for a while
//! (pacing), so that a room whose senders outpace its readers slows the
//! senders down through TCP flow control instead of evicting the readers.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

use crate::config::Config;

/// Identity of a connection: the index of its slot in the hub.
pub type ConnId = u32;

/// No connection (an entry with no excluded member).
pub const NOBODY: ConnId = u32::MAX;

/// Vectored writes gather at most this many slices.
pub const IOV_MAX: usize = 64;

/// The slices of one vectored write, built in place.
pub type Iov<'a> = heapless::Vec<IoSlice<'a>, IOV_MAX>;

/// Largest pacing threshold: a sender is not read while this much is queued
/// for it (a quarter of the per-connection bound when that is smaller).
pub const PACE_BYTES_MAX: usize = 256 * 1024;

/// A member whose socket took nothing for this long (µs) stops holding its
/// room's senders back; it is evicted later, by the bound or the stall time.
pub const PACE_GRACE_US: u64 = 500_000;

/// One framed message in a room's log.
struct Entry {
    frame: Rc<[u8]>,
    /// Byte offset of this entry in the room's stream (bytes appended before it).
    offset: u64,
    /// With `only` unset: a member that does not receive this entry (the
    /// sender of `userJoined`, `userTyping`), or [`NOBODY`]. With `only` set:
    /// the one member that receives it (a reply queued behind room frames,
    /// so that a connection's replies keep the order of its requests).
    target: ConnId,
    only: bool,
    /// Members that still have to send it.
    remaining: u32,
}

impl Entry {
    /// Whether member `id` is to receive this entry.
    #[inline]
    fn is_for(&self, id: ConnId) -> bool {
        (self.target == id) == self.only
    }
}

/// The frames of one room that some member has not written yet, oldest first.
#[derive(Default)]
pub struct RoomLog {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    base: u64,
    /// Bytes held by `entries`.
    bytes: usize,
    /// Byte offset just past the last entry.
    end_offset: u64,
}

impl RoomLog {
    /// Sequence number the next entry will get.
    #[inline]
    pub fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[inline]
    fn entry(&self, seq: u64) -> &Entry {
        &self.entries[(seq - self.base) as usize]
    }

    /// Bytes of the log from sequence `seq` on: how far behind a member at
    /// `seq` is (an upper bound: entries meant for others are counted too).
    #[inline]
    pub fn bytes_from(&self, seq: u64) -> usize {
        // A position before `base` lags only over trimmed entries that were
        // not for this member.
        let seq = seq.max(self.base);
        if seq >= self.end() {
            return 0;
        }
        (self.end_offset - self.entry(seq).offset) as usize
    }

    /// Appends a frame for `remaining` members (see [`Entry`] for `target`
    /// and `only`).
    pub fn push(&mut self, frame: Rc<[u8]>, target: ConnId, only: bool, remaining: u32) {
        let len = frame.len();
        self.entries.push_back(Entry {
            frame,
            offset: self.end_offset,
            target,
            only,
            remaining,
        });
        self.bytes += len;
        self.end_offset += len as u64;
    }

    /// Drops the entries every member has written; returns the bytes freed.
    #[must_use]
    pub fn trim(&mut self) -> usize {
        let mut freed = 0;
        while self.entries.front().is_some_and(|e| e.remaining == 0) {
            let e = self.entries.pop_front().expect("front");
            self.base += 1;
            freed += e.frame.len();
        }
        self.bytes -= freed;
        if self.entries.is_empty() && self.entries.capacity() > 64 {
            self.entries = VecDeque::new();
        }
        freed
    }
}

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
    stalled_since: u64,
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

    /// Everything queued for this connection: private bytes plus the room
    /// log from its position.
    #[inline]
    pub fn backlog(&self, log: Option<&RoomLog>) -> usize {
        let room = log.map_or(0, |l| {
            l.bytes_from(self.cursor).saturating_sub(self.partial)
        });
        self.private_pending() + room
    }

    /// Whether nothing is left to write.
    pub fn is_drained(&self, log: Option<&RoomLog>) -> bool {
        log.is_none_or(|l| !self.behind(l)) && self.private_pending() == 0
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
            let rest = &log.entry(self.cursor).frame[self.partial..];
            // The invariant of `gather`: with a half-written room frame,
            // nothing of the private buffer has been written yet.
            debug_assert_eq!(self.private_sent, 0);
            self.private.splice(0..0, rest.iter().copied());
            self.private_tail += rest.len();
            added += rest.len();
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
        let take = n.min(self.private_pending());
        self.private_sent += take;
        n -= take;
        done.private_bytes = take;
        if self.private_pending() == 0 && !self.private.is_empty() {
            // Give the buffer back: an idle connection holds none.
            self.private = Vec::new();
            self.private_sent = 0;
            self.private_tail = 0;
        }
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

/// The slow-consumer and pacing rules, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// A connection with more than this queued is a slow consumer.
    pub queue_max: usize,
    /// A connection whose socket took no byte for this long (µs) while it had
    /// bytes to send is a slow consumer.
    pub stall_us: u64,
    /// All queued bytes of the process; past it, the largest backlog goes.
    pub budget: usize,
    /// A connection with more than this queued is not read (pacing).
    pub pace: usize,
}

impl Policy {
    pub fn new(cfg: &Config) -> Policy {
        let queue_max = cfg.slow_consumer_queue_bytes as usize;
        Policy {
            queue_max,
            stall_us: u64::from(cfg.slow_consumer_stall_secs) * 1_000_000,
            budget: cfg.queue_budget_bytes as usize,
            pace: (queue_max / 4).min(PACE_BYTES_MAX),
        }
    }

    /// How much may be queued for a connection before its frames are no
    /// longer read. Past half the process budget a connection is read only
    /// while nothing at all waits for it, so that busy rooms slow down
    /// before anyone is evicted.
    #[inline]
    pub fn pace_limit(&self, queued_total: usize) -> usize {
        if queued_total > self.budget / 2 {
            0
        } else {
            self.pace
        }
    }

    /// Rule (a): the backlog passed the per-connection bound.
    pub fn over_queue(&self, backlog: usize) -> bool {
        backlog > self.queue_max
    }

    /// Rule (b): bytes waiting and the socket took none for the stall time.
    pub fn is_stalled(&self, out: &Outbox, now: u64) -> bool {
        out.stalled_since != 0 && now.saturating_sub(out.stalled_since) >= self.stall_us
    }

    /// Whether `out`'s socket has taken nothing for long enough that it no
    /// longer holds its room's senders back (pacing); it may still catch up.
    pub fn is_stuck(&self, out: &Outbox, now: u64) -> bool {
        out.stalled_since != 0 && now.saturating_sub(out.stalled_since) >= PACE_GRACE_US
    }

    /// Rule (c): adding `len` bytes would exceed the process budget.
    pub fn over_budget(&self, queued_total: usize, len: usize) -> bool {
        queued_total + len > self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let done = a.consume(Some(&mut log), 0, 33);
        assert_eq!(done.private_bytes, 3);
        assert_eq!(a.backlog(Some(&log)), 120);
        let done = a.consume(Some(&mut log), 0, 120);
        assert_eq!(done.delivered, 2);
        assert!(done.passed_front);
        assert_eq!(log.trim(), 150);
        assert_eq!((a.backlog(Some(&log)), log.bytes()), (0, 0));
        assert!(a.is_drained(Some(&log)));
        // b skipped an entry that was trimmed: its position is before `base`.
        let mut b = Outbox::default();
        b.enter(&log);
        log.push(frame(10), 1, false, 1);
        let _ = a.consume(Some(&mut log), 0, 10);
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
        log.push(Rc::from(&b"ab"[..]), 0, false, 1); // for all but a
        log.push(Rc::from(&b"cd"[..]), 0, true, 1); // for a only
        log.push(Rc::from(&b"ef"[..]), NOBODY, false, 2);
        assert_eq!(written(&a, Some(&log), 0), b"cdef");
        assert_eq!(written(&b, Some(&log), 1), b"abef");
        // b writes half a frame, then leaves: the rest is finished privately,
        // and survives discarding what was not begun.
        let _ = b.consume(Some(&mut log), 1, 1);
        assert_eq!(b.leave(&mut log, 1), 1);
        assert_eq!(written(&b, None, 1), b"b");
        assert_eq!(b.discard_unsent(), 0);
        assert_eq!(written(&b, None, 1), b"b");
        // a leaves with nothing written: its reply stays, the rest goes.
        assert_eq!(a.leave(&mut log, 0), 2);
        assert_eq!(written(&a, None, 0), b"cd");
        assert_eq!(log.trim(), 6);
    }

    #[test]
    fn discarding_keeps_the_frame_being_written() {
        let mut o = Outbox::default();
        let frames: Vec<u8> = [
            crate::protocol::close_frame(1000, "a"),
            vec![0x81, 126, 0, 200],
            vec![b'x'; 200],
            vec![0x81, 3, b'a', b'b', b'c'],
        ]
        .concat();
        let first = crate::protocol::close_frame(1000, "a").len();
        o.private_mut().extend_from_slice(&frames);
        // Nothing written: everything goes.
        let mut fresh = Outbox::default();
        fresh.private_mut().extend_from_slice(&frames);
        assert_eq!(fresh.discard_unsent(), frames.len());
        assert_eq!(fresh.private_pending(), 0);
        // Half of the second frame written: the rest of it stays.
        let _ = o.consume(None, 0, first + 10);
        assert_eq!(o.discard_unsent(), 5);
        assert_eq!(o.private_pending(), 204 - 10);
    }

    #[test]
    fn stall_needs_a_full_socket_without_progress_for_the_stall_time() {
        let p = Policy {
            queue_max: 1000,
            stall_us: 10,
            budget: 10_000,
            pace: 250,
        };
        let mut o = Outbox::default();
        o.note_write(true, true, 100);
        assert!(!p.is_stalled(&o, 105));
        assert!(p.is_stalled(&o, 110));
        // Any byte taken resets the clock.
        o.note_write(true, false, 111);
        assert!(!p.is_stalled(&o, 200));
        o.note_write(false, true, 300);
        o.note_write(false, true, 305);
        assert!(p.is_stalled(&o, 310));
        // Nothing left to write: not stalled.
        o.note_write(false, false, 311);
        assert!(!p.is_stalled(&o, 400));
        assert!(p.over_queue(1001) && !p.over_queue(1000));
        assert!(p.over_budget(9_990, 11) && !p.over_budget(9_990, 10));
        assert_eq!((p.pace_limit(5_000), p.pace_limit(5_001)), (250, 0));
    }
}
