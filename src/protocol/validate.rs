//! The contract's field rules: plain checks on strings (`is_valid_*`), and
//! the checks both dialects apply to a raw JSON field, each with the
//! [`ErrorCode`] its failure reports (`checked_*`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ErrorCode;
use super::json::{object_fields, string_value};

/// 1-64 characters of `[A-Za-z0-9_-]`: room names, user ids, message ids.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 1-32 Unicode characters, not only whitespace, no control characters.
pub fn is_valid_username(s: &str) -> bool {
    let count = s.chars().count();
    (1..=32).contains(&count)
        && !s.chars().all(char::is_whitespace)
        && !s.chars().any(char::is_control)
}

/// At most 512 bytes, no control characters.
pub fn is_valid_avatar(s: &str) -> bool {
    s.len() <= 512 && !s.chars().any(char::is_control)
}

/// 1-32 bytes, no whitespace, no control characters.
pub fn is_valid_emoji(s: &str) -> bool {
    (1..=32).contains(&s.len()) && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What a byte is in base64 text, as bits: any alphabet character, the
/// standard alphabet's own two, the URL-safe alphabet's own two, padding,
/// or none of these.
const B64_ANY: u8 = 1;
const B64_STANDARD: u8 = 2;
const B64_URL_SAFE: u8 = 4;
const B64_PAD: u8 = 8;
const B64_INVALID: u8 = 16;

/// [`B64_ANY`] and the rest, by byte: one lookup per byte of content, which
/// every relayed message is checked against.
static B64_CLASS: [u8; 256] = {
    let mut t = [B64_INVALID; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => B64_ANY,
            b'+' | b'/' => B64_ANY | B64_STANDARD,
            b'-' | b'_' => B64_ANY | B64_URL_SAFE,
            b'=' => B64_PAD,
            _ => B64_INVALID,
        };
        b += 1;
    }
    t
};

/// One base64 segment: standard or URL-safe alphabet (not mixed), padding
/// optional, but when present it must make the length a multiple of four.
fn is_base64_segment(seg: &[u8]) -> bool {
    let mut seen = 0;
    let mut data_len = seg.len();
    for (i, &b) in seg.iter().enumerate() {
        let class = B64_CLASS[usize::from(b)];
        if class == B64_PAD {
            data_len = i;
            break;
        }
        seen |= class;
    }
    let (data, pad) = seg.split_at(data_len);
    if data.is_empty() || pad.len() > 2 || pad.iter().any(|&b| b != b'=') {
        return false;
    }
    if seen & B64_INVALID != 0
        || seen & (B64_STANDARD | B64_URL_SAFE) == B64_STANDARD | B64_URL_SAFE
    {
        return false;
    }
    // A length of 1 mod 4 cannot encode whole bytes.
    if data.len() % 4 == 1 {
        return false;
    }
    pad.is_empty() || (data.len() + pad.len()) % 4 == 0
}

/// `content`: one to eight base64 segments joined by `.`.
pub fn is_valid_content(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut segments = 0;
    for seg in bytes.split(|&b| b == b'.') {
        segments += 1;
        if segments > 8 || !is_base64_segment(seg) {
            return false;
        }
    }
    segments >= 1
}

// ------------------------------------------------- raw fields, both dialects

/// A string field that passes `rule`, or `code`.
fn checked<'a>(
    raw: Option<&'a RawValue>,
    rule: impl Fn(&str) -> bool,
    code: ErrorCode,
) -> Result<Cow<'a, str>, ErrorCode> {
    raw.and_then(string_value).filter(|s| rule(s)).ok_or(code)
}

/// A `join`'s room name, by the id rule.
pub(super) fn checked_room(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    checked(raw, is_valid_id, ErrorCode::InvalidRoomId)
}

/// A `join`'s user id, by the id rule.
pub(super) fn checked_user_id(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    checked(raw, is_valid_id, ErrorCode::InvalidUserId)
}

/// A `join`'s user name, by the name rule.
pub(super) fn checked_username(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    checked(raw, is_valid_username, ErrorCode::InvalidUsername)
}

/// A message's ciphertext, by the content rule: a missing, non-string or
/// invalid one is `INVALID_CONTENT`.
pub(super) fn checked_content(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    checked(raw, is_valid_content, ErrorCode::InvalidContent)
}

#[derive(Deserialize)]
struct TypingFields<'a> {
    #[serde(rename = "isTyping", borrow, default)]
    is_typing: Option<&'a RawValue>,
}

/// A `typing` body's `isTyping`, which must be a boolean (a legacy payload's
/// other fields are not used: identities come from the join).
pub(super) fn checked_typing(body: Option<&RawValue>) -> Result<bool, ErrorCode> {
    let raw = object_fields::<TypingFields<'_>>(body).and_then(|f| f.is_typing);
    match raw.map(RawValue::get) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(ErrorCode::InvalidMessage),
    }
}

#[derive(Deserialize)]
struct ReactionFields<'a> {
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    emoji: Option<&'a RawValue>,
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
}

/// A reaction's message id and emoji, checked, and its `action`, still raw.
pub(super) type ReactionParts<'a> = (Cow<'a, str>, Cow<'a, str>, Option<&'a RawValue>);

/// A `reaction` body's parts, checked in the contract's order: `messageId`
/// by the id rule (`INVALID_MESSAGE`), `emoji` by the emoji rule
/// (`INVALID_EMOJI`); its `action` is left raw for the dialect that has one.
/// A body that is not an object is `INVALID_MESSAGE`.
pub(super) fn checked_reaction(body: Option<&RawValue>) -> Result<ReactionParts<'_>, ErrorCode> {
    let fields: ReactionFields<'_> = object_fields(body).ok_or(ErrorCode::InvalidMessage)?;
    let message_id = checked(fields.message_id, is_valid_id, ErrorCode::InvalidMessage)?;
    let emoji = checked(fields.emoji, is_valid_emoji, ErrorCode::InvalidEmoji)?;
    Ok((message_id, emoji, fields.action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("Room_1-x"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("ä"));
        assert!(!is_valid_id("a.b"));
    }

    #[test]
    fn usernames() {
        assert!(is_valid_username("Alice"));
        assert!(is_valid_username(" Bob "));
        assert!(is_valid_username(&"é".repeat(32)));
        assert!(!is_valid_username(&"é".repeat(33)));
        assert!(!is_valid_username(""));
        assert!(!is_valid_username("   "));
        assert!(!is_valid_username("a\nb"));
        assert!(!is_valid_username("a\u{7f}"));
    }

    #[test]
    fn avatars_and_emoji() {
        assert!(is_valid_avatar(""));
        assert!(is_valid_avatar(&"a".repeat(512)));
        assert!(!is_valid_avatar(&"a".repeat(513)));
        assert!(!is_valid_avatar("a\tb"));
        assert!(is_valid_emoji("👍"));
        assert!(is_valid_emoji(":+1:"));
        assert!(!is_valid_emoji(""));
        assert!(!is_valid_emoji("a b"));
        assert!(!is_valid_emoji(&"a".repeat(33)));
        assert!(!is_valid_emoji("\u{0}"));
    }

    #[test]
    fn content_rules() {
        for ok in [
            "aGVsbG8=",
            "aGVsbG8",
            "aGk=.Zm9vYmFy",
            "ab+/",
            "ab-_",
            "QQ==",
            "QUI=",
            "QUJD",
            "ab.b1.c2.d3.e4.f5.g6.h7",
        ] {
            assert!(is_valid_content(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "abc.",
            ".abc",
            "a",
            "abcde",
            "ab+_",
            "a=",
            "QQ=",
            "QUI==",
            "QQ===",
            "Q=Q=",
            "==",
            "hello world",
            "aGk=.",
            "a1.b2.c3.d4.e5.f6.g7.h8.i9",
            "ä",
        ] {
            assert!(!is_valid_content(bad), "{bad}");
        }
    }

    /// The segment rule written the plain way, character by character.
    fn plain_segment(seg: &str) -> bool {
        let data = seg.trim_end_matches('=');
        let pad = seg.len() - data.len();
        let standard = data.contains(['+', '/']);
        let url_safe = data.contains(['-', '_']);
        !data.is_empty()
            && pad <= 2
            && data
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/-_".contains(c))
            && !(standard && url_safe)
            && data.len() % 4 != 1
            && (pad == 0 || seg.len() % 4 == 0)
    }

    #[test]
    fn the_lookup_table_agrees_with_the_plain_rule() {
        // Every string of up to five of these characters.
        let alphabet = ['A', 'z', '9', '+', '/', '-', '_', '=', '.', '!'];
        let mut texts = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            texts = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |&c| format!("{t}{c}")))
                .collect();
            for t in &texts {
                let plain = t.split('.').count() <= 8 && t.split('.').all(plain_segment);
                assert_eq!(is_valid_content(t), plain, "{t}");
                checked += 1;
            }
        }
        assert_eq!(checked, 111_110);
    }
}
