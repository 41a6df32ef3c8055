use std::rc::Rc;

use serde_json::value::RawValue;

use super::*;

const SEC: u64 = 1000;

/// Limits as given (the configuration's ranges are not applied).
pub(crate) fn limits(secs: u32, room_frames: u32, budget: usize, rooms: u32) -> Limits {
    Limits {
        secs,
        room_frames,
        budget,
        rooms,
    }
}

fn roomy() -> Limits {
    limits(3600, 256, 64 << 20, 64)
}

/// A server text frame around `json` (unmasked, shortest length form).
pub(crate) fn framed(json: &str) -> Rc<[u8]> {
    let p = json.as_bytes();
    let header = crate::frame::encode_header(true, crate::frame::OP_TEXT, p.len() as u64, None);
    [header.as_slice(), p].concat().into()
}

const USER: &str = r#"{"id":"u1","name":"Ann","avatar":null}"#;

/// A relayed message with id `id` and about `size` bytes of content.
fn message(id: &str, size: usize) -> Rc<[u8]> {
    let content = "QUFB".repeat(size.div_ceil(4).max(1));
    framed(&format!(
        r#"{{"type":"message","id":"{id}","user":{USER},"content":"{content}","timestamp":"2026-01-06T12:00:00.123Z"}}"#
    ))
}

fn reaction(to: &str) -> Rc<[u8]> {
    framed(&format!(
        r#"{{"type":"reaction","messageId":"{to}","user":{USER},"emoji":"👍"}}"#
    ))
}

fn after(id: &str) -> Since {
    Since::from_text(id).unwrap()
}

/// Plays a whole replay out in writes of `step` bytes; returns the bytes
/// and the replay.
fn drain(h: &History, mut r: Replay, step: usize) -> (Vec<u8>, Replay) {
    let mut out = Vec::new();
    while !h.replay_done(&mut r) {
        let batch: Vec<u8> = h.replay_frames(&r).flatten().copied().collect();
        let n = batch.len().min(step);
        out.extend_from_slice(&batch[..n]);
        h.replay_consume(&mut r, n);
    }
    (out, r)
}

/// The ids (messages) or `r:<messageId>` (reactions) of a run of frames.
fn names(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = match bytes[1] {
            126 => 4 + usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            127 => panic!("no test frame is that long"),
            n => 2 + usize::from(n),
        };
        let (frame, rest) = bytes.split_at(len);
        let v: serde_json::Value = serde_json::from_slice(text_payload(frame).unwrap()).unwrap();
        out.push(match v["type"].as_str().unwrap() {
            "message" => v["id"].as_str().unwrap().to_string(),
            _ => format!("r:{}", v["messageId"].as_str().unwrap()),
        });
        bytes = rest;
    }
    out
}

fn replayed(h: &mut History, key: RoomKey, since: &Since, now: u64) -> (Vec<String>, bool) {
    let r = h.replay(key, since, now);
    let (bytes, r) = drain(h, r, usize::MAX);
    assert_eq!(r.count() as usize, names(&bytes).len());
    (names(&bytes), r.complete())
}

// ------------------------------------------------------------------ since

#[test]
fn since_absent_empty_id_or_invalid() {
    let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
    assert_eq!(parse_since(None), Ok(None));
    assert_eq!(parse_since(Some(&raw(r#""""#))), Ok(Some(Since::All)));
    assert_eq!(
        parse_since(Some(&raw(r#""ab-1_Z""#))),
        Ok(Some(after("ab-1_Z")))
    );
    // An escaped id-shaped string is that id.
    assert_eq!(
        parse_since(Some(&raw(r#""\u0061b""#))),
        Ok(Some(after("ab")))
    );
    let long = format!(r#""{}""#, "a".repeat(65));
    for bad in [
        "null",
        "0",
        "true",
        "[]",
        "{}",
        r#""a b""#,
        r#""a.b""#,
        r#""ü""#,
        r#""\n""#,
        long.as_str(),
    ] {
        assert_eq!(parse_since(Some(&raw(bad))), Err(InvalidSince), "{bad}");
    }
    assert_eq!(
        Since::from_text(&"a".repeat(64)),
        Ok(after(&"a".repeat(64)))
    );
}

// ----------------------------------------------------------------- shapes

#[test]
fn text_payload_wants_one_whole_shortest_text_frame() {
    assert_eq!(text_payload(&[0x81, 2, b'h', b'i']), Some(&b"hi"[..]));
    assert_eq!(text_payload(&[0x81, 2, b'h']), None, "short");
    assert_eq!(text_payload(&[0x81, 1, b'h', b'i']), None, "long");
    assert_eq!(text_payload(&[0x82, 1, b'h']), None, "binary");
    assert_eq!(text_payload(&[0x01, 1, b'h']), None, "not final");
    assert_eq!(
        text_payload(&[0x81, 0x81, 0, 0, 0, 0, b'h']),
        None,
        "masked"
    );
    assert_eq!(
        text_payload(&[0x81, 126, 0, 5, 1, 2, 3, 4, 5]),
        None,
        "long form"
    );
    let mut f = vec![0x81, 126, 0, 200];
    f.extend_from_slice(&[b'x'; 200]);
    assert_eq!(text_payload(&f).map(<[u8]>::len), Some(200));
    let mut f = vec![0x81, 127, 0, 0, 0, 0, 0, 0, 0, 200];
    f.extend_from_slice(&[b'x'; 200]);
    assert_eq!(text_payload(&f), None, "64-bit form of a short length");
    assert_eq!(text_payload(&[0x81]), None);
    assert_eq!(text_payload(&[]), None);
}

#[test]
fn retained_kinds_and_ids() {
    let m = message("p-1", 10);
    assert_eq!(fast_kind(&m), Some(Kind::Message));
    assert_eq!(message_id(&m), Some(&b"p-1"[..]));
    assert_eq!(check_frame(&m), Some(Kind::Message));
    let big = message("p-2", 70_000);
    assert_eq!(check_frame(&big), Some(Kind::Message));
    let r = reaction("p-1");
    assert_eq!(fast_kind(&r), Some(Kind::Reaction));
    assert_eq!(message_id(&r), None);
    assert_eq!(check_frame(&r), Some(Kind::Reaction));
    for other in [
        framed(&format!(
            r#"{{"type":"userTyping","user":{USER},"isTyping":true}}"#
        )),
        framed(r#"{"type":"message","payload":"QUFB"}"#),
        framed(r#"{"type":"userLeft","userId":"u1"}"#),
    ] {
        assert_eq!(fast_kind(&other), None);
        assert_eq!(check_frame(&other), None);
    }
}

#[test]
fn check_frame_refuses_what_the_relay_would_not_write() {
    let ts = "2026-01-06T12:00:00.123Z";
    let bad = [
        // an extra field, at the top and in the member
        format!(
            r#"{{"type":"message","id":"a","user":{USER},"content":"QUFB","timestamp":"{ts}","x":1}}"#
        ),
        format!(
            r#"{{"type":"message","id":"a","user":{{"id":"u","name":"n","x":1}},"content":"QUFB","timestamp":"{ts}"}}"#
        ),
        // a missing field
        format!(r#"{{"type":"message","id":"a","user":{USER},"content":"QUFB"}}"#),
        // an id escaped, too long, or not id-shaped
        format!(
            r#"{{"type":"message","id":"\u0061","user":{USER},"content":"QUFB","timestamp":"{ts}"}}"#
        ),
        format!(
            r#"{{"type":"message","id":"{}","user":{USER},"content":"QUFB","timestamp":"{ts}"}}"#,
            "a".repeat(65)
        ),
        format!(
            r#"{{"type":"message","id":"a b","user":{USER},"content":"QUFB","timestamp":"{ts}"}}"#
        ),
        // content, timestamp, member fields
        format!(
            r#"{{"type":"message","id":"a","user":{USER},"content":"not base64!","timestamp":"{ts}"}}"#
        ),
        format!(
            r#"{{"type":"message","id":"a","user":{USER},"content":"QUFB","timestamp":"yesterday"}}"#
        ),
        format!(
            r#"{{"type":"message","id":"a","user":{{"id":"u u","name":"n"}},"content":"QUFB","timestamp":"{ts}"}}"#
        ),
        format!(
            r#"{{"type":"message","id":"a","user":{{"id":"u","name":""}},"content":"QUFB","timestamp":"{ts}"}}"#
        ),
        // a duplicate field
        format!(
            r#"{{"type":"message","id":"a","user":{USER},"content":"QUFB","content":"QUFB","timestamp":"{ts}"}}"#
        ),
        // reactions
        format!(r#"{{"type":"reaction","messageId":"a b","user":{USER},"emoji":"x"}}"#),
        format!(r#"{{"type":"reaction","messageId":"a","user":{USER},"emoji":"a b"}}"#),
        format!(r#"{{"type":"reaction","messageId":"a","user":{USER}}}"#),
        // not JSON after a good start
        r#"{"type":"message","id":"a"#.to_string(),
    ];
    for json in bad {
        assert_eq!(check_frame(&framed(&json)), None, "{json}");
    }
    let ok = format!(
        r#"{{"type":"message","id":"a","user":{{"id":"u","name":"n"}},"content":"QUFB.QUI=","timestamp":"{ts}"}}"#
    );
    assert_eq!(check_frame(&framed(&ok)), Some(Kind::Message));
}

#[test]
fn history_frame_text() {
    let mut out = Vec::new();
    write_history_json(&mut out, 12, true);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"history","count":12,"complete":true})
    );
    out.clear();
    write_history_json(&mut out, 0, false);
    assert_eq!(out, br#"{"type":"history","count":0,"complete":false}"#);
}

// --------------------------------------------------------------- the store

#[test]
fn off_keeps_nothing() {
    let mut h = History::new(limits(0, 256, 1 << 20, 16));
    assert!(!h.limits().enabled());
    assert_eq!(h.enable("r", 0), None);
    assert_eq!(worst_case_bytes(h.limits()), 0);
    // A key from elsewhere: not retained, nothing replayed, not complete.
    let key = History::new(roomy()).enable("r", 0).unwrap();
    assert!(!h.retain(key, &message("a", 10), 0));
    let r = h.replay(key, &Since::All, 0);
    let (bytes, r) = drain(&h, r, 100);
    assert!(bytes.is_empty());
    assert_eq!((r.count(), r.complete()), (0, false));
    assert_eq!((h.rooms(), h.bytes()), (0, 0));
}

#[test]
fn enable_is_opt_in_per_room_and_idempotent() {
    let mut h = History::new(roomy());
    assert_eq!(h.key("r"), None);
    let k = h.enable("r", 0).unwrap();
    assert_eq!(h.enable("r", 5 * SEC), Some(k));
    assert_eq!(h.key("r"), Some(k));
    assert_eq!(h.enable("not a room", 0), None);
    assert_eq!(h.enable("", 0), None);
    assert_eq!(h.rooms(), 1);
    // A fresh room is complete from the start, with nothing to replay.
    assert_eq!(replayed(&mut h, k, &Since::All, 0), (vec![], true));
    // An id it never had: not complete.
    assert_eq!(replayed(&mut h, k, &after("x-1"), 0), (vec![], false));
    h.check_invariants();
}

#[test]
fn only_messages_and_reactions_are_retained_as_the_same_copy() {
    let mut h = History::new(roomy());
    let k = h.enable("r", 0).unwrap();
    let m = message("a-1", 100);
    assert!(h.retain(k, &m, 0));
    assert_eq!(Rc::strong_count(&m), 2, "one shared copy, no second");
    let typing = framed(&format!(
        r#"{{"type":"userTyping","user":{USER},"isTyping":true}}"#
    ));
    assert!(h.retain(k, &typing, 0));
    assert!(h.retain(k, &reaction("a-1"), 0));
    assert_eq!(h.frames(), 2);
    assert_eq!(h.frame_bytes(), m.len() + reaction("a-1").len());
    assert!(h.bytes() >= h.frame_bytes() + 2 * FRAME_OVERHEAD);
    assert_eq!(
        replayed(&mut h, k, &Since::All, 0),
        (vec!["a-1".into(), "r:a-1".into()], true)
    );
    h.check_invariants();
}

#[test]
fn since_an_id_replays_what_came_after_it() {
    let mut h = History::new(roomy());
    let k = h.enable("r", 0).unwrap();
    for f in [
        message("a-1", 10),
        reaction("a-1"),
        message("a-2", 10),
        reaction("a-2"),
        message("a-3", 10),
    ] {
        h.retain(k, &f, 0);
    }
    let got = |h: &mut History, s| replayed(h, k, &s, 0);
    assert_eq!(
        got(&mut h, after("a-1")),
        (
            vec!["r:a-1".into(), "a-2".into(), "r:a-2".into(), "a-3".into()],
            true
        )
    );
    assert_eq!(got(&mut h, after("a-3")), (vec![], true));
    // An id that is only a reaction's target elsewhere, or unknown: all, incomplete.
    assert!(!got(&mut h, after("zz-9")).1);
    assert_eq!(got(&mut h, after("zz-9")).0.len(), 5);
}

#[test]
fn frame_cap_drops_the_oldest_of_the_room() {
    let mut h = History::new(limits(3600, 3, 64 << 20, 8));
    let k = h.enable("r", 0).unwrap();
    let other = h.enable("o", 0).unwrap();
    h.retain(other, &message("o-1", 10), 0);
    for i in 1..=3 {
        h.retain(k, &message(&format!("a-{i}"), 10), 0);
    }
    assert!(replayed(&mut h, k, &Since::All, 0).1);
    for i in 4..=5 {
        h.retain(k, &message(&format!("a-{i}"), 10), 0);
        h.check_invariants();
    }
    assert_eq!(
        replayed(&mut h, k, &Since::All, 0),
        (vec!["a-3".into(), "a-4".into(), "a-5".into()], false)
    );
    // The dropped id is not found: everything, incomplete. A kept one is.
    assert!(!replayed(&mut h, k, &after("a-2"), 0).1);
    assert!(replayed(&mut h, k, &after("a-3"), 0).1);
    // The other room was not touched.
    assert_eq!(
        replayed(&mut h, other, &Since::All, 0),
        (vec!["o-1".into()], true)
    );
    assert_eq!(h.frames(), 4);
}

#[test]
fn expiry_drops_what_is_older_than_history_secs() {
    let mut h = History::new(limits(10, 256, 64 << 20, 8));
    let a = h.enable("a", 0).unwrap();
    let b = h.enable("b", 0).unwrap();
    h.retain(a, &message("a-1", 10), 0);
    h.retain(b, &message("b-1", 10), 3 * SEC);
    h.retain(a, &message("a-2", 10), 5 * SEC);
    // Ten seconds old is kept; older goes.
    h.expire(10 * SEC + 999);
    assert_eq!(h.frames(), 3);
    h.expire(11 * SEC);
    assert_eq!(h.frames(), 2);
    h.check_invariants();
    assert_eq!(
        replayed(&mut h, a, &Since::All, 11 * SEC),
        (vec!["a-2".into()], false)
    );
    assert_eq!(
        replayed(&mut h, b, &Since::All, 11 * SEC),
        (vec!["b-1".into()], true)
    );
    // A replay expires first: at 14 s b-1 is gone without a timer.
    assert_eq!(replayed(&mut h, b, &Since::All, 14 * SEC), (vec![], false));
    h.expire(16 * SEC);
    assert_eq!(
        (h.frames(), h.rooms()),
        (0, 2),
        "rooms outlive their frames"
    );
    // The clock never goes back: an earlier time changes nothing.
    h.retain(a, &message("a-3", 10), 0);
    assert_eq!(
        replayed(&mut h, a, &Since::All, 0).0,
        vec!["a-3".to_string()]
    );
    h.expire(26 * SEC);
    assert_eq!(h.frames(), 1);
    h.expire(27 * SEC);
    assert_eq!(h.frames(), 0);
    h.check_invariants();
}

#[test]
fn the_budget_drops_the_oldest_frames_of_all_rooms_first() {
    let budget = 64 * 1024;
    let mut h = History::new(limits(3600, 4096, budget, 8));
    let a = h.enable("a", 0).unwrap();
    let b = h.enable("b", 0).unwrap();
    let c = h.enable("c", 0).unwrap();
    h.retain(c, &message("c-1", 100), 0);
    // a fills most of the budget, then b talks.
    for i in 0..20 {
        h.retain(a, &message(&format!("a-{i}"), 2000), SEC);
    }
    assert_eq!(h.frames(), 21);
    for i in 0..20 {
        h.retain(b, &message(&format!("b-{i}"), 2000), 2 * SEC);
        h.check_invariants();
        assert!(h.bytes() <= budget);
    }
    // c's frame was the oldest of all: gone first. Then a's, oldest first.
    let (ca, ca_complete) = replayed(&mut h, c, &Since::All, 2 * SEC);
    assert_eq!((ca.len(), ca_complete), (0, false));
    let (aa, a_complete) = replayed(&mut h, a, &Since::All, 2 * SEC);
    let (bb, b_complete) = replayed(&mut h, b, &Since::All, 2 * SEC);
    assert!(!a_complete && b_complete, "b lost nothing");
    assert_eq!(bb.len(), 20);
    let first_kept = 20 - aa.len();
    let expect: Vec<String> = (first_kept..20).map(|i| format!("a-{i}")).collect();
    assert_eq!(aa, expect, "a keeps its newest");
    assert!(h.bytes() + 2100 > budget, "nothing dropped needlessly");
}

#[test]
fn a_frame_larger_than_the_budget_is_not_kept() {
    let mut h = History::new(limits(3600, 16, 64 * 1024, 4));
    let k = h.enable("r", 0).unwrap();
    h.retain(k, &message("a-1", 100), 0);
    assert!(h.retain(k, &message("a-2", 70_000), 0));
    assert_eq!((h.frames(), h.bytes()), (0, 0));
    assert_eq!(replayed(&mut h, k, &Since::All, 0), (vec![], false));
    h.check_invariants();
}

#[test]
fn past_history_rooms_the_room_whose_newest_frame_is_oldest_goes() {
    let mut h = History::new(limits(3600, 16, 64 << 20, 3));
    let a = h.enable("a", 0).unwrap();
    let b = h.enable("b", 0).unwrap();
    let c = h.enable("c", 0).unwrap();
    h.retain(b, &message("b-1", 10), SEC);
    h.retain(a, &message("a-1", 10), 2 * SEC);
    h.retain(c, &message("c-1", 10), 3 * SEC);
    h.retain(b, &message("b-2", 10), 4 * SEC);
    // Newest frames: a at 2 s, c at 3 s, b at 4 s. Enabling an existing room
    // changes nothing; a new one evicts a.
    assert_eq!(h.enable("c", 5 * SEC), Some(c));
    assert_eq!(h.activity_order(), ["a", "c", "b"]);
    let d = h.enable("d", 5 * SEC).unwrap();
    assert_eq!(h.rooms(), 3);
    assert_eq!(h.key("a"), None);
    assert!(
        !h.retain(a, &message("a-2", 10), 5 * SEC),
        "a's key is stale"
    );
    assert_eq!(replayed(&mut h, a, &Since::All, 5 * SEC), (vec![], false));
    h.check_invariants();
    // An empty room counts, and is ordered by its creation.
    assert_eq!(h.activity_order(), ["c", "b", "d"]);
    h.enable("e", 6 * SEC).unwrap();
    assert_eq!(h.key("c"), None);
    assert_eq!(h.activity_order(), ["b", "d", "e"]);
    // a comes back: it lost history, so "" is not complete; a room never
    // seen before is.
    h.enable("b2", 7 * SEC);
    let a2 = h.enable("a", 7 * SEC).unwrap();
    assert_ne!(a2, a);
    assert_eq!(replayed(&mut h, a2, &Since::All, 7 * SEC), (vec![], false));
    let fresh = h.enable("f", 7 * SEC).unwrap();
    assert_eq!(
        replayed(&mut h, fresh, &Since::All, 7 * SEC),
        (vec![], true)
    );
    assert!(d != fresh);
    h.check_invariants();
}

#[test]
fn forgotten_evictions_make_new_rooms_incomplete() {
    // One room, four tombstones: the fifth eviction forgets the first.
    let mut h = History::new(limits(3600, 16, 64 << 20, 1));
    for i in 0..5 {
        h.enable(&format!("r{i}"), 0).unwrap();
    }
    h.enable("last", 0).unwrap();
    h.check_invariants();
    let k = h.enable("never-seen", 0).unwrap();
    assert!(!replayed(&mut h, k, &Since::All, 0).1);
}

#[test]
fn a_replay_streams_in_any_write_sizes_and_excludes_live_frames() {
    for step in [1, 7, 100, 4096, usize::MAX] {
        let mut h = History::new(roomy());
        let k = h.enable("r", 0).unwrap();
        let frames: Vec<_> = (0..10)
            .map(|i| message(&format!("a-{i}"), 50 * i))
            .collect();
        for f in &frames {
            h.retain(k, f, 0);
        }
        let mut r = h.replay(k, &after("a-2"), 0);
        // Live traffic after the join is not part of the replay.
        h.retain(k, &message("live-1", 10), 0);
        let mut out = Vec::new();
        let mut writes = 0;
        while !h.replay_done(&mut r) {
            let batch: Vec<u8> = h.replay_frames(&r).flatten().copied().collect();
            let n = batch.len().min(step);
            out.extend_from_slice(&batch[..n]);
            h.replay_consume(&mut r, n);
            writes += 1;
            if writes < 100 {
                h.retain(k, &message("live-2", 10), 0);
            }
        }
        let expect: Vec<u8> = frames[3..].iter().flat_map(|f| f.iter().copied()).collect();
        assert!(out == expect, "step {step}: {:?}", names(&out));
        assert_eq!((r.count(), r.complete()), (7, true));
        assert_eq!(r.pinned_bytes(), 0);
    }
}

#[test]
fn frames_dropped_under_a_replay_are_skipped_and_make_it_incomplete() {
    let mut h = History::new(limits(3600, 6, 64 << 20, 4));
    let k = h.enable("r", 0).unwrap();
    for i in 0..6 {
        h.retain(k, &message(&format!("a-{i}"), 20), 0);
    }
    let mut r = h.replay(k, &Since::All, 0);
    assert!(r.complete());
    // Write a-0 whole and 5 bytes of a-1.
    let first: Vec<u8> = h.replay_frames(&r).flatten().copied().collect();
    let a0 = message("a-0", 20).len();
    let mut out = first[..a0 + 5].to_vec();
    assert_eq!(h.replay_consume(&mut r, a0 + 5), 1);
    assert!(r.pinned_bytes() > 0);
    // Live traffic pushes a-0..a-2 out of retention (cap 6).
    for i in 0..3 {
        h.retain(k, &message(&format!("live-{i}"), 20), 0);
    }
    h.check_invariants();
    // The half-written a-1 is finished from the pin, a-2 is skipped.
    let (rest, r) = drain(&h, r, 9);
    out.extend_from_slice(&rest);
    assert_eq!(names(&out), ["a-0", "a-1", "a-3", "a-4", "a-5"]);
    assert_eq!((r.count(), r.complete()), (5, false));
}

#[test]
fn a_replay_of_an_evicted_room_ends_and_never_sees_its_successor() {
    let mut h = History::new(limits(3600, 16, 64 << 20, 1));
    let k = h.enable("r", 0).unwrap();
    for i in 0..3 {
        h.retain(k, &message(&format!("a-{i}"), 20), 0);
    }
    let mut r = h.replay(k, &Since::All, 0);
    let batch: Vec<u8> = h.replay_frames(&r).flatten().copied().collect();
    let a0 = message("a-0", 20).len();
    h.replay_consume(&mut r, a0 + 3);
    let mut out = batch[..a0 + 3].to_vec();
    // Another room takes the only slot (the same slot, a new generation).
    let s = h.enable("s", 0).unwrap();
    h.retain(s, &message("s-1", 20), 0);
    let (rest, r) = drain(&h, r, 1000);
    out.extend_from_slice(&rest);
    assert_eq!(names(&out), ["a-0", "a-1"]);
    assert_eq!((r.count(), r.complete()), (2, false));
}

#[test]
fn a_dropped_replay_releases_its_pin() {
    let mut h = History::new(limits(3600, 1, 64 << 20, 4));
    let k = h.enable("r", 0).unwrap();
    let m = message("a-1", 20);
    h.retain(k, &m, 0);
    let mut r = h.replay(k, &Since::All, 0);
    h.replay_consume(&mut r, 3);
    h.retain(k, &message("a-2", 20), 0);
    assert_eq!(Rc::strong_count(&m), 2, "the caller's copy and the pin");
    drop(r);
    assert_eq!(Rc::strong_count(&m), 1);
}

/// A naive model: every frame with its room, time and order, rules applied
/// by scanning everything. The budget is large enough not to bind.
#[test]
fn matches_a_naive_model_under_random_operations() {
    let (secs, cap, rooms) = (20u64, 5usize, 4usize);
    let mut h = History::new(limits(secs as u32, cap as u32, 64 << 20, rooms as u32));
    // Rooms, most recently active last.
    // (room, its frames as (seq, time, id), whether it lost one).
    type Model = Vec<(String, Vec<(u64, u64, String)>, bool)>;
    let mut model: Model = Vec::new();
    let mut keys = std::collections::HashMap::new();
    let mut evicted = std::collections::HashSet::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut now = 0u64;
    let mut seq = 0u64;
    for _ in 0..3000 {
        now += rand(3) * SEC;
        // Expiry in the model (whole seconds, age > secs).
        for (_, frames, dropped) in &mut model {
            let before = frames.len();
            frames.retain(|&(_, t, _)| now / SEC - t / SEC <= secs);
            *dropped |= frames.len() < before;
        }
        let name = format!("r{}", rand(7));
        match rand(4) {
            0 => {
                h.enable(&name, now).unwrap();
                if !model.iter().any(|m| m.0 == name) {
                    if model.len() == rooms {
                        let gone = model.remove(0);
                        keys.remove(&gone.0);
                        evicted.insert(gone.0);
                    }
                    // A room that lost its history before is not complete.
                    model.push((name.clone(), Vec::new(), evicted.contains(&name)));
                }
                keys.insert(name.clone(), h.key(&name).unwrap());
            }
            _ => {
                seq += 1;
                let id = format!("m-{seq}");
                let Some(&key) = keys.get(&name) else {
                    continue;
                };
                let live = h.retain(key, &message(&id, 10), now);
                let pos = model.iter().position(|m| m.0 == name);
                assert_eq!(live, pos.is_some(), "key validity of {name} in {model:?}");
                if let Some(pos) = pos {
                    let mut m = model.remove(pos);
                    m.1.push((seq, now, id));
                    if m.1.len() > cap {
                        m.1.remove(0);
                        m.2 = true;
                    }
                    model.push(m);
                } else {
                    keys.remove(&name);
                }
            }
        }
        h.expire(now);
        h.check_invariants();
        let order: Vec<String> = model.iter().map(|m| m.0.clone()).collect();
        assert_eq!(h.activity_order(), order);
        for (room, frames, dropped) in &model {
            let key = h.key(room).unwrap();
            let (got, complete) = replayed(&mut h, key, &Since::All, now);
            let want: Vec<String> = frames.iter().map(|f| f.2.clone()).collect();
            assert_eq!(got, want);
            assert_eq!(complete, !dropped);
        }
    }
}

#[test]
fn random_operations_keep_the_budget_and_every_index() {
    let mut h = History::new(limits(30, 64, 64 * 1024, 6));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut now = 0;
    let mut replays = Vec::new();
    for i in 0..4000u64 {
        now += rand(2) * 300;
        let name = format!("r{}", rand(9));
        let key = h.enable(&name, now).unwrap();
        match rand(10) {
            0 => replays.push(h.replay(key, &Since::All, now)),
            1 => h.expire(now),
            _ => {
                h.retain(key, &message(&format!("m-{i}"), rand(3000) as usize), now);
            }
        }
        // Advance every replay a little; each stays consistent.
        for r in &mut replays {
            let n: usize = h.replay_frames(r).map(<[u8]>::len).sum::<usize>().min(777);
            h.replay_consume(r, n);
        }
        replays.retain_mut(|r| !h.replay_done(r));
        h.check_invariants();
    }
    assert!(h.frames() > 0);
}

#[test]
fn snapshot_and_restore_keep_frames_order_flags_and_ages() {
    let mut h = History::new(limits(100, 4, 64 << 20, 8));
    let a = h.enable("a", 0).unwrap();
    let b = h.enable("b", 0).unwrap();
    let quiet = h.enable("quiet", 0).unwrap();
    h.retain(a, &message("a-1", 10), 0);
    h.retain(b, &message("b-1", 10), 10 * SEC);
    h.retain(a, &reaction("b-1"), 20 * SEC);
    for i in 2..=5 {
        h.retain(b, &message(&format!("b-{i}"), 10), 30 * SEC);
    }
    let _ = quiet;
    let snap = h.snapshot(40 * SEC);
    assert_eq!(
        snap.rooms
            .iter()
            .map(|r| (r.name.as_str(), r.complete))
            .collect::<Vec<_>>(),
        [("quiet", true), ("a", true), ("b", false)]
    );
    let ages: Vec<u64> = snap.frames.iter().map(|f| f.1 / SEC).collect();
    assert_eq!(ages, [40, 20, 10, 10, 10, 10]);
    // A new process whose clock starts at zero.
    let mut back = History::restore(*h.limits(), snap.clone(), 0);
    back.check_invariants();
    assert_eq!(back.activity_order(), ["quiet", "a", "b"]);
    assert_eq!(
        (back.frames(), back.frame_bytes()),
        (h.frames(), h.frame_bytes())
    );
    for room in ["a", "b", "quiet"] {
        let k1 = h.key(room).unwrap();
        let k2 = back.key(room).unwrap();
        assert_eq!(
            replayed(&mut h, k1, &Since::All, 40 * SEC),
            replayed(&mut back, k2, &Since::All, 0)
        );
    }
    let k = back.key("b").unwrap();
    assert_eq!(replayed(&mut back, k, &after("b-3"), 0).0, ["b-4", "b-5"]);
    // Ages keep counting: a-1 (40 s old) goes 61 s later, b's at 91 s.
    back.expire(60 * SEC);
    assert_eq!(back.frames(), 6);
    back.expire(61 * SEC);
    assert_eq!(back.frames(), 5);
    back.expire(91 * SEC);
    assert_eq!(back.frames(), 0);
    // Smaller limits apply on the way in: one room, two frames.
    let small = History::restore(limits(100, 2, 64 << 20, 1), snap.clone(), 0);
    small.check_invariants();
    assert_eq!(small.activity_order(), ["b"]);
    assert_eq!(small.frames(), 2);
    // Frames past HISTORY_SECS are not restored, and mark their room.
    let mut short = History::restore(limits(15, 8, 64 << 20, 8), snap, 0);
    let k = short.key("a").unwrap();
    assert_eq!(replayed(&mut short, k, &Since::All, 0), (vec![], false));
    let k = short.key("b").unwrap();
    assert_eq!(replayed(&mut short, k, &Since::All, 0).0.len(), 4);
}

#[test]
fn restore_carries_evictions_and_ignores_what_it_cannot_place() {
    let mut h = History::new(limits(100, 4, 64 << 20, 1));
    h.enable("gone", 0).unwrap();
    h.enable("kept", 0).unwrap();
    let mut snap = h.snapshot(0);
    assert_eq!(snap.tombstones, [stable_hash(b"gone")]);
    snap.frames.push((7, 0, message("x-1", 10)));
    snap.frames
        .push((0, 0, framed(r#"{"type":"userLeft","userId":"u"}"#)));
    let mut back = History::restore(limits(100, 4, 64 << 20, 2), snap, 0);
    assert_eq!(back.frames(), 0);
    let k = back.enable("gone", 0).unwrap();
    assert!(!replayed(&mut back, k, &Since::All, 0).1);
    back.check_invariants();
    // History off: nothing comes back.
    let snap = h.snapshot(0);
    assert_eq!(
        History::restore(limits(0, 4, 1 << 20, 2), snap, 0).rooms(),
        0
    );
}

// ------------------------------------------------------ ids, hash, memory

#[test]
fn message_ids_are_id_shaped_and_avoid_the_predecessor() {
    let mut ids = MessageIds::new(None);
    assert_eq!(ids.prefix().len(), 16);
    assert!(ids.prefix().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!((ids.last_seq(), ids.next_seq(), ids.next_seq()), (0, 1, 2));
    let id = format!("{}-{}", ids.prefix(), u64::MAX);
    assert!(crate::protocol::is_valid_id(&id));
    let other = MessageIds::new(Some(ids.prefix()));
    assert_ne!(other.prefix(), ids.prefix());
    // Forced: the same draw is flipped.
    let first = MessageIds::with_prefix_value(5);
    assert_ne!(MessageIds::with_prefix_value(!5).prefix(), first.prefix());
}

#[test]
fn stable_hash_is_fnv1a() {
    assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn worst_case_memory_at_the_defaults() {
    let l = limits(86_400, 256, 8 << 20, 1024);
    let bytes = worst_case_bytes(&l);
    let extra = bytes - (8 << 20);
    assert_eq!(
        extra,
        1024 * ROOM_OVERHEAD as u64 + 4096 * TOMBSTONE_OVERHEAD as u64
    );
    // Under a MiB beside the budget at the default 1024 rooms.
    assert!(extra < 1 << 20, "{extra}");
    assert!(worst_case_bytes(&limits(1, 256, 8 << 20, 2048)) > bytes);
    println!(
        "entry {ENTRY_BYTES} B, frame overhead {FRAME_OVERHEAD} B, room {ROOM_OVERHEAD} B, \
         tombstone {TOMBSTONE_OVERHEAD} B; defaults: {bytes} B"
    );
}
