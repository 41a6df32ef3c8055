//! Catch-up (`PROTOCOL.md` section 7, issue 13) over real sockets: `since`,
//! the replay and its history frame, what is retained and for how long,
//! the bounds, replays under load and against slow, leaving or vanishing
//! joiners, the legacy dialect, and the restart hand-over through an
//! emulated systemd (notify socket, file descriptor store, `LISTEN_FDS`).

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tungstenite::Message;

const QUIET: Duration = Duration::from_millis(300);

/// Message and frame limits out of the way, for tests that send a lot.
const BUSY: [(&str, &str); 2] = [
    ("RATE_LIMIT_MESSAGE_LIMIT", "1000000"),
    ("RATE_LIMIT_FRAME_LIMIT", "1000000"),
];

fn join_json(room: &str, id: &str, since: Option<&Value>) -> String {
    let mut data = json!({"room":room,"user":{"id":id,"name":id,"avatar":null}});
    if let Some(s) = since {
        data["since"] = s.clone();
    }
    json!({"type":"join","data":data}).to_string()
}

/// The next text frame, exactly as sent (pings skipped).
fn next_text(c: &mut Client) -> String {
    c.set_timeout(Duration::from_secs(10));
    loop {
        match c.ws.read().expect("read a frame") {
            Message::Text(t) => return t.as_str().to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next text frame of type `want`, others skipped.
fn next_of(c: &mut Client, want: &str) -> String {
    loop {
        let t = next_text(c);
        if kind(&t) == want {
            return t;
        }
    }
}

fn kind(text: &str) -> String {
    let v: Value = serde_json::from_str(text).expect("server JSON");
    v["type"].as_str().unwrap_or_default().to_string()
}

/// Joins with `since` (absent when `None`) and reads the `userList`.
fn join(c: &mut Client, room: &str, id: &str, since: Option<&str>) {
    let since = since.map(|s| json!(s));
    c.send_text(&join_json(room, id, since.as_ref()));
    let first = next_text(c);
    assert_eq!(kind(&first), "userList", "{first}");
}

/// Reads up to and including the history frame: the replayed frames as
/// sent, and the history frame.
fn replay(c: &mut Client) -> (Vec<String>, Value) {
    let mut frames = Vec::new();
    loop {
        let t = next_text(c);
        if kind(&t) == "history" {
            return (frames, serde_json::from_str(&t).unwrap());
        }
        frames.push(t);
    }
}

/// Joins with `since` and reads the whole replay.
fn catch_up(c: &mut Client, room: &str, id: &str, since: &str) -> (Vec<String>, Value) {
    join(c, room, id, Some(since));
    replay(c)
}

/// The history frame `{"type":"history","count":N,"complete":B}`, exactly.
fn history(count: usize, complete: bool) -> Value {
    json!({"type":"history","count":count,"complete":complete})
}

/// Content of `len` base64 characters, numbered `i`.
fn content(i: usize, len: usize) -> String {
    assert!(len >= 8 && len % 4 == 0);
    format!("{i:08}{}", "A".repeat(len - 8))
}

/// Sends a message and returns its echo as sent (other frames skipped).
fn say(c: &mut Client, text: &str) -> String {
    c.message(text);
    loop {
        let t = next_text(c);
        if kind(&t) == "message" && t.contains(text) {
            return t;
        }
    }
}

/// Sends `n` messages of `len` characters; returns their echoes.
fn fill(c: &mut Client, n: usize, len: usize) -> Vec<String> {
    (0..n).map(|i| say(c, &content(i, len))).collect()
}

fn id_of(frame: &str) -> String {
    let v: Value = serde_json::from_str(frame).unwrap();
    v["id"].as_str().expect("a message id").to_string()
}

/// The sequence number of a message id (`prefix-seq`).
fn seq_of(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

fn stat(srv: &Server, key: &str) -> u64 {
    srv.health()["stats"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}"))
}

// ------------------------------------------------------------------ since

#[test]
fn since_absent_empty_an_id_or_bad() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    // A fresh room: nothing retained, nothing dropped.
    let (frames, h) = catch_up(&mut a, "r", "a", "");
    assert!(frames.is_empty());
    assert_eq!(h, history(0, true));
    let sent = fill(&mut a, 3, 16);
    // Absent: userList and then live traffic only.
    let mut b = srv.connect();
    join(&mut b, "r", "b", None);
    b.expect_silence(QUIET);
    // "": everything, byte for byte.
    let mut c = srv.connect();
    assert_eq!(
        catch_up(&mut c, "r", "c", ""),
        (sent.clone(), history(3, true))
    );
    // An id: what follows it.
    let mut d = srv.connect();
    let (frames, h) = catch_up(&mut d, "r", "d", &id_of(&sent[0]));
    assert_eq!((frames, h), (sent[1..].to_vec(), history(2, true)));
    let mut e = srv.connect();
    let (frames, h) = catch_up(&mut e, "r", "e", &id_of(&sent[2]));
    assert_eq!((frames, h), (vec![], history(0, true)));
    // An id not retained: everything, incomplete.
    let mut f = srv.connect();
    let (frames, h) = catch_up(&mut f, "r", "f", "nope-1");
    assert_eq!((frames, h), (sent.clone(), history(3, false)));
    // Anything else: INVALID_MESSAGE and no join.
    let mut g = srv.connect();
    for bad in [
        json!(null),
        json!(7),
        json!({}),
        json!("a b"),
        json!("x".repeat(65)),
    ] {
        g.send_text(&join_json("r", "g", Some(&bad)));
        assert_eq!(g.recv_error(), "INVALID_MESSAGE", "{bad}");
    }
    g.message("AAAA");
    assert_eq!(g.recv_error(), "NOT_IN_ROOM");
    for _ in 0..5 {
        assert_eq!(kind(&next_text(&mut a)), "userJoined");
    }
    a.expect_silence(QUIET);
    assert_eq!(stat(&srv, "total_users"), 6);
    // Live traffic follows, to everyone, once.
    let next = say(&mut a, "BBBB");
    for c in [&mut b, &mut c, &mut d, &mut e, &mut f] {
        assert_eq!(next_of(c, "message"), next);
        c.expect_silence(Duration::from_millis(50));
    }
}

#[test]
fn only_messages_and_reactions_are_kept_and_the_room_opts_in() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    join(&mut a, "plain", "a", None);
    say(&mut a, "AAAA");
    // A room nobody asked history for keeps nothing.
    assert_eq!(
        (stat(&srv, "history_rooms"), stat(&srv, "history_bytes")),
        (0, 0)
    );
    let mut b = srv.connect();
    assert_eq!(
        catch_up(&mut b, "plain", "b", ""),
        (vec![], history(0, true))
    );
    assert_eq!(stat(&srv, "history_rooms"), 1);
    // From now on: messages and reactions, nothing else.
    next_text(&mut a); // userJoined
    let m = say(&mut a, "CCCC");
    assert_eq!(next_text(&mut b), m);
    a.send(json!({"type":"typing","data":{"isTyping":true}}));
    assert_eq!(kind(&next_text(&mut b)), "userTyping");
    a.send(json!({"type":"reaction","data":{"messageId":id_of(&m),"emoji":"👍"}}));
    let r = next_text(&mut a);
    assert_eq!(
        (kind(&r), next_text(&mut b)),
        ("reaction".into(), r.clone())
    );
    a.send(json!({"type":"ping"}));
    assert_eq!(kind(&next_text(&mut a)), "pong");
    a.send(json!({"type":"typing","data":{"isTyping":1}}));
    a.recv_error();
    drop(b);
    assert_eq!(kind(&next_text(&mut a)), "userLeft");
    let mut c = srv.connect();
    let (frames, h) = catch_up(&mut c, "plain", "c", "");
    assert_eq!((frames, h), (vec![m, r], history(2, true)));
    assert!(stat(&srv, "history_bytes") > 0);
    let metrics = http(srv.port, "GET /metrics HTTP/1.1\r\n\r\n").body;
    assert!(metrics.contains("\nwhisper_history_rooms 1\n"), "{metrics}");
    assert!(metrics.contains("\nwhisper_history_bytes "), "{metrics}");
}

#[test]
fn history_outlives_membership() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    catch_up(&mut a, "kept", "a", "");
    let mut sent = fill(&mut a, 2, 16);
    drop(a);
    assert!(eventually(Duration::from_secs(5), || stat(
        &srv,
        "active_rooms"
    ) == 0));
    assert_eq!(stat(&srv, "history_rooms"), 1);
    // The room comes back without `since`: it goes on retaining.
    let mut b = srv.connect();
    join(&mut b, "kept", "b", None);
    sent.push(say(&mut b, "DDDD"));
    drop(b);
    assert!(eventually(Duration::from_secs(5), || stat(
        &srv,
        "active_rooms"
    ) == 0));
    let mut c = srv.connect();
    assert_eq!(catch_up(&mut c, "kept", "c", ""), (sent, history(3, true)));
}

// ------------------------------------------------------------------ bounds

#[test]
fn frames_expire_after_history_secs_even_in_a_quiet_room() {
    let srv = Server::start(&[("HISTORY_SECS", "1")]);
    let mut a = srv.connect();
    catch_up(&mut a, "brief", "a", "");
    say(&mut a, "AAAA");
    assert!(stat(&srv, "history_bytes") > 0);
    // No traffic: the sweep frees it.
    assert!(eventually(Duration::from_secs(5), || stat(
        &srv,
        "history_bytes"
    ) == 0));
    assert_eq!(stat(&srv, "history_rooms"), 1);
    let mut b = srv.connect();
    assert_eq!(
        catch_up(&mut b, "brief", "b", ""),
        (vec![], history(0, false))
    );
    // A fresh frame is kept again.
    next_text(&mut a); // userJoined
    let m = say(&mut a, "BBBB");
    assert_eq!(next_text(&mut b), m);
    let mut c = srv.connect();
    assert_eq!(
        catch_up(&mut c, "brief", "c", ""),
        (vec![m], history(1, false))
    );
}

#[test]
fn history_secs_zero_turns_catch_up_off() {
    let srv = Server::start(&[("HISTORY_SECS", "0")]);
    let mut a = srv.connect();
    assert_eq!(
        catch_up(&mut a, "off", "a", ""),
        (vec![], history(0, false))
    );
    let m = say(&mut a, "AAAA");
    let mut b = srv.connect();
    let (frames, h) = catch_up(&mut b, "off", "b", &id_of(&m));
    assert_eq!((frames, h), (vec![], history(0, false)));
    assert_eq!(
        (stat(&srv, "history_rooms"), stat(&srv, "history_bytes")),
        (0, 0)
    );
    // A bad `since` is still refused.
    b.send_text(&join_json("off", "b", Some(&json!(1))));
    assert_eq!(b.recv_error(), "INVALID_MESSAGE");
}

#[test]
fn a_room_keeps_history_room_frames() {
    let srv = Server::start(&[("HISTORY_ROOM_FRAMES", "3")]);
    let mut a = srv.connect();
    catch_up(&mut a, "cap", "a", "");
    let sent = fill(&mut a, 5, 16);
    let mut b = srv.connect();
    let (frames, h) = catch_up(&mut b, "cap", "b", "");
    assert_eq!((frames, h), (sent[2..].to_vec(), history(3, false)));
    // The id was dropped: everything kept, incomplete.
    let mut c = srv.connect();
    let (frames, h) = catch_up(&mut c, "cap", "c", &id_of(&sent[0]));
    assert_eq!((frames, h), (sent[2..].to_vec(), history(3, false)));
    let mut d = srv.connect();
    let (frames, h) = catch_up(&mut d, "cap", "d", &id_of(&sent[2]));
    assert_eq!((frames, h), (sent[3..].to_vec(), history(2, true)));
}

#[test]
fn the_budget_drops_the_oldest_frames_of_all_rooms_first() {
    let budget = 65_536;
    let srv = Server::start(&[("HISTORY_BUDGET_BYTES", "65536")]);
    let mut a = srv.connect();
    catch_up(&mut a, "first", "a", "");
    let mut b = srv.connect();
    catch_up(&mut b, "second", "b", "");
    // 4 then 6 frames of about 8 KB: 80 KB in all, over the budget.
    let old = fill(&mut a, 4, 8000);
    let new = fill(&mut b, 6, 8000);
    assert!(stat(&srv, "history_bytes") <= budget);
    let mut c = srv.connect();
    let (first, h1) = catch_up(&mut c, "first", "c", "");
    let mut d = srv.connect();
    let (second, h2) = catch_up(&mut d, "second", "d", "");
    // The newer room lost nothing; the older lost its oldest frames.
    assert_eq!((second, h2), (new, history(6, true)));
    assert!(first.len() < old.len(), "{}", first.len());
    assert_eq!(first[..], old[old.len() - first.len()..]);
    assert_eq!(h1, history(first.len(), false));
}

#[test]
fn history_rooms_evicts_the_room_quiet_for_longest() {
    let srv = Server::start(&[("HISTORY_ROOMS", "2")]);
    let mut rooms = Vec::new();
    for name in ["x", "y", "z"] {
        let mut c = srv.connect();
        catch_up(&mut c, name, "a", "");
        let m = say(&mut c, "AAAA");
        rooms.push((c, m));
    }
    assert_eq!(stat(&srv, "history_rooms"), 2);
    let mut c = srv.connect();
    let (frames, h) = catch_up(&mut c, "z", "c", "");
    assert_eq!((frames, h), (vec![rooms[2].1.clone()], history(1, true)));
    let mut d = srv.connect();
    let (frames, h) = catch_up(&mut d, "y", "d", "");
    assert_eq!((frames, h), (vec![rooms[1].1.clone()], history(1, true)));
    // x lost its history: it starts again, and says something is missing.
    let mut e = srv.connect();
    assert_eq!(catch_up(&mut e, "x", "e", ""), (vec![], history(0, false)));
    assert_eq!(stat(&srv, "history_rooms"), 2);
}

// ---------------------------------------------------------------- legacy

#[test]
fn the_legacy_dialect_is_untouched() {
    let srv = Server::start(&[]);
    let mut v2 = srv.connect();
    catch_up(&mut v2, "shared", "a", "");
    let m = say(&mut v2, "AAAA");
    // Legacy ignores `since` (no error, no history frame) and keeps nothing,
    // even in a room of the same name.
    let mut old = Client::try_connect_to(srv.port, "/", &[]).expect("upgrade on /");
    let join =
        json!({"type":"join","payload":{"roomId":"shared","userId":"l","username":"L","since":""}});
    old.send(join);
    assert_eq!(old.recv()["type"], "userList");
    old.expect_silence(QUIET);
    old.send(json!({"type":"message","payload":{"encrypted":"BBBB"}}));
    old.expect_silence(QUIET);
    let mut other = Client::try_connect_to(srv.port, "/", &[]).expect("upgrade on /");
    let join = json!({"type":"join","payload":{"roomId":"legacy-only","userId":"l","username":"L","since":""}});
    other.send(join);
    assert_eq!(other.recv()["type"], "userList");
    other.send(json!({"type":"message","payload":{"encrypted":"CCCC"}}));
    other.expect_silence(QUIET);
    assert_eq!(stat(&srv, "history_rooms"), 1);
    let mut c = srv.connect();
    assert_eq!(
        catch_up(&mut c, "shared", "c", ""),
        (vec![m], history(1, true))
    );
}

// ------------------------------------------------------- replays under way

/// A raw connection with a small receive window, reading `chunk` bytes at
/// a time: a phone's pace.
fn slow_client(srv: &Server, chunk: usize) -> RawWs {
    let mut ws = RawWs::connect_with(srv.port, None, Some(8192));
    ws.chunk = chunk;
    ws
}

fn raw_join(ws: &mut RawWs, room: &str, id: &str, since: Option<&str>) {
    let since = since.map(|s| json!(s));
    ws.send_text(&join_json(room, id, since.as_ref())).unwrap();
}

/// The next frame of a raw connection as text; `None` for a close frame.
/// Every frame must be well formed and hold JSON.
fn raw_text(ws: &mut RawWs) -> Option<String> {
    loop {
        let f = ws.read_frame().expect("read").expect("open stream");
        match f.opcode {
            OP_TEXT => {
                let t = String::from_utf8(f.payload).expect("UTF-8 text");
                serde_json::from_str::<Value>(&t).expect("a whole JSON frame");
                return Some(t);
            }
            OP_CLOSE => return None,
            _ => continue,
        }
    }
}

#[test]
fn a_full_replay_larger_than_the_queue_bound_is_no_slow_consumer() {
    let mut env = BUSY.to_vec();
    env.push(("SLOW_CONSUMER_STALL_SECS", "1"));
    let srv = Server::start(&env);
    let mut a = srv.connect();
    catch_up(&mut a, "big", "a", "");
    // 256 frames of about 10 KB: 2.6 MB, over the 1 MiB bound.
    let sent = fill(&mut a, 256, 10_000);
    let total: usize = sent.iter().map(String::len).sum();
    assert!(total > 2 << 20, "{total}");
    let mut j = slow_client(&srv, 8192);
    raw_join(&mut j, "big", "j", Some(""));
    assert_eq!(kind(&raw_text(&mut j).unwrap()), "userList");
    assert_eq!(kind(&next_text(&mut a)), "userJoined");
    let mut got = Vec::new();
    let mut live = None;
    while got.len() < 256 {
        got.push(raw_text(&mut j).unwrap());
        // Slowly and steadily: about 1 MB/s.
        std::thread::sleep(Duration::from_millis(10));
        match got.len() {
            // A pause longer than the stall time while only the replay
            // waits: a replay is not charged.
            50 => std::thread::sleep(Duration::from_millis(1500)),
            100 => {
                // The replay is not queued, and nobody else waits for it.
                assert!(stat(&srv, "queued_bytes") < 100_000);
                let start = Instant::now();
                live = Some(say(&mut a, "LIVE"));
                assert!(start.elapsed() < Duration::from_millis(500));
            }
            _ => {}
        }
    }
    assert!(got == sent, "the replay is byte for byte what was sent");
    let h: Value = serde_json::from_str(&raw_text(&mut j).unwrap()).unwrap();
    assert_eq!(h, history(256, true));
    assert_eq!(raw_text(&mut j), live);
    assert_eq!(stat(&srv, "slow_consumer_closes"), 0);
    assert_eq!(stat(&srv, "total_users"), 2);
}

#[test]
fn live_traffic_during_a_replay_follows_it_without_gap_or_duplicate() {
    let mut env = BUSY.to_vec();
    env.push(("HISTORY_ROOM_FRAMES", "4096"));
    let srv = Server::start(&env);
    let mut a = srv.connect();
    catch_up(&mut a, "load", "a", "");
    fill(&mut a, 200, 2000);
    // The sender keeps talking while the joiner comes in and replays.
    let (tx, rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(id_of(&say(&mut a, &content(1000 + i, 2000))));
            if i == 20 {
                tx.send(()).unwrap();
            }
        }
        ids
    });
    rx.recv().unwrap();
    let mut j = slow_client(&srv, 4096);
    raw_join(&mut j, "load", "j", Some(""));
    assert_eq!(kind(&raw_text(&mut j).unwrap()), "userList");
    let last = format!("{:08}", 1299);
    let (mut seqs, mut count, mut history_at) = (Vec::new(), None, None);
    loop {
        let t = raw_text(&mut j).unwrap();
        match kind(&t).as_str() {
            "history" => {
                let h: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(h["complete"], true);
                count = h["count"].as_u64();
                history_at = Some(seqs.len());
            }
            "message" => {
                seqs.push(seq_of(&id_of(&t)));
                if t.contains(&last) {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
        if seqs.len() % 16 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let ids = sender.join().unwrap();
    assert_eq!(seq_of(ids.last().unwrap()), 500);
    // One order, every message once: 1..=500.
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    let at = history_at.expect("a history frame");
    assert_eq!(count, Some(at as u64));
    assert!((221..500).contains(&at), "the replay ended at {at}");
    assert_eq!(stat(&srv, "slow_consumer_closes"), 0);
}

#[test]
fn a_joiner_that_leaves_mid_replay_gets_whole_frames_and_costs_nothing() {
    let srv = Server::start(&BUSY);
    let mut a = srv.connect();
    catch_up(&mut a, "gone", "a", "");
    let sent = fill(&mut a, 256, 10_000);
    let bytes = stat(&srv, "history_bytes");
    // A reset after a few frames.
    let mut j = slow_client(&srv, 4096);
    raw_join(&mut j, "gone", "j", Some(""));
    for _ in 0..4 {
        raw_text(&mut j).unwrap();
    }
    abort_with_reset(j.stream);
    // A close frame: the frame begun is finished, then the close.
    let mut l = slow_client(&srv, 4096);
    raw_join(&mut l, "gone", "l", Some(""));
    for _ in 0..3 {
        raw_text(&mut l).unwrap();
    }
    l.send_close(1000).unwrap();
    let mut seen = 0;
    while let Some(t) = raw_text(&mut l) {
        assert_eq!(kind(&t), "message");
        seen += 1;
    }
    assert!(seen < 255, "{seen}");
    // A join elsewhere: the frame begun is finished, then the new room.
    let mut m = slow_client(&srv, 4096);
    raw_join(&mut m, "gone", "m", Some(""));
    for _ in 0..3 {
        raw_text(&mut m).unwrap();
    }
    raw_join(&mut m, "elsewhere", "m", None);
    loop {
        let t = raw_text(&mut m).unwrap();
        match kind(&t).as_str() {
            "message" => assert!(sent.contains(&t)),
            "userList" => break,
            other => panic!("unexpected {other}"),
        }
    }
    m.send_text(&json!({"type":"message","data":{"content":"QQQQ"}}).to_string())
        .unwrap();
    let echo = raw_text(&mut m).unwrap();
    assert!(kind(&echo) == "message" && echo.contains("QQQQ"), "{echo}");
    // Nothing is left queued, retention is as it was, and a replay is whole.
    assert!(eventually(Duration::from_secs(5), || {
        stat(&srv, "active_connections") == 2 && stat(&srv, "queued_bytes") == 0
    }));
    assert_eq!(stat(&srv, "history_bytes"), bytes);
    let mut k = srv.connect();
    assert_eq!(
        catch_up(&mut k, "gone", "k", ""),
        (sent, history(256, true))
    );
    assert_eq!(stat(&srv, "slow_consumer_closes"), 0);
}

#[test]
fn a_replay_racing_a_room_that_empties_and_fills_again() {
    let mut env = BUSY.to_vec();
    env.push(("HISTORY_ROOM_FRAMES", "1000"));
    let srv = Server::start(&env);
    let mut a = srv.connect();
    catch_up(&mut a, "race", "a", "");
    let mut sent = fill(&mut a, 100, 10_000);
    drop(a);
    // A joiner replays and vanishes: the room empties under its replay.
    let mut j = slow_client(&srv, 4096);
    raw_join(&mut j, "race", "j", Some(""));
    raw_text(&mut j).unwrap();
    raw_text(&mut j).unwrap();
    assert_eq!(stat(&srv, "active_rooms"), 1);
    abort_with_reset(j.stream);
    // The room fills again at once: a member talks while another joins
    // with `since`.
    let mut b = srv.connect();
    join(&mut b, "race", "b", None);
    let talker = std::thread::spawn(move || {
        let said: Vec<String> = (0..20)
            .map(|i| say(&mut b, &content(500 + i, 2000)))
            .collect();
        (b, said)
    });
    let mut k = srv.connect();
    join(&mut k, "race", "k", Some(""));
    let (replayed, h) = replay(&mut k);
    let (_b, said) = talker.join().unwrap();
    assert_eq!(h, history(replayed.len(), true));
    let live: Vec<String> = (replayed.len()..120)
        .map(|_| next_of(&mut k, "message"))
        .collect();
    sent.extend(said);
    assert!(replayed.len() >= 100);
    assert!(
        [replayed, live].concat() == sent,
        "every frame once, in order"
    );
    assert!(eventually(Duration::from_secs(5), || stat(
        &srv,
        "queued_bytes"
    ) == 0));
}

// ------------------------------------------------ restarts (fd store)

/// Plays systemd's side of `NOTIFY_SOCKET`.
struct Systemd {
    sock: UnixDatagram,
    path: String,
}

impl Systemd {
    fn new() -> Systemd {
        let path = temp_dir("systemd").join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let path = path.to_str().unwrap().to_string();
        Systemd { sock, path }
    }

    /// Reads datagrams until one holds the line `want`; returns it with
    /// the descriptors that came with it.
    fn until(&self, want: &str) -> (String, Vec<OwnedFd>) {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok((text, fds)) = rtce2ee_whisper::systemd::receive_with_fds(&self.sock) {
                if text.lines().any(|l| l == want) {
                    return (text, fds);
                }
                seen.push(text);
            }
        }
        panic!("no {want}; saw {seen:?}");
    }
}

/// Starts the relay as systemd would after a restart: `fd` at descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_FDNAMES=history`, `LISTEN_PID` its own pid, and
/// no listening socket (it binds `HOST:PORT` itself).
fn start_with_memfd(fd: OwnedFd, env: &[(&str, &str)]) -> Server {
    let raw = fd.as_raw_fd();
    let dir = temp_dir("restart");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg("LISTEN_PID=$$ exec \"$@\"").arg("sh");
    if let Ok(runner) = std::env::var("WHISPER_TEST_RUNNER")
        && !runner.trim().is_empty()
    {
        cmd.args(runner.split_whitespace());
    }
    cmd.arg(BIN)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_LOG", "info")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "history")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: dup2 and fcntl are async-signal-safe; this runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if raw == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0) >= 0
            } else {
                nix::libc::dup2(raw, 3) >= 0
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("spawn server");
    drop(fd);
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on ") {
                let port = line[i + 13..]
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok());
                if let Some(port) = port {
                    let _ = tx.send(port);
                }
            }
            sink.lock().unwrap().push(line);
        }
    });
    let port: u16 = rx.recv_timeout(Duration::from_secs(30)).expect("a port");
    Server {
        child,
        port,
        logs,
        dir,
    }
}

/// Stops `srv` as systemd does and returns the memfd it stored.
fn stop_and_take_memfd(mut srv: Server, systemd: &Systemd) -> OwnedFd {
    srv.signal(Signal::SIGTERM);
    let (text, mut fds) = systemd.until("FDSTORE=1");
    assert!(text.lines().any(|l| l == "FDNAME=history"), "{text}");
    assert_eq!(fds.len(), 1);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        srv.logs().contains("history handed to systemd"),
        "{}",
        srv.logs()
    );
    fds.pop().unwrap()
}

#[test]
fn history_survives_a_restart_through_the_fd_store() {
    let systemd = Systemd::new();
    let notify = [("NOTIFY_SOCKET", systemd.path.as_str())];
    let srv = Server::start(&notify);
    systemd.until("READY=1");
    let mut a = srv.connect();
    catch_up(&mut a, "kept", "a", "");
    let mut sent = fill(&mut a, 3, 16);
    let old_prefix = id_of(&sent[0]).rsplit_once('-').unwrap().0.to_string();
    drop(a);
    let mut memfd = stop_and_take_memfd(srv, &systemd);
    for round in 0..2 {
        let srv = start_with_memfd(memfd, &notify);
        // It takes the memfd out of the store, so the store holds no memory.
        let (text, fds) = systemd.until("FDSTOREREMOVE=1");
        assert!(text.contains("FDNAME=history") && fds.is_empty(), "{text}");
        let n = sent.len();
        let logs = srv.logs();
        assert!(
            logs.contains(&format!(
                "history taken over from the previous process: 1 rooms, {n} frames"
            )),
            "{logs}"
        );
        assert!(
            !logs.contains("refused") && !logs.contains("WARN"),
            "{logs}"
        );
        assert_eq!(stat(&srv, "history_rooms"), 1);
        // A `since` from before the restart is found; the replay is identical.
        let mut b = srv.connect();
        let (frames, h) = catch_up(&mut b, "kept", "b", &id_of(&sent[0]));
        assert_eq!((frames, h), (sent[1..].to_vec(), history(n - 1, true)));
        let mut c = srv.connect();
        assert_eq!(
            catch_up(&mut c, "kept", "c", ""),
            (sent.clone(), history(n, true))
        );
        // Ids stay unique: this process has a prefix of its own.
        let m = say(&mut c, &content(round, 16));
        let prefix = id_of(&m).rsplit_once('-').unwrap().0.to_string();
        assert_ne!(prefix, old_prefix);
        assert!(!sent.iter().any(|f| id_of(f) == id_of(&m)));
        sent.push(m);
        drop((b, c));
        memfd = stop_and_take_memfd(srv, &systemd);
    }
}

/// A message frame as the relay writes it.
fn relayed_frame(id: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"type":"message","id":"{id}","user":{{"id":"u","name":"U","avatar":null}},"content":"AAAA","timestamp":"2026-01-06T12:00:00.123Z"}}"#
    );
    let mut frame =
        rtce2ee_whisper::frame::encode_header(true, OP_TEXT, payload.len() as u64, None)
            .as_slice()
            .to_vec();
    frame.extend_from_slice(payload.as_bytes());
    frame
}

fn memfd_with(bytes: &[u8], sealed: bool) -> OwnedFd {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::io::Write;
    let fd = memfd_create(c"test-history", MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).unwrap();
    if sealed {
        let seals = SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SEAL;
        fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
    }
    file.into()
}

#[test]
fn a_memfd_that_does_not_decode_costs_one_warning_and_an_empty_history() {
    use rtce2ee_whisper::history::{MessageIds, RoomState, Snapshot};
    let frame = relayed_frame("p-1");
    let snap = Snapshot {
        rooms: vec![RoomState {
            name: "kept".try_into().unwrap(),
            complete: true,
        }],
        frames: vec![(0, 1000, std::rc::Rc::from(frame.clone()))],
        tombstones: Vec::new(),
        forgot: false,
    };
    let mut valid = Vec::new();
    let now = rtce2ee_whisper::clock::unix_millis();
    rtce2ee_whisper::fdstore::encode(&mut valid, &snap, &MessageIds::new(None), now).unwrap();
    // The control: a good one is taken, and replayed byte for byte.
    let srv = start_with_memfd(memfd_with(&valid, true), &[]);
    assert!(srv.logs().contains("1 rooms, 1 frames"), "{}", srv.logs());
    let mut c = srv.connect();
    let (frames, h) = catch_up(&mut c, "kept", "c", "");
    assert_eq!(frames.len(), 1);
    // The whole frame is its header (4 bytes at this length) and the text.
    assert_eq!(frames[0].as_bytes(), &frame[4..]);
    assert_eq!(h, history(1, true));
    drop(srv);
    let mut newer = valid.clone();
    newer[8] = 2; // format version 2
    let mut bad_frame = valid.clone();
    let at = bad_frame.len() - 3;
    bad_frame[at] = b'#'; // inside the frame's timestamp
    let hostile: [(&str, Vec<u8>, bool); 6] = [
        (
            "garbage",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            true,
        ),
        ("truncated", valid[..valid.len() - 5].to_vec(), true),
        ("another version", newer, true),
        ("a malformed frame", bad_frame, true),
        ("not sealed", valid.clone(), false),
        ("empty", Vec::new(), true),
    ];
    for (what, bytes, sealed) in hostile {
        let mut srv = start_with_memfd(memfd_with(&bytes, sealed), &[]);
        let mut c = srv.connect();
        let (frames, h) = catch_up(&mut c, "kept", "c", "");
        assert_eq!((frames, h), (vec![], history(0, true)), "{what}");
        let logs = srv.logs();
        let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{what}: {logs}");
        assert!(
            warnings[0].contains("history hand-over refused"),
            "{what}: {logs}"
        );
        drop(c);
        srv.signal(Signal::SIGTERM);
        assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0), "{what}");
    }
}
