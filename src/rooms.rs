//! Rooms and connections: membership, the frames members send each other,
//! and where the slow-consumer policy is applied.
//!
//! Everything lives in one [`Hub`] owned by the executor thread. What is
//! queued for a connection, and how it is written, is the business of
//! [`crate::outbound`]; the hub decides what goes into which queue and, at
//! the end of every operation that queued something ([`Hub::settle`]),
//! removes the slow consumers that [`Policy`] names.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, TcpStream};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use smol::Async;

use crate::clock;
use crate::config::{Config, ROOM_USERS_CAP};
use crate::limits::{IpTable, StrikeOutcome};
pub use crate::outbound::ConnId;
#[cfg(test)]
use crate::outbound::PACE_GRACE_US;
use crate::outbound::{Iov, NOBODY, Outbox, Policy, RoomLog};
use crate::protocol::{self, Dialect, ErrorCode, FrameBuilder, JoinRequest, Reaction, Reading};
use crate::reading::ReadBudget;
use crate::status::Stats;

const NO_ROOM: u32 = u32::MAX;

/// Close reason of a slow consumer.
const SLOW: Close = Close::Now(1013, "try again later");

/// The identity a connection joined with.
struct Member {
    id: heapless::String<64>,
    /// The member in its room's dialect ([`JoinRequest::user_json`]),
    /// embedded verbatim in frames.
    json: Box<str>,
}

/// How (and whether) a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    Open,
    /// Deliver everything queued, then send the close frame (shutdown).
    Drain(u16, &'static str),
    /// Send what is already queued privately, then the close frame; the
    /// connection has already left its room.
    Now(u16, &'static str),
    /// Drop the TCP connection without a close frame (dead or reset peer).
    Drop,
}

/// State of one WebSocket connection that other connections can touch.
pub struct Conn {
    pub ip: IpAddr,
    member: Option<Box<Member>>,
    room: u32,
    out: Outbox,
    waker: Option<Waker>,
    /// When anything last arrived from the peer (µs, [`clock::now_micros`]).
    pub last_seen: u64,
    pub close: Close,
    /// Its frames are not being read (pacing); woken when that may change.
    paused: bool,
    /// The dialect its frames are read and answered in.
    reading: Reading,
}

struct Room {
    name: heapless::String<64>,
    /// Every member speaks it; rooms of the two dialects never mix.
    dialect: Dialect,
    /// Members in join order.
    members: heapless::Vec<ConnId, ROOM_USERS_CAP>,
    log: RoomLog,
}

/// The relay's shared state. See the module documentation.
pub struct Hub {
    conns: Vec<Option<Conn>>,
    free_conns: Vec<ConnId>,
    open_conns: u32,
    rooms: Vec<Option<Room>>,
    free_rooms: Vec<u32>,
    /// Rooms by dialect and name: the dialects are separate namespaces.
    room_index: HashMap<(Dialect, heapless::String<64>), u32>,
    users_in_rooms: u32,
    /// Open connections reading v2 and legacy frames (`Dialect as usize`).
    conns_by_dialect: [u32; 2],
    pub ips: IpTable,
    pub stats: Stats,
    /// Memory for reading large client frames, shared by every session.
    pub read_budget: Rc<RefCell<ReadBudget>>,
    frames: FrameBuilder,
    /// Bytes of every room log and unsent private buffer.
    queued_bytes: usize,
    policy: Policy,
    /// Rooms whose logs grew since the last [`Hub::settle`]; when it
    /// overflows, every room is checked.
    grown: heapless::Vec<u32, 4>,
    grown_overflow: bool,
    max_connections: u32,
    max_rooms: u32,
    max_room_users: u32,
    /// Random per-process prefix of message ids, so ids stay unique across restarts.
    id_prefix: String,
    next_message: u64,
    /// The connection whose task is running (it flushes itself; no wake needed).
    running: ConnId,
    pub shutting_down: bool,
}

fn random_prefix() -> String {
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        // Fall back to time and pid: still distinct across restarts.
        let t = clock::unix_millis() ^ (u64::from(std::process::id()) << 40);
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Hub {
    pub fn new(cfg: &Config) -> Hub {
        let max_connections = cfg.max_connections;
        Hub {
            // Reserved, not touched: untouched capacity costs no resident memory.
            conns: Vec::with_capacity(max_connections as usize),
            free_conns: Vec::new(),
            open_conns: 0,
            rooms: Vec::new(),
            free_rooms: Vec::new(),
            room_index: HashMap::new(),
            users_in_rooms: 0,
            conns_by_dialect: [0; 2],
            ips: IpTable::new(
                max_connections as usize + 1024,
                cfg.connection_limit_per_ip,
                cfg.block_strike_limit,
            ),
            stats: Stats::default(),
            read_budget: Rc::new(RefCell::new(ReadBudget::new(cfg.max_message_size as usize))),
            frames: FrameBuilder::new(),
            queued_bytes: 0,
            policy: Policy::new(cfg),
            grown: heapless::Vec::new(),
            grown_overflow: false,
            max_connections,
            max_rooms: cfg.max_rooms,
            max_room_users: cfg.max_room_users,
            id_prefix: random_prefix(),
            next_message: 0,
            running: NOBODY,
            shutting_down: false,
        }
    }

    // ------------------------------------------------------------ counts

    pub fn open_connections(&self) -> u32 {
        self.open_conns
    }

    pub fn active_rooms(&self) -> usize {
        self.room_index.len()
    }

    pub fn users_in_rooms(&self) -> u32 {
        self.users_in_rooms
    }

    /// Open connections currently reading `dialect`.
    pub fn connections_in(&self, dialect: Dialect) -> u32 {
        self.conns_by_dialect[dialect as usize]
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn is_full(&self) -> bool {
        self.open_conns >= self.max_connections
    }

    // ------------------------------------------------------- connections

    /// Registers an admitted connection (its IP already counted by `ips`),
    /// reading v2 frames until [`set_reading`](Self::set_reading) says otherwise.
    pub fn add_conn(&mut self, ip: IpAddr) -> ConnId {
        let conn = Conn {
            ip,
            member: None,
            room: NO_ROOM,
            out: Outbox::default(),
            waker: None,
            last_seen: clock::now_micros(),
            close: Close::Open,
            paused: false,
            reading: Reading::starting(Dialect::V2),
        };
        self.conns_by_dialect[Dialect::V2 as usize] += 1;
        self.open_conns += 1;
        self.stats.connections_total += 1;
        match self.free_conns.pop() {
            Some(id) => {
                self.conns[id as usize] = Some(conn);
                id
            }
            None => {
                self.conns.push(Some(conn));
                (self.conns.len() - 1) as ConnId
            }
        }
    }

    /// Forgets a connection: it leaves its room and its IP slot is released.
    pub fn remove_conn(&mut self, id: ConnId) {
        let announce = !self.shutting_down;
        self.leave_room(id, announce);
        let Some(conn) = self.conns[id as usize].take() else {
            return;
        };
        self.queued_bytes -= conn.out.private_pending();
        self.ips.release(conn.ip);
        self.conns_by_dialect[conn.reading.dialect as usize] -= 1;
        self.open_conns -= 1;
        self.free_conns.push(id);
    }

    #[inline]
    fn conn(&self, id: ConnId) -> &Conn {
        self.conns[id as usize]
            .as_ref()
            .expect("live connection id")
    }

    #[inline]
    fn conn_mut(&mut self, id: ConnId) -> &mut Conn {
        self.conns[id as usize]
            .as_mut()
            .expect("live connection id")
    }

    #[inline]
    fn log(&self, r: u32) -> Option<&RoomLog> {
        (r != NO_ROOM).then(|| &self.rooms[r as usize].as_ref().expect("room").log)
    }

    /// Everything queued for `id`.
    #[inline]
    fn backlog(&self, id: ConnId) -> usize {
        let conn = self.conn(id);
        conn.out.backlog(self.log(conn.room))
    }

    pub fn close_state(&self, id: ConnId) -> Close {
        self.conn(id).close
    }

    pub fn ip_of(&self, id: ConnId) -> IpAddr {
        self.conn(id).ip
    }

    /// How `id` reads its frames (its dialect and whether that is fixed).
    pub fn reading(&self, id: ConnId) -> Reading {
        self.conn(id).reading
    }

    /// Records how `id` reads its frames from now on: the path's dialect at
    /// the upgrade, the fixed one after its first frame with a body.
    pub fn set_reading(&mut self, id: ConnId, reading: Reading) {
        let conn = self.conn_mut(id);
        let before = conn.reading.dialect;
        conn.reading = reading;
        self.conns_by_dialect[before as usize] -= 1;
        self.conns_by_dialect[reading.dialect as usize] += 1;
    }

    /// Marks the start of `id`'s poll and records its waker.
    pub fn enter(&mut self, id: ConnId, waker: &Waker) {
        self.running = id;
        let conn = self.conn_mut(id);
        match &conn.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => conn.waker = Some(waker.clone()),
        }
    }

    pub fn exit(&mut self) {
        self.running = NOBODY;
    }

    pub fn touch(&mut self, id: ConnId, now: u64) {
        self.conn_mut(id).last_seen = now;
    }

    fn wake(&self, id: ConnId) {
        if id != self.running
            && let Some(w) = self.conns[id as usize]
                .as_ref()
                .and_then(|c| c.waker.as_ref())
        {
            w.wake_by_ref();
        }
    }

    /// Starts closing `id`. A connection already closing keeps its first reason.
    pub fn begin_close(&mut self, id: ConnId, close: Close) {
        if self.conns[id as usize].is_none() || self.conn(id).close != Close::Open {
            return;
        }
        if matches!(close, Close::Now(..) | Close::Drop) {
            self.leave_room(id, true);
        }
        self.conn_mut(id).close = close;
        self.wake(id);
    }

    // ---------------------------------------------------- slow consumers

    /// Whether `id`'s frames should not be read for now, so that TCP flow
    /// control slows the sender down: too much is queued for it, or a member
    /// of its room that is still taking bytes is far behind (a room's
    /// senders wait for its readers). A member whose socket has taken
    /// nothing for a while ([`Policy::is_stuck`]) holds nobody back.
    pub fn is_paced(&self, id: ConnId) -> bool {
        self.paced_at(id, clock::now_micros)
    }

    /// [`Hub::is_paced`] with the clock given: it is read only when the
    /// room's log is long.
    fn paced_at(&self, id: ConnId, clock: impl FnOnce() -> u64) -> bool {
        let conn = self.conn(id);
        let log = self.log(conn.room);
        if conn.out.backlog(log) > self.policy.pace_limit(self.queued_bytes) {
            return true;
        }
        let Some(log) = log else { return false };
        if log.bytes() <= self.policy.pace {
            return false;
        }
        let now = clock();
        let room = self.rooms[conn.room as usize].as_ref().expect("room");
        room.members.iter().any(|&m| {
            let out = &self.conn(m).out;
            out.backlog(Some(log)) > self.policy.pace && !self.policy.is_stuck(out, now)
        })
    }

    pub fn is_paused(&self, id: ConnId) -> bool {
        self.conn(id).paused
    }

    /// Records whether `id`'s session stopped reading for pacing.
    pub fn set_paused(&mut self, id: ConnId, paused: bool) {
        self.conn_mut(id).paused = paused;
    }

    /// Wakes the paused members of room `r`: what held them back went down.
    fn wake_paused(&self, r: u32) {
        if let Some(room) = self.rooms[r as usize].as_ref() {
            for &m in &room.members {
                if self.conn(m).paused {
                    self.wake(m);
                }
            }
        }
    }

    /// Closes `id` as a slow consumer: it leaves its room at once (the room
    /// sees `userLeft`), gets what is queued privately, then 1013.
    fn evict(&mut self, id: ConnId) {
        if self.conn(id).close == Close::Open {
            self.stats.slow_consumer_closes += 1;
            self.begin_close(id, SLOW);
        }
    }

    /// Applies the slow-consumer policy after frames were queued: members
    /// of the rooms that grew whose backlog passed the per-connection bound
    /// go, then, while the process budget is exceeded, the connection with
    /// the largest backlog, in whichever room.
    fn settle(&mut self) {
        let rooms: heapless::Vec<u32, 4> = std::mem::take(&mut self.grown);
        if std::mem::take(&mut self.grown_overflow) {
            for r in 0..self.rooms.len() as u32 {
                self.evict_over_bound(r);
            }
        } else {
            for r in rooms {
                self.evict_over_bound(r);
            }
        }
        // Rule (c). Evicting the member furthest behind frees the oldest
        // entries of its room's log; what it had not been sent privately is
        // dropped too (the frame being written is finished), so the budget
        // is a bound. A few per call keep one operation's cost bounded.
        for _ in 0..8 {
            if !self.policy.over_budget(self.queued_bytes, 0) {
                break;
            }
            let victim = (0..self.conns.len() as ConnId)
                .filter(|&i| {
                    self.conns[i as usize]
                        .as_ref()
                        .is_some_and(|c| matches!(c.close, Close::Open | Close::Now(..)))
                })
                .max_by_key(|&i| self.backlog(i));
            let Some(v) = victim.filter(|&v| self.backlog(v) > 0) else {
                break;
            };
            self.evict(v);
            self.queued_bytes -= self.conn_mut(v).out.discard_unsent();
        }
    }

    /// Rule (a) for room `r`: members more than the bound behind.
    fn evict_over_bound(&mut self, r: u32) {
        let Some(room) = self.rooms.get(r as usize).and_then(Option::as_ref) else {
            return;
        };
        if !self.policy.over_queue(room.log.bytes()) {
            return;
        }
        let victims: heapless::Vec<ConnId, ROOM_USERS_CAP> = room
            .members
            .iter()
            .copied()
            .filter(|&m| self.policy.over_queue(self.backlog(m)))
            .collect();
        for v in victims {
            self.evict(v);
        }
    }

    /// Rule (b): closes every connection whose socket has taken no byte for
    /// the stall time while it had bytes to send.
    /// Paused connections are woken too: a laggard that stopped taking
    /// bytes no longer holds its room back once it counts as stuck.
    pub fn evict_stalled(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.paused) {
                self.wake(i as ConnId);
            }
            let stalled = self.conns[i]
                .as_ref()
                .is_some_and(|c| c.close == Close::Open && self.policy.is_stalled(&c.out, now));
            if stalled {
                self.evict(i as ConnId);
            }
        }
    }

    // ---------------------------------------------------- private replies

    /// Appends a frame built by `build` to `id`'s private queue: its private
    /// buffer, or, while room frames are still queued for it, the room log
    /// (so that replies keep the order of requests). A connection already
    /// over the per-connection bound is closed as a slow consumer instead.
    fn push_private(&mut self, id: ConnId, build: impl FnOnce(&mut Vec<u8>, &mut FrameBuilder)) {
        let conn = self.conn(id);
        if conn.out.close_queued || conn.close == Close::Drop {
            return;
        }
        if self.policy.over_queue(self.backlog(id)) {
            self.evict(id);
            return;
        }
        let r = conn.room;
        if self.log(r).is_some_and(|log| conn.out.behind(log)) {
            let mut bytes = Vec::new();
            build(&mut bytes, &mut self.frames);
            self.push_entry(r, Rc::from(bytes), id, true);
            return;
        }
        let Hub {
            conns,
            frames,
            queued_bytes,
            ..
        } = self;
        let private = conns[id as usize]
            .as_mut()
            .expect("live connection id")
            .out
            .private_mut();
        let before = private.len();
        build(private, frames);
        *queued_bytes += private.len() - before;
        self.wake(id);
    }

    /// An error with its standard text, in `id`'s dialect.
    pub fn send_error(&mut self, id: ConnId, code: ErrorCode) {
        let message = code.message_in(self.conn(id).reading.dialect);
        self.send_error_text(id, code, message, None);
    }

    /// An error in `id`'s dialect; `reset_ms` is the legacy `resetTime`
    /// (v2 errors carry no such field).
    pub fn send_error_text(
        &mut self,
        id: ConnId,
        code: ErrorCode,
        message: &str,
        reset_ms: Option<u64>,
    ) {
        let dialect = self.conn(id).reading.dialect;
        self.push_private(id, |out, frames| {
            protocol::write_error(frames.begin(), dialect, code, message, reset_ms);
            frames.finish_into(out);
        });
        self.settle();
    }

    pub fn send_pong(&mut self, id: ConnId) {
        self.push_private(id, |out, frames| {
            frames.begin().extend_from_slice(br#"{"type":"pong"}"#);
            frames.finish_into(out);
        });
        self.settle();
    }

    /// Queues a raw control frame (a WebSocket pong or ping).
    pub fn send_control(&mut self, id: ConnId, frame: &[u8]) {
        self.push_private(id, |out, _| out.extend_from_slice(frame));
        self.settle();
    }

    // --------------------------------------------------------------- rooms

    /// `join`: leaves the current room (if any) and joins `req.room` in the
    /// connection's dialect's namespace.
    pub fn join(&mut self, id: ConnId, req: JoinRequest) -> Result<(), ErrorCode> {
        let result = self.join_room(id, req);
        self.settle();
        result
    }

    fn join_room(&mut self, id: ConnId, req: JoinRequest) -> Result<(), ErrorCode> {
        let dialect = self.conn(id).reading.dialect;
        let name: heapless::String<64> =
            heapless::String::try_from(req.room.as_str()).map_err(|_| ErrorCode::InvalidRoomId)?;
        let key = (dialect, name);
        let current = self.conn(id).room;
        let target = self.room_index.get(&key).copied();
        if let Some(r) = target {
            let room = self.rooms[r as usize].as_ref().expect("indexed room");
            let taken = room.members.iter().any(|&m| {
                m != id
                    && self.conns[m as usize]
                        .as_ref()
                        .and_then(|c| c.member.as_ref())
                        .is_some_and(|mem| mem.id.as_str() == req.user_id)
            });
            if taken {
                return Err(ErrorCode::UserIdTaken);
            }
            let others = room.members.iter().filter(|&&m| m != id).count();
            if others >= self.max_room_users as usize {
                return Err(ErrorCode::RoomFull);
            }
        } else {
            // Leaving a room of one frees its slot for the new room.
            let freed = current != NO_ROOM
                && self.rooms[current as usize]
                    .as_ref()
                    .is_some_and(|r| r.members.len() == 1);
            let rooms_after_leave = self.room_index.len() - usize::from(freed);
            if rooms_after_leave >= self.max_rooms as usize {
                return Err(ErrorCode::TooManyRooms);
            }
        }
        let user_id = heapless::String::try_from(req.user_id.as_str())
            .map_err(|_| ErrorCode::InvalidUserId)?;

        self.leave_room(id, true);

        let r = match self.room_index.get(&key) {
            Some(&r) => r,
            None => self.create_room(key),
        };
        let json: Box<str> = req.user_json.into_boxed_str();

        // Tell the others first; the joiner's position starts after that entry.
        protocol::write_user_joined(self.frames.begin(), dialect, &json);
        let frame = self.frames.finish_shared();
        self.push_entry(r, frame, NOBODY, false);

        let Hub { rooms, conns, .. } = self;
        let room = rooms[r as usize].as_mut().expect("room");
        let _ = room.members.push(id);
        let conn = conns[id as usize].as_mut().expect("live connection id");
        conn.room = r;
        conn.out.enter(&room.log);
        conn.member = Some(Box::new(Member { id: user_id, json }));
        self.users_in_rooms += 1;

        // The member list in join order, with the joiner where the dialect
        // lists it.
        let conns = &self.conns;
        let room = self.rooms[r as usize].as_ref().expect("room");
        let members = room
            .members
            .iter()
            .filter(|&&m| m != id || dialect.lists_joiner())
            .filter_map(|&m| conns[m as usize].as_ref()?.member.as_ref())
            .map(|mem| &*mem.json);
        protocol::write_user_list(self.frames.begin(), dialect, members);
        self.push_private(id, |out, frames| frames.finish_into(out));
        self.frames.shrink();
        Ok(())
    }

    fn create_room(&mut self, key: (Dialect, heapless::String<64>)) -> u32 {
        let room = Room {
            name: key.1.clone(),
            dialect: key.0,
            members: heapless::Vec::new(),
            log: RoomLog::default(),
        };
        let r = match self.free_rooms.pop() {
            Some(r) => {
                self.rooms[r as usize] = Some(room);
                r
            }
            None => {
                self.rooms.push(Some(room));
                (self.rooms.len() - 1) as u32
            }
        };
        self.room_index.insert(key, r);
        r
    }

    /// `leave`.
    pub fn leave(&mut self, id: ConnId) -> Result<(), ErrorCode> {
        if self.conn(id).room == NO_ROOM {
            return Err(ErrorCode::NotInRoom);
        }
        self.leave_room(id, true);
        self.settle();
        Ok(())
    }

    /// Takes `id` out of its room (see [`Outbox::leave`] for what happens to
    /// its queue). With `announce`, the others get `userLeft`.
    fn leave_room(&mut self, id: ConnId, announce: bool) {
        let Some(conn) = self.conns[id as usize].as_mut() else {
            return;
        };
        let r = conn.room;
        if r == NO_ROOM {
            return;
        }
        conn.room = NO_ROOM;
        let member = conn.member.take();
        let room = self.rooms[r as usize].as_mut().expect("room of a member");
        self.queued_bytes += conn.out.leave(&mut room.log, id);
        if let Some(pos) = room.members.iter().position(|&m| m == id) {
            room.members.remove(pos);
        }
        self.users_in_rooms -= 1;
        let before = room.log.bytes();
        self.queued_bytes -= room.log.trim();
        let eased = before > self.policy.pace && room.log.bytes() <= self.policy.pace;
        if room.members.is_empty() {
            let room = self.rooms[r as usize].take().expect("room");
            self.queued_bytes -= room.log.bytes();
            self.room_index.remove(&(room.dialect, room.name));
            self.free_rooms.push(r);
            return;
        }
        if announce && let Some(member) = member {
            protocol::write_user_left(self.frames.begin(), room.dialect, &member.id);
            let frame = self.frames.finish_shared();
            self.push_entry(r, frame, NOBODY, false);
        }
        if eased {
            self.wake_paused(r);
        }
    }

    /// Appends a frame to room `r`'s log, for every member but `target`
    /// (or, with `only`, for `target` alone) and wakes them. The policy is
    /// applied later, by [`Hub::settle`]: evicting here could empty the room
    /// under the caller's feet.
    fn push_entry(&mut self, r: u32, frame: Rc<[u8]>, target: ConnId, only: bool) {
        let len = frame.len();
        let room = self.rooms[r as usize].as_mut().expect("room");
        let target_is_member = target != NOBODY && room.members.contains(&target);
        let remaining = if only {
            u32::from(target_is_member)
        } else {
            room.members.len() as u32 - u32::from(target_is_member)
        };
        if remaining == 0 {
            return;
        }
        room.log.push(frame, target, only, remaining);
        self.queued_bytes += len;
        if !self.grown.contains(&r) && self.grown.push(r).is_err() {
            self.grown_overflow = true;
        }
        let room = self.rooms[r as usize].as_ref().expect("room");
        for &m in &room.members {
            if (m == target) == only {
                self.wake(m);
            }
        }
    }

    /// Builds a room frame from the sender's identity: `build` gets the
    /// buffer, the room's dialect, the member and the message-id prefix.
    fn member_frame(
        &mut self,
        id: ConnId,
        build: impl FnOnce(&mut Vec<u8>, Dialect, &Member, &str),
    ) -> Result<(u32, Rc<[u8]>), ErrorCode> {
        let Hub {
            conns,
            frames,
            id_prefix,
            ..
        } = self;
        let conn = conns[id as usize].as_ref().expect("live connection id");
        let member = match (&conn.member, conn.room) {
            (Some(m), r) if r != NO_ROOM => m,
            _ => return Err(ErrorCode::NotInRoom),
        };
        build(frames.begin(), conn.reading.dialect, member, id_prefix);
        let frame = frames.finish_shared();
        frames.shrink();
        Ok((conn.room, frame))
    }

    pub fn in_room(&self, id: ConnId) -> bool {
        self.conn(id).room != NO_ROOM
    }

    /// Who gets a relayed message or reaction: everyone in v2, the others in
    /// legacy rooms (as `push_from`'s `skip`).
    fn relay_skip(&self, id: ConnId) -> ConnId {
        if self.conn(id).reading.dialect.echoes_to_sender() {
            NOBODY
        } else {
            id
        }
    }

    /// Pushes a frame from member `id` to room `r`, skipping `skip` (`id`
    /// itself or `NOBODY`). A sender moves past frames that skip it at once:
    /// otherwise its position would rest there until it had something else
    /// to write, and it would not count as drained (a shutdown's close frame
    /// waits for that).
    fn push_from(&mut self, id: ConnId, r: u32, frame: Rc<[u8]>, skip: ConnId) {
        self.push_entry(r, frame, skip, false);
        let Hub { conns, rooms, .. } = self;
        let conn = conns[id as usize].as_mut().expect("live connection id");
        if skip == id && conn.room == r {
            let log = &rooms[r as usize].as_ref().expect("room").log;
            conn.out.skip_foreign(log, id);
        }
    }

    /// `message`: relays already-validated ciphertext to the room.
    pub fn relay_message(&mut self, id: ConnId, content: &str) -> Result<(), ErrorCode> {
        let seq = self.next_message + 1;
        let (r, frame) = self.member_frame(id, |out, dialect, member, prefix| match dialect {
            Dialect::V2 => {
                let now = clock::unix_millis();
                protocol::write_message(out, &member.json, prefix, seq, content, now);
            }
            Dialect::Legacy => protocol::write_legacy_message(out, content),
        })?;
        self.next_message = seq;
        self.stats.messages_relayed += 1;
        let skip = self.relay_skip(id);
        self.push_from(id, r, frame, skip);
        self.settle();
        Ok(())
    }

    /// `typing`: tells the other members.
    pub fn typing(&mut self, id: ConnId, is_typing: bool) -> Result<(), ErrorCode> {
        let (r, frame) = self.member_frame(id, |out, dialect, member, _| {
            protocol::write_typing(out, dialect, &member.json, is_typing);
        })?;
        self.push_from(id, r, frame, id);
        self.settle();
        Ok(())
    }

    /// `reaction`: relayed to the room like a message.
    pub fn reaction(&mut self, id: ConnId, reaction: &Reaction<'_>) -> Result<(), ErrorCode> {
        let (r, frame) = self.member_frame(id, |out, dialect, member, _| {
            protocol::write_reaction(out, dialect, &member.json, &member.id, reaction);
        })?;
        self.stats.reactions_relayed += 1;
        let skip = self.relay_skip(id);
        self.push_from(id, r, frame, skip);
        self.settle();
        Ok(())
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
            for i in 0..self.conns.len() {
                if self.conns[i].as_ref().is_some_and(|c| c.ip == ip) {
                    self.begin_close(i as ConnId, Close::Now(1008, "blocked for abuse"));
                }
            }
        }
    }

    // ------------------------------------------------------- housekeeping

    /// The heartbeat: queues a ping for every open connection when `ping` is
    /// set, and drops those silent for longer than `dead_after` µs.
    pub fn heartbeat(&mut self, now: u64, ping: bool, dead_after: u64) {
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_ref() else {
                continue;
            };
            let id = i as ConnId;
            if conn.close != Close::Open {
                continue;
            }
            if now.saturating_sub(conn.last_seen) > dead_after {
                self.stats.heartbeat_timeouts += 1;
                self.begin_close(id, Close::Drop);
            } else if ping {
                self.push_private(id, |out, _| out.extend_from_slice(&protocol::PING_FRAME));
            }
        }
        self.settle();
        self.ips.sweep(now);
    }

    /// Shutdown: every connection delivers what is queued and is closed with 1001.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for i in 0..self.conns.len() {
            if self.conns[i].is_some() {
                self.begin_close(i as ConnId, Close::Drain(1001, "server shutting down"));
            }
        }
    }

    /// During shutdown: whether every connection is gone. Sessions end once
    /// their close frame is out and the client answered (or went quiet for
    /// the grace time), so this is the moment the process may exit without
    /// resetting anyone.
    pub fn all_closed(&self) -> bool {
        self.open_conns == 0
    }

    // -------------------------------------------------------------- output

    /// Whether `id` has nothing left to write.
    fn is_drained(&self, id: ConnId) -> bool {
        let conn = self.conn(id);
        conn.out.is_drained(self.log(conn.room))
    }

    /// Whether the close frame has been queued and everything written.
    pub fn close_sent(&self, id: ConnId) -> bool {
        self.conn(id).out.close_queued && self.is_drained(id)
    }

    /// Puts the close frame in the private buffer once what must precede it
    /// has been written.
    fn queue_close_if_due(&mut self, id: ConnId) {
        let conn = self.conn(id);
        let (code, reason) = match conn.close {
            Close::Drain(code, reason) | Close::Now(code, reason) => (code, reason),
            Close::Open | Close::Drop => return,
        };
        if conn.out.close_queued || !self.is_drained(id) {
            return;
        }
        // Nothing more may follow the close frame: leave the room silently.
        self.leave_room(id, false);
        let frame = protocol::close_frame(code, reason);
        self.queued_bytes += frame.len();
        let out = &mut self.conn_mut(id).out;
        out.private_mut().extend_from_slice(&frame);
        out.close_queued = true;
    }

    /// Writes as much of `id`'s pending output as the socket takes, gathering
    /// all queued frames into one vectored write. Ready when nothing is left.
    pub fn poll_flush(
        &mut self,
        id: ConnId,
        sock: &Async<TcpStream>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            self.queue_close_if_due(id);
            let result = {
                let conn = self.conn(id);
                let mut iov = Iov::new();
                conn.out.gather(self.log(conn.room), id, &mut iov);
                if iov.is_empty() {
                    None
                } else {
                    let mut stream: &TcpStream = sock.get_ref();
                    Some(stream.write_vectored(&iov))
                }
            };
            let Some(result) = result else {
                let Hub { conns, rooms, .. } = self;
                let conn = conns[id as usize].as_mut().expect("live connection id");
                conn.out.note_write(false, false, 0);
                if conn.room != NO_ROOM {
                    let log = &rooms[conn.room as usize].as_ref().expect("room").log;
                    conn.out.skip_foreign(log, id);
                }
                // Drained: a close may be due now.
                if self.conn(id).close != Close::Open && !self.conn(id).out.close_queued {
                    self.queue_close_if_due(id);
                    if self.conn(id).out.close_queued {
                        continue;
                    }
                }
                return Poll::Ready(Ok(()));
            };
            match result {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.consume(id, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match sock.poll_writable(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        let now = clock::now_micros();
                        self.conn_mut(id).out.note_write(false, true, now);
                        return Poll::Pending;
                    }
                },
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Advances `id`'s queues by `n` written bytes.
    fn consume(&mut self, id: ConnId, n: usize) {
        let Hub { conns, rooms, .. } = self;
        let conn = conns[id as usize].as_mut().expect("live connection id");
        let r = conn.room;
        let mut log = (r != NO_ROOM).then(|| &mut rooms[r as usize].as_mut().expect("room").log);
        let done = conn.out.consume(log.as_deref_mut(), id, n);
        conn.out.note_write(true, false, 0);
        self.queued_bytes -= done.private_bytes;
        self.stats.deliveries += done.delivered;
        if done.passed_front
            && let Some(log) = log
        {
            let before = log.bytes();
            self.queued_bytes -= log.trim();
            if before > self.policy.pace && log.bytes() <= self.policy.pace {
                self.wake_paused(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use std::collections::HashMap;

    fn hub(env: &[(&str, &str)]) -> Hub {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hub::new(&Config::load(&Source::from_maps(env, HashMap::new())).unwrap())
    }

    fn conn(hub: &mut Hub) -> ConnId {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        hub.add_conn(ip)
    }

    fn join(hub: &mut Hub, id: ConnId, room: &str, user: &str) -> Result<(), ErrorCode> {
        let raw = format!(r#"{{"room":"{room}","user":{{"id":"{user}","name":"{user}"}}}}"#);
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&raw).unwrap();
        hub.join(id, protocol::parse_join(Some(&raw)).unwrap())
    }

    /// Takes up to `limit` pending bytes of `id` as if the socket accepted
    /// them, and returns the text frames that were completed.
    fn write(hub: &mut Hub, id: ConnId, limit: usize) -> Vec<u8> {
        let bytes: Vec<u8> = {
            let conn = hub.conn(id);
            let mut iov = Iov::new();
            conn.out.gather(hub.log(conn.room), id, &mut iov);
            iov.iter().flat_map(|s| s.iter().copied()).collect()
        };
        let n = bytes.len().min(limit);
        hub.consume(id, n);
        bytes[..n].to_vec()
    }

    /// Splits server frames (unmasked) into JSON texts.
    fn frames(mut bytes: &[u8]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while bytes.len() >= 2 {
            let (len, start) = match bytes[1] {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            if bytes[0] == 0x81 {
                out.push(serde_json::from_slice(&bytes[start..start + len]).unwrap());
            }
            bytes = &bytes[start + len..];
        }
        out
    }

    fn drain(hub: &mut Hub, id: ConnId) -> Vec<serde_json::Value> {
        frames(&write(hub, id, usize::MAX))
    }

    /// Two members, `a` and `b`, in room `r`, with nothing left to write.
    fn settled_pair(h: &mut Hub) -> (ConnId, ConnId) {
        let (a, b) = (conn(h), conn(h));
        join(h, a, "r", "a").unwrap();
        join(h, b, "r", "b").unwrap();
        drain(h, a);
        drain(h, b);
        (a, b)
    }

    #[test]
    fn membership_and_fan_out() {
        let mut h = hub(&[]);
        let (a, b, c) = (conn(&mut h), conn(&mut h), conn(&mut h));
        join(&mut h, a, "r", "a").unwrap();
        join(&mut h, b, "r", "b").unwrap();
        assert_eq!(h.users_in_rooms(), 2);
        let got_a = drain(&mut h, a);
        assert_eq!(
            got_a
                .iter()
                .map(|v| v["type"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["userList", "userJoined"]
        );
        let got_b = drain(&mut h, b);
        assert_eq!(got_b.len(), 1);
        assert_eq!(got_b[0]["users"].as_array().unwrap().len(), 2);
        assert_eq!(join(&mut h, c, "r", "a"), Err(ErrorCode::UserIdTaken));
        h.relay_message(a, "QUJD").unwrap();
        h.typing(a, true).unwrap();
        assert_eq!(
            drain(&mut h, a).len(),
            1,
            "the typist does not get its own userTyping"
        );
        assert_eq!(drain(&mut h, b).len(), 2);
        assert_eq!(h.queued_bytes(), 0, "every byte queued was sent");
        assert_eq!(h.leave(c), Err(ErrorCode::NotInRoom));
        h.remove_conn(b);
        assert_eq!(
            drain(&mut h, a)[0],
            serde_json::json!({"type":"userLeft","userId":"b"})
        );
        h.remove_conn(a);
        assert_eq!(h.active_rooms(), 0);
        assert_eq!(
            (h.users_in_rooms(), h.queued_bytes(), h.open_connections()),
            (0, 0, 1)
        );
    }

    #[test]
    fn room_and_server_capacity() {
        let mut h = hub(&[("MAX_ROOM_USERS", "2"), ("MAX_ROOMS", "1")]);
        let ids: Vec<_> = (0..3).map(|_| conn(&mut h)).collect();
        join(&mut h, ids[0], "r", "u0").unwrap();
        join(&mut h, ids[1], "r", "u1").unwrap();
        assert_eq!(join(&mut h, ids[2], "r", "u2"), Err(ErrorCode::RoomFull));
        assert_eq!(
            join(&mut h, ids[2], "s", "u2"),
            Err(ErrorCode::TooManyRooms)
        );
        // Moving the only member of a room frees the room for the new one.
        h.remove_conn(ids[1]);
        join(&mut h, ids[0], "s", "u0").unwrap();
        assert_eq!(h.active_rooms(), 1);
    }

    #[test]
    fn half_written_frames_are_finished_and_order_is_kept() {
        let mut h = hub(&[]);
        let (a, b) = settled_pair(&mut h);
        for _ in 0..3 {
            h.relay_message(a, "QUJD").unwrap();
        }
        // b.s socket takes a few bytes at a time; an error for b is queued.
        let mut bytes = write(&mut h, b, 7);
        h.send_error(b, ErrorCode::InvalidJson);
        while !h.is_drained(b) {
            bytes.extend(write(&mut h, b, 5));
        }
        let got = frames(&bytes);
        let kinds: Vec<_> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
        // The error was caused after the three messages: it comes after them.
        assert_eq!(kinds, ["message", "message", "message", "error"]);
        // Leaving with a half-written frame still completes that frame.
        h.relay_message(a, "QUJD").unwrap();
        let mut bytes = write(&mut h, b, 10);
        h.leave(b).unwrap();
        bytes.extend(write(&mut h, b, usize::MAX));
        assert_eq!(frames(&bytes).len(), 1);
        drain(&mut h, a);
        assert_eq!(h.queued_bytes(), 0);
    }

    #[test]
    fn a_reply_queued_behind_room_frames_survives_leaving() {
        let mut h = hub(&[]);
        let (a, b) = settled_pair(&mut h);
        h.relay_message(a, "QUJD").unwrap();
        h.send_error(a, ErrorCode::InvalidJson);
        h.leave(a).unwrap();
        let got = drain(&mut h, a);
        let kinds: Vec<_> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["error"], "the room's frames go, the reply stays");
        drain(&mut h, b);
        assert_eq!(h.queued_bytes(), 0);
    }

    /// Joins `id` to `room` as a legacy connection.
    fn legacy_join(hub: &mut Hub, id: ConnId, room: &str, user: &str) -> Result<(), ErrorCode> {
        hub.set_reading(
            id,
            Reading {
                dialect: Dialect::Legacy,
                fixed: true,
            },
        );
        let raw = format!(r#"{{"roomId":"{room}","userId":"{user}","username":"{user}"}}"#);
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&raw).unwrap();
        hub.join(id, protocol::parse_legacy_join(Some(&raw)).unwrap())
    }

    #[test]
    fn a_sender_its_own_frames_skip_stays_drained() {
        let mut h = hub(&[]);
        let (a, b) = settled_pair(&mut h);
        h.typing(a, true).unwrap();
        assert!(h.is_drained(a), "its own userTyping is not for it");
        assert_eq!(drain(&mut h, b).len(), 1);
        // Legacy messages and reactions skip their sender too.
        let (c, d) = (conn(&mut h), conn(&mut h));
        legacy_join(&mut h, c, "r", "c").unwrap();
        legacy_join(&mut h, d, "r", "d").unwrap();
        assert_eq!(
            drain(&mut h, c),
            [
                serde_json::json!({"type":"userList","payload":{"users":[]}}),
                serde_json::json!({"type":"userJoined","payload":{"userId":"d","username":"d"}})
            ]
        );
        drain(&mut h, d);
        h.relay_message(c, "QUJD").unwrap();
        assert!(h.is_drained(c));
        assert_eq!(
            drain(&mut h, d),
            [serde_json::json!({"type":"message","payload":"QUJD"})]
        );
        // The v2 room of the same name saw none of it.
        assert!(h.is_drained(a) && h.is_drained(b));
        assert_eq!(h.active_rooms(), 2);
        // Shutdown: every close frame can go out at once.
        h.begin_shutdown();
        for id in [a, b, c, d] {
            h.queue_close_if_due(id);
            drain(&mut h, id);
            assert!(h.close_sent(id));
        }
        assert_eq!(
            (
                h.connections_in(Dialect::V2),
                h.connections_in(Dialect::Legacy)
            ),
            (2, 2)
        );
    }

    /// `a` sends `n` messages of `len` bytes and reads everything at once.
    fn send_and_drain(h: &mut Hub, a: ConnId, n: usize, len: usize) -> Vec<serde_json::Value> {
        let content = "A".repeat(len);
        let mut seen = Vec::new();
        for _ in 0..n {
            h.relay_message(a, &content).unwrap();
            seen.extend(drain(h, a));
        }
        seen
    }

    #[test]
    fn a_member_past_the_queue_bound_is_evicted_and_readers_stay() {
        let mut h = hub(&[
            ("RATE_LIMIT_MAX_MESSAGE_SIZE", "20000"),
            ("SLOW_CONSUMER_QUEUE_BYTES", "65536"),
        ]);
        let (a, slow) = settled_pair(&mut h);
        let mut evicted_after = None;
        let mut seen = Vec::new();
        for i in 1..=10 {
            seen = send_and_drain(&mut h, a, 1, 16_000);
            if h.close_state(slow) != Close::Open {
                evicted_after = Some(i);
                break;
            }
        }
        // 4 messages (64 KB of content plus framing) are within the bound; the 5th is not.
        assert_eq!(evicted_after, Some(5));
        assert_eq!(h.close_state(slow), SLOW);
        assert_eq!(h.close_state(a), Close::Open);
        assert!(!h.in_room(slow));
        assert_eq!(h.stats.slow_consumer_closes, 1);
        assert_eq!(h.users_in_rooms(), 1);
        assert_eq!(seen[1], serde_json::json!({"type":"userLeft","userId":"b"}));
        // Its log position is released: only its private queue (nothing) is left.
        assert_eq!(h.backlog(slow), 0);
    }

    #[test]
    fn members_that_keep_reading_are_never_evicted() {
        let mut h = hub(&[
            ("RATE_LIMIT_MAX_MESSAGE_SIZE", "20000"),
            ("SLOW_CONSUMER_QUEUE_BYTES", "65536"),
        ]);
        let (a, b) = settled_pair(&mut h);
        // Far more than the bound passes through, in bursts within it.
        for _ in 0..50 {
            send_and_drain(&mut h, a, 3, 16_000);
            assert_eq!(drain(&mut h, b).len(), 3);
        }
        assert_eq!(h.stats.slow_consumer_closes, 0);
        assert_eq!(h.queued_bytes(), 0);
    }

    #[test]
    fn senders_with_a_backlog_are_paced() {
        let mut h = hub(&[
            ("RATE_LIMIT_MAX_MESSAGE_SIZE", "20000"),
            ("SLOW_CONSUMER_QUEUE_BYTES", "65536"),
        ]);
        let (a, b) = settled_pair(&mut h);
        // The pace limit is a quarter of the bound: 16 KiB.
        h.relay_message(a, &"A".repeat(15_000)).unwrap();
        assert!(!h.is_paced(a));
        h.relay_message(a, &"A".repeat(2_000)).unwrap();
        assert!(h.is_paced(a) && h.is_paced(b));
        // a has read everything, but b, still taking bytes, is behind: the
        // room's sender waits for its reader.
        drain(&mut h, a);
        assert!(h.is_paced(a));
        // b's socket took nothing for longer than the grace: it holds nobody back.
        h.conn_mut(b).out.note_write(false, true, 1_000);
        let later = || 1_000 + PACE_GRACE_US;
        assert!(h.paced_at(a, || 1_000 + PACE_GRACE_US / 2));
        assert!(!h.paced_at(a, later) && h.paced_at(b, later));
        // b catches up: nothing holds a back either way.
        drain(&mut h, b);
        assert!(!h.is_paced(a) && !h.is_paced(b));
    }

    #[test]
    fn a_stalled_socket_is_evicted_after_the_stall_time() {
        let mut h = hub(&[("SLOW_CONSUMER_STALL_SECS", "2")]);
        let (a, b) = settled_pair(&mut h);
        h.relay_message(a, "QUJD").unwrap();
        drain(&mut h, a);
        // b's socket is full at t = 1 s and takes nothing after.
        h.conn_mut(b).out.note_write(false, true, 1_000_000);
        h.evict_stalled(2_900_000);
        assert_eq!(h.close_state(b), Close::Open);
        h.evict_stalled(3_000_000);
        assert_eq!(h.close_state(b), SLOW);
        assert_eq!(drain(&mut h, a)[0]["type"], "userLeft");
        // A socket that took bytes in between is not stalled.
        let c = conn(&mut h);
        h.conn_mut(c).out.note_write(false, true, 1_000_000);
        h.conn_mut(c).out.note_write(true, true, 2_500_000);
        h.evict_stalled(4_000_000);
        assert_eq!(h.close_state(c), Close::Open);
    }

    #[test]
    fn past_the_budget_the_largest_backlog_goes_first() {
        let mut h = hub(&[
            ("RATE_LIMIT_MAX_MESSAGE_SIZE", "200000"),
            ("QUEUE_BUDGET_BYTES", "1048576"),
            ("SLOW_CONSUMER_QUEUE_BYTES", "1073741824"),
        ]);
        let (a, far) = settled_pair(&mut h);
        let (c, near) = (conn(&mut h), conn(&mut h));
        join(&mut h, c, "s", "c").unwrap();
        join(&mut h, near, "s", "near").unwrap();
        drain(&mut h, c);
        drain(&mut h, near);
        send_and_drain(&mut h, a, 4, 200_000);
        send_and_drain(&mut h, c, 1, 200_000);
        assert_eq!(h.stats.slow_consumer_closes, 0);
        // Room s grows past the budget: the member furthest behind, in the
        // other room, is closed, not s's own laggard.
        send_and_drain(&mut h, c, 1, 200_000);
        assert_eq!(h.close_state(far), SLOW);
        assert_eq!(h.close_state(near), Close::Open);
        assert!(h.queued_bytes() <= 1_048_576);
    }
}
