//! Contract sections 3 and 4: budgets, size limit, slow consumers, heartbeat,
//! strikes and blocks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn message_budget_is_a_token_bucket_shared_with_reactions() {
    // 30 a minute: a token every 2 s, so a slow (emulated) run of the burst
    // does not earn one back before the budget is checked.
    let srv = Server::start(&[("RATE_LIMIT_FRAME_LIMIT", "10000")]);
    let mut a = srv.connect();
    a.join("r", "a", "A");
    let burst = Instant::now();
    for _ in 0..29 {
        a.message("QUJD");
    }
    a.send(json!({"type":"reaction","data":{"messageId":"m1","emoji":"x"}}));
    a.message("QUJD");
    a.send(json!({"type":"reaction","data":{"messageId":"m1","emoji":"x"}}));
    for _ in 0..29 {
        a.recv_type("message");
    }
    a.recv_type("reaction");
    let fast = burst.elapsed() < Duration::from_millis(1800);
    // Pings are not messages.
    a.send(json!({"type":"ping"}));
    let mut limited = 0;
    loop {
        let v = a.recv();
        match v["type"].as_str().unwrap() {
            "pong" => break,
            "error" if v["code"] == "RATE_LIMITED" => limited += 1,
            _ => assert!(!fast, "budget exceeded: {v}"),
        }
    }
    if fast {
        assert_eq!(limited, 2, "the 31st and 32nd frames are refused");
    }
    // One token returns every 60/30 = 2 s.
    std::thread::sleep(Duration::from_millis(2100));
    a.message("QUJD");
    assert_eq!(a.recv()["type"], "message");
    a.message("QUJD");
    assert_eq!(a.recv_error(), "RATE_LIMITED");
    assert!(srv.health()["stats"]["rate_limited"].as_u64().unwrap() >= 1);
}

#[test]
fn join_budget() {
    let srv = Server::start(&[("RATE_LIMIT_JOIN_LIMIT", "2")]);
    let mut a = srv.connect();
    a.join("r1", "a", "A");
    a.send(json!({"type":"join","data":{"room":"","user":{"id":"a","name":"A"}}}));
    assert_eq!(a.recv_error(), "INVALID_ROOM_ID");
    a.send(json!({"type":"join","data":{"room":"r2","user":{"id":"a","name":"A"}}}));
    assert_eq!(a.recv_error(), "RATE_LIMITED");
    // Still in r1.
    a.message("QUJD");
    assert_eq!(a.recv()["type"], "message");
}

#[test]
fn frame_flood_closes_with_1008() {
    let srv = Server::start(&[("RATE_LIMIT_FRAME_LIMIT", "5")]);
    let mut a = srv.connect();
    for _ in 0..6 {
        a.send(json!({"type":"ping"}));
    }
    for _ in 0..5 {
        assert_eq!(a.recv()["type"], "pong");
    }
    assert_eq!(a.recv_close(), Some(1008));
    assert!(eventually(Duration::from_secs(5), || srv.health()["stats"]
        ["active_connections"]
        == 0));
    assert_eq!(srv.health()["stats"]["flood_closes"], 1);
}

#[test]
fn oversize_message_is_refused_and_closed_with_1009() {
    let srv = Server::start(&[("RATE_LIMIT_MAX_MESSAGE_SIZE", "100")]);
    let mut a = srv.connect();
    // Exactly at the limit is fine.
    let pad = "x".repeat(100 - r#"{"type":"ping","p":""}"#.len());
    let exact = format!(r#"{{"type":"ping","p":"{pad}"}}"#);
    assert_eq!(exact.len(), 100);
    a.send_text(&exact);
    assert_eq!(a.recv()["type"], "pong");
    a.send_text(&format!(r#"{{"type":"ping","p":"{pad}x"}}"#));
    assert_eq!(a.recv_error(), "MESSAGE_TOO_LARGE");
    assert_eq!(a.recv_close(), Some(1009));
}

/// A frame header announcing a gigabyte is refused at once: the relay does
/// not wait for (or buffer) a payload beyond the limit.
#[test]
fn oversize_frame_header_is_refused_before_the_payload() {
    let srv = Server::start(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request(&[]).as_bytes()).unwrap();
    let mut head = [0u8; 256];
    let n = s.read(&mut head).unwrap();
    assert_eq!(parse_response(&head[..n]).status, 101);
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 30).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]); // mask
    frame.extend_from_slice(&[b'x'; 64]);
    let start = Instant::now();
    s.write_all(&frame).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(start.elapsed() < Duration::from_secs(4));
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("MESSAGE_TOO_LARGE"), "{text}");
    // The close frame: opcode 8, code 1009 (0x03F1).
    assert!(got.windows(2).any(|w| w == [0x03, 0xF1]), "{got:?}");
}

#[test]
fn strikes_block_the_ip_and_close_its_connections() {
    let srv = Server::start(&[("BLOCK_STRIKE_LIMIT", "3")]);
    let mut a = srv.connect();
    let mut b = srv.connect();
    a.send_text("{bad");
    assert_eq!(a.recv_error(), "INVALID_JSON");
    a.send_text(r#"{"type":"nope"}"#);
    assert_eq!(a.recv_error(), "INVALID_MESSAGE");
    b.send_text("{bad");
    assert_eq!(b.recv_error(), "INVALID_JSON");
    assert_eq!(b.recv_close(), Some(1008));
    assert_eq!(a.recv_close(), Some(1008));
    let r = Client::try_connect(srv.port, &[]).err().expect("blocked");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "IP_BLOCKED");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((50..=60).contains(&retry), "{retry}");
    let h = srv.health();
    assert_eq!(h["stats"]["blocked_ips"], 1);
    assert_eq!(h["stats"]["strikes"], 3);
    // HTTP endpoints other than /ws still answer.
    assert_eq!(http(srv.port, "GET /health HTTP/1.1\r\n\r\n").status, 200);
}

#[test]
fn errors_that_are_not_strikes_do_not_block() {
    let srv = Server::start(&[
        ("BLOCK_STRIKE_LIMIT", "2"),
        ("RATE_LIMIT_JOIN_LIMIT", "100"),
    ]);
    let mut a = srv.connect();
    for _ in 0..5 {
        a.send(json!({"type":"join","data":{"room":"","user":{"id":"a","name":"A"}}}));
        assert_eq!(a.recv_error(), "INVALID_ROOM_ID");
        a.send(json!({"type":"leave"}));
        assert_eq!(a.recv_error(), "NOT_IN_ROOM");
    }
    a.send(json!({"type":"ping"}));
    assert_eq!(a.recv()["type"], "pong");
    assert_eq!(srv.health()["stats"]["strikes"], 0);
}

#[test]
fn slow_consumer_is_closed_with_1013_and_the_room_keeps_going() {
    let srv = Server::start(&[
        ("RATE_LIMIT_MESSAGE_LIMIT", "100000"),
        ("RATE_LIMIT_FRAME_LIMIT", "100000"),
        ("SLOW_CONSUMER_QUEUE_BYTES", "262144"),
    ]);
    let mut reader = srv.connect();
    reader.join("r", "reader", "R");
    let mut stalled = srv.connect();
    stalled.join("r", "stalled", "S");
    reader.recv_type("userJoined");
    let mut sender = srv.connect();
    sender.join("r", "sender", "X");
    reader.recv_type("userJoined");

    let payload = "A".repeat(8000);
    let total = 150; // ~1.2 MB: far more than socket buffers and the room log hold
    let sender_thread = std::thread::spawn(move || {
        for i in 0..total {
            sender.message(&format!("{payload}.{i:04}"));
            // The sender reads its own echo: it is not a slow consumer.
            sender.recv_type("message");
        }
        sender
    });
    let mut seen = Vec::new();
    let mut left = false;
    while seen.len() < total || !left {
        let v = reader.recv();
        match v["type"].as_str().unwrap() {
            "message" => seen.push(
                v["content"]
                    .as_str()
                    .unwrap()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .to_string(),
            ),
            "userLeft" => {
                assert_eq!(v["userId"], "stalled");
                left = true;
            }
            _ => {}
        }
    }
    let expected: Vec<_> = (0..total).map(|i| format!("{i:04}")).collect();
    assert_eq!(
        seen, expected,
        "the reading member lost or reordered messages"
    );
    sender_thread.join().unwrap();

    // The stalled client, reading at last, finds its messages then the close.
    let mut messages = 0;
    let code = loop {
        match stalled.next_event(Duration::from_secs(5)) {
            Some(Event::Json(v)) if v["type"] == "message" => messages += 1,
            Some(Event::Closed(code)) => break code,
            Some(_) => {}
            None => panic!("no close frame for the slow consumer"),
        }
    };
    assert_eq!(code, Some(1013));
    assert!(messages < total);
    assert!(
        srv.health()["stats"]["slow_consumer_closes"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn heartbeat_pings_and_drops_silent_peers() {
    let srv = Server::start(&[("HEARTBEAT_INTERVAL_SECS", "1")]);
    let mut alive = srv.connect();
    alive.join("r", "alive", "A");

    // A peer that completes the handshake and then never reads or answers.
    let mut silent = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    silent.write_all(upgrade_request(&[]).as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(silent.read(&mut buf).unwrap() > 0);
    let join = br#"{"type":"join","data":{"room":"r","user":{"id":"silent","name":"S"}}}"#;
    let mut frame = vec![0x81, 0x80 | join.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(join);
    silent.write_all(&frame).unwrap();
    alive.recv_type("userJoined");
    let joined_at = Instant::now();

    // The live client sees pings (and answers them by reading) and stays.
    let mut pings = 0;
    let left = loop {
        match alive.next_event(Duration::from_secs(6)) {
            Some(Event::Ping) => pings += 1,
            Some(Event::Json(v)) if v["type"] == "userLeft" => break v,
            other => panic!("unexpected {other:?}"),
        }
    };
    let after = joined_at.elapsed();
    assert_eq!(left["userId"], "silent");
    assert!(pings >= 1);
    assert!(
        after >= Duration::from_millis(2400) && after < Duration::from_millis(4500),
        "{after:?}"
    );
    // Keep reading for a while longer: the answering client is never dropped.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        alive.next_event(Duration::from_millis(200));
    }
    alive.send(json!({"type":"ping"}));
    assert_eq!(alive.recv()["type"], "pong");
    assert_eq!(srv.health()["stats"]["active_connections"], 1);
}

/// Found by a black-box probe: one message split into many fragments counted
/// as one frame, so a client could send frames without limit.
#[test]
fn every_fragment_counts_against_the_frame_limit() {
    let srv = Server::start(&[("RATE_LIMIT_FRAME_LIMIT", "20")]);
    let mut ws = RawWs::connect(srv.port);
    let mut bytes = masked_frame(0x1, br#"{"type":"#).to_vec();
    bytes[0] &= 0x7f; // not final
    for _ in 0..40 {
        let mut f = masked_frame(0x0, b" ");
        f[0] &= 0x7f;
        bytes.extend_from_slice(&f);
    }
    bytes.extend_from_slice(&masked_frame(0x0, br#""ping"}"#));
    ws.stream.write_all(&bytes).unwrap();
    let code = loop {
        match ws.read_frame().unwrap() {
            Some(f) if f.opcode == OP_CLOSE => break close_code_of(&f.payload),
            Some(f) => assert_ne!(f.payload, br#"{"type":"pong"}"#, "the message was handled"),
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(code, Some(1008));
    assert_eq!(srv.health()["stats"]["flood_closes"], 1);
}

/// Found by a black-box probe: after a close the relay started because of
/// a framing error (1009, 1002, 1007), the client's close reply went unseen
/// and its connection was held (and counted against its IP) for 5 s.
#[test]
fn the_answer_to_a_close_after_a_framing_error_ends_the_connection() {
    let srv = Server::start(&[
        ("RATE_LIMIT_MAX_MESSAGE_SIZE", "100"),
        ("RATE_LIMIT_CONNECTION_LIMIT_PER_IP", "1"),
    ]);
    for bad in [
        masked_frame(0x1, &[b'x'; 200]),  // oversize: 1009
        masked_frame(0x3, b"x"),          // reserved opcode: 1002
        masked_frame(0x1, &[0xff, 0xfe]), // invalid UTF-8: 1007
    ] {
        let mut ws = RawWs::connect(srv.port);
        ws.stream.write_all(&bad).unwrap();
        loop {
            match ws.read_frame().unwrap() {
                Some(f) if f.opcode == OP_CLOSE => break,
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        }
        // Answer the close and keep the socket open, as clients do.
        let answered = Instant::now();
        ws.send_close(1000).unwrap();
        assert!(matches!(ws.read_frame(), Ok(None)), "the relay closes TCP");
        assert!(answered.elapsed() < Duration::from_secs(1));
        // The IP's only connection slot is free again at once.
        assert!(eventually(Duration::from_millis(500), || {
            srv.health()["stats"]["active_connections"] == 0
        }));
    }
}

/// Found by a black-box probe: a fragmented message over the limit was only
/// refused once its over-long fragment had arrived in full, so the relay held
/// up to twice the limit. The fragment's header already tells.
#[test]
fn an_oversize_fragmented_message_is_refused_at_the_header() {
    let srv = Server::start(&[]);
    let mut ws = RawWs::connect(srv.port);
    let mut first = masked_frame(0x1, &[b' '; 8000]);
    first[0] &= 0x7f; // not final
    let rest = masked_frame(0x0, &[b' '; 8000]);
    ws.stream.write_all(&first).unwrap();
    ws.stream.write_all(&rest[..14]).unwrap();
    ws.set_timeout(Duration::from_secs(2));
    let mut error = None;
    let code = loop {
        match ws
            .read_frame()
            .expect("answered without the rest of the fragment")
        {
            Some(f) if f.opcode == OP_CLOSE => break close_code_of(&f.payload),
            Some(f) => {
                error = Some(serde_json::from_slice::<serde_json::Value>(&f.payload).unwrap())
            }
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(error.unwrap()["code"], "MESSAGE_TOO_LARGE");
    assert_eq!(code, Some(1009));
    assert!(srv.health()["stats"]["read_buffer_bytes"].as_u64().unwrap() <= 10_240);
}

/// A 64-bit length with its top bit set breaks RFC 6455 framing: 1002, not
/// a size problem (found by a black-box probe).
#[test]
fn a_length_with_the_top_bit_set_is_a_protocol_error() {
    let srv = Server::start(&[]);
    let mut ws = RawWs::connect(srv.port);
    let mut f = vec![0x81, 0xff];
    f.extend_from_slice(&(1u64 << 63).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    ws.stream.write_all(&f).unwrap();
    let code = loop {
        match ws.read_frame().unwrap() {
            Some(f) if f.opcode == OP_CLOSE => break close_code_of(&f.payload),
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(code, Some(1002));
}

/// Registered close codes a client may send are echoed (1012 and 1013 were
/// answered with 1000; found by a black-box probe).
#[test]
fn registered_close_codes_are_echoed() {
    let srv = Server::start(&[]);
    for code in [1000u16, 1001, 1011, 1012, 1013, 3000, 4999] {
        let mut ws = RawWs::connect(srv.port);
        ws.send_close(code).unwrap();
        let echoed = loop {
            match ws.read_frame().unwrap() {
                Some(f) if f.opcode == OP_CLOSE => break close_code_of(&f.payload),
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        };
        assert_eq!(echoed, Some(code));
    }
}
