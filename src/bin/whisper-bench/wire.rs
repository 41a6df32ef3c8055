//! The chat protocol as the generator speaks it: request JSON, message
//! content carrying a send stamp, and a cheap classifier for what the relay
//! sends back (a field scan, not a JSON parser: it runs once per delivery).

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since the generator's time base (shared by all its threads).
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a message carries so that receivers can measure latency and tell
/// lost and duplicated messages apart: who sent it, its number, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub sent_ns: u64,
    pub sender: u32,
    pub seq: u32,
}

/// Bytes of an encoded stamp (a multiple of 3, so base64 needs no padding).
const STAMP_BYTES: usize = 18;
/// Characters of the stamp's base64 segment.
const STAMP_CHARS: usize = STAMP_BYTES / 3 * 4;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 without padding.
pub fn base64_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
}

fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes unpadded base64 whose length is a multiple of 4 into `out`.
fn base64_decode(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() / 3 * 4 || out.len() % 3 != 0 {
        return None;
    }
    for (quad, triple) in text.chunks(4).zip(out.chunks_mut(3)) {
        let mut n = 0u32;
        for &c in quad {
            n = n << 6 | base64_value(c)?;
        }
        triple.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    Some(())
}

impl Stamp {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut raw = [0u8; STAMP_BYTES];
        raw[..8].copy_from_slice(&self.sent_ns.to_le_bytes());
        raw[8..12].copy_from_slice(&self.sender.to_le_bytes());
        raw[12..16].copy_from_slice(&self.seq.to_le_bytes());
        base64_encode(&raw, out);
    }

    fn decode(segment: &[u8]) -> Option<Stamp> {
        let mut raw = [0u8; STAMP_BYTES];
        base64_decode(segment.get(..STAMP_CHARS)?, &mut raw)?;
        let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&raw[..8]);
        Some(Stamp {
            sent_ns: u64::from_le_bytes(ns),
            sender: word(8),
            seq: word(12),
        })
    }
}

/// The relay's two message shapes: `PROTOCOL.md`'s (`data`, upgrade on
/// `/ws`) and the original relay's legacy one (`payload`, upgrade on `/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    V2,
    Legacy,
}

impl Dialect {
    /// The path a client of this dialect upgrades on.
    pub fn path(self) -> &'static str {
        match self {
            Dialect::V2 => "/ws",
            Dialect::Legacy => "/",
        }
    }
}

/// A `message` request whose content is `<stamp>.<filler>`: two base64
/// segments, like an IV and a ciphertext. `filler` is a multiple of 4.
pub fn message_request(stamp: Stamp, filler: usize, dialect: Dialect, out: &mut Vec<u8>) {
    out.extend_from_slice(match dialect {
        Dialect::V2 => br#"{"type":"message","data":{"content":""#.as_slice(),
        Dialect::Legacy => br#"{"type":"message","payload":{"encrypted":""#.as_slice(),
    });
    stamp.encode(out);
    out.push(b'.');
    let pattern = b"c2VhbGVkIGNoYXQgdGV4dA";
    out.extend((0..filler.max(4) / 4 * 4).map(|i| pattern[i % pattern.len()]));
    out.extend_from_slice(br#""}}"#);
}

/// A `join` request; the user's name is its id.
pub fn join_request(room: &str, user: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::V2 => format!(
            r#"{{"type":"join","data":{{"room":"{room}","user":{{"id":"{user}","name":"{user}","avatar":null}}}}}}"#
        ),
        Dialect::Legacy => format!(
            r#"{{"type":"join","payload":{{"roomId":"{room}","userId":"{user}","username":"{user}"}}}}"#
        ),
    }
}

/// What a text frame from the relay is, as far as the generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A relayed message; `None` when its content holds no readable stamp.
    Message(Option<Stamp>),
    UserList,
    UserLeft(&'a str),
    Error(&'a str),
    Other,
}

/// Finds `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        let i = hay[at..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        if hay[at + i..].starts_with(needle) {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

/// The value of the first `"key":"value"` in `text`; `key` includes its
/// quotes. No escapes are expected: every string the generator looks at is
/// its own plain ASCII.
fn string_field<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut at = 0;
    while let Some(i) = find(&text[at..], key) {
        at += i + key.len();
        let Some(rest) = text[at..].trim_ascii_start().strip_prefix(b":") else {
            continue;
        };
        let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        return Some(&rest[..end]);
    }
    None
}

/// Classifies one text frame from the relay.
pub fn classify(text: &[u8]) -> Incoming<'_> {
    fn as_str(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or("?")
    }
    match string_field(text, br#""type""#) {
        // v2 carries the ciphertext as `content`; legacy as the payload itself.
        Some(b"message") => Incoming::Message(
            string_field(text, br#""content""#)
                .or_else(|| string_field(text, br#""payload""#))
                .and_then(|c| Stamp::decode(c.split(|&b| b == b'.').next()?)),
        ),
        Some(b"userList") => Incoming::UserList,
        Some(b"userLeft") => {
            Incoming::UserLeft(string_field(text, br#""userId""#).map_or("?", as_str))
        }
        Some(b"error") => Incoming::Error(string_field(text, br#""code""#).map_or("?", as_str)),
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_survives_the_round_trip() {
        let stamp = Stamp {
            sent_ns: 0x0123_4567_89ab_cdef,
            sender: 4095,
            seq: 77,
        };
        let mut req = Vec::new();
        message_request(stamp, 40, Dialect::V2, &mut req);
        let content = string_field(&req, br#""content""#).unwrap();
        let reply = format!(
            r#"{{"type":"message","id":"ab-1","user":{{"id":"u1","name":"u1","avatar":null}},"content":"{}","timestamp":"x"}}"#,
            std::str::from_utf8(content).unwrap()
        );
        assert_eq!(classify(reply.as_bytes()), Incoming::Message(Some(stamp)));
    }

    #[test]
    fn content_is_two_valid_segments() {
        let mut req = Vec::new();
        message_request(
            Stamp {
                sent_ns: 1,
                sender: 2,
                seq: 3,
            },
            30,
            Dialect::V2,
            &mut req,
        );
        let content = string_field(&req, br#""content""#).unwrap();
        let segments: Vec<&[u8]> = content.split(|&b| b == b'.').collect();
        assert_eq!(segments.len(), 2);
        assert!(segments.iter().all(|s| s.len() % 4 == 0 && !s.is_empty()));
    }

    #[test]
    fn legacy_messages_carry_the_stamp_as_the_payload() {
        let stamp = Stamp {
            sent_ns: 42,
            sender: 7,
            seq: 9,
        };
        let mut req = Vec::new();
        message_request(stamp, 40, Dialect::Legacy, &mut req);
        let encrypted = string_field(&req, br#""encrypted""#).unwrap();
        let relayed = format!(
            r#"{{"type":"message","payload":"{}"}}"#,
            std::str::from_utf8(encrypted).unwrap()
        );
        assert_eq!(classify(relayed.as_bytes()), Incoming::Message(Some(stamp)));
        assert_eq!(
            classify(br#"{"type":"error","payload":{"code":"RATE_LIMITED","message":"m"}}"#),
            Incoming::Error("RATE_LIMITED")
        );
        assert_eq!(
            classify(br#"{"type":"userLeft","payload":{"userId":"u3"}}"#),
            Incoming::UserLeft("u3")
        );
    }

    #[test]
    fn base64_matches_known_vectors() {
        let mut out = Vec::new();
        base64_encode(b"foobar", &mut out);
        assert_eq!(out, b"Zm9vYmFy");
        let mut back = [0u8; 6];
        base64_decode(b"Zm9vYmFy", &mut back).unwrap();
        assert_eq!(&back, b"foobar");
    }

    #[test]
    fn classifies_relay_frames() {
        assert_eq!(
            classify(br#"{"type":"userLeft","userId":"nr3"}"#),
            Incoming::UserLeft("nr3")
        );
        assert_eq!(
            classify(br#"{"type":"error","code":"ROOM_FULL","message":"full"}"#),
            Incoming::Error("ROOM_FULL")
        );
        assert_eq!(
            classify(br#"{"type":"userList","users":[]}"#),
            Incoming::UserList
        );
        assert_eq!(classify(br#"{"type":"pong"}"#), Incoming::Other);
    }
}
