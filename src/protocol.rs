//! The wire format: incoming request parsing and validation, outgoing JSON
//! messages, and the WebSocket framing of what the relay sends.
//!
//! Outgoing frames are built once, framed once, and the same bytes are shared
//! by every recipient (server frames are unmasked, so they are identical for
//! all members of a room).

use std::borrow::Cow;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Error codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidMessage,
    InvalidRoomId,
    InvalidUserId,
    InvalidUsername,
    InvalidAvatar,
    InvalidContent,
    InvalidEmoji,
    UserIdTaken,
    RoomFull,
    TooManyRooms,
    NotInRoom,
    RateLimited,
    MessageTooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InvalidRoomId => "INVALID_ROOM_ID",
            ErrorCode::InvalidUserId => "INVALID_USER_ID",
            ErrorCode::InvalidUsername => "INVALID_USERNAME",
            ErrorCode::InvalidAvatar => "INVALID_AVATAR",
            ErrorCode::InvalidContent => "INVALID_CONTENT",
            ErrorCode::InvalidEmoji => "INVALID_EMOJI",
            ErrorCode::UserIdTaken => "USER_ID_TAKEN",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::TooManyRooms => "TOO_MANY_ROOMS",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
        }
    }

    /// The human-readable text sent with the code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "frame is not valid JSON",
            ErrorCode::InvalidMessage => "unknown message type or wrong message shape",
            ErrorCode::InvalidRoomId => "room must be 1-64 characters of A-Z a-z 0-9 _ -",
            ErrorCode::InvalidUserId => "user.id must be 1-64 characters of A-Z a-z 0-9 _ -",
            ErrorCode::InvalidUsername => {
                "user.name must be 1-32 characters, not only whitespace, without control characters"
            }
            ErrorCode::InvalidAvatar => {
                "user.avatar must be null or a string of at most 512 bytes without control characters"
            }
            ErrorCode::InvalidContent => "content must be 1-8 base64 segments joined by '.'",
            ErrorCode::InvalidEmoji => {
                "emoji must be 1-32 bytes without whitespace or control characters"
            }
            ErrorCode::UserIdTaken => "another connection in this room uses that user id",
            ErrorCode::RoomFull => "the room is full",
            ErrorCode::TooManyRooms => "the server holds its maximum number of rooms",
            ErrorCode::NotInRoom => "join a room first",
            ErrorCode::RateLimited => "too many messages; slow down",
            ErrorCode::MessageTooLarge => "message exceeds the size limit",
        }
    }

    /// Whether the contract counts this error as a strike against the IP.
    pub fn is_strike(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::InvalidJson
                | ErrorCode::InvalidMessage
                | ErrorCode::MessageTooLarge
        )
    }
}

// ---------------------------------------------------------------- validation

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

/// One base64 segment: standard or URL-safe alphabet (not mixed), padding
/// optional, but when present it must make the length a multiple of four.
fn is_base64_segment(seg: &[u8]) -> bool {
    let data_len = seg.iter().position(|&b| b == b'=').unwrap_or(seg.len());
    let (data, pad) = seg.split_at(data_len);
    if data.is_empty() || pad.len() > 2 || pad.iter().any(|&b| b != b'=') {
        return false;
    }
    let (mut standard, mut url_safe) = (false, false);
    for &b in data {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => {}
            b'+' | b'/' => standard = true,
            b'-' | b'_' => url_safe = true,
            _ => return false,
        }
    }
    if standard && url_safe {
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

// ------------------------------------------------------------------ requests

/// The outer shape every client frame must have: `{"type": "...", "data": ...}`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A parsed client frame: its type and its raw `data` (checked per type).
pub struct Request<'a> {
    pub kind: Cow<'a, str>,
    pub data: Option<&'a RawValue>,
}

/// Parses the envelope: `INVALID_JSON` for malformed JSON, `INVALID_MESSAGE`
/// for valid JSON without a string `type`.
pub fn parse_request(text: &str) -> Result<Request<'_>, ErrorCode> {
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(env) => {
            let kind = env
                .kind
                .and_then(string_value)
                .ok_or(ErrorCode::InvalidMessage)?;
            Ok(Request {
                kind,
                data: env.data,
            })
        }
        // Tell malformed JSON from well-formed JSON of the wrong shape.
        Err(_) => match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(ErrorCode::InvalidMessage),
            Err(_) => Err(ErrorCode::InvalidJson),
        },
    }
}

/// The string inside a raw JSON value, if it is a string.
pub fn string_value(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// The fields of a `data` object, each still raw. `None` when `data` is
/// missing or not an object.
pub fn object_fields<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Option<T> {
    let raw = data?;
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

#[derive(Deserialize)]
pub struct JoinFields<'a> {
    #[serde(borrow, default)]
    pub room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub struct UserFields<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub avatar: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub struct MessageFields<'a> {
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub struct TypingFields<'a> {
    #[serde(rename = "isTyping", borrow, default)]
    pub is_typing: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub struct ReactionFields<'a> {
    #[serde(rename = "messageId", borrow, default)]
    pub message_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub emoji: Option<&'a RawValue>,
}

/// A validated `join`: the room name and the member's identity.
#[derive(Debug)]
pub struct JoinRequest {
    pub room: String,
    pub user_id: String,
    /// The `{"id":..,"name":..,"avatar":..}` object as the relay will send it.
    pub user_json: String,
}

/// Validates a `join` request's `data` in the contract's order.
pub fn parse_join(data: Option<&RawValue>) -> Result<JoinRequest, ErrorCode> {
    let fields: JoinFields<'_> = object_fields(data).ok_or(ErrorCode::InvalidMessage)?;
    let room = fields
        .room
        .and_then(string_value)
        .filter(|r| is_valid_id(r))
        .ok_or(ErrorCode::InvalidRoomId)?;
    let user: UserFields<'_> = object_fields(fields.user).ok_or(ErrorCode::InvalidMessage)?;
    let id = user
        .id
        .and_then(string_value)
        .filter(|id| is_valid_id(id))
        .ok_or(ErrorCode::InvalidUserId)?;
    let name = user
        .name
        .and_then(string_value)
        .filter(|n| is_valid_username(n))
        .ok_or(ErrorCode::InvalidUsername)?;
    let avatar = match user.avatar {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(
            string_value(raw)
                .filter(|a| is_valid_avatar(a))
                .ok_or(ErrorCode::InvalidAvatar)?,
        ),
    };
    let mut json = Vec::with_capacity(40 + id.len() + name.len());
    json.extend_from_slice(b"{\"id\":\"");
    json.extend_from_slice(id.as_bytes());
    json.extend_from_slice(b"\",\"name\":");
    push_json_string(&mut json, &name);
    json.extend_from_slice(b",\"avatar\":");
    match &avatar {
        Some(a) => push_json_string(&mut json, a),
        None => json.extend_from_slice(b"null"),
    }
    json.push(b'}');
    Ok(JoinRequest {
        room: room.into_owned(),
        user_id: id.into_owned(),
        user_json: String::from_utf8(json).expect("JSON built from UTF-8 strings"),
    })
}

// ------------------------------------------------------------ outgoing frames

/// Longest WebSocket frame header the relay writes (no mask).
const HEADER_MAX: usize = 10;

/// Appends a WebSocket frame header for an unmasked, final frame.
fn frame_header(opcode: u8, len: usize) -> ([u8; HEADER_MAX], usize) {
    let mut h = [0u8; HEADER_MAX];
    h[0] = 0x80 | opcode;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= 0xFFFF {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// The WebSocket ping the heartbeat sends (empty payload).
pub const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// A close frame with `code` and a short `reason` (at most 123 bytes).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88);
    f.push((2 + reason.len()) as u8);
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

/// A pong frame echoing a ping's payload (at most 125 bytes by the protocol).
pub fn pong_control_frame(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut f = Vec::with_capacity(2 + payload.len());
    f.push(0x8A);
    f.push(payload.len() as u8);
    f.extend_from_slice(payload);
    f
}

/// Builds JSON text messages into a reusable buffer and frames them.
///
/// The buffer starts with room for the longest header, so the finished frame
/// is one contiguous slice and is copied exactly once, into its shared `Rc`.
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        FrameBuilder::new()
    }
}

impl FrameBuilder {
    pub fn new() -> FrameBuilder {
        FrameBuilder {
            buf: Vec::with_capacity(256),
        }
    }

    /// Starts a new message and returns the buffer to write its JSON into.
    pub fn begin(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER_MAX]);
        &mut self.buf
    }

    /// The framed bytes of the message written since [`begin`](Self::begin).
    fn framed(&mut self) -> &[u8] {
        let len = self.buf.len() - HEADER_MAX;
        let (header, hlen) = frame_header(0x1, len);
        let start = HEADER_MAX - hlen;
        self.buf[start..HEADER_MAX].copy_from_slice(&header[..hlen]);
        &self.buf[start..]
    }

    /// Finishes the message as a shared frame.
    pub fn finish_shared(&mut self) -> Rc<[u8]> {
        Rc::from(self.framed())
    }

    /// Finishes the message by appending its frame to `out`.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.framed());
    }

    /// Keeps the scratch buffer from holding on to a large message's memory.
    pub fn shrink(&mut self) {
        if self.buf.capacity() > 4096 {
            self.buf = Vec::with_capacity(256);
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

/// `{"type":"error","code":..,"message":..}` as JSON text.
pub fn write_error_json(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":\"");
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    push_json_string(out, message);
    out.push(b'}');
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

    #[test]
    fn envelope_errors() {
        assert_eq!(parse_request("{").err(), Some(ErrorCode::InvalidJson));
        assert_eq!(parse_request("").err(), Some(ErrorCode::InvalidJson));
        assert_eq!(
            parse_request("{\"type\":5,").err(),
            Some(ErrorCode::InvalidJson)
        );
        assert_eq!(
            parse_request("[1,2]").err(),
            Some(ErrorCode::InvalidMessage)
        );
        assert_eq!(parse_request("null").err(), Some(ErrorCode::InvalidMessage));
        assert_eq!(parse_request("{}").err(), Some(ErrorCode::InvalidMessage));
        assert_eq!(
            parse_request("{\"type\":1}").err(),
            Some(ErrorCode::InvalidMessage)
        );
        let r = parse_request("{\"type\":\"p\\u0069ng\",\"extra\":[1]}").unwrap();
        assert_eq!(r.kind, "ping");
    }

    #[test]
    fn join_validation_order() {
        let join = |s: &str| {
            let raw: Box<RawValue> = serde_json::from_str(s).unwrap();
            parse_join(Some(&raw)).map(|j| j.user_json)
        };
        let ok = join(r#"{"room":"r1","user":{"id":"u1","name":"Ann \"A\"","avatar":null}}"#);
        assert_eq!(
            ok.unwrap(),
            r#"{"id":"u1","name":"Ann \"A\"","avatar":null}"#
        );
        let ok = join(r#"{"room":"r1","user":{"id":"u1","name":"Ann"}}"#).unwrap();
        assert_eq!(ok, r#"{"id":"u1","name":"Ann","avatar":null}"#);
        assert_eq!(
            join(r#"{"room":"","user":{"id":"","name":""}}"#).err(),
            Some(ErrorCode::InvalidRoomId)
        );
        assert_eq!(
            join(r#"{"room":7,"user":{}}"#).err(),
            Some(ErrorCode::InvalidRoomId)
        );
        assert_eq!(
            join(r#"{"room":"r","user":{"id":"a b","name":""}}"#).err(),
            Some(ErrorCode::InvalidUserId)
        );
        assert_eq!(
            join(r#"{"room":"r","user":{"id":"a","name":" "}}"#).err(),
            Some(ErrorCode::InvalidUsername)
        );
        assert_eq!(
            join(r#"{"room":"r","user":{"id":"a","name":"A","avatar":3}}"#).err(),
            Some(ErrorCode::InvalidAvatar)
        );
        assert_eq!(
            join(r#"{"room":"r","user":"x"}"#).err(),
            Some(ErrorCode::InvalidMessage)
        );
        assert_eq!(join(r#"[1]"#).err(), Some(ErrorCode::InvalidMessage));
        assert_eq!(parse_join(None).err(), Some(ErrorCode::InvalidMessage));
    }

    #[test]
    fn frames_have_correct_headers() {
        let mut b = FrameBuilder::new();
        b.begin().extend_from_slice(b"{}");
        assert_eq!(&*b.finish_shared(), b"\x81\x02{}");
        let body = vec![b'a'; 300];
        b.begin().extend_from_slice(&body);
        let f = b.finish_shared();
        assert_eq!(&f[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(f.len(), 304);
        let body = vec![b'a'; 70_000];
        b.begin().extend_from_slice(&body);
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(&out[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
        assert_eq!(
            close_frame(1001, "bye"),
            vec![0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']
        );
    }

    /// Arbitrary bytes never make the parsers panic.
    #[test]
    fn parsers_survive_random_input() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"{}[]\":,.0123456789aez-_+/= \\\ntruefalsnul\xc3\xa9";
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = is_valid_content(&text);
            let _ = is_valid_username(&text);
            if let Ok(req) = parse_request(&text) {
                let _ = parse_join(req.data);
            }
            let wrapped = format!("{{\"type\":\"join\",\"data\":{text}}}");
            if let Ok(req) = parse_request(&wrapped) {
                let _ = parse_join(req.data);
            }
        }
    }
}
