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

    /// The code as `dialect` sends it: legacy clients know a bad ciphertext
    /// as `INVALID_FORMAT`.
    pub fn wire(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (ErrorCode::InvalidContent, Dialect::Legacy) => "INVALID_FORMAT",
            _ => self.as_str(),
        }
    }

    /// The human-readable text sent with the code, naming the fields of
    /// `dialect`.
    pub fn message_in(self, dialect: Dialect) -> &'static str {
        if dialect == Dialect::V2 {
            return self.message();
        }
        match self {
            // The original server's text (LEGACY-DIALECT.md section 7).
            ErrorCode::InvalidRoomId => "Invalid room ID format",
            ErrorCode::InvalidUserId => "userId must be 1-64 characters of A-Z a-z 0-9 _ -",
            ErrorCode::InvalidUsername => {
                "username must be 1-32 characters, not only whitespace, without control characters"
            }
            ErrorCode::InvalidContent => "encrypted must be 1-8 base64 segments joined by '.'",
            other => other.message(),
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

// ------------------------------------------------------------------ dialects

/// The two message shapes the relay speaks. `V2` is `PROTOCOL.md`'s (`data`);
/// `Legacy` is the original relay's (`payload`, `LEGACY-DIALECT.md`). Rooms
/// of the two are separate namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    V2,
    Legacy,
}

impl Dialect {
    /// Whether the joiner's own entry is in the `userList` it gets.
    pub fn lists_joiner(self) -> bool {
        self == Dialect::V2
    }

    /// Whether `message` and `reaction` go back to their sender too.
    pub fn echoes_to_sender(self) -> bool {
        self == Dialect::V2
    }

    /// Whether `leave` and `typing` outside a room are ignored rather than
    /// answered with `NOT_IN_ROOM`.
    pub fn quiet_outside_room(self) -> bool {
        self == Dialect::Legacy
    }
}

/// How a connection reads its frames: in the dialect its upgrade path
/// started it in, until the first frame whose `data` or `payload` is an
/// object fixes the dialect for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub dialect: Dialect,
    pub fixed: bool,
}

impl Reading {
    /// A connection that has not sent a body yet.
    pub fn starting(dialect: Dialect) -> Reading {
        Reading {
            dialect,
            fixed: false,
        }
    }
}

// ------------------------------------------------------------------ requests

/// The outer shape of every client frame: a `type` and a body under `data`
/// (v2) or `payload` (legacy).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// A legacy reaction's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

/// A validated `reaction`. `action` is set for legacy reactions only.
#[derive(Debug, PartialEq, Eq)]
pub struct Reaction<'a> {
    pub message_id: Cow<'a, str>,
    pub emoji: Cow<'a, str>,
    pub action: Option<Action>,
}

/// A client frame of either dialect, its body checked. A body's error is kept
/// rather than returned at once: the contract reports budget and membership
/// errors before shape errors, and the session checks those first.
#[derive(Debug)]
pub enum Request<'a> {
    Ping,
    Join(Result<JoinRequest, ErrorCode>),
    Leave,
    /// The ciphertext (`content` or `encrypted`).
    Message(Result<Cow<'a, str>, ErrorCode>),
    Typing(Result<bool, ErrorCode>),
    Reaction(Result<Reaction<'a>, ErrorCode>),
    /// Legacy `fileTransfer`: not relayed; `INVALID_MESSAGE` without a strike.
    FileTransfer,
    /// An unknown type, or a frame in the other dialect than the connection's.
    Unknown,
}

impl Request<'_> {
    /// The request's `type`, for messages such as `RATE_LIMITED`'s.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Join(_) => "join",
            Request::Leave => "leave",
            Request::Message(_) => "message",
            Request::Typing(_) => "typing",
            Request::Reaction(_) => "reaction",
            Request::FileTransfer => "fileTransfer",
            Request::Unknown => "unknown",
        }
    }
}

/// Whether a raw value is a JSON object.
fn is_object(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get().starts_with('{'))
}

/// Parses a client frame in the connection's dialect, fixing the dialect
/// when this is the first frame with an object body (`data` fixes v2,
/// `payload` legacy; with both, the current one stays). `INVALID_JSON` for
/// malformed JSON; `INVALID_MESSAGE` for anything but an object with a string
/// `type`.
pub fn parse_request<'a>(text: &'a str, reading: &mut Reading) -> Result<Request<'a>, ErrorCode> {
    // serde also reads a struct from an array; only objects are frames.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => ErrorCode::InvalidMessage,
            Err(_) => ErrorCode::InvalidJson,
        });
    }
    let env = match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(env) => env,
        // Tell malformed JSON from well-formed JSON of the wrong shape.
        Err(_) => {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => ErrorCode::InvalidMessage,
                Err(_) => ErrorCode::InvalidJson,
            });
        }
    };
    let (data, payload) = (is_object(env.data), is_object(env.payload));
    if !reading.fixed && (data || payload) {
        reading.fixed = true;
        if data != payload {
            reading.dialect = if data { Dialect::V2 } else { Dialect::Legacy };
        }
    }
    let (body, foreign) = match reading.dialect {
        Dialect::V2 => (env.data, payload && !data),
        Dialect::Legacy => (env.payload, data && !payload),
    };
    let kind = env
        .kind
        .and_then(string_value)
        .ok_or(ErrorCode::InvalidMessage)?;
    if foreign {
        return Ok(Request::Unknown);
    }
    Ok(request_of(&kind, reading.dialect, body))
}

/// The typed request for a `type` and its body.
fn request_of<'a>(kind: &str, dialect: Dialect, body: Option<&'a RawValue>) -> Request<'a> {
    match (kind, dialect) {
        ("ping", _) => Request::Ping,
        ("join", Dialect::V2) => Request::Join(parse_join(body)),
        ("join", Dialect::Legacy) => Request::Join(parse_legacy_join(body)),
        ("leave", _) => Request::Leave,
        ("message", _) => Request::Message(parse_content(body, dialect)),
        ("typing", _) => Request::Typing(parse_typing(body)),
        ("reaction", _) => Request::Reaction(parse_reaction(body, dialect)),
        ("fileTransfer", Dialect::Legacy) => Request::FileTransfer,
        _ => Request::Unknown,
    }
}

/// The string inside a raw JSON value, if it is a string.
pub fn string_value(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// The fields of a body object, each still raw. `None` when the body is
/// missing or not an object.
pub fn object_fields<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Option<T> {
    let raw = data?;
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

#[derive(Deserialize)]
struct JoinFields<'a> {
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UserFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    avatar: Option<&'a RawValue>,
}

/// A legacy `join` payload: `{roomId, userId, username}`.
#[derive(Deserialize)]
struct LegacyJoinFields<'a> {
    #[serde(rename = "roomId", borrow, default)]
    room_id: Option<&'a RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    username: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LegacyMessageFields<'a> {
    #[serde(borrow, default)]
    encrypted: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TypingFields<'a> {
    #[serde(rename = "isTyping", borrow, default)]
    is_typing: Option<&'a RawValue>,
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

/// A validated `join`: the room name and the member's identity.
#[derive(Debug)]
pub struct JoinRequest {
    pub room: String,
    pub user_id: String,
    /// The member as the relay embeds it in frames: v2
    /// `{"id":..,"name":..,"avatar":..}`, legacy `"userId":..,"username":..`
    /// (the members of a payload object; see [`legacy_list_entry`]).
    pub user_json: String,
}

/// The room, id and name rules shared by both dialects' `join`.
fn checked_room(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    raw.and_then(string_value)
        .filter(|r| is_valid_id(r))
        .ok_or(ErrorCode::InvalidRoomId)
}

fn checked_user_id(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    raw.and_then(string_value)
        .filter(|id| is_valid_id(id))
        .ok_or(ErrorCode::InvalidUserId)
}

fn checked_username(raw: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    raw.and_then(string_value)
        .filter(|n| is_valid_username(n))
        .ok_or(ErrorCode::InvalidUsername)
}

/// Validates a v2 `join` request's `data` in the contract's order.
pub fn parse_join(data: Option<&RawValue>) -> Result<JoinRequest, ErrorCode> {
    let fields: JoinFields<'_> = object_fields(data).ok_or(ErrorCode::InvalidMessage)?;
    let room = checked_room(fields.room)?;
    let user: UserFields<'_> = object_fields(fields.user).ok_or(ErrorCode::InvalidMessage)?;
    let id = checked_user_id(user.id)?;
    let name = checked_username(user.name)?;
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

/// Start of a legacy member's JSON, up to its id.
const LEGACY_ID_KEY: &str = "\"userId\":\"";
/// Between a legacy member's id and its name.
const LEGACY_NAME_KEY: &str = "\",\"username\":";

/// Validates a legacy `join` payload: `roomId` is the room, `userId` and
/// `username` the user's id and name, under `PROTOCOL.md`'s rules (there is
/// no avatar).
pub fn parse_legacy_join(payload: Option<&RawValue>) -> Result<JoinRequest, ErrorCode> {
    let fields: LegacyJoinFields<'_> = object_fields(payload).ok_or(ErrorCode::InvalidMessage)?;
    let room = checked_room(fields.room_id)?;
    let id = checked_user_id(fields.user_id)?;
    let name = checked_username(fields.username)?;
    let mut json = Vec::with_capacity(32 + id.len() + name.len());
    json.extend_from_slice(LEGACY_ID_KEY.as_bytes());
    json.extend_from_slice(id.as_bytes());
    json.extend_from_slice(LEGACY_NAME_KEY.as_bytes());
    push_json_string(&mut json, &name);
    Ok(JoinRequest {
        room: room.into_owned(),
        user_id: id.into_owned(),
        user_json: String::from_utf8(json).expect("JSON built from UTF-8 strings"),
    })
}

/// A message's ciphertext: `content` (v2) or `encrypted` (legacy), checked by
/// the content rule. A body that is not an object is `INVALID_MESSAGE`; a
/// missing, non-string or invalid ciphertext `INVALID_CONTENT` (which legacy
/// clients see as `INVALID_FORMAT`).
fn parse_content(body: Option<&RawValue>, dialect: Dialect) -> Result<Cow<'_, str>, ErrorCode> {
    let raw = match dialect {
        Dialect::V2 => object_fields::<MessageFields<'_>>(body).map(|f| f.content),
        Dialect::Legacy => object_fields::<LegacyMessageFields<'_>>(body).map(|f| f.encrypted),
    }
    .ok_or(ErrorCode::InvalidMessage)?;
    raw.and_then(string_value)
        .filter(|c| is_valid_content(c))
        .ok_or(ErrorCode::InvalidContent)
}

/// `isTyping`, which must be a boolean (the legacy payload's other fields are
/// not used: identities come from the join).
fn parse_typing(body: Option<&RawValue>) -> Result<bool, ErrorCode> {
    let raw = object_fields::<TypingFields<'_>>(body).and_then(|f| f.is_typing);
    match raw.map(RawValue::get) {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(ErrorCode::InvalidMessage),
    }
}

/// A reaction: `messageId` by the id rule (`INVALID_MESSAGE`), `emoji` by the
/// emoji rule (`INVALID_EMOJI`), and for legacy an `action` of `add` or
/// `remove` (`INVALID_MESSAGE`).
fn parse_reaction(body: Option<&RawValue>, dialect: Dialect) -> Result<Reaction<'_>, ErrorCode> {
    let fields: ReactionFields<'_> = object_fields(body).ok_or(ErrorCode::InvalidMessage)?;
    let message_id = fields
        .message_id
        .and_then(string_value)
        .filter(|m| is_valid_id(m))
        .ok_or(ErrorCode::InvalidMessage)?;
    let emoji = fields
        .emoji
        .and_then(string_value)
        .filter(|e| is_valid_emoji(e))
        .ok_or(ErrorCode::InvalidEmoji)?;
    let action = match dialect {
        Dialect::V2 => None,
        Dialect::Legacy => Some(match fields.action.and_then(string_value).as_deref() {
            Some("add") => Action::Add,
            Some("remove") => Action::Remove,
            _ => return Err(ErrorCode::InvalidMessage),
        }),
    };
    Ok(Reaction {
        message_id,
        emoji,
        action,
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

/// `{"type":"error","code":..,"message":..}` as JSON text. Both strings are
/// escaped: the codes are constants today, but valid JSON must not depend on
/// that (found by the `protocol` fuzz target with a client's `type` as code).
pub fn write_error_json(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":");
    push_json_string(out, code);
    out.extend_from_slice(b",\"message\":");
    push_json_string(out, message);
    out.push(b'}');
}

/// An error reply in `dialect`'s shape: v2
/// `{"type":"error","code":..,"message":..}`, legacy
/// `{"type":"error","payload":{"code":..,"message":..}}` plus `resetTime`
/// (milliseconds) when `reset_ms` is given.
pub fn write_error(
    out: &mut Vec<u8>,
    dialect: Dialect,
    code: ErrorCode,
    message: &str,
    reset_ms: Option<u64>,
) {
    if dialect == Dialect::V2 {
        return write_error_json(out, code.as_str(), message);
    }
    out.extend_from_slice(b"{\"type\":\"error\",\"payload\":{\"code\":\"");
    out.extend_from_slice(code.wire(dialect).as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    push_json_string(out, message);
    if let Some(ms) = reset_ms {
        out.extend_from_slice(b",\"resetTime\":");
        push_decimal(out, ms);
    }
    out.extend_from_slice(b"}}");
}

/// Appends `n` in decimal without going through `fmt`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `userJoined` for the others. `member` is the joiner's JSON in the room's
/// dialect ([`JoinRequest::user_json`]).
pub fn write_user_joined(out: &mut Vec<u8>, dialect: Dialect, member: &str) {
    match dialect {
        Dialect::V2 => {
            out.extend_from_slice(br#"{"type":"userJoined","user":"#);
            out.extend_from_slice(member.as_bytes());
            out.push(b'}');
        }
        Dialect::Legacy => {
            out.extend_from_slice(br#"{"type":"userJoined","payload":{"#);
            out.extend_from_slice(member.as_bytes());
            out.extend_from_slice(b"}}");
        }
    }
}

/// `userLeft` for the others.
pub fn write_user_left(out: &mut Vec<u8>, dialect: Dialect, user_id: &str) {
    out.extend_from_slice(match dialect {
        Dialect::V2 => br#"{"type":"userLeft","userId":""#.as_slice(),
        Dialect::Legacy => br#"{"type":"userLeft","payload":{"userId":""#.as_slice(),
    });
    out.extend_from_slice(user_id.as_bytes());
    out.extend_from_slice(match dialect {
        Dialect::V2 => br#""}"#.as_slice(),
        Dialect::Legacy => br#""}}"#.as_slice(),
    });
}

/// `userList`: the members' JSON in join order (the caller leaves the joiner
/// out where [`Dialect::lists_joiner`] says so). Legacy entries are exactly
/// `{"id":..,"name":..}`.
pub fn write_user_list<'m>(
    out: &mut Vec<u8>,
    dialect: Dialect,
    members: impl Iterator<Item = &'m str>,
) {
    out.extend_from_slice(match dialect {
        Dialect::V2 => br#"{"type":"userList","users":["#.as_slice(),
        Dialect::Legacy => br#"{"type":"userList","payload":{"users":["#.as_slice(),
    });
    for (i, member) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match dialect {
            Dialect::V2 => out.extend_from_slice(member.as_bytes()),
            Dialect::Legacy => legacy_list_entry(out, member),
        }
    }
    out.extend_from_slice(match dialect {
        Dialect::V2 => b"]}".as_slice(),
        Dialect::Legacy => b"]}}".as_slice(),
    });
}

/// `{"id":..,"name":..}` from a legacy member's `"userId":..,"username":..`.
/// The id holds no quote or escape: it ends at the first quote, and the
/// name's JSON follows the fixed key after it.
fn legacy_list_entry(out: &mut Vec<u8>, member: &str) {
    let rest = member.strip_prefix(LEGACY_ID_KEY).unwrap_or(member);
    let id_end = rest.find('"').unwrap_or(rest.len());
    let id = &rest[..id_end];
    let name = rest
        .get(id_end + LEGACY_NAME_KEY.len()..)
        .filter(|n| !n.is_empty())
        .unwrap_or("null");
    out.extend_from_slice(br#"{"id":""#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#"","name":"#);
    out.extend_from_slice(name.as_bytes());
    out.push(b'}');
}

/// A relayed v2 `message`: server id (`prefix`-`seq`), sender, content and a
/// millisecond timestamp.
pub fn write_message(
    out: &mut Vec<u8>,
    member: &str,
    prefix: &str,
    seq: u64,
    content: &str,
    unix_millis: u64,
) {
    out.extend_from_slice(br#"{"type":"message","id":""#);
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'-');
    push_decimal(out, seq);
    out.extend_from_slice(br#"","user":"#);
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(br#","content":""#);
    out.extend_from_slice(content.as_bytes());
    out.extend_from_slice(br#"","timestamp":""#);
    let mut ts = String::with_capacity(24);
    crate::clock::write_rfc3339(&mut ts, unix_millis, true);
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// A relayed legacy `message`: the ciphertext alone, as the payload. (It
/// passed the content rule, so it needs no escaping.)
pub fn write_legacy_message(out: &mut Vec<u8>, content: &str) {
    out.extend_from_slice(br#"{"type":"message","payload":""#);
    out.extend_from_slice(content.as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// Typing, for the others: v2 `userTyping` with the member, legacy `typing`
/// with `userId`, `username` and `isTyping` in the payload.
pub fn write_typing(out: &mut Vec<u8>, dialect: Dialect, member: &str, is_typing: bool) {
    out.extend_from_slice(match dialect {
        Dialect::V2 => br#"{"type":"userTyping","user":"#.as_slice(),
        Dialect::Legacy => br#"{"type":"typing","payload":{"#.as_slice(),
    });
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(if is_typing {
        br#","isTyping":true}"#.as_slice()
    } else {
        br#","isTyping":false}"#.as_slice()
    });
    if dialect == Dialect::Legacy {
        out.push(b'}');
    }
}

/// A relayed reaction: v2 with the member, legacy with `userId` and `action`.
pub fn write_reaction(
    out: &mut Vec<u8>,
    dialect: Dialect,
    member: &str,
    user_id: &str,
    reaction: &Reaction<'_>,
) {
    out.extend_from_slice(match dialect {
        Dialect::V2 => br#"{"type":"reaction","messageId":""#.as_slice(),
        Dialect::Legacy => br#"{"type":"reaction","payload":{"messageId":""#.as_slice(),
    });
    out.extend_from_slice(reaction.message_id.as_bytes());
    match dialect {
        Dialect::V2 => {
            out.extend_from_slice(br#"","user":"#);
            out.extend_from_slice(member.as_bytes());
            out.extend_from_slice(br#","emoji":"#);
            push_json_string(out, &reaction.emoji);
            out.push(b'}');
        }
        Dialect::Legacy => {
            out.extend_from_slice(br#"","emoji":"#);
            push_json_string(out, &reaction.emoji);
            out.extend_from_slice(br#","userId":""#);
            out.extend_from_slice(user_id.as_bytes());
            out.extend_from_slice(br#"","action":""#);
            out.extend_from_slice(reaction.action.unwrap_or(Action::Add).as_str().as_bytes());
            out.extend_from_slice(br#""}}"#);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_is_valid_whatever_the_code() {
        // The input the protocol fuzz target found (its `type` used as the code).
        let text = r#"{"type":"leave[[[!\\^\\\tyr\\\\\t'pe"}"#;
        let mut out = Vec::new();
        write_error_json(&mut out, text, text);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            (v["code"].as_str(), v["message"].as_str()),
            (Some(text), Some(text))
        );
        out.clear();
        write_error_json(&mut out, "NOT_FOUND", "no such path");
        assert_eq!(
            out,
            br#"{"type":"error","code":"NOT_FOUND","message":"no such path"}"#
        );
    }

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

    fn v2() -> Reading {
        Reading::starting(Dialect::V2)
    }

    fn legacy() -> Reading {
        Reading::starting(Dialect::Legacy)
    }

    /// Parses `text` on a connection in `reading`'s state.
    fn parse(text: &str, mut reading: Reading) -> (Result<Request<'_>, ErrorCode>, Reading) {
        let req = parse_request(text, &mut reading);
        (req, reading)
    }

    fn legacy_request(text: &str) -> Request<'_> {
        parse(text, legacy()).0.unwrap()
    }

    fn v2_request(text: &str) -> Request<'_> {
        parse(text, v2()).0.unwrap()
    }

    #[test]
    fn envelope_errors() {
        let err = |text: &str| parse(text, v2()).0.err();
        assert_eq!(err("{"), Some(ErrorCode::InvalidJson));
        assert_eq!(err(""), Some(ErrorCode::InvalidJson));
        assert_eq!(err("{\"type\":5,"), Some(ErrorCode::InvalidJson));
        assert_eq!(err("[1,2]"), Some(ErrorCode::InvalidMessage));
        // serde would read a struct from an array: not a frame.
        assert_eq!(err("[\"ping\"]"), Some(ErrorCode::InvalidMessage));
        assert_eq!(err("null"), Some(ErrorCode::InvalidMessage));
        assert_eq!(err("{}"), Some(ErrorCode::InvalidMessage));
        assert_eq!(err("{\"type\":1}"), Some(ErrorCode::InvalidMessage));
        let (req, _) = parse("{\"type\":\"p\\u0069ng\",\"extra\":[1]}", v2());
        assert!(matches!(req, Ok(Request::Ping)));
        assert!(matches!(
            parse(r#"{"type":"x"}"#, v2()).0,
            Ok(Request::Unknown)
        ));
    }

    #[test]
    fn the_first_object_body_fixes_the_dialect() {
        // No body: the path's dialect stays, not yet fixed.
        for start in [v2(), legacy()] {
            let (req, after) = parse(r#"{"type":"ping","data":null,"payload":3}"#, start);
            assert!(matches!(req, Ok(Request::Ping)));
            assert_eq!(after, start);
        }
        // `payload` on /ws fixes legacy; `data` on / fixes v2.
        let (req, after) = parse(r#"{"type":"leave","payload":{}}"#, v2());
        assert!(matches!(req, Ok(Request::Leave)));
        assert_eq!((after.dialect, after.fixed), (Dialect::Legacy, true));
        let (_, after) = parse(r#"{"type":"leave","data":{}}"#, legacy());
        assert_eq!((after.dialect, after.fixed), (Dialect::V2, true));
        // Both: the path's dialect, fixed.
        let (_, after) = parse(r#"{"type":"leave","data":{},"payload":{}}"#, legacy());
        assert_eq!((after.dialect, after.fixed), (Dialect::Legacy, true));
        // Even a frame with an error body fixes it; bad JSON does not.
        let (req, after) = parse(r#"{"type":5,"payload":{}}"#, v2());
        assert_eq!(req.err(), Some(ErrorCode::InvalidMessage));
        assert_eq!(after.dialect, Dialect::Legacy);
        let (_, after) = parse(r#"{"type":"x","payload":{"#, v2());
        assert_eq!(after, v2());
        // Once fixed, the other dialect's frames are unknown, its own fine.
        let fixed = Reading {
            dialect: Dialect::Legacy,
            fixed: true,
        };
        let (req, after) = parse(r#"{"type":"ping","data":{}}"#, fixed);
        assert!(matches!(req, Ok(Request::Unknown)));
        assert_eq!(after, fixed);
        let (req, _) = parse(r#"{"type":"typing","payload":{"isTyping":false}}"#, fixed);
        assert!(matches!(req, Ok(Request::Typing(Ok(false)))));
        let fixed_v2 = Reading {
            dialect: Dialect::V2,
            fixed: true,
        };
        let (req, _) = parse(r#"{"type":"typing","payload":{"isTyping":true}}"#, fixed_v2);
        assert!(matches!(req, Ok(Request::Unknown)));
    }

    #[test]
    fn legacy_requests() {
        let req = legacy_request;
        let Request::Join(Ok(join)) = req(
            r#"{"type":"join","payload":{"roomId":"room1","userId":"alice","username":"Al \"A\"","x":1}}"#,
        ) else {
            panic!("join");
        };
        assert_eq!(
            (join.room.as_str(), join.user_id.as_str()),
            ("room1", "alice")
        );
        assert_eq!(join.user_json, r#""userId":"alice","username":"Al \"A\"""#);
        let join_err =
            |payload: &str| match req(&format!(r#"{{"type":"join","payload":{payload}}}"#)) {
                Request::Join(r) => r.err(),
                _ => panic!("join"),
            };
        assert_eq!(
            join_err(r#"{"roomId":"bad room","userId":"a","username":"A"}"#),
            Some(ErrorCode::InvalidRoomId)
        );
        assert_eq!(
            join_err(r#"{"room":"r","userId":"a","username":"A"}"#),
            Some(ErrorCode::InvalidRoomId)
        );
        assert_eq!(
            join_err(r#"{"roomId":"r","userId":"a@b","username":"A"}"#),
            Some(ErrorCode::InvalidUserId)
        );
        assert_eq!(
            join_err(r#"{"roomId":"r","userId":"a","username":"  "}"#),
            Some(ErrorCode::InvalidUsername)
        );
        assert_eq!(
            join_err(r#"{"roomId":"r","userId":"a"}"#),
            Some(ErrorCode::InvalidUsername)
        );
        assert!(matches!(
            req(r#"{"type":"join","payload":[]}"#),
            Request::Join(Err(ErrorCode::InvalidMessage))
        ));
        assert!(matches!(
            req(r#"{"type":"join"}"#),
            Request::Join(Err(ErrorCode::InvalidMessage))
        ));

        let content = |text: &str| match req(text) {
            Request::Message(r) => r.map(|c| c.into_owned()),
            _ => panic!("message"),
        };
        assert_eq!(
            content(r#"{"type":"message","payload":{"encrypted":"SGVsbG8=.V29ybGQ="}}"#).unwrap(),
            "SGVsbG8=.V29ybGQ="
        );
        assert_eq!(
            content(r#"{"type":"message","payload":{"encrypted":"AAonAA==.QQ=="}}"#).unwrap(),
            "AAonAA==.QQ=="
        );
        for bad in [r#""notbase64""#, r#"{"iv":"a"}"#, "3", "null"] {
            let text = format!(r#"{{"type":"message","payload":{{"encrypted":{bad}}}}}"#);
            assert_eq!(
                content(&text).err(),
                Some(ErrorCode::InvalidContent),
                "{bad}"
            );
        }
        assert_eq!(
            content(r#"{"type":"message","payload":{}}"#).err(),
            Some(ErrorCode::InvalidContent)
        );
        assert_eq!(
            content(r#"{"type":"message","payload":{"content":"QUJD"}}"#).err(),
            Some(ErrorCode::InvalidContent)
        );
        assert_eq!(
            content(r#"{"type":"message","payload":"QUJD"}"#).err(),
            Some(ErrorCode::InvalidMessage)
        );

        assert!(matches!(
            req(
                r#"{"type":"typing","payload":{"isTyping":true,"roomId":"r","userId":"a","username":"A"}}"#
            ),
            Request::Typing(Ok(true))
        ));
        assert!(matches!(
            req(r#"{"type":"typing","payload":{"isTyping":"yes"}}"#),
            Request::Typing(Err(ErrorCode::InvalidMessage))
        ));

        let reaction =
            |payload: &str| match req(&format!(r#"{{"type":"reaction","payload":{payload}}}"#)) {
                Request::Reaction(r) => {
                    r.map(|r| (r.message_id.into_owned(), r.emoji.into_owned(), r.action))
                }
                _ => panic!("reaction"),
            };
        assert_eq!(
            reaction(r#"{"messageId":"m1","emoji":"👍","action":"remove"}"#),
            Ok(("m1".into(), "👍".into(), Some(Action::Remove)))
        );
        assert_eq!(
            reaction(r#"{"messageId":"m 1","emoji":"x","action":"add"}"#),
            Err(ErrorCode::InvalidMessage)
        );
        assert_eq!(
            reaction(r#"{"messageId":"m1","emoji":"a b","action":"add"}"#),
            Err(ErrorCode::InvalidEmoji)
        );
        assert_eq!(
            reaction(r#"{"messageId":"m1","emoji":"x","action":"toggle"}"#),
            Err(ErrorCode::InvalidMessage)
        );
        assert_eq!(
            reaction(r#"{"messageId":"m1","emoji":"x"}"#),
            Err(ErrorCode::InvalidMessage)
        );

        assert!(matches!(
            req(r#"{"type":"fileTransfer","payload":{"x":1}}"#),
            Request::FileTransfer
        ));
        assert!(matches!(req(r#"{"type":"leave"}"#), Request::Leave));
    }

    #[test]
    fn v2_requests_keep_their_rules() {
        let req = v2_request;
        assert!(matches!(
            req(r#"{"type":"message","data":{"content":"QUJD"}}"#),
            Request::Message(Ok(_))
        ));
        assert!(matches!(
            req(r#"{"type":"message","data":{"encrypted":"QUJD"}}"#),
            Request::Message(Err(ErrorCode::InvalidContent))
        ));
        assert!(matches!(
            req(r#"{"type":"message","data":7}"#),
            Request::Message(Err(ErrorCode::InvalidMessage))
        ));
        // v2 reactions take no action; legacy-only types are unknown.
        assert!(matches!(
            req(r#"{"type":"reaction","data":{"messageId":"m1","emoji":"x"}}"#),
            Request::Reaction(Ok(Reaction { action: None, .. }))
        ));
        assert!(matches!(
            req(r#"{"type":"fileTransfer","data":{}}"#),
            Request::Unknown
        ));
        assert!(matches!(
            req(r#"{"type":"join","data":{"roomId":"r","userId":"a","username":"A"}}"#),
            Request::Join(Err(ErrorCode::InvalidRoomId))
        ));
    }

    #[test]
    fn outgoing_shapes_per_dialect() {
        let text = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).unwrap()
        };
        let member = r#""userId":"alice","username":"Al\"ice""#;
        assert_eq!(
            text(&|o| write_user_joined(o, Dialect::Legacy, member)),
            r#"{"type":"userJoined","payload":{"userId":"alice","username":"Al\"ice"}}"#
        );
        assert_eq!(
            text(&|o| write_user_list(
                o,
                Dialect::Legacy,
                [member, r#""userId":"b","username":"B""#].into_iter()
            )),
            r#"{"type":"userList","payload":{"users":[{"id":"alice","name":"Al\"ice"},{"id":"b","name":"B"}]}}"#
        );
        // A name that spells the key itself stays the name.
        let Ok(Request::Join(Ok(tricky))) = parse(
            r#"{"type":"join","payload":{"roomId":"r","userId":"t","username":"\",\"username\":1"}}"#,
            legacy(),
        )
        .0
        else {
            panic!("join");
        };
        let list = text(&|o| write_user_list(o, Dialect::Legacy, [&*tricky.user_json].into_iter()));
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(
            list["payload"]["users"][0],
            serde_json::json!({"id":"t","name":"\",\"username\":1"})
        );
        assert_eq!(
            text(&|o| write_user_list(o, Dialect::Legacy, std::iter::empty())),
            r#"{"type":"userList","payload":{"users":[]}}"#
        );
        assert_eq!(
            text(&|o| write_user_left(o, Dialect::Legacy, "bob")),
            r#"{"type":"userLeft","payload":{"userId":"bob"}}"#
        );
        assert_eq!(
            text(&|o| write_user_left(o, Dialect::V2, "bob")),
            r#"{"type":"userLeft","userId":"bob"}"#
        );
        assert_eq!(
            text(&|o| write_typing(o, Dialect::Legacy, member, true)),
            r#"{"type":"typing","payload":{"userId":"alice","username":"Al\"ice","isTyping":true}}"#
        );
        let reaction = Reaction {
            message_id: "m1".into(),
            emoji: "👍".into(),
            action: Some(Action::Add),
        };
        assert_eq!(
            text(&|o| write_reaction(o, Dialect::Legacy, member, "alice", &reaction)),
            r#"{"type":"reaction","payload":{"messageId":"m1","emoji":"👍","userId":"alice","action":"add"}}"#
        );
        assert_eq!(
            text(&|o| write_legacy_message(o, "SGVsbG8=.V29ybGQ=")),
            r#"{"type":"message","payload":"SGVsbG8=.V29ybGQ="}"#
        );
        assert_eq!(
            text(&|o| write_error(o, Dialect::Legacy, ErrorCode::InvalidContent, "m", None)),
            r#"{"type":"error","payload":{"code":"INVALID_FORMAT","message":"m"}}"#
        );
        assert_eq!(
            text(&|o| write_error(o, Dialect::Legacy, ErrorCode::RateLimited, "m", Some(1500))),
            r#"{"type":"error","payload":{"code":"RATE_LIMITED","message":"m","resetTime":1500}}"#
        );
        assert_eq!(
            text(&|o| write_error(o, Dialect::V2, ErrorCode::InvalidContent, "m", Some(1))),
            r#"{"type":"error","code":"INVALID_CONTENT","message":"m"}"#
        );
        // Every frame is valid JSON.
        for t in [
            text(&|o| write_user_joined(o, Dialect::Legacy, member)),
            text(&|o| write_reaction(o, Dialect::V2, r#"{"id":"a"}"#, "a", &reaction)),
        ] {
            serde_json::from_str::<serde_json::Value>(&t).unwrap();
        }
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
            for start in [v2(), legacy()] {
                let _ = parse(&text, start);
                for kind in ["join", "message", "typing", "reaction"] {
                    for key in ["data", "payload"] {
                        let wrapped = format!("{{\"type\":\"{kind}\",\"{key}\":{text}}}");
                        let _ = parse(&wrapped, start);
                    }
                }
            }
        }
    }
}
