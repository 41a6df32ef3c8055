//! A room's log: the frames of one room that some member has not written
//! yet, each framed once and shared by every member's [`super::Outbox`].

use std::collections::VecDeque;
use std::rc::Rc;

use crate::conns::ConnId;
use crate::history::RoomKey;

/// One framed message in a room's log.
pub(super) struct Entry {
    pub(super) frame: Rc<[u8]>,
    /// Byte offset of this entry in the room's stream (bytes appended before it).
    pub(super) offset: u64,
    /// With `only` unset: a member that does not receive this entry (the
    /// sender of `userJoined`, `userTyping`), or [`ConnId::NOBODY`]. With `only` set:
    /// the one member that receives it (a reply queued behind room frames,
    /// so that a connection's replies keep the order of its requests).
    pub(super) target: ConnId,
    pub(super) only: bool,
    /// Members that still have to send it.
    pub(super) remaining: u32,
}

impl Entry {
    /// Whether member `id` is to receive this entry.
    #[inline]
    pub(super) fn is_for(&self, id: ConnId) -> bool {
        (self.target == id) == self.only
    }
}

/// The frames of one room that some member has not written yet, oldest first.
#[derive(Default)]
pub struct RoomLog {
    pub(super) entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    pub(super) base: u64,
    /// Bytes held by `entries`.
    bytes: usize,
    /// Byte offset just past the last entry.
    end_offset: u64,
    /// The room's catch-up history, when it keeps one (v2 rooms only).
    pub(super) history: Option<RoomKey>,
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
    pub(super) fn entry(&self, seq: u64) -> &Entry {
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

    /// Appends a frame for `remaining` members (see `Entry` for `target`
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
