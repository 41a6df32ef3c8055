//! The legacy "payload" dialect (`LEGACY-DIALECT.md`, issue 9): every test
//! vector of its section 7, the namespaces, the limits in legacy shape, and
//! how the upgrade path and the first frame choose the dialect.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

/// A connection upgraded on `/`: it starts in the legacy dialect.
fn legacy(srv: &Server) -> Client {
    Client::try_connect_to(srv.port, "/", &[]).expect("upgrade on /")
}

fn join_frame(room: &str, id: &str, name: &str) -> Value {
    json!({"type":"join","payload":{"roomId":room,"userId":id,"username":name}})
}

/// Joins in the legacy dialect; returns the `userList` it got.
fn legacy_join(c: &mut Client, room: &str, id: &str, name: &str) -> Value {
    c.send(join_frame(room, id, name));
    c.recv_type("userList")
}

/// The payload of the next message, which must be a legacy error:
/// `{"type":"error","payload":{"code","message"}}` and nothing else outside.
fn legacy_error(c: &mut Client) -> Value {
    let v = c.recv();
    assert_eq!(v["type"], "error", "expected an error, got {v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    let p = &v["payload"];
    assert!(p["code"].is_string() && p["message"].is_string(), "{v}");
    p.clone()
}

fn legacy_error_code(c: &mut Client) -> String {
    legacy_error(c)["code"].as_str().unwrap().to_string()
}

/// A (alice) and B (bob), legacy, in room1; A has seen B join.
fn legacy_pair(srv: &Server) -> (Client, Client) {
    let mut a = legacy(srv);
    legacy_join(&mut a, "room1", "alice", "Alice");
    let mut b = legacy(srv);
    legacy_join(&mut b, "room1", "bob", "Bob");
    a.recv_type("userJoined");
    (a, b)
}

fn metrics(srv: &Server) -> String {
    http(srv.port, "GET /metrics HTTP/1.1\r\n\r\n").body
}

// ------------------------------------------------------- section 7 vectors

#[test]
fn vector_1_ping_gets_pong() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.send(json!({"type":"ping"}));
    assert_eq!(a.recv(), json!({"type":"pong"}));
}

#[test]
fn vector_2_and_3_join_gets_others_only_in_user_list() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.send(join_frame("room1", "alice", "Alice"));
    assert_eq!(a.recv(), json!({"type":"userList","payload":{"users":[]}}));
    let mut b = legacy(&srv);
    b.send(join_frame("room1", "bob", "Bob"));
    assert_eq!(
        a.recv(),
        json!({"type":"userJoined","payload":{"userId":"bob","username":"Bob"}})
    );
    assert_eq!(
        b.recv(),
        json!({"type":"userList","payload":{"users":[{"id":"alice","name":"Alice"}]}})
    );
    // A third: the others in join order, entries exactly {id, name}.
    let mut c = legacy(&srv);
    c.send(join_frame("room1", "carol", "Carol"));
    assert_eq!(
        c.recv(),
        json!({"type":"userList","payload":{"users":[
            {"id":"alice","name":"Alice"},{"id":"bob","name":"Bob"}]}})
    );
    assert_eq!(srv.health()["stats"]["total_users"], 3);
}

#[test]
fn vector_4_message_goes_to_the_others_only() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = legacy_pair(&srv);
    a.send(json!({"type":"message","payload":{"encrypted":"SGVsbG8=.V29ybGQ="}}));
    assert_eq!(
        b.recv(),
        json!({"type":"message","payload":"SGVsbG8=.V29ybGQ="})
    );
    a.expect_silence(QUIET);
}

#[test]
fn vector_5_typing_in_the_node_shape() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = legacy_pair(&srv);
    a.send(json!({"type":"typing","payload":{"isTyping":true,"roomId":"room1","userId":"alice","username":"Alice"}}));
    assert_eq!(
        b.recv(),
        json!({"type":"typing","payload":{"userId":"alice","username":"Alice","isTyping":true}})
    );
    a.expect_silence(QUIET);
    // Only isTyping is checked; the identity comes from the join.
    a.send(json!({"type":"typing","payload":{"isTyping":false,"userId":"mallory"}}));
    assert_eq!(b.recv()["payload"]["userId"], "alice");
    a.send(json!({"type":"typing","payload":{"isTyping":"yes"}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE");
}

#[test]
fn vector_6_reaction_goes_to_the_others_only() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = legacy_pair(&srv);
    a.send(json!({"type":"reaction","payload":{"messageId":"m1","emoji":"👍","action":"add"}}));
    assert_eq!(
        b.recv(),
        json!({"type":"reaction","payload":{"messageId":"m1","emoji":"👍","userId":"alice","action":"add"}})
    );
    a.expect_silence(QUIET);
    a.send(json!({"type":"reaction","payload":{"messageId":"m1","emoji":"👍","action":"remove"}}));
    assert_eq!(b.recv()["payload"]["action"], "remove");
    for bad in [
        json!({"messageId":"m1","emoji":"x","action":"toggle"}),
        json!({"messageId":"m1","emoji":"x"}),
        json!({"messageId":"m 1","emoji":"x","action":"add"}),
    ] {
        a.send(json!({"type":"reaction","payload":bad}));
        assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE", "{bad}");
    }
    a.send(json!({"type":"reaction","payload":{"messageId":"m1","emoji":"a b","action":"add"}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_EMOJI");
    b.expect_silence(QUIET);
}

#[test]
fn vector_7_leave_or_close_announces_once() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = legacy_pair(&srv);
    b.send(json!({"type":"leave"}));
    assert_eq!(
        a.recv(),
        json!({"type":"userLeft","payload":{"userId":"bob"}})
    );
    // A second leave: nothing for anyone.
    b.send(json!({"type":"leave"}));
    b.expect_silence(QUIET);
    a.expect_silence(QUIET);
    // A close announces the same way.
    legacy_join(&mut b, "room1", "bob", "Bob");
    a.recv_type("userJoined");
    b.ws.close(None).unwrap();
    assert_eq!(
        a.recv(),
        json!({"type":"userLeft","payload":{"userId":"bob"}})
    );
    a.expect_silence(QUIET);
}

#[test]
fn vector_8_bad_room_id() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.send(join_frame("bad room", "alice", "Alice"));
    assert_eq!(
        a.recv(),
        json!({"type":"error","payload":{"message":"Invalid room ID format","code":"INVALID_ROOM_ID"}})
    );
}

#[test]
fn vector_9_bad_ciphertext_is_invalid_format() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = legacy_pair(&srv);
    for bad in [json!("notbase64"), json!({"iv":"a"}), json!(7), Value::Null] {
        a.send(json!({"type":"message","payload":{"encrypted":bad}}));
        assert_eq!(legacy_error_code(&mut a), "INVALID_FORMAT", "{bad}");
    }
    a.send(json!({"type":"message","payload":{}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_FORMAT");
    b.expect_silence(QUIET);
    // INVALID_FORMAT (INVALID_CONTENT) is no strike.
    assert_eq!(srv.health()["stats"]["strikes"], 0);
}

#[test]
fn vector_10_message_rate_limit_has_reset_time() {
    let srv = Server::start(&[]);
    let (mut a, mut b) = legacy_pair(&srv);
    for _ in 0..30 {
        a.send(json!({"type":"message","payload":{"encrypted":"QUJD"}}));
        b.recv_type("message");
    }
    a.send(json!({"type":"message","payload":{"encrypted":"QUJD"}}));
    let err = legacy_error(&mut a);
    assert_eq!(err["code"], "RATE_LIMITED");
    // 30 per minute: the next token is at most 2 s away.
    let reset = err["resetTime"].as_u64().expect("resetTime in ms");
    assert!((1..=2000).contains(&reset), "{reset}");
    // Reactions share the budget and get resetTime too.
    a.send(json!({"type":"reaction","payload":{"messageId":"m1","emoji":"x","action":"add"}}));
    let err = legacy_error(&mut a);
    assert_eq!(err["code"], "RATE_LIMITED");
    assert!(err["resetTime"].is_u64(), "{err}");
    b.expect_silence(QUIET);
}

#[test]
fn vector_10_join_rate_limit_has_no_reset_time() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    for i in 0..5 {
        legacy_join(&mut a, &format!("room{i}"), "alice", "Alice");
    }
    a.send(join_frame("room6", "alice", "Alice"));
    let err = legacy_error(&mut a);
    assert_eq!(err["code"], "RATE_LIMITED");
    assert!(err.get("resetTime").is_none(), "{err}");
}

#[test]
fn vector_10_oversize_frame_then_1009() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    let big = "A".repeat(10_240);
    a.send(json!({"type":"message","payload":{"encrypted":big}}));
    assert_eq!(legacy_error_code(&mut a), "MESSAGE_TOO_LARGE");
    assert_eq!(a.recv_close(), Some(1009));
}

#[test]
fn vector_11_errors_where_the_original_was_silent() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.send_text("not json");
    assert_eq!(legacy_error_code(&mut a), "INVALID_JSON");
    a.send(json!({"type":"message","payload":{"encrypted":"QUJD"}}));
    assert_eq!(legacy_error_code(&mut a), "NOT_IN_ROOM");
    a.send(json!({"type":"fileTransfer","payload":{"name":"x"}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE");
    // Only the bad JSON was a strike: fileTransfer is none.
    assert_eq!(srv.health()["stats"]["strikes"], 1);
    // The ciphertext N2 closed the connection for is relayed.
    legacy_join(&mut a, "room1", "alice", "Alice");
    let mut b = legacy(&srv);
    legacy_join(&mut b, "room1", "bob", "Bob");
    a.send(json!({"type":"message","payload":{"encrypted":"AAonAA==.QQ=="}}));
    assert_eq!(
        b.recv(),
        json!({"type":"message","payload":"AAonAA==.QQ=="})
    );
}

// ------------------------------------------------------------ other rules

#[test]
fn outside_a_room_leave_and_typing_are_silent_reaction_is_not() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.send(json!({"type":"leave"}));
    a.send(json!({"type":"typing","payload":{"isTyping":true}}));
    a.expect_silence(QUIET);
    a.send(json!({"type":"reaction","payload":{"messageId":"m1","emoji":"x","action":"add"}}));
    assert_eq!(legacy_error_code(&mut a), "NOT_IN_ROOM");
}

#[test]
fn ids_keep_the_protocol_rules_and_duplicates_are_refused() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.send(join_frame("room1", "alice@example", "Alice"));
    assert_eq!(legacy_error_code(&mut a), "INVALID_USER_ID");
    a.send(join_frame("room1", "alice", "   "));
    assert_eq!(legacy_error_code(&mut a), "INVALID_USERNAME");
    a.send(json!({"type":"join","payload":{"roomId":"room1","userId":"alice"}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_USERNAME");
    legacy_join(&mut a, "room1", "alice", "Alice");
    let mut b = legacy(&srv);
    b.send(join_frame("room1", "alice", "Alice again"));
    assert_eq!(legacy_error_code(&mut b), "USER_ID_TAKEN");
    a.expect_silence(QUIET);
}

#[test]
fn legacy_and_v2_rooms_of_one_name_are_separate() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    legacy_join(&mut a, "room1", "alice", "Alice");
    let mut v = srv.connect();
    let list = v.join("room1", "alice", "Alice v2");
    // The same id is not taken: another namespace. Only itself is listed.
    assert_eq!(list["users"].as_array().unwrap().len(), 1);
    a.expect_silence(QUIET);
    v.message("QUJD");
    assert_eq!(v.recv()["type"], "message");
    a.expect_silence(QUIET);
    let mut b = legacy(&srv);
    legacy_join(&mut b, "room1", "bob", "Bob");
    a.recv_type("userJoined");
    a.send(json!({"type":"message","payload":{"encrypted":"QUJD"}}));
    assert_eq!(b.recv()["payload"], "QUJD");
    v.expect_silence(QUIET);
    let h = srv.health();
    assert_eq!(h["stats"]["active_rooms"], 2);
    assert_eq!(h["stats"]["total_users"], 3);
}

#[test]
fn both_namespaces_count_against_one_room_limit() {
    let srv = Server::start(&[("MAX_ROOMS", "1")]);
    let mut a = legacy(&srv);
    legacy_join(&mut a, "room1", "alice", "Alice");
    let mut v = srv.connect();
    v.send(json!({"type":"join","data":{"room":"room1","user":{"id":"v","name":"V"}}}));
    assert_eq!(v.recv_error(), "TOO_MANY_ROOMS");
    let mut b = legacy(&srv);
    b.send(join_frame("room2", "bob", "Bob"));
    assert_eq!(legacy_error_code(&mut b), "TOO_MANY_ROOMS");
}

// ---------------------------------------------------------------- limits

#[test]
fn legacy_frame_flood_closes_with_1008() {
    let srv = Server::start(&[("RATE_LIMIT_FRAME_LIMIT", "5")]);
    let mut a = legacy(&srv);
    for _ in 0..6 {
        a.send(json!({"type":"ping"}));
    }
    for _ in 0..5 {
        assert_eq!(a.recv(), json!({"type":"pong"}));
    }
    assert_eq!(a.recv_close(), Some(1008));
    assert_eq!(srv.health()["stats"]["flood_closes"], 1);
}

#[test]
fn legacy_oversize_at_a_small_limit() {
    let srv = Server::start(&[("RATE_LIMIT_MAX_MESSAGE_SIZE", "100")]);
    let mut a = legacy(&srv);
    legacy_join(&mut a, "room1", "alice", "Alice");
    a.send(json!({"type":"message","payload":{"encrypted":"A".repeat(100)}}));
    assert_eq!(
        legacy_error(&mut a),
        json!({"code":"MESSAGE_TOO_LARGE","message":"message exceeds the size limit"})
    );
    assert_eq!(a.recv_close(), Some(1009));
}

#[test]
fn legacy_strikes_block_the_ip() {
    let srv = Server::start(&[("BLOCK_STRIKE_LIMIT", "3")]);
    let mut a = legacy(&srv);
    let mut b = legacy(&srv);
    a.send_text("{bad");
    assert_eq!(legacy_error_code(&mut a), "INVALID_JSON");
    a.send(json!({"type":"nope","payload":{}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE");
    b.send(Value::from(5));
    assert_eq!(legacy_error_code(&mut b), "INVALID_MESSAGE");
    assert_eq!(b.recv_close(), Some(1008));
    assert_eq!(a.recv_close(), Some(1008));
    let r = Client::try_connect_to(srv.port, "/", &[])
        .err()
        .expect("blocked");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "IP_BLOCKED");
    assert!(r.header("retry-after").is_some());
}

// ------------------------------------------------- paths and the first frame

#[test]
fn upgrade_on_slash_is_legacy_and_a_plain_get_stays_health() {
    let srv = Server::start(&[]);
    let r = http(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "healthy");
    let mut a = legacy(&srv);
    // Before the dialect is fixed, errors take the path's shape.
    a.send_text("not json");
    assert_eq!(legacy_error_code(&mut a), "INVALID_JSON");
    let mut w = srv.connect();
    w.send_text("not json");
    assert_eq!(w.recv_error(), "INVALID_JSON");
    w.send(json!({"type":"leave"}));
    assert_eq!(w.recv_error(), "NOT_IN_ROOM");
    let m = metrics(&srv);
    assert!(
        m.contains("whisper_connections{dialect=\"legacy\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("whisper_connections{dialect=\"v2\"} 1\n"), "{m}");
}

#[test]
fn a_v2_frame_on_slash_fixes_v2() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    let list = a.join("room1", "alice", "Alice");
    assert_eq!(list["users"][0]["id"], "alice", "v2 lists the joiner");
    a.message("QUJD");
    assert_eq!(a.recv()["type"], "message", "v2 echoes");
    // Fixed: a legacy frame is now INVALID_MESSAGE, in the v2 shape.
    a.send(json!({"type":"message","payload":{"encrypted":"QUJD"}}));
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    a.send(json!({"type":"leave"}));
    a.send(json!({"type":"leave"}));
    assert_eq!(a.recv_error(), "NOT_IN_ROOM");
    let m = metrics(&srv);
    assert!(
        m.contains("whisper_connections{dialect=\"legacy\"} 0\n"),
        "{m}"
    );
    assert!(m.contains("whisper_connections{dialect=\"v2\"} 1\n"), "{m}");
}

#[test]
fn a_legacy_frame_on_ws_fixes_legacy() {
    let srv = Server::start(&[]);
    let mut a = srv.connect();
    let list = legacy_join(&mut a, "room1", "alice", "Alice");
    assert_eq!(list, json!({"type":"userList","payload":{"users":[]}}));
    // Fixed: a v2 frame is now INVALID_MESSAGE, in the legacy shape.
    a.message("QUJD");
    assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE");
    a.send(json!({"type":"ping","data":{}}));
    assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE");
    a.send(json!({"type":"ping"}));
    assert_eq!(a.recv(), json!({"type":"pong"}));
    let mut b = legacy(&srv);
    legacy_join(&mut b, "room1", "bob", "Bob");
    assert_eq!(
        a.recv(),
        json!({"type":"userJoined","payload":{"userId":"bob","username":"Bob"}})
    );
    let m = metrics(&srv);
    assert!(
        m.contains("whisper_connections{dialect=\"legacy\"} 2\n"),
        "{m}"
    );
}

#[test]
fn binary_frames_are_invalid_in_the_legacy_shape() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    a.ws.send(tungstenite::Message::binary(vec![1u8, 2, 3]))
        .unwrap();
    assert_eq!(legacy_error_code(&mut a), "INVALID_MESSAGE");
}

#[test]
fn escaped_names_stay_valid_json() {
    let srv = Server::start(&[]);
    let mut a = legacy(&srv);
    legacy_join(&mut a, "room1", "alice", "A \"q\" \\ é");
    let mut b = legacy(&srv);
    let list = legacy_join(&mut b, "room1", "bob", "Bob");
    assert_eq!(list["payload"]["users"][0]["name"], "A \"q\" \\ é");
    assert_eq!(a.recv()["payload"]["username"], "Bob");
}
