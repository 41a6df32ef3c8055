//! Catch-up history (`PROTOCOL.md` section 7): the retained `message` and
//! `reaction` frames of the rooms that asked for it, in memory only.
//!
//! Pure logic, no I/O: the caller passes the time. The pieces:
//!
//! - [`History`] (in `store.rs`): per room, the retained frames as the same
//!   `Rc<[u8]>` the room log relays (never a second copy), bounded by
//!   [`Limits`]; [`Replay`] cursors stream them to a joiner as its socket
//!   drains.
//! - [`Since`] and [`parse_since`]: the `since` field of a `join`.
//! - `shape.rs`: what a retained frame looks like (used on every retained
//!   frame, cheaply, and in full when frames come back from a restart).
//! - [`MessageIds`]: message ids, unique across restarts.
//!
//! # Memory
//!
//! `HISTORY_BUDGET_BYTES` bounds the frames *and* their bookkeeping: each
//! frame is charged its length plus [`FRAME_OVERHEAD`] (the `Rc` counters
//! and the allocator's share), and each room's frame queue is charged its
//! capacity at [`ENTRY_BYTES`] a slot. What lies outside the budget is
//! fixed per room ([`ROOM_OVERHEAD`] for each of `HISTORY_ROOMS`, and
//! [`TOMBSTONE_OVERHEAD`] for each remembered evicted room);
//! [`worst_case_bytes`] adds it up for the memory formula. A replay may pin
//! one frame that retention has already dropped while it is half written
//! (see [`Replay::pinned_bytes`]): at most one frame per joining connection,
//! which the caller counts with that connection's queue.

mod replay;
mod shape;
mod snapshot;
mod store;

pub use replay::Replay;
pub use shape::{
    FRAME_MAX, Kind, check_frame, fast_kind, message_id, text_payload, write_history_json,
};
pub use snapshot::{Restorer, RoomState, Snapshot};
pub use store::{History, RoomKey};

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

use serde_json::value::RawValue;

use crate::config::Config;
use crate::protocol::is_valid_id;

/// Bytes charged to the budget for each retained frame beyond its length:
/// the `Rc` strong and weak counts (16) and the allocator's header and
/// rounding (16).
pub const FRAME_OVERHEAD: usize = 32;

/// Bytes of one slot of a room's frame queue (charged per slot of capacity).
pub const ENTRY_BYTES: usize = std::mem::size_of::<store::Entry>();

/// Bytes outside the budget for each room with history: its record in the
/// slot table and the name index, and its key in the oldest-frame order,
/// each with room for the tables' growth (a `Vec` and a hash table may hold
/// up to twice what they use, a B-tree node may be half empty).
pub const ROOM_OVERHEAD: usize = 2 * std::mem::size_of::<Option<store::Room>>()
    + 2 * (std::mem::size_of::<(heapless::String<64>, u32)>() + 1) * 8 / 7
    + 3 * std::mem::size_of::<(u64, u32)>()
    + 2 * std::mem::size_of::<u32>();

/// Bytes outside the budget for each remembered evicted room (a hash in a
/// queue and in a hash set, with room for growth).
pub const TOMBSTONE_OVERHEAD: usize = 2 * 8 + 2 * (8 + 1) * 8 / 7;

/// Evicted rooms remembered per room of `HISTORY_ROOMS`, so that a room
/// that lost its history does not later claim a complete one.
pub const TOMBSTONES_PER_ROOM: usize = 4;

/// The bounds of retention, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `HISTORY_SECS`: frames older than this are dropped; 0 turns history off.
    pub secs: u32,
    /// `HISTORY_ROOM_FRAMES`: frames kept per room.
    pub room_frames: u32,
    /// `HISTORY_BUDGET_BYTES`: all retained frames with their bookkeeping.
    pub budget: usize,
    /// `HISTORY_ROOMS`: rooms with history, empty ones included.
    pub rooms: u32,
}

impl Limits {
    /// The limits `cfg` sets.
    pub fn new(cfg: &Config) -> Limits {
        Limits {
            secs: cfg.history_secs,
            room_frames: cfg.history_room_frames,
            budget: cfg.history_budget_bytes as usize,
            rooms: cfg.history_rooms,
        }
    }

    /// Whether history is on at all (`HISTORY_SECS` > 0).
    pub fn enabled(&self) -> bool {
        self.secs > 0
    }

    /// Most evicted rooms remembered.
    pub fn tombstones(&self) -> usize {
        self.rooms as usize * TOMBSTONES_PER_ROOM
    }
}

/// Worst-case bytes history can hold at these limits, for the memory
/// formula: the budget, plus the fixed bookkeeping of every room and every
/// remembered evicted room. Zero when history is off.
pub fn worst_case_bytes(limits: &Limits) -> u64 {
    if !limits.enabled() {
        return 0;
    }
    limits.budget as u64
        + u64::from(limits.rooms) * ROOM_OVERHEAD as u64
        + limits.tombstones() as u64 * TOMBSTONE_OVERHEAD as u64
}

/// What a `join` asks to be replayed (`since` present).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// `""`: every retained frame.
    All,
    /// A message id: the frames after that message.
    After(heapless::String<64>),
}

/// A `since` value that is neither `""` nor id-shaped (or not a string):
/// the protocol answers `INVALID_MESSAGE` and does not join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidSince;

impl Since {
    /// `since` from its decoded string.
    pub fn from_text(s: &str) -> Result<Since, InvalidSince> {
        if s.is_empty() {
            return Ok(Since::All);
        }
        if !is_valid_id(s) {
            return Err(InvalidSince);
        }
        let mut id = heapless::String::new();
        id.push_str(s).map_err(|_| InvalidSince)?;
        Ok(Since::After(id))
    }
}

/// Longest raw JSON text an id-shaped string can have (64 characters, each
/// escaped as `\uXXXX`, and the quotes).
const SINCE_RAW_MAX: usize = 64 * 6 + 2;

/// Reads `join`'s `data.since` from its raw JSON value: absent is `Ok(None)`
/// (no replay), `""` and message ids are `Ok(Some(..))`, anything else
/// (`null`, a number, a longer or differently shaped string) is an error.
pub fn parse_since(raw: Option<&RawValue>) -> Result<Option<Since>, InvalidSince> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.get();
    if !text.starts_with('"') || text.len() > SINCE_RAW_MAX {
        return Err(InvalidSince);
    }
    let value: Cow<'_, str> = serde_json::from_str(text).map_err(|_| InvalidSince)?;
    Since::from_text(&value).map(Some)
}

/// The 64-bit FNV-1a hash of `bytes`: stable across builds, so that the
/// evicted rooms it names can be handed over a restart.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Message ids: a random per-process prefix and a counter, `prefix-seq`.
/// A process that takes over history draws a prefix different from the one
/// its predecessor used, so ids never repeat across restarts.
#[derive(Clone, Debug)]
pub struct MessageIds {
    prefix: heapless::String<16>,
    last: u64,
}

impl MessageIds {
    /// A fresh random prefix, different from `avoid` (the predecessor's).
    pub fn new(avoid: Option<&str>) -> MessageIds {
        let mut value = random_u64();
        let mut ids = MessageIds::with_prefix_value(value);
        if avoid == Some(ids.prefix()) {
            value = !value;
            ids = MessageIds::with_prefix_value(value);
        }
        ids
    }

    fn with_prefix_value(value: u64) -> MessageIds {
        let mut prefix = heapless::String::new();
        for i in (0..16).rev() {
            let digit = ((value >> (i * 4)) & 0xf) as u32;
            let _ = prefix.push(char::from_digit(digit, 16).expect("hex digit"));
        }
        MessageIds { prefix, last: 0 }
    }

    /// The prefix of every id this process makes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The sequence number of the next message (ids are `prefix-seq`).
    pub fn next_seq(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// The last sequence number handed out (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last
    }
}

/// 64 random bits from the standard library's randomly keyed hasher (seeded
/// by the operating system), mixed with the time and the process id.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::clock::unix_millis());
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
pub(crate) mod tests;
