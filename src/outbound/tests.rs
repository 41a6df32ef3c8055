//! The outbound side seen through the relay's operations: fan-out, order,
//! leaving with frames half written, pacing and eviction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};

use super::outbox::Iov;
use super::policy::PACE_GRACE_US;
use super::*;
use crate::config::Source;
use crate::conns::Close;
use crate::protocol::DialectState;
use crate::relay::{Relay, SLOW};
use crate::session::speak;

/// The relay, with the requests the tests make as the session makes them.
struct H(Relay);

impl Deref for H {
    type Target = Relay;
    fn deref(&self) -> &Relay {
        &self.0
    }
}

impl DerefMut for H {
    fn deref_mut(&mut self) -> &mut Relay {
        &mut self.0
    }
}

impl H {
    fn join(&mut self, id: ConnId, req: protocol::JoinRequest) -> Result<(), ErrorCode> {
        let dialect = self.conns.dialect(id);
        self.0.join(id, dialect, req)
    }

    fn set_reading(&mut self, id: ConnId, reading: DialectState) {
        self.0.set_dialect(id, reading.dialect);
    }

    fn relay_message(&mut self, id: ConnId, content: &str) -> Result<(), ErrorCode> {
        speak(&mut self.0, id, |out, from, conns| {
            out.relay_message(from, content, conns)
        })?;
        self.stats.messages_relayed += 1;
        Ok(())
    }

    fn typing(&mut self, id: ConnId, flag: bool) -> Result<(), ErrorCode> {
        speak(&mut self.0, id, |out, from, conns| {
            out.typing(from, flag, conns)
        })
    }

    fn send_error(&mut self, id: ConnId, code: ErrorCode) {
        let dialect = self.conns.dialect(id);
        self.0.send_error(id, dialect, code);
    }

    fn close_state(&self, id: ConnId) -> Close {
        self.conns.close_state(id)
    }

    fn in_room(&self, id: ConnId) -> bool {
        self.hub.in_room(id)
    }

    fn is_drained(&self, id: ConnId) -> bool {
        self.outbound.is_drained(id)
    }

    fn close_sent(&self, id: ConnId) -> bool {
        self.outbound.close_sent(id)
    }

    fn backlog(&self, id: ConnId) -> usize {
        self.outbound.backlog(id)
    }

    fn paced_at(&self, id: ConnId, clock: impl FnOnce() -> u64) -> bool {
        self.outbound.paced_at(id, clock, |r| self.hub.members(r))
    }

    /// Records a write attempt of `id`'s socket (see [`Outbox::note_write`]).
    fn note_write(&mut self, id: ConnId, took_bytes: bool, blocked: bool, now: u64) {
        self.outbound.boxes[id.index()].note_write(took_bytes, blocked, now);
    }
}

fn hub(env: &[(&str, &str)]) -> H {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    H(Relay::new(
        &Config::load(&Source::from_maps(env, HashMap::new())).unwrap(),
    ))
}

fn conn(hub: &mut H) -> ConnId {
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    hub.add_conn(ip)
}

fn join(hub: &mut H, id: ConnId, room: &str, user: &str) -> Result<(), ErrorCode> {
    let raw = format!(r#"{{"room":"{room}","user":{{"id":"{user}","name":"{user}"}}}}"#);
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&raw).unwrap();
    hub.join(id, protocol::parse_join(Some(&raw)).unwrap())
}

/// Takes up to `limit` pending bytes of `id` as if the socket accepted
/// them, and returns the text frames that were completed.
fn write(hub: &mut H, id: ConnId, limit: usize) -> Vec<u8> {
    hub.outbound.finish_replay(id);
    let bytes: Vec<u8> = {
        let mut iov = Iov::new();
        hub.outbound.gather(id, &mut iov);
        iov.iter().flat_map(|s| s.iter().copied()).collect()
    };
    let n = bytes.len().min(limit);
    let Relay {
        hub,
        outbound,
        conns,
        stats,
        ..
    } = &mut hub.0;
    outbound.consume(id, n, conns, stats, |r| hub.members(r));
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

fn drain(hub: &mut H, id: ConnId) -> Vec<serde_json::Value> {
    frames(&write(hub, id, usize::MAX))
}

/// Two members, `a` and `b`, in room `r`, with nothing left to write.
fn settled_pair(h: &mut H) -> (ConnId, ConnId) {
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
fn legacy_join(hub: &mut H, id: ConnId, room: &str, user: &str) -> Result<(), ErrorCode> {
    hub.set_reading(
        id,
        DialectState {
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
fn send_and_drain(h: &mut H, a: ConnId, n: usize, len: usize) -> Vec<serde_json::Value> {
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
    h.note_write(b, false, true, 1_000);
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
    h.note_write(b, false, true, 1_000_000);
    h.evict_stalled(2_900_000);
    assert_eq!(h.close_state(b), Close::Open);
    h.evict_stalled(3_000_000);
    assert_eq!(h.close_state(b), SLOW);
    assert_eq!(drain(&mut h, a)[0]["type"], "userLeft");
    // A socket that took bytes in between is not stalled.
    let c = conn(&mut h);
    h.note_write(c, false, true, 1_000_000);
    h.note_write(c, true, true, 2_500_000);
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

// ------------------------------------------------------------- catch-up

/// A v2 join with `since`.
fn join_since(hub: &mut H, id: ConnId, room: &str, user: &str, since: &str) {
    let raw = format!(
        r#"{{"room":"{room}","user":{{"id":"{user}","name":"{user}"}},"since":"{since}"}}"#
    );
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&raw).unwrap();
    hub.join(id, protocol::parse_join(Some(&raw)).unwrap())
        .unwrap();
}

/// Each frame's type, and its content for messages.
fn kinds(got: &[serde_json::Value]) -> Vec<String> {
    got.iter()
        .map(|v| match v["type"].as_str().unwrap() {
            "message" => v["content"].as_str().unwrap().to_string(),
            "history" => format!("history {} {}", v["count"], v["complete"]),
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn a_replay_runs_between_the_private_buffer_and_the_room_log() {
    let mut h = hub(&[]);
    let (a, b) = (conn(&mut h), conn(&mut h));
    join_since(&mut h, a, "r", "a", "");
    for m in ["AAAA", "BBBB", "CCCC"] {
        h.relay_message(a, m).unwrap();
    }
    drain(&mut h, a);
    join_since(&mut h, b, "r", "b", "");
    // Only the userList is b's backlog: the replay is not charged.
    let list = h.backlog(b);
    assert!(list < 200, "{list}");
    // A few bytes at a time; a reply asked for mid-replay lands between
    // whole frames, and a live frame waits for the history frame.
    let mut bytes = write(&mut h, b, 7);
    bytes.extend(write(&mut h, b, list + 3));
    assert!(h.outbound.outbox(b).pinned_bytes() > 0);
    h.send_pong(b);
    h.relay_message(a, "DDDD").unwrap();
    // A reply asked for behind a live frame comes after it.
    h.send_pong(b);
    while !h.is_drained(b) {
        bytes.extend(write(&mut h, b, 5));
    }
    let got = kinds(&frames(&bytes));
    assert_eq!(
        got,
        [
            "userList",
            "AAAA",
            "pong",
            "BBBB",
            "CCCC",
            "history 3 true",
            "DDDD",
            "pong"
        ]
    );
    drain(&mut h, a);
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn leaving_mid_replay_finishes_the_frame_begun_and_nothing_more() {
    let mut h = hub(&[]);
    let (a, b) = (conn(&mut h), conn(&mut h));
    join_since(&mut h, a, "r", "a", "");
    h.relay_message(a, "AAAA").unwrap();
    h.relay_message(a, "BBBB").unwrap();
    drain(&mut h, a);
    join_since(&mut h, b, "r", "b", "");
    // The userList, then 10 bytes of the first replayed frame.
    let list = h.backlog(b);
    let mut bytes = write(&mut h, b, list + 10);
    assert_eq!(h.backlog(b), h.outbound.outbox(b).pinned_bytes());
    h.leave(b).unwrap();
    bytes.extend(write(&mut h, b, usize::MAX));
    assert_eq!(kinds(&frames(&bytes)), ["userList", "AAAA"]);
    assert!(h.is_drained(b));
    drain(&mut h, a);
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn frames_dropped_under_a_replay_are_skipped_and_it_is_incomplete() {
    let mut h = hub(&[("HISTORY_ROOM_FRAMES", "3")]);
    let (a, b) = (conn(&mut h), conn(&mut h));
    join_since(&mut h, a, "r", "a", "");
    for m in ["AAAA", "BBBB", "CCCC"] {
        h.relay_message(a, m).unwrap();
    }
    drain(&mut h, a);
    join_since(&mut h, b, "r", "b", "");
    let list = h.backlog(b);
    let mut bytes = write(&mut h, b, list + 10);
    let pinned = h.outbound.outbox(b).pinned_bytes();
    assert!(pinned > 10);
    // Three live frames push the three replayed ones out of retention,
    // the one half written included: it is finished from the cursor's copy.
    for m in ["DDDD", "EEEE", "FFFF"] {
        h.relay_message(a, m).unwrap();
    }
    drain(&mut h, a);
    assert_eq!(h.queued_bytes(), h.backlog(b));
    while !h.is_drained(b) {
        bytes.extend(write(&mut h, b, 9));
    }
    assert_eq!(
        kinds(&frames(&bytes)),
        [
            "userList",
            "AAAA",
            "history 1 false",
            "DDDD",
            "EEEE",
            "FFFF"
        ]
    );
    assert_eq!(h.queued_bytes(), 0);
}

#[test]
fn a_replaying_member_holds_nobody_back() {
    let mut h = hub(&[]);
    let (a, b) = (conn(&mut h), conn(&mut h));
    join_since(&mut h, a, "r", "a", "");
    h.relay_message(a, "AAAA").unwrap();
    drain(&mut h, a);
    join_since(&mut h, b, "r", "b", "");
    drain(&mut h, a);
    // b replays and does not write; the room's live traffic piles up for
    // it past the pacing limit.
    let big = "QUJD".repeat(2000);
    while h.backlog(b) <= h.outbound.policy.pace {
        h.relay_message(a, &big).unwrap();
        drain(&mut h, a);
    }
    assert!(!h.paced_at(a, || 0), "a replaying member paces nobody");
    // Once its replay is over, it is an ordinary member again.
    while h.outbound.outbox(b).replay.is_some() {
        write(&mut h, b, 1);
    }
    assert!(h.paced_at(a, || 0), "a member far behind paces the room");
}

#[test]
fn a_replay_cursor_is_small() {
    // The README's memory formula counts it within the per-connection S.
    let cursor = std::mem::size_of::<crate::history::Replay>();
    assert!(cursor <= 64, "{cursor}");
    let outbox = std::mem::size_of::<super::outbox::Outbox>();
    assert!(outbox <= 96, "{outbox}");
}
