//! Client frames as the session handles them, in both dialects: the envelope
//! and each type's body (`parse_request`, which fixes the dialect on the
//! first object body), the validators, and every frame the relay builds from
//! what passed. Several writers copy validated strings into JSON without
//! escaping, so the property is: whatever `parse_request` accepts, the
//! frames built from it are valid JSON that read back as the same strings.
//! Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper::protocol::{self, Dialect, DialectState, ErrorCode, Request};

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "invalid JSON built: {e}: {:?}",
            String::from_utf8_lossy(out)
        )
    })
}

fn check_json_string(s: &str) {
    let mut out = Vec::new();
    protocol::push_json_string(&mut out, s);
    let back: String = serde_json::from_slice(&out).expect("push_json_string writes a JSON string");
    assert_eq!(back, s);
}

/// A member's JSON as the hub stores it, for the writers that take one.
const V2_MEMBER: &str = r#"{"id":"u1","name":"A","avatar":null}"#;
const LEGACY_MEMBER: &str = r#""userId":"u1","username":"A""#;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let start = if first & 1 == 0 {
        Dialect::V2
    } else {
        Dialect::Legacy
    };
    // Validators on the raw text too (they see arbitrary decoded strings).
    for valid in [
        protocol::is_valid_id(text),
        protocol::is_valid_username(text),
        protocol::is_valid_avatar(text),
        protocol::is_valid_emoji(text),
        protocol::is_valid_content(text),
    ] {
        let _ = valid;
    }
    check_json_string(text);

    let mut state = DialectState::starting(start);
    // The shortcut for the commonest frame answers as the general parser.
    let mut full_state = state;
    let full = protocol::parse_request_in_full(text, &mut full_state);
    let short = protocol::parse_request(text, &mut state);
    assert_eq!(format!("{short:?} {state:?}"), format!("{full:?} {full_state:?}"));
    let req = match short {
        Ok(r) => r,
        Err(code) => {
            assert!(matches!(
                code,
                ErrorCode::InvalidJson | ErrorCode::InvalidMessage
            ));
            return;
        }
    };
    let dialect = state.dialect;
    let member = match dialect {
        Dialect::V2 => V2_MEMBER,
        Dialect::Legacy => LEGACY_MEMBER,
    };
    let mut out = Vec::new();
    match &req {
        Request::Join(Ok(join)) => {
            assert!(protocol::is_valid_id(&join.room));
            assert!(protocol::is_valid_id(&join.user_id));
            let stored = match dialect {
                // v2 stores the member as a JSON object; legacy as the inside of one.
                Dialect::V2 => json(join.user_json.as_bytes()),
                Dialect::Legacy => json(format!("{{{}}}", join.user_json).as_bytes()),
            };
            let _ = stored;
            protocol::write_user_joined(&mut out, dialect, &join.user_json);
            json(&out);
            out.clear();
            protocol::write_user_left(&mut out, dialect, &join.user_id);
            assert_eq!(json(&out).to_string().contains(&join.user_id), true);
            out.clear();
            protocol::write_user_list(
                &mut out,
                dialect,
                [member, join.user_json.as_str()].into_iter(),
            );
            json(&out);
        }
        Request::Message(Ok(content)) => {
            match dialect {
                Dialect::V2 => protocol::write_message(
                    &mut out,
                    member,
                    "0123456789abcdef",
                    7,
                    content,
                    1_700_000_000_000,
                ),
                Dialect::Legacy => protocol::write_legacy_message(&mut out, content),
            }
            let v = json(&out);
            let back = v
                .get("content")
                .or_else(|| v.get("payload"))
                .and_then(|c| c.as_str());
            assert_eq!(back, Some(content.as_ref()));
        }
        Request::Typing(Ok(is_typing)) => {
            protocol::write_typing(&mut out, dialect, member, *is_typing);
            json(&out);
        }
        Request::Reaction(Ok(reaction)) => {
            protocol::write_reaction(&mut out, dialect, member, "u1", reaction);
            let v = json(&out);
            let body = v.get("payload").unwrap_or(&v);
            assert_eq!(
                body["messageId"].as_str(),
                Some(reaction.message_id.as_ref())
            );
            assert_eq!(body["emoji"].as_str(), Some(reaction.emoji.as_ref()));
        }
        Request::Join(Err(code))
        | Request::Message(Err(code))
        | Request::Typing(Err(code))
        | Request::Reaction(Err(code)) => {
            for d in [Dialect::V2, Dialect::Legacy] {
                out.clear();
                protocol::write_error(&mut out, d, *code, code.message(), Some(1500));
                json(&out);
            }
        }
        Request::Ping | Request::Leave | Request::FileTransfer | Request::Unknown => {}
    }
    let _ = req.name();
    // Any code and message (the long run's one finding: a code written
    // unescaped; see protocol::v2::tests::error_json_is_valid_whatever_the_code).
    out.clear();
    protocol::write_error_json(&mut out, text, text);
    json(&out);
});
