//! The retention store: rooms with history and their frames, within the
//! limits ([`super::replay`] streams them, [`super::snapshot`] hands them over).
//!
//! Rooms live in a slot table (a `Vec` with a free list) found by name; a
//! [`RoomKey`] (slot and generation) names one incarnation of a room, so a
//! key kept by the caller goes stale when its room is evicted. Each room
//! holds its frames oldest first in a `VecDeque`, each with a global
//! sequence number `g` (one counter for all rooms, so it orders frames
//! across rooms) and the second it was retained.
//!
//! Every drop takes a room's oldest frame, so two small indexes find the
//! next victim without scanning rooms:
//! - `fronts`, a `BTreeSet` of (`g` of a room's oldest frame, slot): its
//!   first element is the oldest frame of all, for expiry and the budget;
//! - a doubly linked list of rooms by last activity (their newest frame, or
//!   their creation): its head loses its history when `HISTORY_ROOMS` is
//!   passed.
//!
//! Both hold one entry per room, never a stale one. Expiry looks only at
//! the oldest frame of all (one comparison when nothing expired).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use super::shape::fast_kind;
use super::{ENTRY_BYTES, FRAME_OVERHEAD, Limits, stable_hash};
use crate::protocol::is_valid_id;

/// No room (an end of the activity list).
pub(super) const NIL: u32 = u32::MAX;

/// Internal time is whole seconds, offset so that frames handed over a
/// restart (as old as `HISTORY_SECS` allows) still have a time of their own
/// on a clock that started at zero.
const TICK_BIAS: u64 = crate::config::HISTORY_SECS_CAP as u64 + 1;

pub(super) fn tick(now_ms: u64) -> u32 {
    (now_ms / 1000 + TICK_BIAS).min(u64::from(u32::MAX)) as u32
}

/// One retained frame.
pub(super) struct Entry {
    pub(super) frame: Rc<[u8]>,
    /// Global sequence number: orders frames across rooms.
    pub(super) g: u64,
    /// When it was retained (internal seconds).
    pub(super) t: u32,
}

/// One room with history.
pub(super) struct Room {
    pub(super) name: heapless::String<64>,
    pub(super) generation: u32,
    pub(super) frames: VecDeque<Entry>,
    /// Some frame of this room was dropped from retention (or the room lost
    /// its history before and was remembered).
    pub(super) ever_dropped: bool,
    /// Neighbours in the activity list (`older` is towards the head).
    pub(super) older: u32,
    pub(super) newer: u32,
}

/// Names one room with history as long as it keeps it; stale once the room
/// is evicted (then [`History::retain`] says so and the caller forgets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomKey {
    pub(super) slot: u32,
    pub(super) generation: u32,
}

/// Hashes of the names of evicted rooms, so that a room created again does
/// not claim that nothing of it was ever dropped. Bounded: past the bound
/// the oldest is forgotten, and from then on every new room is assumed to
/// have lost something (`forgot`), which errs on the safe side.
pub(super) struct Tombstones {
    pub(super) order: VecDeque<u64>,
    pub(super) set: HashSet<u64>,
    pub(super) cap: usize,
    pub(super) forgot: bool,
}

impl Tombstones {
    pub(super) fn add(&mut self, hash: u64) {
        if self.cap == 0 {
            self.forgot = true;
            return;
        }
        if self.set.insert(hash) {
            self.order.push_back(hash);
            if self.order.len() > self.cap {
                let old = self.order.pop_front().expect("non-empty");
                self.set.remove(&old);
                self.forgot = true;
            }
        }
    }

    pub(super) fn marks(&self, hash: u64) -> bool {
        self.forgot || self.set.contains(&hash)
    }
}

/// The retained frames of every room with history, within [`Limits`].
pub struct History {
    pub(super) limits: Limits,
    pub(super) rooms: Vec<Option<Room>>,
    pub(super) free: Vec<u32>,
    pub(super) index: HashMap<heapless::String<64>, u32>,
    /// (`g` of the oldest frame, slot) of every room holding frames.
    pub(super) fronts: BTreeSet<(u64, u32)>,
    /// Ends of the activity list: the head loses its history first.
    pub(super) least_active: u32,
    pub(super) most_active: u32,
    pub(super) live_rooms: u32,
    pub(super) next_g: u64,
    pub(super) next_generation: u32,
    /// Bytes charged to the budget (frames, overhead, queue capacity).
    pub(super) charged: usize,
    pub(super) frame_count: usize,
    pub(super) frame_bytes: usize,
    /// Latest time seen (internal seconds); never goes back.
    pub(super) now: u32,
    pub(super) tombs: Tombstones,
}

impl History {
    /// An empty store with these limits.
    pub fn new(limits: Limits) -> History {
        History {
            limits,
            rooms: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            fronts: BTreeSet::new(),
            least_active: NIL,
            most_active: NIL,
            live_rooms: 0,
            next_g: 0,
            next_generation: 0,
            charged: 0,
            frame_count: 0,
            frame_bytes: 0,
            now: tick(0),
            tombs: Tombstones {
                order: VecDeque::new(),
                set: HashSet::new(),
                cap: limits.tombstones(),
                forgot: false,
            },
        }
    }

    /// The limits this store keeps.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Rooms with history, empty ones included (`history_rooms`).
    pub fn rooms(&self) -> usize {
        self.live_rooms as usize
    }

    /// Bytes charged to `HISTORY_BUDGET_BYTES`: the frames with their
    /// bookkeeping (`history_bytes`).
    pub fn bytes(&self) -> usize {
        self.charged
    }

    /// Frames retained.
    pub fn frames(&self) -> usize {
        self.frame_count
    }

    /// Bytes of the retained frames themselves.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// The key of `room` if it has history (to resume retention when a room
    /// is created again after it emptied).
    pub fn key(&self, room: &str) -> Option<RoomKey> {
        let slot = *self.index.get(room)?;
        let r = self.slot(slot);
        Some(RoomKey {
            slot,
            generation: r.generation,
        })
    }

    /// Starts history for `room` (a `join` with `since`), or finds it; `None`
    /// when history is off or the name is not a room id. Past
    /// `HISTORY_ROOMS`, the least active room loses its history.
    pub fn enable(&mut self, room: &str, now_ms: u64) -> Option<RoomKey> {
        if !self.limits.enabled() || !is_valid_id(room) {
            return None;
        }
        if let Some(key) = self.key(room) {
            return Some(key);
        }
        self.advance(now_ms);
        while self.live_rooms >= self.limits.rooms && self.least_active != NIL {
            self.evict(self.least_active);
        }
        let mut name = heapless::String::new();
        name.push_str(room).ok()?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.rooms.push(None);
                (self.rooms.len() - 1) as u32
            }
        };
        self.rooms[slot as usize] = Some(Room {
            ever_dropped: self.tombs.marks(stable_hash(room.as_bytes())),
            name: name.clone(),
            generation,
            frames: VecDeque::new(),
            older: NIL,
            newer: NIL,
        });
        self.index.insert(name, slot);
        self.live_rooms += 1;
        self.link_most_active(slot);
        Some(RoomKey { slot, generation })
    }

    /// Retains a frame just relayed to the room `key` names (the same `Rc`
    /// the room log holds). Frames other than v2 `message` and `reaction`
    /// are not retained. Returns false when `key` is stale (the room lost
    /// its history): the caller then forgets the key.
    pub fn retain(&mut self, key: RoomKey, frame: &Rc<[u8]>, now_ms: u64) -> bool {
        if !self.limits.enabled() || self.room(key).is_none() {
            return false;
        }
        if fast_kind(frame).is_none() {
            return true;
        }
        self.advance(now_ms);
        self.push_at(key.slot, Rc::clone(frame), self.now);
        self.expire_now();
        self.enforce_budget();
        true
    }

    /// Drops what is older than `HISTORY_SECS` (also done on every
    /// [`retain`](Self::retain) and [`replay`](Self::replay); call it from a
    /// timer so that quiet rooms free theirs too). Costs one comparison when
    /// nothing expired.
    pub fn expire(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.expire_now();
    }
    // ------------------------------------------------------------ internals

    pub(super) fn advance(&mut self, now_ms: u64) {
        self.now = self.now.max(tick(now_ms));
    }

    pub(super) fn slot(&self, slot: u32) -> &Room {
        self.rooms[slot as usize].as_ref().expect("live room slot")
    }

    pub(super) fn slot_mut(&mut self, slot: u32) -> &mut Room {
        self.rooms[slot as usize].as_mut().expect("live room slot")
    }

    pub(super) fn room(&self, key: RoomKey) -> Option<&Room> {
        self.rooms
            .get(key.slot as usize)?
            .as_ref()
            .filter(|r| r.generation == key.generation)
    }

    /// Appends a frame retained at `t` to room `slot`, first dropping the
    /// room's oldest when it holds `HISTORY_ROOM_FRAMES`.
    pub(super) fn push_at(&mut self, slot: u32, frame: Rc<[u8]>, t: u32) {
        let cap_frames = self.limits.room_frames.max(1) as usize;
        if self.slot(slot).frames.len() >= cap_frames {
            self.drop_oldest_of(slot);
        }
        let g = self.next_g;
        self.next_g += 1;
        let len = frame.len();
        let room = self.slot_mut(slot);
        let was_empty = room.frames.is_empty();
        let before = room.frames.capacity();
        if room.frames.len() == before {
            // Double, but never past the per-room bound.
            let want = (before * 2)
                .max(4)
                .min(cap_frames)
                .max(room.frames.len() + 1);
            room.frames.reserve_exact(want - room.frames.len());
        }
        let after = room.frames.capacity();
        room.frames.push_back(Entry { frame, g, t });
        self.charged += (after - before) * ENTRY_BYTES + len + FRAME_OVERHEAD;
        self.frame_count += 1;
        self.frame_bytes += len;
        if was_empty {
            self.fronts.insert((g, slot));
        }
        if self.most_active != slot {
            self.unlink(slot);
            self.link_most_active(slot);
        }
    }

    /// Drops room `slot`'s oldest frame.
    pub(super) fn drop_oldest_of(&mut self, slot: u32) {
        let room = self.rooms[slot as usize].as_mut().expect("live room slot");
        let Some(e) = room.frames.pop_front() else {
            return;
        };
        room.ever_dropped = true;
        let next_front = room.frames.front().map(|f| f.g);
        let before = room.frames.capacity();
        let len = room.frames.len();
        if len == 0 {
            // An empty room holds no queue.
            room.frames = VecDeque::new();
        } else if before > 4 && len * 4 <= before {
            room.frames.shrink_to((len * 2).max(4));
        }
        let after = room.frames.capacity();
        self.fronts.remove(&(e.g, slot));
        if let Some(g) = next_front {
            self.fronts.insert((g, slot));
        }
        self.charged -= (before - after) * ENTRY_BYTES + e.frame.len() + FRAME_OVERHEAD;
        self.frame_count -= 1;
        self.frame_bytes -= e.frame.len();
    }

    pub(super) fn expire_now(&mut self) {
        let oldest_kept = self.now.saturating_sub(self.limits.secs);
        while let Some(&(_, slot)) = self.fronts.first() {
            let t = self.slot(slot).frames.front().expect("room in fronts").t;
            if t >= oldest_kept {
                break;
            }
            self.drop_oldest_of(slot);
        }
    }

    /// Past the budget, the oldest frames of all rooms go first.
    pub(super) fn enforce_budget(&mut self) {
        while self.charged > self.limits.budget {
            let Some(&(_, slot)) = self.fronts.first() else {
                break;
            };
            self.drop_oldest_of(slot);
        }
    }

    /// Room `slot` loses its history: frames, record and key.
    pub(super) fn evict(&mut self, slot: u32) {
        self.unlink(slot);
        let room = self.rooms[slot as usize].take().expect("live room slot");
        if let Some(front) = room.frames.front() {
            self.fronts.remove(&(front.g, slot));
        }
        let bytes: usize = room.frames.iter().map(|e| e.frame.len()).sum();
        self.charged -=
            room.frames.capacity() * ENTRY_BYTES + bytes + room.frames.len() * FRAME_OVERHEAD;
        self.frame_count -= room.frames.len();
        self.frame_bytes -= bytes;
        self.index.remove(&room.name);
        self.tombs.add(stable_hash(room.name.as_bytes()));
        self.free.push(slot);
        self.live_rooms -= 1;
    }

    pub(super) fn unlink(&mut self, slot: u32) {
        let (older, newer) = {
            let r = self.slot(slot);
            (r.older, r.newer)
        };
        match older {
            NIL => self.least_active = newer,
            o => self.slot_mut(o).newer = newer,
        }
        match newer {
            NIL => self.most_active = older,
            n => self.slot_mut(n).older = older,
        }
        let r = self.slot_mut(slot);
        r.older = NIL;
        r.newer = NIL;
    }

    pub(super) fn link_most_active(&mut self, slot: u32) {
        let tail = self.most_active;
        {
            let r = self.slot_mut(slot);
            r.older = tail;
            r.newer = NIL;
        }
        match tail {
            NIL => self.least_active = slot,
            t => self.slot_mut(t).newer = slot,
        }
        self.most_active = slot;
    }
}

#[cfg(test)]
impl History {
    /// Recomputes every derived figure and index from the rooms and checks
    /// them: the charge, the counts, `fronts`, the activity list, the name
    /// index, the per-room bound and the budget.
    pub(crate) fn check_invariants(&self) {
        let (mut charged, mut frames, mut bytes, mut live) = (0, 0, 0, 0);
        let mut fronts = BTreeSet::new();
        for (slot, room) in self.rooms.iter().enumerate() {
            let Some(room) = room else { continue };
            live += 1;
            assert_eq!(self.index.get(&room.name), Some(&(slot as u32)));
            assert!(room.frames.len() <= self.limits.room_frames as usize);
            assert!(room.frames.capacity() <= (self.limits.room_frames as usize).max(4));
            charged += room.frames.capacity() * ENTRY_BYTES;
            for w in room.frames.iter().collect::<Vec<_>>().windows(2) {
                assert!(w[0].g < w[1].g && w[0].t <= w[1].t);
            }
            for e in &room.frames {
                charged += e.frame.len() + FRAME_OVERHEAD;
                bytes += e.frame.len();
                frames += 1;
            }
            if let Some(f) = room.frames.front() {
                fronts.insert((f.g, slot as u32));
            }
        }
        assert_eq!(live, self.live_rooms as usize);
        assert_eq!(self.index.len(), live);
        assert_eq!(
            (charged, frames, bytes),
            (self.charged, self.frame_count, self.frame_bytes)
        );
        assert_eq!(fronts, self.fronts);
        assert!(self.charged <= self.limits.budget);
        assert!(self.live_rooms <= self.limits.rooms);
        // The activity list holds every live room once, both ways round.
        let mut seen = 0;
        let (mut slot, mut prev) = (self.least_active, NIL);
        while slot != NIL {
            let r = self.slot(slot);
            assert_eq!(r.older, prev);
            seen += 1;
            prev = slot;
            slot = r.newer;
        }
        assert_eq!(prev, self.most_active);
        assert_eq!(seen, live);
        assert!(self.tombs.order.len() <= self.tombs.cap);
        assert_eq!(self.tombs.order.len(), self.tombs.set.len());
    }

    /// Names of the rooms, least active first.
    pub(super) fn activity_order(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut slot = self.least_active;
        while slot != NIL {
            out.push(self.slot(slot).name.to_string());
            slot = self.slot(slot).newer;
        }
        out
    }
}
