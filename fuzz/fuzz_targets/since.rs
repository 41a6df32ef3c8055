//! A join's `since`: `history::parse_since` on any JSON value and
//! `Since::from_text` on any string. Never a panic; what is accepted is
//! exactly `""` or an id-shaped string, equal to the JSON string's value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper::history::{Since, parse_since};
use rtce2ee_whisper::protocol::is_valid_id;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Since::from_text(text) {
        Ok(Since::All) => assert!(text.is_empty()),
        Ok(Since::After(id)) => {
            assert_eq!(id.as_str(), text);
            assert!(is_valid_id(text));
        }
        Err(_) => assert!(!text.is_empty() && !is_valid_id(text)),
    }
    // The same text as the raw JSON value of `since`.
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) else {
        return;
    };
    let got = parse_since(Some(&raw));
    // serde_json's own reading of the value as a string (none for other
    // values, and for strings with lone surrogates).
    match serde_json::from_str::<String>(raw.get()) {
        Ok(s) => assert_eq!(got.ok().flatten(), Since::from_text(&s).ok()),
        Err(_) => assert!(got.is_err(), "a non-string since is refused"),
    }
});
