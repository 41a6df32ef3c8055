//! Contract section 2: the WebSocket protocol over real sockets.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use tungstenite::Message;

const SHORT: Duration = Duration::from_millis(300);

#[test]
fn ping_gets_pong_before_joining() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(json!({"type":"ping"}));
    assert_eq!(c.recv(), json!({"type":"pong"}));
}

#[test]
fn join_returns_user_list_including_self_in_join_order() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    let list = a.join("room-1", "alice", "Alice");
    assert_eq!(
        list,
        json!({"type":"userList","users":[{"id":"alice","name":"Alice","avatar":null}]})
    );
    let mut b = srv.connect();
    b.send(json!({"type":"join","data":{"room":"room-1","user":{"id":"bob","name":"Bob","avatar":"https://x/y.png"}}}));
    let list = b.recv();
    assert_eq!(list["type"], "userList");
    let ids: Vec<_> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("alice"), json!("bob")]);
    assert_eq!(list["users"][1]["avatar"], "https://x/y.png");
    let joined = a.recv();
    assert_eq!(
        joined,
        json!({"type":"userJoined","user":{"id":"bob","name":"Bob","avatar":"https://x/y.png"}})
    );
    // The joiner does not get its own userJoined.
    b.expect_silence(SHORT);
    let h = srv.health();
    assert_eq!(h["stats"]["active_rooms"], 1);
    assert_eq!(h["stats"]["total_users"], 2);
    assert_eq!(h["stats"]["active_connections"], 2);
}

#[test]
fn message_reaches_every_member_including_sender() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = pair(&srv);
    let mut outsider = srv.connect();
    outsider.join("other", "z", "Z");

    a.message("aXY=.Y2lwaGVy");
    let ma = a.recv();
    let mb = b.recv();
    assert_eq!(ma, mb);
    assert_eq!(ma["type"], "message");
    assert_eq!(ma["content"], "aXY=.Y2lwaGVy");
    assert_eq!(ma["user"], json!({"id":"a","name":"A","avatar":null}));
    let id = ma["id"].as_str().unwrap();
    assert!(
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
        "{id}"
    );
    let ts = ma["timestamp"].as_str().unwrap();
    // 2026-01-06T12:00:00.123Z
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
    outsider.expect_silence(SHORT);
}

#[test]
fn message_ids_are_unique_and_order_is_the_same_for_everyone() {
    let srv = Server::start(&[("RATE_LIMIT_MESSAGE_LIMIT", "1000")]);
    let (mut a, mut b) = pair(&srv);
    let mut c = srv.connect();
    c.join("r", "c", "C");
    a.recv_type("userJoined");
    b.recv_type("userJoined");
    for i in 0..20 {
        a.message(&format!("QQ{i:02}"));
        b.message(&format!("Qg{i:02}"));
    }
    let mut seqs = Vec::new();
    for client in [&mut a, &mut b, &mut c] {
        let mut seq = Vec::new();
        for _ in 0..40 {
            let m = client.recv_type("message");
            seq.push((
                m["id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            ));
        }
        seqs.push(seq);
    }
    assert_eq!(seqs[0], seqs[1]);
    assert_eq!(seqs[0], seqs[2]);
    let ids: HashSet<_> = seqs[0].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 40);
    // Each sender's own messages keep their order.
    let from_a: Vec<_> = seqs[0]
        .iter()
        .filter(|(_, c)| c.starts_with("QQ"))
        .map(|(_, c)| c.clone())
        .collect();
    let expected: Vec<_> = (0..20).map(|i| format!("QQ{i:02}")).collect();
    assert_eq!(from_a, expected);
}

#[test]
fn message_ids_differ_across_restarts() {
    let mut ids = HashSet::new();
    for _ in 0..2 {
        let srv = Server::start(&[]);
        let mut a = srv.connect();
        a.join("r", "a", "A");
        a.message("QUJD");
        let id = a.recv_type("message")["id"].as_str().unwrap().to_string();
        assert!(ids.insert(id));
    }
}

#[test]
fn typing_goes_to_the_others_only() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = pair(&srv);
    a.send(json!({"type":"typing","data":{"isTyping":true}}));
    assert_eq!(
        b.recv(),
        json!({"type":"userTyping","user":{"id":"a","name":"A","avatar":null},"isTyping":true})
    );
    a.expect_silence(SHORT);
    a.send(json!({"type":"typing","data":{"isTyping":"yes"}}));
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    a.send(json!({"type":"typing","data":{}}));
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
}

#[test]
fn reaction_reaches_everyone_and_is_validated() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = pair(&srv);
    b.send(json!({"type":"reaction","data":{"messageId":"m-1","emoji":"👍"}}));
    let expected = json!({"type":"reaction","messageId":"m-1","user":{"id":"b","name":"B","avatar":null},"emoji":"👍"});
    assert_eq!(a.recv(), expected);
    assert_eq!(b.recv(), expected);
    b.send(json!({"type":"reaction","data":{"messageId":"bad id","emoji":"👍"}}));
    assert_eq!(b.recv_error(), "INVALID_MESSAGE");
    b.send(json!({"type":"reaction","data":{"messageId":"m1","emoji":"a b"}}));
    assert_eq!(b.recv_error(), "INVALID_EMOJI");
    b.send(json!({"type":"reaction","data":{"messageId":"m1","emoji":""}}));
    assert_eq!(b.recv_error(), "INVALID_EMOJI");
    b.send(json!({"type":"reaction","data":{"messageId":"m1","emoji":"x".repeat(33)}}));
    assert_eq!(b.recv_error(), "INVALID_EMOJI");
    let mut c = srv.connect();
    c.send(json!({"type":"reaction","data":{"messageId":"m1","emoji":"👍"}}));
    assert_eq!(c.recv_error(), "NOT_IN_ROOM");
}

#[test]
fn leave_announces_and_empty_rooms_vanish() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = pair(&srv);
    b.send(json!({"type":"leave"}));
    assert_eq!(a.recv(), json!({"type":"userLeft","userId":"b"}));
    b.send(json!({"type":"leave"}));
    assert_eq!(b.recv_error(), "NOT_IN_ROOM");
    b.message("QUJD");
    assert_eq!(b.recv_error(), "NOT_IN_ROOM");
    b.send(json!({"type":"typing","data":{"isTyping":true}}));
    assert_eq!(b.recv_error(), "NOT_IN_ROOM");
    assert_eq!(srv.health()["stats"]["active_rooms"], 1);
    a.send(json!({"type":"leave"}));
    a.send(json!({"type":"ping"}));
    assert_eq!(a.recv()["type"], "pong");
    let h = srv.health();
    assert_eq!(h["stats"]["active_rooms"], 0);
    assert_eq!(h["stats"]["total_users"], 0);
    assert_eq!(h["stats"]["active_connections"], 2);
}

#[test]
fn closing_or_dropping_a_connection_leaves_its_room() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = pair(&srv);
    b.ws.close(None).unwrap();
    assert_eq!(a.recv(), json!({"type":"userLeft","userId":"b"}));
    let mut c = srv.connect();
    c.join("r", "c", "C");
    a.recv_type("userJoined");
    drop(c); // TCP dropped without a close frame
    assert_eq!(a.recv(), json!({"type":"userLeft","userId":"c"}));
    assert!(eventually(Duration::from_secs(5), || srv.health()["stats"]
        ["active_connections"]
        == 1));
}

#[test]
fn joining_another_room_leaves_the_first() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    a.join("one", "a", "A");
    let mut b = srv.connect();
    b.join("one", "b", "B");
    a.recv_type("userJoined");
    let list = b.join("two", "b", "B");
    assert_eq!(list["users"].as_array().unwrap().len(), 1);
    assert_eq!(a.recv(), json!({"type":"userLeft","userId":"b"}));
    a.message("QUJD");
    a.recv_type("message");
    b.expect_silence(SHORT);
    assert_eq!(srv.health()["stats"]["active_rooms"], 2);
}

#[test]
fn user_id_taken_room_full_too_many_rooms() {
    let srv = Server::start(&[("MAX_ROOM_USERS", "2"), ("MAX_ROOMS", "2")]);
    let mut a = srv.connect();
    a.join("r", "same", "A");
    let mut b = srv.connect();
    b.send(json!({"type":"join","data":{"room":"r","user":{"id":"same","name":"B"}}}));
    assert_eq!(b.recv_error(), "USER_ID_TAKEN");
    // The same id in another room is fine.
    b.join("r2", "same", "B");
    let mut c = srv.connect();
    c.join("r", "c", "C");
    let mut d = srv.connect();
    d.send(json!({"type":"join","data":{"room":"r","user":{"id":"d","name":"D"}}}));
    assert_eq!(d.recv_error(), "ROOM_FULL");
    d.send(json!({"type":"join","data":{"room":"r3","user":{"id":"d","name":"D"}}}));
    assert_eq!(d.recv_error(), "TOO_MANY_ROOMS");
    // Rejoining its own room with the same id is not "taken".
    let list = a.join("r", "same", "A again");
    assert_eq!(list["users"].as_array().unwrap().len(), 2);
}

#[test]
fn join_validation_codes() {
    let srv = Server::start(&[("RATE_LIMIT_JOIN_LIMIT", "100")]);
    let mut c = srv.connect();
    let cases = [
        (
            json!({"room":"","user":{"id":"a","name":"A"}}),
            "INVALID_ROOM_ID",
        ),
        (
            json!({"room":"x".repeat(65),"user":{"id":"a","name":"A"}}),
            "INVALID_ROOM_ID",
        ),
        (
            json!({"room":"a b","user":{"id":"a","name":"A"}}),
            "INVALID_ROOM_ID",
        ),
        (
            json!({"room":"r","user":{"id":"","name":"A"}}),
            "INVALID_USER_ID",
        ),
        (
            json!({"room":"r","user":{"id":"ä","name":"A"}}),
            "INVALID_USER_ID",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":""}}),
            "INVALID_USERNAME",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":"   "}}),
            "INVALID_USERNAME",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":"x".repeat(33)}}),
            "INVALID_USERNAME",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":"a\u{1}"}}),
            "INVALID_USERNAME",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":"A","avatar":"x".repeat(513)}}),
            "INVALID_AVATAR",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":"A","avatar":"a\nb"}}),
            "INVALID_AVATAR",
        ),
        (
            json!({"room":"r","user":{"id":"a","name":"A","avatar":5}}),
            "INVALID_AVATAR",
        ),
    ];
    for (data, code) in cases {
        c.send(json!({"type":"join","data":data}));
        assert_eq!(c.recv_error(), code, "{data}");
    }
    // 32 multi-byte characters are fine.
    let list = c.join("r", "a", &"é".repeat(32));
    assert_eq!(list["users"][0]["name"], "é".repeat(32));
}

#[test]
fn content_validation() {
    let srv = Server::start(&[("RATE_LIMIT_MESSAGE_LIMIT", "100")]);
    let mut a = srv.connect();
    a.join("r", "a", "A");
    for bad in [
        json!(""),
        json!("not base64!"),
        json!("abc."),
        json!(5),
        json!(null),
        json!("QQ="),
        json!("a.b.c.d.e.f.g.h.i"),
    ] {
        a.send(json!({"type":"message","data":{"content":bad}}));
        assert_eq!(a.recv_error(), "INVALID_CONTENT", "{bad}");
    }
    a.send(json!({"type":"message","data":{}}));
    assert_eq!(a.recv_error(), "INVALID_CONTENT");
    for good in [
        "QQ==",
        "QQ",
        "aGVsbG8-_w",
        "aGVsbG8+/w==.QUJD",
        "QUJD.QUJD.QUJD.QUJD.QUJD.QUJD.QUJD.QUJD",
    ] {
        a.message(good);
        assert_eq!(a.recv()["content"], good);
    }
}

#[test]
fn malformed_frames_get_errors_and_the_connection_stays_open() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    a.send_text("{not json");
    assert_eq!(a.recv_error(), "INVALID_JSON");
    a.send_text("[1,2,3]");
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    a.send_text(r#"{"type":"dance"}"#);
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    a.send_text(r#"{"kind":"ping"}"#);
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    a.send_text(r#"{"type":"join"}"#);
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    a.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    // Unknown extra fields are ignored.
    a.send_text(r#"{"type":"ping","extra":{"deep":[1,2]}}"#);
    assert_eq!(a.recv(), json!({"type":"pong"}));
}

#[test]
fn websocket_ping_gets_pong() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    a.ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    a.set_timeout(Duration::from_secs(5));
    match a.ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"hi"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn escaped_user_names_are_relayed_as_valid_json() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    let name = "Q\"uote\\ 😀";
    let list = a.join("r", "a", name);
    assert_eq!(list["users"][0]["name"], name);
    a.message("QUJD");
    assert_eq!(a.recv()["user"]["name"], name);
}

/// A connection's replies (errors, pong) keep the order of its requests,
/// also relative to the echoes of its own messages.
#[test]
fn replies_keep_the_order_of_requests() {
    let srv = Server::start(&[("RATE_LIMIT_MESSAGE_LIMIT", "3")]);
    let (mut a, mut b) = pair(&srv);
    for _ in 0..20 {
        a.send_text(r#"{"type":"ping"}"#);
    }
    for _ in 0..20 {
        assert_eq!(a.recv()["type"], "pong");
    }
    a.message("YQ");
    a.message("!!");
    a.message("Yg");
    a.send(json!({"type":"ping"}));
    a.message("Yw");
    a.message("ZA");
    let kinds: Vec<String> = (0..6)
        .map(|_| {
            let v = a.recv();
            match v["type"].as_str().unwrap() {
                "error" => v["code"].as_str().unwrap().to_string(),
                "message" => v["content"].as_str().unwrap().to_string(),
                other => other.to_string(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "YQ",
            "INVALID_CONTENT",
            "Yg",
            "pong",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );
    // The other member saw the relayed messages only.
    assert_eq!(b.recv()["content"], "YQ");
    assert_eq!(b.recv()["content"], "Yg");
    b.expect_silence(SHORT);
}
