//! Snapshots of a store for the restart hand-over, and rebuilding a store
//! from one under the current limits.

use std::rc::Rc;

use super::Limits;
use super::shape::fast_kind;
use super::store::{History, NIL, RoomKey, tick};

/// What a room's history looks like in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    /// The room's name (an id-shaped string).
    pub name: heapless::String<64>,
    /// No frame of it was ever dropped from retention.
    pub complete: bool,
}

/// Everything retained, in a form that can be written out and read back
/// (see `fdstore`): rooms least active first, frames oldest first.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Rooms with history, least active first.
    pub rooms: Vec<RoomState>,
    /// (index into `rooms`, age in milliseconds, frame), oldest first.
    pub frames: Vec<(u32, u64, Rc<[u8]>)>,
    /// Hashes (`stable_hash`) of evicted rooms' names, oldest first.
    pub tombstones: Vec<u64>,
    /// Evicted rooms were forgotten (see the tombstone bound).
    pub forgot: bool,
}

impl History {
    /// Everything retained, with ages as of `now_ms`, for a hand-over.
    pub fn snapshot(&self, now_ms: u64) -> Snapshot {
        let now = tick(now_ms).max(self.now);
        let mut snap = Snapshot {
            tombstones: self.tombs.order.iter().copied().collect(),
            forgot: self.tombs.forgot,
            ..Snapshot::default()
        };
        let mut numbered = Vec::with_capacity(self.frame_count);
        let mut slot = self.least_active;
        while slot != NIL {
            let room = self.slot(slot);
            let index = snap.rooms.len() as u32;
            snap.rooms.push(RoomState {
                name: room.name.clone(),
                complete: !room.ever_dropped,
            });
            for e in &room.frames {
                let age_ms = u64::from(now.saturating_sub(e.t)) * 1000;
                numbered.push((e.g, index, age_ms, Rc::clone(&e.frame)));
            }
            slot = room.newer;
        }
        numbered.sort_unstable_by_key(|f| f.0);
        snap.frames = numbered.into_iter().map(|(_, i, a, f)| (i, a, f)).collect();
        snap
    }

    /// A store with these limits holding what `snap` holds, as far as the
    /// limits allow (see [`Restorer`]).
    pub fn restore(limits: Limits, snap: Snapshot, now_ms: u64) -> History {
        let mut r = History::restorer(limits, now_ms);
        for hash in snap.tombstones {
            r.tombstone(hash);
        }
        if snap.forgot {
            r.forgot();
        }
        for state in &snap.rooms {
            r.room(&state.name, state.complete);
        }
        for (index, age_ms, frame) in snap.frames {
            r.frame(index, age_ms, frame);
        }
        r.finish()
    }

    /// Starts rebuilding a store from a hand-over, piece by piece, in the
    /// order of a [`Snapshot`]; the limits apply as it goes, so memory stays
    /// within them whatever the hand-over holds.
    pub fn restorer(limits: Limits, now_ms: u64) -> Restorer {
        let mut history = History::new(limits);
        history.advance(now_ms);
        Restorer {
            history,
            now_ms,
            keys: Vec::new(),
            last_t: 0,
        }
    }
}

/// Rebuilds a [`History`] from a hand-over (see [`History::restorer`]):
/// tombstones, then rooms least active first, then frames oldest first.
/// Frames past `HISTORY_SECS` are not kept and mark their room; the
/// per-room bound, the budget and `HISTORY_ROOMS` apply as if the frames
/// had been retained here. Frames that are not retained kinds, and frames
/// naming no room, are ignored.
pub struct Restorer {
    history: History,
    now_ms: u64,
    keys: Vec<Option<RoomKey>>,
    last_t: u32,
}

impl Restorer {
    /// An evicted room (its `stable_hash`).
    pub fn tombstone(&mut self, hash: u64) {
        self.history.tombs.add(hash);
    }

    /// Evicted rooms were forgotten before the hand-over.
    pub fn forgot(&mut self) {
        self.history.tombs.forgot = true;
    }

    /// The next room (they come least active first); `complete` when none
    /// of its frames was ever dropped. Its index is the number of rooms
    /// given before it.
    pub fn room(&mut self, name: &str, complete: bool) {
        let key = self.history.enable(name, self.now_ms);
        if let Some(k) = key
            && !complete
        {
            self.history.slot_mut(k.slot).ever_dropped = true;
        }
        self.keys.push(key);
    }

    /// The next frame (they come oldest first) of room `index`, `age_ms`
    /// old. The bytes are copied (or the `Rc` taken) only if kept.
    pub fn frame<F: AsRef<[u8]> + Into<Rc<[u8]>>>(&mut self, index: u32, age_ms: u64, frame: F) {
        let h = &mut self.history;
        let Some(&Some(key)) = self.keys.get(index as usize) else {
            return;
        };
        if h.room(key).is_none() || fast_kind(frame.as_ref()).is_none() {
            return;
        }
        let age = age_ms / 1000;
        if age > u64::from(h.limits.secs) {
            h.slot_mut(key.slot).ever_dropped = true;
            return;
        }
        // Ages never exceed HISTORY_SECS_CAP, and `now` starts above it.
        let t = h.now.saturating_sub(age as u32).max(self.last_t);
        self.last_t = t;
        h.push_at(key.slot, frame.into(), t);
        h.enforce_budget();
    }

    /// The store, with the rooms in the recorded order of activity.
    pub fn finish(mut self) -> History {
        let h = &mut self.history;
        for key in self.keys.into_iter().flatten() {
            if h.room(key).is_some() {
                h.unlink(key.slot);
                h.link_most_active(key.slot);
            }
        }
        self.history
    }
}
