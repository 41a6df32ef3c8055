//! Replays: streaming a room's retained frames to a joiner as its socket
//! drains, from the store's own copies, whatever retention does meanwhile.

use std::rc::Rc;

use super::Since;
use super::shape::message_id;
use super::store::{History, RoomKey};

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

impl History {
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
}
