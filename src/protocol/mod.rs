//! The wire format of the chat protocol: a client's text frame in, a typed
//! [`Request`] or an [`ErrorCode`] out; and the JSON text of every frame the
//! relay sends.
//!
//! The relay speaks two dialects ([`Dialect`]): `PROTOCOL.md`'s (`v2.rs`) and
//! the original relay's (`legacy.rs`, `LEGACY-DIALECT.md`). Each dialect's
//! file holds both its parsing and its encoding, as one implementation of the
//! private `Codec` trait; the entry points here pick the implementation once,
//! with one `match` on the dialect (the `per_dialect!` macro). A third dialect
//! is a new file, a new [`Dialect`] variant and a line in that macro.
//!
//! | file          | concern                                                  |
//! |---------------|----------------------------------------------------------|
//! | `mod.rs`      | [`Request`], [`Dialect`], [`DialectState`], entry points  |
//! | `error.rs`    | [`ErrorCode`] and its texts                              |
//! | `validate.rs` | the contract's rules for ids, names, avatars, emoji, content |
//! | `json.rs`     | JSON helpers shared by both dialects (and the HTTP side)  |
//! | `v2.rs`       | the v2 dialect: its bodies and its frames                |
//! | `legacy.rs`   | the legacy dialect: its bodies and its frames            |
//!
//! The JSON written here is a frame's payload only; WebSocket framing is
//! [`crate::frame`]'s.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Runs `$body` with `$codec` naming the [`Codec`] of `$dialect`: the one
/// place that maps a [`Dialect`] to its file.
macro_rules! per_dialect {
    ($dialect:expr, |$codec:ident| $body:expr) => {
        match $dialect {
            $crate::protocol::Dialect::V2 => {
                type $codec = $crate::protocol::v2::V2;
                $body
            }
            $crate::protocol::Dialect::Legacy => {
                type $codec = $crate::protocol::legacy::Legacy;
                $body
            }
        }
    };
}

mod error;
mod json;
mod legacy;
mod v2;
mod validate;

pub use error::ErrorCode;
pub use json::{object_fields, push_decimal, push_json_string, string_value};
pub use legacy::{parse_legacy_join, write_legacy_message};
pub use v2::{parse_join, write_error_json, write_message};
pub use validate::{
    is_valid_avatar, is_valid_content, is_valid_emoji, is_valid_id, is_valid_username,
};

/// What one dialect defines: how its request bodies read, how its frames are
/// written, and how its rooms behave. Each dialect's file implements it on a
/// unit type; [`per_dialect!`] picks the implementation.
trait Codec {
    /// Whether the joiner's own entry is in the `userList` it gets.
    const LISTS_JOINER: bool;
    /// Whether `message` and `reaction` go back to their sender too.
    const ECHOES_TO_SENDER: bool;
    /// Whether `leave` and `typing` outside a room are ignored rather than
    /// answered with `NOT_IN_ROOM`.
    const QUIET_OUTSIDE_ROOM: bool;

    /// The typed request for a `type` and its body (`data` or `payload`).
    fn request<'a>(kind: &str, body: Option<&'a RawValue>) -> Request<'a>;
    /// The code as this dialect sends it.
    fn error_code(code: ErrorCode) -> &'static str;
    /// The human-readable text sent with the code, naming this dialect's fields.
    fn error_text(code: ErrorCode) -> &'static str;
    /// An error reply; `reset_ms` is the rate limit's reset, where the dialect
    /// sends one.
    fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str, reset_ms: Option<u64>);
    /// `userJoined`, with the joiner's stored JSON.
    fn write_user_joined(out: &mut Vec<u8>, member: &str);
    /// `userLeft`, with the leaver's id.
    fn write_user_left(out: &mut Vec<u8>, user_id: &str);
    /// `userList`, with the members' stored JSON in join order.
    fn write_user_list<'m>(out: &mut Vec<u8>, members: impl Iterator<Item = &'m str>);
    /// Typing, with the typist's stored JSON.
    fn write_typing(out: &mut Vec<u8>, member: &str, is_typing: bool);
    /// A relayed reaction, with the reactor's stored JSON and id.
    fn write_reaction(out: &mut Vec<u8>, member: &str, user_id: &str, reaction: &Reaction<'_>);
}

// ------------------------------------------------------------------ dialects

/// The two message shapes the relay speaks. `V2` is `PROTOCOL.md`'s (`data`);
/// `Legacy` is the original relay's (`payload`, `LEGACY-DIALECT.md`). Rooms
/// of the two are separate namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `PROTOCOL.md`: bodies under `data`, served on `/ws`.
    V2,
    /// `LEGACY-DIALECT.md`: bodies under `payload`, served on `/`.
    Legacy,
}

impl Dialect {
    /// Whether the joiner's own entry is in the `userList` it gets.
    pub fn lists_joiner(self) -> bool {
        per_dialect!(self, |D| D::LISTS_JOINER)
    }

    /// Whether `message` and `reaction` go back to their sender too.
    pub fn echoes_to_sender(self) -> bool {
        per_dialect!(self, |D| D::ECHOES_TO_SENDER)
    }

    /// Whether `leave` and `typing` outside a room are ignored rather than
    /// answered with `NOT_IN_ROOM`.
    pub fn quiet_outside_room(self) -> bool {
        per_dialect!(self, |D| D::QUIET_OUTSIDE_ROOM)
    }
}

/// Which dialect a connection's frames are parsed in: the one its upgrade
/// path started it in, until the first frame whose `data` or `payload` is an
/// object fixes the dialect for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialectState {
    /// The dialect frames are parsed in now.
    pub dialect: Dialect,
    /// Whether a frame has fixed `dialect` for the rest of the connection.
    pub fixed: bool,
}

impl DialectState {
    /// A connection that has not sent a body yet.
    pub fn starting(dialect: Dialect) -> DialectState {
        DialectState {
            dialect,
            fixed: false,
        }
    }
}

// ------------------------------------------------------------------ requests

/// A legacy reaction's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The reaction is added.
    Add,
    /// The reaction is taken back.
    Remove,
}

impl Action {
    /// The action as the wire spells it.
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
    /// The id of the message reacted to.
    pub message_id: Cow<'a, str>,
    /// The emoji, as the client sent it.
    pub emoji: Cow<'a, str>,
    /// Legacy only: whether the reaction is added or removed.
    pub action: Option<Action>,
}

/// A validated `join`: the room name and the member's identity.
#[derive(Debug)]
pub struct JoinRequest {
    /// The room's name.
    pub room: String,
    /// The member's id, unique in the room.
    pub user_id: String,
    /// The member as the relay embeds it in frames: v2
    /// `{"id":..,"name":..,"avatar":..}`, legacy `"userId":..,"username":..`
    /// (the members of a payload object, which `legacy.rs` turns into a
    /// `userList` entry).
    pub user_json: String,
    /// v2 only: what the joiner asks to be replayed (`data.since`,
    /// `PROTOCOL.md` section 7); `None` when absent and always in legacy.
    pub since: Option<crate::history::Since>,
}

/// A client frame of either dialect, its body checked. A body's error is kept
/// rather than returned at once: the contract reports budget and membership
/// errors before shape errors, and the session checks those first.
#[derive(Debug)]
pub enum Request<'a> {
    /// `ping`: answered with `pong`.
    Ping,
    /// `join`: enter a room.
    Join(Result<JoinRequest, ErrorCode>),
    /// `leave`: leave the room.
    Leave,
    /// The ciphertext (`content` or `encrypted`).
    Message(Result<Cow<'a, str>, ErrorCode>),
    /// `typing`: whether the member is typing.
    Typing(Result<bool, ErrorCode>),
    /// `reaction`: an emoji on a message.
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

/// Whether a raw value is a JSON object.
fn is_object(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get().starts_with('{'))
}

/// `INVALID_JSON` for malformed JSON, `INVALID_MESSAGE` for well-formed JSON
/// that is not a frame.
fn envelope_error(text: &str) -> ErrorCode {
    match serde_json::from_str::<IgnoredAny>(text) {
        Ok(_) => ErrorCode::InvalidMessage,
        Err(_) => ErrorCode::InvalidJson,
    }
}

/// Parses a client frame in the connection's dialect, fixing the dialect
/// when this is the first frame with an object body (`data` fixes v2,
/// `payload` legacy; with both, the current one stays). `INVALID_JSON` for
/// malformed JSON; `INVALID_MESSAGE` for anything but an object with a string
/// `type`.
pub fn parse_request<'a>(
    text: &'a str,
    state: &mut DialectState,
) -> Result<Request<'a>, ErrorCode> {
    // A connection fixed to legacy answers `data` bodies differently.
    if !(state.fixed && state.dialect == Dialect::Legacy)
        && let Some(content) = v2::canonical_message(text)
    {
        state.fixed = true;
        state.dialect = Dialect::V2;
        return Ok(Request::Message(Ok(Cow::Borrowed(content))));
    }
    parse_request_in_full(text, state)
}

/// [`parse_request`] without its shortcut for the commonest frame: every
/// frame through the general parser. The shortcut must answer exactly as
/// this does (a unit test and the `protocol` fuzz target compare them).
#[doc(hidden)]
pub fn parse_request_in_full<'a>(
    text: &'a str,
    state: &mut DialectState,
) -> Result<Request<'a>, ErrorCode> {
    // serde also reads a struct from an array; only objects are frames.
    if !text.trim_start().starts_with('{') {
        return Err(envelope_error(text));
    }
    let Ok(env) = serde_json::from_str::<Envelope<'_>>(text) else {
        // Tell malformed JSON from well-formed JSON of the wrong shape.
        return Err(envelope_error(text));
    };
    let (data, payload) = (is_object(env.data), is_object(env.payload));
    if !state.fixed && (data || payload) {
        state.fixed = true;
        if data != payload {
            state.dialect = if data { Dialect::V2 } else { Dialect::Legacy };
        }
    }
    let (body, foreign) = match state.dialect {
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
    Ok(per_dialect!(state.dialect, |D| D::request(&kind, body)))
}

// ------------------------------------------------------------ outgoing frames

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
    per_dialect!(dialect, |D| D::write_error(out, code, message, reset_ms))
}

/// `userJoined` for the others. `member` is the joiner's JSON in the room's
/// dialect ([`JoinRequest::user_json`]).
pub fn write_user_joined(out: &mut Vec<u8>, dialect: Dialect, member: &str) {
    per_dialect!(dialect, |D| D::write_user_joined(out, member))
}

/// `userLeft` for the others.
pub fn write_user_left(out: &mut Vec<u8>, dialect: Dialect, user_id: &str) {
    per_dialect!(dialect, |D| D::write_user_left(out, user_id))
}

/// `userList`: the members' JSON in join order (the caller leaves the joiner
/// out where [`Dialect::lists_joiner`] says so). Legacy entries are exactly
/// `{"id":..,"name":..}`.
pub fn write_user_list<'m>(
    out: &mut Vec<u8>,
    dialect: Dialect,
    members: impl Iterator<Item = &'m str>,
) {
    per_dialect!(dialect, |D| D::write_user_list(out, members))
}

/// Typing, for the others: v2 `userTyping` with the member, legacy `typing`
/// with `userId`, `username` and `isTyping` in the payload.
pub fn write_typing(out: &mut Vec<u8>, dialect: Dialect, member: &str, is_typing: bool) {
    per_dialect!(dialect, |D| D::write_typing(out, member, is_typing))
}

/// A relayed reaction: v2 with the member, legacy with `userId` and `action`.
pub fn write_reaction(
    out: &mut Vec<u8>,
    dialect: Dialect,
    member: &str,
    user_id: &str,
    reaction: &Reaction<'_>,
) {
    per_dialect!(dialect, |D| D::write_reaction(
        out, member, user_id, reaction
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn v2() -> DialectState {
        DialectState::starting(Dialect::V2)
    }

    pub(crate) fn legacy() -> DialectState {
        DialectState::starting(Dialect::Legacy)
    }

    /// Parses `text` on a connection in `state`.
    pub(crate) fn parse(
        text: &str,
        mut state: DialectState,
    ) -> (Result<Request<'_>, ErrorCode>, DialectState) {
        let req = parse_request(text, &mut state);
        (req, state)
    }

    /// What a parse gave, comparable (`Request` holds borrowed strings).
    fn outcome(text: &str, mut state: DialectState, full: bool) -> String {
        let req = if full {
            parse_request_in_full(text, &mut state)
        } else {
            parse_request(text, &mut state)
        };
        format!("{req:?} {state:?}")
    }

    #[test]
    fn the_message_shortcut_answers_as_the_general_parser() {
        let contents = [
            "QUJD",
            "QUJD.ZGVm",
            "a-_b.QQ==",
            "",
            "QUJ",
            "QQ=",
            "a+b-",
            "Q\\UJD",
            "Q\"",
            "\\u0041BCD",
            "a.b.c.d.e.f.g.hh",
            "aa.bb.cc.dd.ee.ff.gg.hh.ii",
            "QUJD.",
            ".QUJD",
            "QU JD",
            "é",
        ];
        let shapes = [
            r#"{"type":"message","data":{"content":"C"}}"#,
            r#"{"type":"message","data":{"content":"C"}} "#,
            r#"{"type":"message","data":{"content":"C"},"payload":{}}"#,
            r#"{"type":"message","data":{"content":"C","x":1}}"#,
            r#"{"type":"message","data":{"content":"C"}}}"#,
            r#"{"type":"message","data":{"content":"C"}"#,
            r#"{"type":"message", "data":{"content":"C"}}"#,
        ];
        let states = [
            v2(),
            legacy(),
            DialectState {
                dialect: Dialect::V2,
                fixed: true,
            },
            DialectState {
                dialect: Dialect::Legacy,
                fixed: true,
            },
        ];
        let mut shortcuts = 0;
        for shape in shapes {
            for content in contents {
                let text = shape.replace('C', content);
                for state in states {
                    let legacy_fixed = state.fixed && state.dialect == Dialect::Legacy;
                    if v2::canonical_message(&text).is_some() && !legacy_fixed {
                        shortcuts += 1;
                    }
                    assert_eq!(
                        outcome(&text, state, false),
                        outcome(&text, state, true),
                        "{text}"
                    );
                }
            }
        }
        // The shortcut was taken: the first shape, the four valid contents,
        // every state but a connection fixed to legacy.
        assert_eq!(shortcuts, 4 * 3);
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
        let fixed = DialectState {
            dialect: Dialect::Legacy,
            fixed: true,
        };
        let (req, after) = parse(r#"{"type":"ping","data":{}}"#, fixed);
        assert!(matches!(req, Ok(Request::Unknown)));
        assert_eq!(after, fixed);
        let (req, _) = parse(r#"{"type":"typing","payload":{"isTyping":false}}"#, fixed);
        assert!(matches!(req, Ok(Request::Typing(Ok(false)))));
        let fixed_v2 = DialectState {
            dialect: Dialect::V2,
            fixed: true,
        };
        let (req, _) = parse(r#"{"type":"typing","payload":{"isTyping":true}}"#, fixed_v2);
        assert!(matches!(req, Ok(Request::Unknown)));
    }

    #[test]
    fn dialects_differ_in_behaviour() {
        assert!(Dialect::V2.lists_joiner() && !Dialect::Legacy.lists_joiner());
        assert!(Dialect::V2.echoes_to_sender() && !Dialect::Legacy.echoes_to_sender());
        assert!(!Dialect::V2.quiet_outside_room() && Dialect::Legacy.quiet_outside_room());
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
