//! Pacing and the slow-consumer rules, in one place: [`Policy`] holds the
//! thresholds, and the decisions below apply them to what is queued.
//!
//! They judge progress rather than a momentarily full socket, so that a room
//! whose senders outpace its readers slows the senders down through TCP flow
//! control (pacing: their frames are not read for a while) instead of
//! evicting the readers. A slow consumer is one that (a) has more than the
//! per-connection bound queued, (b) took no byte for the stall time while
//! bytes waited, or (c) has the largest backlog while the process budget is
//! exceeded. Closing one is [`crate::relay`]'s business. A catch-up replay
//! is none of this: its bytes are not backlog, and a replaying member
//! holds nobody back.

use super::Outbound;
use super::outbox::Outbox;
use crate::clock;
use crate::config::{Config, ROOM_USERS_CAP};
use crate::conns::{Close, ConnId, Conns};
use crate::hub::RoomId;

/// Largest pacing threshold: a sender is not read while this much is queued
/// for it (a quarter of the per-connection bound when that is smaller).
pub const PACE_BYTES_MAX: usize = 256 * 1024;

/// A member whose socket took nothing for this long (µs) stops holding its
/// room's senders back; it is evicted later, by the bound or the stall time.
pub const PACE_GRACE_US: u64 = 500_000;

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
    /// The rules of `cfg`.
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
    #[inline]
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

impl Outbound {
    /// Whether `id`'s frames should not be read for now, so that TCP flow
    /// control slows the sender down: too much is queued for it, or a member
    /// of its room that is still taking bytes is far behind (a room's
    /// senders wait for its readers). A member whose socket has taken
    /// nothing for a while ([`Policy::is_stuck`]) holds nobody back.
    /// `members` names the room's members; it is asked only when the room's
    /// log is long.
    #[inline]
    pub fn is_paced<'m>(&self, id: ConnId, members: impl FnOnce(RoomId) -> &'m [ConnId]) -> bool {
        self.paced_at(id, clock::now_micros, members)
    }

    /// [`Outbound::is_paced`] with the clock given: it is read only when the
    /// room's log is long.
    pub(super) fn paced_at<'m>(
        &self,
        id: ConnId,
        clock: impl FnOnce() -> u64,
        members: impl FnOnce(RoomId) -> &'m [ConnId],
    ) -> bool {
        let out = self.outbox(id);
        let log = self.log(out.room);
        if out.backlog(log) > self.policy.pace_limit(self.queued_bytes) {
            return true;
        }
        let (Some(r), Some(log)) = (out.room, log) else {
            return false;
        };
        if log.bytes() <= self.policy.pace {
            return false;
        }
        let now = clock();
        // A member replaying history holds nobody back: other members are
        // not slowed down by a catch-up.
        members(r).iter().any(|&m| {
            let out = self.outbox(m);
            out.backlog(Some(log)) > self.policy.pace
                && !self.policy.is_stuck(out, now)
                && out.replay.is_none()
        })
    }

    /// The rooms whose logs grew since the last call (every room, when too
    /// many did): rule (a) is checked there.
    pub fn take_grown(&mut self) -> impl Iterator<Item = RoomId> + use<> {
        let grown = std::mem::take(&mut self.grown);
        let all = if std::mem::take(&mut self.grown_overflow) {
            self.logs.len()
        } else {
            0
        };
        let listed = if all > 0 { heapless::Vec::new() } else { grown };
        listed.into_iter().chain((0..all).map(RoomId::from_index))
    }

    /// Rule (a) for room `r`: the `members` more than the bound behind.
    pub fn over_bound(
        &self,
        r: RoomId,
        members: &[ConnId],
    ) -> heapless::Vec<ConnId, ROOM_USERS_CAP> {
        let Some(log) = self.logs.get(r.index()) else {
            return heapless::Vec::new();
        };
        if !self.policy.over_queue(log.bytes()) {
            return heapless::Vec::new();
        }
        members
            .iter()
            .copied()
            .filter(|&m| self.policy.over_queue(self.backlog(m)))
            .collect()
    }

    /// Rule (b): whether `id`'s socket has taken no byte for the stall time
    /// while it had bytes to send.
    pub fn is_stalled(&self, id: ConnId, now: u64) -> bool {
        self.policy.is_stalled(self.outbox(id), now)
    }

    /// Rule (c): while the process budget is exceeded, the connection with
    /// the largest backlog (open, or closing without a drain).
    pub fn budget_victim(&self, conns: &Conns) -> Option<ConnId> {
        if !self.policy.over_budget(self.queued_bytes, 0) {
            return None;
        }
        conns
            .ids()
            .filter(|&i| {
                conns.is_open(i) && matches!(conns.close_state(i), Close::Open | Close::Now(..))
            })
            .max_by_key(|&i| self.backlog(i))
            .filter(|&v| self.backlog(v) > 0)
    }

    /// Drops what `id` had not been sent privately (the frame being written
    /// is finished), so that the budget is a bound: used on the victims of
    /// rule (c) once they left their room.
    pub fn discard_unsent(&mut self, id: ConnId) {
        self.queued_bytes -= self.boxes[id.index()].discard_unsent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
