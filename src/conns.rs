//! The connection table: one slot per open WebSocket connection, holding
//! what any part of the relay may need to know about it: its address, its
//! task's waker, how it is being closed, when the peer was last heard from,
//! whether its frames are being read, and the dialect it speaks (counted for
//! `/health`).
//!
//! What is queued for a connection lives in [`crate::outbound`], which room
//! it is in lives in [`crate::hub`]; both are indexed by the same [`ConnId`].

use std::cell::Cell;
use std::net::IpAddr;
use std::task::Waker;

use crate::clock;
use crate::protocol::Dialect;

/// Identity of a connection: the index of its slot in the [`Conns`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(u32);

impl ConnId {
    /// No connection: a room entry that excludes nobody, no task running.
    pub const NOBODY: ConnId = ConnId(u32::MAX);

    /// The connection in slot `index`.
    #[inline]
    pub fn from_index(index: usize) -> ConnId {
        ConnId(index as u32)
    }

    /// The index of its slot, also used by the tables beside this one.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How (and whether) a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Not closing.
    Open,
    /// Deliver everything queued, then send the close frame (shutdown).
    Drain(u16, &'static str),
    /// Send what is already queued privately, then the close frame; the
    /// connection has already left its room.
    Now(u16, &'static str),
    /// Drop the TCP connection without a close frame (dead or reset peer).
    Drop,
}

/// One open connection.
pub struct Conn {
    /// The client's address (counted in the IP table).
    pub ip: IpAddr,
    waker: Option<Waker>,
    /// When anything last arrived from the peer (µs, [`clock::now_micros`]).
    pub last_seen: u64,
    /// Whether and how it is being closed.
    pub close: Close,
    /// Its frames are not being read (pacing); woken when that may change.
    paused: bool,
    /// The dialect its frames are read in.
    dialect: Dialect,
    /// Its task was woken since its last poll began: a room frame for each
    /// member wakes it, and one wake until the poll is enough (waking a
    /// task costs atomic operations; this flag does not).
    woken: Cell<bool>,
}

/// Every open connection, by [`ConnId`].
pub struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    open: u32,
    max: u32,
    /// Open connections reading v2 and legacy frames (`Dialect as usize`).
    by_dialect: [u32; 2],
    /// The connection whose task is running (it flushes itself; no wake needed).
    running: ConnId,
}

impl Conns {
    /// An empty table for at most `max` connections.
    pub fn new(max: u32) -> Conns {
        Conns {
            // Reserved, not touched: untouched capacity costs no resident memory.
            slots: Vec::with_capacity(max as usize),
            free: Vec::new(),
            open: 0,
            max,
            by_dialect: [0; 2],
            running: ConnId::NOBODY,
        }
    }

    /// Registers an admitted connection, reading v2 frames until
    /// [`set_dialect`](Self::set_dialect) says otherwise.
    pub fn add(&mut self, ip: IpAddr) -> ConnId {
        let conn = Conn {
            ip,
            waker: None,
            last_seen: clock::now_micros(),
            close: Close::Open,
            paused: false,
            dialect: Dialect::V2,
            woken: Cell::new(false),
        };
        self.by_dialect[Dialect::V2 as usize] += 1;
        self.open += 1;
        match self.free.pop() {
            Some(id) => {
                self.slots[id.index()] = Some(conn);
                id
            }
            None => {
                self.slots.push(Some(conn));
                ConnId((self.slots.len() - 1) as u32)
            }
        }
    }

    /// Frees `id`'s slot; returns what it held, if it was open.
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.slots[id.index()].take()?;
        self.by_dialect[conn.dialect as usize] -= 1;
        self.open -= 1;
        self.free.push(id);
        Some(conn)
    }

    /// Every slot's id, open or not, in order (a snapshot: the table may
    /// change while it is walked).
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + use<> {
        (0..self.slots.len() as u32).map(ConnId)
    }

    /// Whether `id` is an open connection.
    #[inline]
    pub fn is_open(&self, id: ConnId) -> bool {
        self.slots[id.index()].is_some()
    }

    /// The connection `id`, which must be open.
    #[inline]
    pub fn get(&self, id: ConnId) -> &Conn {
        self.slots[id.index()].as_ref().expect("open connection id")
    }

    #[inline]
    fn get_mut(&mut self, id: ConnId) -> &mut Conn {
        self.slots[id.index()].as_mut().expect("open connection id")
    }

    /// Open connections.
    pub fn open(&self) -> u32 {
        self.open
    }

    /// Whether `MAX_CONNECTIONS` are open.
    pub fn is_full(&self) -> bool {
        self.open >= self.max
    }

    /// Open connections currently reading `dialect`.
    pub fn connections_in(&self, dialect: Dialect) -> u32 {
        self.by_dialect[dialect as usize]
    }

    /// The dialect `id` reads its frames in.
    pub fn dialect(&self, id: ConnId) -> Dialect {
        self.get(id).dialect
    }

    /// Records the dialect `id` reads its frames in from now on.
    pub fn set_dialect(&mut self, id: ConnId, dialect: Dialect) {
        let conn = self.get_mut(id);
        let before = std::mem::replace(&mut conn.dialect, dialect);
        self.by_dialect[before as usize] -= 1;
        self.by_dialect[dialect as usize] += 1;
    }

    /// How `id` is being closed.
    #[inline]
    pub fn close_state(&self, id: ConnId) -> Close {
        self.get(id).close
    }

    /// Sets how `id` is being closed.
    pub fn set_close(&mut self, id: ConnId, close: Close) {
        self.get_mut(id).close = close;
    }

    /// The client's address.
    pub fn ip_of(&self, id: ConnId) -> IpAddr {
        self.get(id).ip
    }

    /// Records that something arrived from `id`'s peer at `now`.
    #[inline]
    pub fn touch(&mut self, id: ConnId, now: u64) {
        self.get_mut(id).last_seen = now;
    }

    /// Whether `id`'s session stopped reading for pacing.
    #[inline]
    pub fn is_paused(&self, id: ConnId) -> bool {
        self.get(id).paused
    }

    /// Records whether `id`'s session stopped reading for pacing.
    #[inline]
    pub fn set_paused(&mut self, id: ConnId, paused: bool) {
        self.get_mut(id).paused = paused;
    }

    /// Marks the start of `id`'s poll and records its waker.
    #[inline]
    pub fn enter(&mut self, id: ConnId, waker: &Waker) {
        self.running = id;
        let conn = self.get_mut(id);
        conn.woken.set(false);
        match &conn.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => conn.waker = Some(waker.clone()),
        }
    }

    /// Marks the end of a poll.
    #[inline]
    pub fn exit(&mut self) {
        self.running = ConnId::NOBODY;
    }

    /// Wakes `id`'s task, unless it is the one running.
    #[inline]
    pub fn wake(&self, id: ConnId) {
        if id == self.running {
            return;
        }
        if let Some(conn) = self.slots[id.index()].as_ref()
            && !conn.woken.get()
            && let Some(w) = conn.waker.as_ref()
        {
            conn.woken.set(true);
            w.wake_by_ref();
        }
    }

    /// Wakes those of `members` whose reading is paused: what held them
    /// back went down.
    pub fn wake_paused(&self, members: &[ConnId]) {
        for &m in members {
            if self.is_paused(m) {
                self.wake(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_woken_once_until_its_next_poll() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t = Conns::new(2);
        let (a, b) = (t.add(ip), t.add(ip));
        let (count, waker) = crate::test_support::counting_waker();
        t.enter(a, &waker);
        t.exit();
        t.wake(a);
        t.wake(a);
        t.wake_paused(&[a]);
        t.set_paused(a, true);
        t.wake_paused(&[a, b]);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Its poll begins: the next frame wakes it again.
        t.enter(a, &waker);
        t.wake(a);
        assert_eq!(
            count.0.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "a running task is not woken"
        );
        t.exit();
        t.wake(a);
        t.wake(a);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn slots_are_reused_and_dialects_counted() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t = Conns::new(2);
        let (a, b) = (t.add(ip), t.add(ip));
        assert!(t.is_full());
        t.set_dialect(b, Dialect::Legacy);
        assert_eq!(
            (
                t.connections_in(Dialect::V2),
                t.connections_in(Dialect::Legacy)
            ),
            (1, 1)
        );
        assert_eq!(t.remove(b).map(|c| c.dialect), Some(Dialect::Legacy));
        assert!(t.remove(b).is_none(), "once");
        assert_eq!((t.open(), t.connections_in(Dialect::Legacy)), (1, 0));
        assert!(!t.is_open(b) && t.is_open(a));
        assert_eq!(t.add(ip), b, "the free slot is taken first");
        assert_eq!(t.ids().collect::<Vec<_>>(), [a, b]);
        assert_eq!(t.close_state(b), Close::Open);
    }

    #[test]
    fn the_running_task_is_not_woken() {
        use std::sync::atomic::Ordering;
        let (count, waker) = crate::test_support::counting_waker();
        let mut t = Conns::new(4);
        let a = t.add("10.0.0.1".parse().unwrap());
        t.enter(a, &waker);
        t.wake(a);
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "it flushes itself");
        t.exit();
        t.set_paused(a, true);
        t.wake_paused(&[a]);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
