//! Client frames as the session handles them: the envelope (`parse_request`),
//! each type's `data` (`parse_join`, the field structs), the validators, and the
//! JSON the relay builds from what passed (it must be valid JSON that reads
//! back as the same strings). Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper_fuzz::protocol::{self, ErrorCode};

fn check_json_string(s: &str) {
    let mut out = Vec::new();
    protocol::push_json_string(&mut out, s);
    let back: String = serde_json::from_slice(&out).expect("push_json_string writes a JSON string");
    assert_eq!(back, s);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Validators on the raw text too (they see arbitrary decoded strings).
    let _ = protocol::is_valid_id(text);
    let _ = protocol::is_valid_username(text);
    let _ = protocol::is_valid_avatar(text);
    let _ = protocol::is_valid_emoji(text);
    let _ = protocol::is_valid_content(text);
    check_json_string(text);

    let req = match protocol::parse_request(text) {
        Ok(r) => r,
        Err(code) => {
            assert!(matches!(
                code,
                ErrorCode::InvalidJson | ErrorCode::InvalidMessage
            ));
            return;
        }
    };
    match req.kind.as_ref() {
        "join" => {
            if let Ok(join) = protocol::parse_join(req.data) {
                assert!(protocol::is_valid_id(&join.room));
                assert!(protocol::is_valid_id(&join.user_id));
                let v: serde_json::Value =
                    serde_json::from_str(&join.user_json).expect("user_json is JSON");
                assert_eq!(v["id"].as_str(), Some(join.user_id.as_str()));
            }
        }
        "message" => {
            if let Some(f) = protocol::object_fields::<protocol::MessageFields>(req.data)
                && let Some(c) = f.content.and_then(protocol::string_value)
                && protocol::is_valid_content(&c)
            {
                check_json_string(&c);
            }
        }
        "typing" => {
            let _ = protocol::object_fields::<protocol::TypingFields>(req.data);
        }
        "reaction" => {
            if let Some(f) = protocol::object_fields::<protocol::ReactionFields>(req.data) {
                let _ = f.message_id.and_then(protocol::string_value);
                if let Some(e) = f.emoji.and_then(protocol::string_value) {
                    let _ = protocol::is_valid_emoji(&e);
                }
            }
        }
        _ => {}
    }
    let mut out = Vec::new();
    protocol::write_error_json(&mut out, req.kind.as_ref(), text);
    serde_json::from_slice::<serde_json::Value>(&out).expect("error JSON");
});
