//! Rooms, connections and their outbound queues: the relay's shared state.
//!
//! Everything lives in one [`Hub`] owned by the executor thread. A message is
//! serialised and framed once and appended to its room's log as a shared
//! `Rc<[u8]>`; each member keeps only a cursor into that log, so fan-out costs
//! one pointer per room, not one copy or one queue slot per member. Replies
//! meant for one connection (pong, errors, the member list) go into that
//! connection's private byte buffer, which exists only while it holds bytes.
//!
//! A member that stops reading falls behind the log. When the log reaches its
//! bound, the members still holding its oldest entry are the slow consumers:
//! they are removed from the room at once and closed with 1013.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, TcpStream};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use smol::Async;

use crate::clock;
use crate::config::{Config, ROOM_USERS_CAP};
use crate::limits::{IpTable, StrikeOutcome};
use crate::protocol::{self, Dialect, ErrorCode, FrameBuilder, JoinRequest, Reaction, Reading};

/// A room's log may hold this many bytes before members that are blocked on
/// a full socket are treated as slow consumers.
pub const ROOM_LOG_SOFT_BYTES: usize = 64 * 1024;
/// Past this many bytes (or entries) the members holding the oldest entry are
/// evicted whether or not their socket is full.
pub const ROOM_LOG_HARD_BYTES: usize = 256 * 1024;
pub const ROOM_LOG_MAX_ENTRIES: usize = 1024;
/// All queued outbound bytes of the process (room logs and private buffers);
/// past it, pushing to a room evicts that room's laggards.
pub const QUEUE_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// A connection's private buffer may hold this much unsent data before the
/// connection counts as a slow consumer (one more frame may always be added,
/// so a member list of a full room fits).
pub const PRIVATE_MAX_BYTES: usize = 16 * 1024;
/// Vectored writes gather at most this many frames.
const IOV_MAX: usize = 64;

const NO_ROOM: u32 = u32::MAX;
const NOBODY: u32 = u32::MAX;

/// Identity of a connection: the index of its slot.
pub type ConnId = u32;

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
    /// Drop the TCP connection without a close frame (dead peer).
    Drop,
}

/// State of one WebSocket connection that other connections can touch.
pub struct Conn {
    pub ip: IpAddr,
    member: Option<Box<Member>>,
    room: u32,
    /// Sequence number of the next room log entry to send.
    cursor: u64,
    /// Bytes of the entry at `cursor` already written.
    partial: usize,
    /// Frames for this connection only, already framed.
    private: Vec<u8>,
    private_sent: usize,
    waker: Option<Waker>,
    /// When anything last arrived from the peer (µs, [`clock::now_micros`]).
    pub last_seen: u64,
    pub close: Close,
    /// The close frame has been put into `private`.
    close_queued: bool,
    /// The last write found the socket full.
    stalled: bool,
    /// The dialect its frames are read and answered in.
    reading: Reading,
}

struct Entry {
    frame: Rc<[u8]>,
    /// With `only` unset: a member that does not receive this entry (the
    /// sender of `userJoined`, `userTyping`), or `NOBODY`. With `only` set:
    /// the one member that receives it (a reply queued behind room frames,
    /// so that a connection's replies keep the order of its requests).
    target: ConnId,
    only: bool,
    /// Members that still have to send it.
    remaining: u32,
}

impl Entry {
    /// Whether member `id` is to receive this entry.
    fn is_for(&self, id: ConnId) -> bool {
        (self.target == id) == self.only
    }
}

struct Room {
    name: heapless::String<64>,
    /// Every member speaks it; rooms of the two dialects never mix.
    dialect: Dialect,
    /// Members in join order.
    members: heapless::Vec<ConnId, ROOM_USERS_CAP>,
    log: VecDeque<Entry>,
    /// Sequence number of `log[0]`.
    base: u64,
    log_bytes: usize,
}

impl Room {
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }
}

/// Counters reported by `/health` and `/metrics`.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub connections_total: u64,
    pub messages_relayed: u64,
    pub reactions_relayed: u64,
    pub deliveries: u64,
    pub rate_limited: u64,
    pub protocol_errors: u64,
    pub oversize_messages: u64,
    pub flood_closes: u64,
    pub slow_consumer_closes: u64,
    pub heartbeat_timeouts: u64,
    pub rejected_ip_blocked: u64,
    pub rejected_too_many_connections: u64,
    pub rejected_server_full: u64,
    pub rejected_origin: u64,
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
    frames: FrameBuilder,
    queued_bytes: usize,
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

/// Counts up to `*n` written bytes against the room entry at `conn.cursor`.
/// When they complete it, the member moves past it: the value says whether
/// the entry was the log's oldest (so the log may be trimmed).
fn finish_entry(conn: &mut Conn, room: &mut Room, n: &mut usize) -> Option<bool> {
    let entry = &mut room.log[(conn.cursor - room.base) as usize];
    let rest = entry.frame.len() - conn.partial;
    if *n < rest {
        conn.partial += *n;
        *n = 0;
        return None;
    }
    *n -= rest;
    let was_front = conn.cursor == room.base;
    entry.remaining -= 1;
    conn.cursor += 1;
    conn.partial = 0;
    Some(was_front)
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
            frames: FrameBuilder::new(),
            queued_bytes: 0,
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
            cursor: 0,
            partial: 0,
            private: Vec::new(),
            private_sent: 0,
            waker: None,
            last_seen: clock::now_micros(),
            close: Close::Open,
            close_queued: false,
            stalled: false,
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
        self.queued_bytes -= conn.private.len() - conn.private_sent;
        self.ips.release(conn.ip);
        self.conns_by_dialect[conn.reading.dialect as usize] -= 1;
        self.open_conns -= 1;
        self.free_conns.push(id);
    }

    fn conn(&self, id: ConnId) -> &Conn {
        self.conns[id as usize]
            .as_ref()
            .expect("live connection id")
    }

    fn conn_mut(&mut self, id: ConnId) -> &mut Conn {
        self.conns[id as usize]
            .as_mut()
            .expect("live connection id")
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

    // ---------------------------------------------------- private replies

    /// Appends a frame built by `build` to `id`'s private buffer. A
    /// connection whose private buffer is already over its bound is closed as
    /// a slow consumer instead.
    fn push_private(&mut self, id: ConnId, build: impl FnOnce(&mut Vec<u8>, &mut FrameBuilder)) {
        let conn = self.conn(id);
        if conn.close_queued || conn.close == Close::Drop {
            return;
        }
        let pending = conn.private.len() - conn.private_sent;
        if pending > PRIVATE_MAX_BYTES || (pending > 0 && self.queued_bytes > QUEUE_BUDGET_BYTES) {
            self.stats.slow_consumer_closes += 1;
            self.begin_close(id, Close::Now(1013, "try again later"));
            return;
        }
        // Room frames still queued for this connection were caused before
        // this reply: queue the reply behind them, in the room's log, so the
        // connection sees answers in the order of its requests.
        let r = conn.room;
        let behind =
            r != NO_ROOM && conn.cursor < self.rooms[r as usize].as_ref().expect("room").end();
        if behind {
            let mut bytes = Vec::new();
            build(&mut bytes, &mut self.frames);
            self.push_room_only(r, Rc::from(bytes), id);
            return;
        }
        let Hub {
            conns,
            frames,
            queued_bytes,
            ..
        } = self;
        let conn = conns[id as usize].as_mut().expect("live connection id");
        let before = conn.private.len();
        build(&mut conn.private, frames);
        *queued_bytes += conn.private.len() - before;
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
    }

    pub fn send_pong(&mut self, id: ConnId) {
        self.push_private(id, |out, frames| {
            frames.begin().extend_from_slice(br#"{"type":"pong"}"#);
            frames.finish_into(out);
        });
    }

    /// Queues a raw control frame (a WebSocket pong or ping).
    pub fn send_control(&mut self, id: ConnId, frame: &[u8]) {
        self.push_private(id, |out, _| out.extend_from_slice(frame));
    }

    // --------------------------------------------------------------- rooms

    /// `join`: leaves the current room (if any) and joins `req.room` in the
    /// connection's dialect's namespace.
    pub fn join(&mut self, id: ConnId, req: JoinRequest) -> Result<(), ErrorCode> {
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

        self.leave_room(id, true);

        let r = match self.room_index.get(&key) {
            Some(&r) => r,
            None => self.create_room(key),
        };
        let user_id = heapless::String::try_from(req.user_id.as_str())
            .map_err(|_| ErrorCode::InvalidUserId)?;
        let json: Box<str> = req.user_json.into_boxed_str();

        // Tell the others first; the joiner's cursor starts after that entry.
        protocol::write_user_joined(self.frames.begin(), dialect, &json);
        let frame = self.frames.finish_shared();
        self.push_room(r, frame, NOBODY);

        let room = self.rooms[r as usize].as_mut().expect("room");
        let _ = room.members.push(id);
        let end = room.end();
        self.users_in_rooms += 1;
        {
            let conn = self.conn_mut(id);
            conn.room = r;
            conn.cursor = end;
            conn.partial = 0;
            conn.member = Some(Box::new(Member { id: user_id, json }));
        }

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
            log: VecDeque::new(),
            base: 0,
            log_bytes: 0,
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
        Ok(())
    }

    /// Takes `id` out of its room. Entries it had not sent are released; a
    /// frame it had half written is finished from its private buffer so the
    /// byte stream stays well formed. With `announce`, the others get `userLeft`.
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
        if conn.partial > 0 {
            let entry = &room.log[(conn.cursor - room.base) as usize];
            let rest = &entry.frame[conn.partial..];
            // The invariant of `poll_flush`: with a half-written room frame,
            // nothing of the private buffer has been written yet.
            debug_assert_eq!(conn.private_sent, 0);
            conn.private.splice(0..0, rest.iter().copied());
            self.queued_bytes += rest.len();
            conn.partial = 0;
        }
        // Entries before `base` were trimmed: they were never this member's to send.
        for seq in conn.cursor.max(room.base)..room.end() {
            let entry = &mut room.log[(seq - room.base) as usize];
            if entry.is_for(id) {
                entry.remaining -= 1;
                if entry.only {
                    // A reply to this connection: it still goes out.
                    conn.private.extend_from_slice(&entry.frame);
                    self.queued_bytes += entry.frame.len();
                }
            }
        }
        if let Some(pos) = room.members.iter().position(|&m| m == id) {
            room.members.remove(pos);
        }
        self.users_in_rooms -= 1;
        self.trim(r);
        let room = self.rooms[r as usize].as_mut().expect("room");
        if room.members.is_empty() {
            let room = self.rooms[r as usize].take().expect("room");
            self.queued_bytes -= room.log_bytes;
            self.room_index.remove(&(room.dialect, room.name));
            self.free_rooms.push(r);
            return;
        }
        if announce && let Some(member) = member {
            protocol::write_user_left(self.frames.begin(), room.dialect, &member.id);
            let frame = self.frames.finish_shared();
            self.push_room(r, frame, NOBODY);
        }
    }

    /// Drops log entries every member has sent.
    fn trim(&mut self, r: u32) {
        let room = self.rooms[r as usize].as_mut().expect("room");
        while room.log.front().is_some_and(|e| e.remaining == 0) {
            let e = room.log.pop_front().expect("front");
            room.base += 1;
            room.log_bytes -= e.frame.len();
            self.queued_bytes -= e.frame.len();
        }
        if room.log.is_empty() && room.log.capacity() > 64 {
            room.log = VecDeque::new();
        }
    }

    /// Appends a frame to room `r`'s log for every member but `skip` and
    /// wakes them. Makes room first by evicting slow consumers.
    fn push_room(&mut self, r: u32, frame: Rc<[u8]>, skip: ConnId) {
        self.push_entry(r, frame, skip, false);
    }

    /// Appends a frame to room `r`'s log for `target` only (see `Entry`).
    fn push_room_only(&mut self, r: u32, frame: Rc<[u8]>, target: ConnId) {
        self.push_entry(r, frame, target, true);
    }

    fn push_entry(&mut self, r: u32, frame: Rc<[u8]>, target: ConnId, only: bool) {
        let len = frame.len();
        let mut evicted: heapless::Vec<heapless::String<64>, 8> = heapless::Vec::new();
        loop {
            let room = self.rooms[r as usize].as_ref().expect("room");
            let hard = room.log.len() >= ROOM_LOG_MAX_ENTRIES
                || room.log_bytes + len > ROOM_LOG_HARD_BYTES
                || self.queued_bytes + len > QUEUE_BUDGET_BYTES;
            let soft = room.log_bytes + len > ROOM_LOG_SOFT_BYTES;
            if room.log.is_empty() || !(hard || soft) || evicted.is_full() {
                break;
            }
            let base = room.base;
            let front = room.log.front();
            let victim = room.members.iter().copied().find(|&m| {
                let c = self.conn(m);
                c.cursor <= base && front.is_some_and(|e| e.is_for(m)) && (hard || c.stalled)
            });
            let Some(victim) = victim else { break };
            let name = self.conn(victim).member.as_ref().map(|m| m.id.clone());
            self.stats.slow_consumer_closes += 1;
            self.leave_room(victim, false);
            self.begin_close(victim, Close::Now(1013, "try again later"));
            if let Some(name) = name {
                let _ = evicted.push(name);
            }
            if self.rooms[r as usize].is_none() {
                return;
            }
        }
        let room = self.rooms[r as usize].as_mut().expect("room");
        let target_is_member = target != NOBODY && room.members.contains(&target);
        let remaining = if only {
            u32::from(target_is_member)
        } else {
            room.members.len() as u32 - u32::from(target_is_member)
        };
        if remaining > 0 {
            room.log_bytes += len;
            self.queued_bytes += len;
            let entry = Entry {
                frame,
                target,
                only,
                remaining,
            };
            room.log.push_back(entry);
            for i in 0..room.members.len() {
                let m = self.rooms[r as usize].as_ref().expect("room").members[i];
                if (m == target) == only {
                    self.wake(m);
                }
            }
        }
        for user in evicted {
            let dialect = self.rooms[r as usize]
                .as_ref()
                .map_or(Dialect::V2, |r| r.dialect);
            protocol::write_user_left(self.frames.begin(), dialect, &user);
            let frame = self.frames.finish_shared();
            if self.rooms[r as usize].is_some() {
                self.push_room(r, frame, NOBODY);
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
    /// legacy rooms (as `push_room`'s `skip`).
    fn relay_skip(&self, id: ConnId) -> ConnId {
        if self.conn(id).reading.dialect.echoes_to_sender() {
            NOBODY
        } else {
            id
        }
    }

    /// Pushes a frame from member `id` to room `r`, skipping `skip` (`id`
    /// itself or `NOBODY`). A sender that had nothing left to write moves past
    /// a frame that skips it at once: otherwise its cursor would rest there
    /// until it had something else to write, and it would not count as
    /// drained (a shutdown's close frame waits for that).
    fn push_from(&mut self, id: ConnId, r: u32, frame: Rc<[u8]>, skip: ConnId) {
        let room = self.rooms[r as usize].as_ref().expect("room");
        let (end_before, base) = (room.end(), room.base);
        let caught_up = {
            let conn = self.conn(id);
            conn.partial == 0 && conn.cursor.max(base) >= end_before
        };
        self.push_room(r, frame, skip);
        if skip == id
            && caught_up
            && self.conn(id).room == r
            && let Some(room) = self.rooms[r as usize].as_ref()
        {
            let end = room.end();
            self.conn_mut(id).cursor = end;
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
        Ok(())
    }

    /// `typing`: tells the other members.
    pub fn typing(&mut self, id: ConnId, is_typing: bool) -> Result<(), ErrorCode> {
        let (r, frame) = self.member_frame(id, |out, dialect, member, _| {
            protocol::write_typing(out, dialect, &member.json, is_typing);
        })?;
        self.push_from(id, r, frame, id);
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
                self.send_control(id, &protocol::PING_FRAME);
            }
        }
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

    // -------------------------------------------------------------- output

    /// Whether `id` has nothing left to write.
    fn is_drained(&self, id: ConnId) -> bool {
        let conn = self.conn(id);
        let room_done = conn.room == NO_ROOM
            || conn.cursor >= self.rooms[conn.room as usize].as_ref().expect("room").end();
        room_done && conn.private_sent == conn.private.len()
    }

    /// Whether the close frame has been queued and everything written.
    pub fn close_sent(&self, id: ConnId) -> bool {
        self.conn(id).close_queued && self.is_drained(id)
    }

    /// During shutdown: whether every connection has been sent everything,
    /// its close frame included (or is being dropped). Waiting for the
    /// clients' answers would only delay the exit.
    pub fn all_closes_sent(&self) -> bool {
        self.conns.iter().enumerate().all(|(i, c)| match c {
            None => true,
            Some(c) => c.close == Close::Drop || self.close_sent(i as ConnId),
        })
    }

    /// Puts the close frame in the private buffer once what must precede it
    /// has been written.
    fn queue_close_if_due(&mut self, id: ConnId) {
        let conn = self.conn(id);
        let (code, reason) = match conn.close {
            Close::Drain(code, reason) | Close::Now(code, reason) => (code, reason),
            Close::Open | Close::Drop => return,
        };
        if conn.close_queued || !self.is_drained(id) {
            return;
        }
        // Nothing more may follow the close frame: leave the room silently.
        self.leave_room(id, false);
        let frame = protocol::close_frame(code, reason);
        self.queued_bytes += frame.len();
        let conn = self.conn_mut(id);
        conn.private.extend_from_slice(&frame);
        conn.close_queued = true;
    }

    /// What `id` has to write next, in order: the rest of a half-written room
    /// frame, the private buffer, then the room frames it is behind on.
    /// Fills `iov` in place: a heapless vector of slices is a kilobyte, too
    /// big to return by value on every write.
    fn pending_slices<'a>(&'a self, id: ConnId, iov: &mut heapless::Vec<IoSlice<'a>, IOV_MAX>) {
        let conn = self.conn(id);
        iov.clear();
        let room =
            (conn.room != NO_ROOM).then(|| self.rooms[conn.room as usize].as_ref().expect("room"));
        // A cursor may lag behind `base` only over trimmed entries that
        // skipped this member.
        let mut seq = room.map_or(conn.cursor, |r| conn.cursor.max(r.base));
        if let Some(room) = room
            && conn.partial > 0
        {
            let e = &room.log[(seq - room.base) as usize];
            let _ = iov.push(IoSlice::new(&e.frame[conn.partial..]));
            seq += 1;
        }
        if conn.private_sent < conn.private.len() {
            let _ = iov.push(IoSlice::new(&conn.private[conn.private_sent..]));
        }
        if let Some(room) = room {
            while seq < room.end() && !iov.is_full() {
                let e = &room.log[(seq - room.base) as usize];
                if e.is_for(id) {
                    let _ = iov.push(IoSlice::new(&e.frame));
                }
                seq += 1;
            }
        }
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
                let mut iov = heapless::Vec::new();
                self.pending_slices(id, &mut iov);
                if iov.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let mut stream: &TcpStream = sock.get_ref();
                stream.write_vectored(&iov)
            };
            match result {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.conn_mut(id).stalled = false;
                    self.consume(id, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match sock.poll_writable(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.conn_mut(id).stalled = true;
                        return Poll::Pending;
                    }
                },
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Advances `id`'s queues by `n` written bytes, in the order `poll_flush`
    /// gathered them.
    fn consume(&mut self, id: ConnId, mut n: usize) {
        let conn = self.conns[id as usize]
            .as_mut()
            .expect("live connection id");
        let r = conn.room;
        let mut room = if r == NO_ROOM {
            None
        } else {
            self.rooms[r as usize].as_mut()
        };
        let mut passed_front = false;
        let mut delivered = 0u64;
        if let Some(room) = room.as_deref() {
            conn.cursor = conn.cursor.max(room.base);
        }
        // 1. The rest of a half-written room frame.
        if let Some(room) = room.as_deref_mut()
            && conn.partial > 0
        {
            if let Some(was_front) = finish_entry(conn, room, &mut n) {
                passed_front |= was_front;
                delivered += 1;
            }
        }
        // 2. The private buffer.
        let pending = conn.private.len() - conn.private_sent;
        let take = n.min(pending);
        conn.private_sent += take;
        n -= take;
        self.queued_bytes -= take;
        if conn.private_sent == conn.private.len() && !conn.private.is_empty() {
            conn.private = Vec::new();
            conn.private_sent = 0;
        }
        // 3. Room frames, skipping entries not meant for this connection.
        if let Some(room) = room {
            while conn.cursor < room.end() {
                if !room.log[(conn.cursor - room.base) as usize].is_for(id) {
                    conn.cursor += 1;
                    continue;
                }
                if n == 0 {
                    break;
                }
                if let Some(was_front) = finish_entry(conn, room, &mut n) {
                    passed_front |= was_front;
                    delivered += 1;
                }
            }
        }
        debug_assert_eq!(n, 0, "wrote more than was gathered");
        self.stats.deliveries += delivered;
        if passed_front {
            self.trim(r);
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
            let mut iov = heapless::Vec::new();
            hub.pending_slices(id, &mut iov);
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
        }
        assert!(h.all_closes_sent());
        assert_eq!(
            (
                h.connections_in(Dialect::V2),
                h.connections_in(Dialect::Legacy)
            ),
            (2, 2)
        );
    }

    #[test]
    fn laggards_are_evicted_when_the_log_is_full() {
        let mut h = hub(&[("RATE_LIMIT_MAX_MESSAGE_SIZE", "20000")]);
        let (a, slow) = (conn(&mut h), conn(&mut h));
        join(&mut h, a, "r", "a").unwrap();
        join(&mut h, slow, "r", "slow").unwrap();
        drain(&mut h, slow);
        let content = "A".repeat(16_000);
        let mut evicted_after = None;
        let mut seen_by_a = Vec::new();
        for i in 0..40 {
            h.relay_message(a, &content).unwrap();
            seen_by_a.extend(drain(&mut h, a));
            if h.close_state(slow) != Close::Open {
                evicted_after = Some(i);
                break;
            }
        }
        // Not stalled (never hit a full socket): only the hard limit evicts it.
        let n = evicted_after.expect("slow member evicted");
        assert!(n * 16_000 >= ROOM_LOG_SOFT_BYTES, "evicted after {n}");
        assert!(n * 16_000 <= ROOM_LOG_HARD_BYTES);
        assert_eq!(h.close_state(slow), Close::Now(1013, "try again later"));
        assert!(!h.in_room(slow));
        assert_eq!(h.stats.slow_consumer_closes, 1);
        assert_eq!(h.users_in_rooms(), 1);
        assert_eq!(seen_by_a.last().unwrap()["type"], "userLeft");
        assert_eq!(seen_by_a.last().unwrap()["userId"], "slow");
    }
}
