//! The retention store and the replay cursor.
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

use super::shape::{fast_kind, message_id};
use super::{ENTRY_BYTES, FRAME_OVERHEAD, Limits, Since, stable_hash};
use crate::protocol::is_valid_id;

/// No room (an end of the activity list).
const NIL: u32 = u32::MAX;

/// Internal time is whole seconds, offset so that frames handed over a
/// restart (as old as `HISTORY_SECS` allows) still have a time of their own
/// on a clock that started at zero.
const TICK_BIAS: u64 = crate::config::HISTORY_SECS_CAP as u64 + 1;

fn tick(now_ms: u64) -> u32 {
    (now_ms / 1000 + TICK_BIAS).min(u64::from(u32::MAX)) as u32
}

/// One retained frame.
pub(super) struct Entry {
    frame: Rc<[u8]>,
    /// Global sequence number: orders frames across rooms.
    g: u64,
    /// When it was retained (internal seconds).
    t: u32,
}

/// One room with history.
pub(super) struct Room {
    name: heapless::String<64>,
    generation: u32,
    frames: VecDeque<Entry>,
    /// Some frame of this room was dropped from retention (or the room lost
    /// its history before and was remembered).
    ever_dropped: bool,
    /// Neighbours in the activity list (`older` is towards the head).
    older: u32,
    newer: u32,
}

/// Names one room with history as long as it keeps it; stale once the room
/// is evicted (then [`History::retain`] says so and the caller forgets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomKey {
    slot: u32,
    generation: u32,
}

/// Hashes of the names of evicted rooms, so that a room created again does
/// not claim that nothing of it was ever dropped. Bounded: past the bound
/// the oldest is forgotten, and from then on every new room is assumed to
/// have lost something (`forgot`), which errs on the safe side.
struct Tombstones {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    cap: usize,
    forgot: bool,
}

impl Tombstones {
    fn add(&mut self, hash: u64) {
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

    fn marks(&self, hash: u64) -> bool {
        self.forgot || self.set.contains(&hash)
    }
}

/// The retained frames of every room with history, within [`Limits`].
pub struct History {
    limits: Limits,
    rooms: Vec<Option<Room>>,
    free: Vec<u32>,
    index: HashMap<heapless::String<64>, u32>,
    /// (`g` of the oldest frame, slot) of every room holding frames.
    fronts: BTreeSet<(u64, u32)>,
    /// Ends of the activity list: the head loses its history first.
    least_active: u32,
    most_active: u32,
    live_rooms: u32,
    next_g: u64,
    next_generation: u32,
    /// Bytes charged to the budget (frames, overhead, queue capacity).
    charged: usize,
    frame_count: usize,
    frame_bytes: usize,
    /// Latest time seen (internal seconds); never goes back.
    now: u32,
    tombs: Tombstones,
}

/// A replay in progress: which retained frames one joiner still has to
/// get, and how far it got. It stays valid whatever retention does
/// meanwhile: frames dropped before it reached them are skipped, and the
/// replay then ends with `complete: false`; a frame it had begun to write
/// is kept alive by the cursor itself until written, so the joiner's byte
/// stream stays whole.
#[derive(Debug)]
pub struct Replay {
    key: RoomKey,
    /// `g` of the next frame to begin.
    next: u64,
    /// Frames from `end` on are live traffic, not replay.
    end: u64,
    /// Frames in `next..end` that were retained when last looked at.
    remaining: u32,
    /// A frame begun but not finished, and the bytes of it written.
    partial: Option<(Rc<[u8]>, usize)>,
    sent: u32,
    complete: bool,
}

impl Replay {
    /// Frames completely written so far (the `count` of the history frame).
    pub fn count(&self) -> u32 {
        self.sent
    }

    /// Whether nothing the joiner asked for is missing (final once
    /// [`History::replay_done`] says the replay is over).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Bytes of a half-written frame this cursor keeps alive (it may no
    /// longer be retained): the caller counts it with the joiner's queue.
    pub fn pinned_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |(f, _)| f.len())
    }
}

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
    /// Hashes ([`stable_hash`]) of evicted rooms' names, oldest first.
    pub tombstones: Vec<u64>,
    /// Evicted rooms were forgotten (see the tombstone bound).
    pub forgot: bool,
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

    /// Starts a replay for a joiner of `key`'s room that asked for `since`.
    /// With history off or a stale key: nothing to replay, not complete.
    pub fn replay(&mut self, key: RoomKey, since: &Since, now_ms: u64) -> Replay {
        self.expire(now_ms);
        let mut replay = Replay {
            key,
            next: self.next_g,
            end: self.next_g,
            remaining: 0,
            partial: None,
            sent: 0,
            complete: false,
        };
        let Some(room) = self.room(key).filter(|_| self.limits.enabled()) else {
            return replay;
        };
        let (start, complete) = match since {
            Since::All => (0, !room.ever_dropped),
            Since::After(id) => {
                let found = room
                    .frames
                    .iter()
                    .rposition(|e| message_id(&e.frame) == Some(id.as_bytes()));
                match found {
                    Some(i) => (i + 1, true),
                    None => (0, false),
                }
            }
        };
        if let Some(e) = room.frames.get(start) {
            replay.next = e.g;
        }
        replay.remaining = (room.frames.len() - start) as u32;
        replay.complete = complete;
        replay
    }

    /// The bytes `r` has to write next, in order: the rest of a frame it
    /// began, then the retained frames it has not begun. Gather them, write,
    /// and report what was written with [`replay_consume`](Self::replay_consume)
    /// before anything else changes the store.
    pub fn replay_frames<'a>(&'a self, r: &'a Replay) -> impl Iterator<Item = &'a [u8]> + 'a {
        let pinned = r.partial.as_ref().map(|(f, done)| &f[*done..]);
        let frames = self.room(r.key).into_iter().flat_map(move |room| {
            let i = room.frames.partition_point(|e| e.g < r.next);
            room.frames
                .range(i..)
                .take_while(move |e| e.g < r.end)
                .map(|e| &*e.frame)
        });
        pinned.into_iter().chain(frames)
    }

    /// Moves `r` past `n` bytes written, in the order
    /// [`replay_frames`](Self::replay_frames) gave them. A frame left half
    /// written is pinned by the cursor. Returns the frames completed.
    pub fn replay_consume(&self, r: &mut Replay, mut n: usize) -> u32 {
        self.sync(r);
        let mut done = 0;
        if let Some((frame, written)) = &mut r.partial {
            let rest = frame.len() - *written;
            if n < rest {
                *written += n;
                return 0;
            }
            n -= rest;
            r.partial = None;
            r.sent += 1;
            done += 1;
        }
        if n == 0 {
            return done;
        }
        let Some(room) = self.room(r.key) else {
            debug_assert_eq!(n, 0, "wrote more than was gathered");
            return done;
        };
        let i = room.frames.partition_point(|e| e.g < r.next);
        for e in room.frames.range(i..) {
            if n == 0 || e.g >= r.end {
                break;
            }
            r.next = e.g + 1;
            r.remaining -= 1;
            if n < e.frame.len() {
                r.partial = Some((Rc::clone(&e.frame), n));
                n = 0;
                break;
            }
            n -= e.frame.len();
            r.sent += 1;
            done += 1;
        }
        debug_assert_eq!(n, 0, "wrote more than was gathered");
        done
    }

    /// Whether `r` has nothing left to write (then the caller sends the
    /// history frame with [`Replay::count`] and [`Replay::complete`]).
    pub fn replay_done(&self, r: &mut Replay) -> bool {
        self.sync(r);
        r.remaining == 0 && r.partial.is_none()
    }

    /// Notices frames dropped under `r` since it last looked: they are
    /// skipped and the replay is no longer complete.
    fn sync(&self, r: &mut Replay) {
        let retained = self.room(r.key).map_or(0, |room| {
            let i = room.frames.partition_point(|e| e.g < r.next);
            let j = room.frames.partition_point(|e| e.g < r.end);
            (j - i) as u32
        });
        if retained < r.remaining {
            r.complete = false;
        }
        r.remaining = retained;
    }

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

    // ------------------------------------------------------------ internals

    fn advance(&mut self, now_ms: u64) {
        self.now = self.now.max(tick(now_ms));
    }

    fn slot(&self, slot: u32) -> &Room {
        self.rooms[slot as usize].as_ref().expect("live room slot")
    }

    fn slot_mut(&mut self, slot: u32) -> &mut Room {
        self.rooms[slot as usize].as_mut().expect("live room slot")
    }

    fn room(&self, key: RoomKey) -> Option<&Room> {
        self.rooms
            .get(key.slot as usize)?
            .as_ref()
            .filter(|r| r.generation == key.generation)
    }

    /// Appends a frame retained at `t` to room `slot`, first dropping the
    /// room's oldest when it holds `HISTORY_ROOM_FRAMES`.
    fn push_at(&mut self, slot: u32, frame: Rc<[u8]>, t: u32) {
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
    fn drop_oldest_of(&mut self, slot: u32) {
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

    fn expire_now(&mut self) {
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
    fn enforce_budget(&mut self) {
        while self.charged > self.limits.budget {
            let Some(&(_, slot)) = self.fronts.first() else {
                break;
            };
            self.drop_oldest_of(slot);
        }
    }

    /// Room `slot` loses its history: frames, record and key.
    fn evict(&mut self, slot: u32) {
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

    fn unlink(&mut self, slot: u32) {
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

    fn link_most_active(&mut self, slot: u32) {
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
    /// An evicted room (its [`stable_hash`]).
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
        let t = (h.now - age as u32).max(self.last_t);
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
