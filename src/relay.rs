//! The relay's shared state, owned by the executor thread (one
//! `Rc<RefCell<Relay>>`): the parts a message passes through, as separate
//! fields so that each step borrows only what it needs, and the operations
//! that span several of them: joining and leaving rooms, closing
//! connections, closing the slow consumers the outbound side names, strikes,
//! the heartbeat and shutdown.
//!
//! A request's own path (parse, membership, queueing) is the session's
//! ([`crate::session`]); this file holds what more than one step, or a
//! timer, needs done.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use crate::clock;
use crate::config::Config;
use crate::conns::{Close, ConnId, Conns};
use crate::frame::PING_FRAME;
use crate::hub::{Hub, RoomId};
use crate::limits::{IpTable, StrikeOutcome};
use crate::outbound::{Outbound, SlowConsumer};
use crate::protocol::{Dialect, ErrorCode, JoinRequest};
use crate::status::Stats;
use crate::ws_reader::ReadBudget;

/// Close reason of a slow consumer.
pub const SLOW: Close = Close::Now(1013, "try again later");

/// The relay's shared state. See the module documentation.
pub struct Relay {
    /// Every open connection: address, waker, close state.
    pub conns: Conns,
    /// Who is in which room.
    pub hub: Hub,
    /// What is queued for whom, and the slow-consumer policy.
    pub outbound: Outbound,
    /// Connections, HTTP-phase requests and strikes by client address.
    pub ips: IpTable,
    /// Counters for `/health` and `/metrics`.
    pub stats: Stats,
    /// Memory for reading large client frames, shared by every session.
    pub read_budget: Rc<RefCell<ReadBudget>>,
    /// A shutdown began: no more upgrades, no more `userLeft`.
    pub shutting_down: bool,
}

/// The state, its counts, and the changes of connections and membership.
impl Relay {
    /// An empty relay for `cfg`.
    pub fn new(cfg: &Config) -> Relay {
        let max_connections = cfg.max_connections;
        Relay {
            conns: Conns::new(max_connections),
            hub: Hub::new(cfg),
            outbound: Outbound::new(cfg),
            ips: IpTable::new(
                max_connections as usize + 1024,
                cfg.connection_limit_per_ip,
                cfg.block_strike_limit,
            ),
            stats: Stats::default(),
            read_budget: Rc::new(RefCell::new(ReadBudget::new(cfg.max_message_size as usize))),
            shutting_down: false,
        }
    }

    // ------------------------------------------------------------ counts

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> u32 {
        self.conns.open()
    }

    /// Rooms with at least one member.
    pub fn active_rooms(&self) -> usize {
        self.hub.active_rooms()
    }

    /// Connections in a room.
    pub fn users_in_rooms(&self) -> u32 {
        self.hub.users_in_rooms()
    }

    /// Open connections currently reading `dialect`.
    pub fn connections_in(&self, dialect: Dialect) -> u32 {
        self.conns.connections_in(dialect)
    }

    /// Bytes of every room log and unsent private buffer.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.queued_bytes()
    }

    /// Rooms with catch-up history, empty ones included (`history_rooms`).
    pub fn history_rooms(&self) -> usize {
        self.outbound.history().rooms()
    }

    /// Bytes charged to `HISTORY_BUDGET_BYTES` (`history_bytes`).
    pub fn history_bytes(&self) -> usize {
        self.outbound.history().bytes()
    }

    /// Whether `MAX_CONNECTIONS` are open.
    pub fn is_full(&self) -> bool {
        self.conns.is_full()
    }

    /// During shutdown: whether every connection is gone. Sessions end once
    /// their close frame is out and the client answered (or went quiet for
    /// the grace time), so this is the moment the process may exit without
    /// resetting anyone.
    pub fn all_closed(&self) -> bool {
        self.conns.open() == 0
    }

    // ------------------------------------------------------- connections

    /// Registers an admitted connection (its IP already counted by `ips`),
    /// reading v2 frames until [`set_dialect`](Self::set_dialect) says otherwise.
    pub fn add_conn(&mut self, ip: IpAddr) -> ConnId {
        let id = self.conns.add(ip);
        self.outbound.open(id);
        self.stats.connections_total += 1;
        id
    }

    /// Records the dialect `id` reads its frames in: the path's at the upgrade.
    pub fn set_dialect(&mut self, id: ConnId, dialect: Dialect) {
        self.conns.set_dialect(id, dialect);
    }

    /// Forgets a connection: it leaves its room and its IP slot is released.
    pub fn remove_conn(&mut self, id: ConnId) {
        let announce = !self.shutting_down;
        self.leave_room(id, announce);
        if !self.conns.is_open(id) {
            return;
        }
        self.outbound.close(id);
        if let Some(conn) = self.conns.remove(id) {
            self.ips.release(conn.ip);
        }
    }

    /// Starts closing `id`. A connection already closing keeps its first reason.
    pub fn begin_close(&mut self, id: ConnId, close: Close) {
        if !self.conns.is_open(id) || self.conns.close_state(id) != Close::Open {
            return;
        }
        if matches!(close, Close::Now(..) | Close::Drop) {
            self.leave_room(id, true);
        }
        self.conns.set_close(id, close);
        self.conns.wake(id);
    }

    /// Puts the close frame in `id`'s queue once what must precede it has
    /// been written, taking it out of its room first (silently: nothing may
    /// follow the close frame).
    pub fn queue_close_if_due(&mut self, id: ConnId) {
        let (code, reason) = match self.conns.close_state(id) {
            Close::Drain(code, reason) | Close::Now(code, reason) => (code, reason),
            Close::Open | Close::Drop => return,
        };
        if self.outbound.close_queued(id) || !self.outbound.is_drained(id) {
            return;
        }
        self.leave_room(id, false);
        self.outbound.queue_close(id, code, reason);
    }

    // --------------------------------------------------------------- rooms

    /// `join`: leaves the current room (if any) and joins `req.room` in
    /// `dialect`'s namespace.
    pub fn join(
        &mut self,
        id: ConnId,
        dialect: Dialect,
        req: JoinRequest,
    ) -> Result<(), ErrorCode> {
        let result = self.join_room(id, dialect, req);
        self.settle();
        result
    }

    fn join_room(
        &mut self,
        id: ConnId,
        dialect: Dialect,
        req: JoinRequest,
    ) -> Result<(), ErrorCode> {
        let admission = self.hub.check_join(id, dialect, &req)?;
        self.leave_room(id, true);
        let r = self.hub.open_room(&admission);
        let json: Box<str> = req.user_json.into_boxed_str();
        // Tell the others first; the joiner's position starts after that entry.
        let members = self.hub.members(r);
        self.outbound
            .user_joined(r, members, dialect, &json, &self.conns);
        self.hub.seat_member(id, r, admission, json);
        self.outbound.enter(id, r);
        // The member list in join order, with the joiner where the dialect
        // lists it.
        let list = self.hub.member_list(r, id, dialect.lists_joiner());
        let sent = self.outbound.user_list(id, &self.conns, dialect, list);
        // Catch-up (v2 only): the replay follows `userList`.
        if sent.is_ok() && dialect == Dialect::V2 {
            let since = req.since.as_ref();
            self.outbound.catch_up(id, r, &req.room, since, &self.conns);
        }
        self.evict_if(id, sent);
        Ok(())
    }

    /// `leave`.
    pub fn leave(&mut self, id: ConnId) -> Result<(), ErrorCode> {
        if !self.hub.in_room(id) {
            return Err(ErrorCode::NotInRoom);
        }
        self.leave_room(id, true);
        self.settle();
        Ok(())
    }

    /// Takes `id` out of its room (see [`crate::outbound::outbox::Outbox::leave`]
    /// for what happens to its queue). With `announce`, the others get `userLeft`.
    fn leave_room(&mut self, id: ConnId, announce: bool) {
        let Some(gone) = self.hub.remove(id) else {
            return;
        };
        let eased = self.outbound.leave(id, gone.room, gone.emptied);
        if gone.emptied {
            return;
        }
        let members = self.hub.members(gone.room);
        if announce {
            self.outbound
                .user_left(gone.room, members, gone.dialect, &gone.user_id, &self.conns);
        }
        if eased {
            self.conns.wake_paused(members);
        }
    }

    // ----------------------------------------------------- private replies

    /// Closes `id` as a slow consumer when a reply found it over its bound.
    fn evict_if(&mut self, id: ConnId, sent: Result<(), SlowConsumer>) {
        if sent.is_err() {
            self.evict(id);
        }
    }

    /// An error with its standard text in `dialect`.
    pub fn send_error(&mut self, id: ConnId, dialect: Dialect, code: ErrorCode) {
        let message = code.message_in(dialect);
        self.send_error_text(id, dialect, code, message, None);
    }

    /// An error in `dialect`; `reset_ms` is the legacy `resetTime` (v2
    /// errors carry no such field).
    pub fn send_error_text(
        &mut self,
        id: ConnId,
        dialect: Dialect,
        code: ErrorCode,
        message: &str,
        reset_ms: Option<u64>,
    ) {
        let sent = (self.outbound).error(id, &self.conns, dialect, code, message, reset_ms);
        self.evict_if(id, sent);
        self.settle();
    }

    /// The answer to a `ping` request.
    pub fn send_pong(&mut self, id: ConnId) {
        let sent = self.outbound.pong(id, &self.conns);
        self.evict_if(id, sent);
        self.settle();
    }

    /// Queues a raw control frame (a WebSocket pong or ping).
    pub fn send_control(&mut self, id: ConnId, frame: &[u8]) {
        let sent = self.outbound.control(id, &self.conns, frame);
        self.evict_if(id, sent);
        self.settle();
    }
}

/// Applying the slow-consumer rules, strikes and the timers' work.
impl Relay {
    /// Closes `id` as a slow consumer: it leaves its room at once (the room
    /// sees `userLeft`), gets what is queued privately, then 1013.
    fn evict(&mut self, id: ConnId) {
        if self.conns.close_state(id) == Close::Open {
            self.stats.slow_consumer_closes += 1;
            self.begin_close(id, SLOW);
        }
    }

    /// Closes the slow consumers the outbound side names after frames were
    /// queued: members of the rooms that grew whose backlog passed the
    /// per-connection bound, then, while the process budget is exceeded,
    /// the connection with the largest backlog, in whichever room.
    pub fn settle(&mut self) {
        for r in self.outbound.take_grown() {
            for v in self.outbound.over_bound(r, self.hub.members(r)) {
                self.evict(v);
            }
        }
        // Evicting the member furthest behind frees the oldest entries of
        // its room's log; what it had not been sent privately is dropped
        // too, so the budget is a bound. A few per call keep one
        // operation's cost bounded.
        for _ in 0..8 {
            let Some(v) = self.outbound.budget_victim(&self.conns) else {
                break;
            };
            self.evict(v);
            self.outbound.discard_unsent(v);
        }
    }

    /// Closes every connection whose socket has taken no byte for the stall
    /// time while it had bytes to send. Paused connections are woken too: a
    /// laggard that stopped taking bytes no longer holds its room back once
    /// it counts as stuck.
    pub fn evict_stalled(&mut self, now: u64) {
        for id in self.conns.ids() {
            if !self.conns.is_open(id) {
                continue;
            }
            if self.conns.is_paused(id) {
                self.conns.wake(id);
            }
            if self.conns.close_state(id) == Close::Open && self.outbound.is_stalled(id, now) {
                self.evict(id);
            }
        }
    }

    /// Whether `id`'s frames should not be read for now (see
    /// [`Outbound::is_paced`]).
    #[inline]
    pub fn is_paced(&self, id: ConnId) -> bool {
        self.outbound.is_paced(id, |r: RoomId| self.hub.members(r))
    }

    // --------------------------------------------------------------- abuse

    /// Counts a strike against `ip`; when that blocks it, every connection
    /// from it is closed with 1008.
    pub fn strike(&mut self, ip: IpAddr) {
        if let StrikeOutcome::Blocked(len) = self.ips.strike(ip, clock::now_micros()) {
            log::warn!(
                "blocked {ip} for {} s after repeated abuse",
                len / 1_000_000
            );
            for id in self.conns.ids() {
                if self.conns.is_open(id) && self.conns.ip_of(id) == ip {
                    self.begin_close(id, Close::Now(1008, "blocked for abuse"));
                }
            }
        }
    }

    // ------------------------------------------------------- housekeeping

    /// The heartbeat: queues a ping for every open connection when `ping` is
    /// set, and drops those silent for longer than `dead_after` µs.
    pub fn heartbeat(&mut self, now: u64, ping: bool, dead_after: u64) {
        for id in self.conns.ids() {
            if !self.conns.is_open(id) {
                continue;
            }
            let conn = self.conns.get(id);
            if conn.close != Close::Open {
                continue;
            }
            if now.saturating_sub(conn.last_seen) > dead_after {
                self.stats.heartbeat_timeouts += 1;
                self.begin_close(id, Close::Drop);
            } else if ping {
                let sent = self.outbound.control(id, &self.conns, &PING_FRAME);
                self.evict_if(id, sent);
            }
        }
        self.settle();
        self.ips.sweep(now);
    }

    /// Shutdown: every connection delivers what is queued and is closed
    /// with 1001. Replays under way stop (after a frame begun): the history
    /// goes to the next process, where they can ask again.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for id in self.conns.ids() {
            if self.conns.is_open(id) {
                self.outbound.end_replay(id);
                self.begin_close(id, Close::Drain(1001, "server shutting down"));
            }
        }
    }
}
