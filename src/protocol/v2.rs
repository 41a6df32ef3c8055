//! The v2 dialect (`PROTOCOL.md`): bodies under `data`, members as JSON
//! objects, `message` frames with a server id and a timestamp.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{object_fields, push_decimal, push_json_string, string_value};
use super::validate::{
    checked_content, checked_reaction, checked_room, checked_typing, checked_user_id,
    checked_username, is_valid_avatar,
};
use super::{Codec, ErrorCode, JoinRequest, Reaction, Request};

/// The v2 dialect's [`Codec`].
pub(super) struct V2;

impl Codec for V2 {
    const LISTS_JOINER: bool = true;
    const ECHOES_TO_SENDER: bool = true;
    const QUIET_OUTSIDE_ROOM: bool = false;

    fn request<'a>(kind: &str, body: Option<&'a RawValue>) -> Request<'a> {
        match kind {
            "ping" => Request::Ping,
            "join" => Request::Join(parse_join(body)),
            "leave" => Request::Leave,
            "message" => Request::Message(parse_content(body)),
            "typing" => Request::Typing(checked_typing(body)),
            "reaction" => Request::Reaction(parse_reaction(body)),
            _ => Request::Unknown,
        }
    }

    fn error_code(code: ErrorCode) -> &'static str {
        code.as_str()
    }

    fn error_text(code: ErrorCode) -> &'static str {
        code.message()
    }

    /// `{"type":"error","code":..,"message":..}`; v2 sends no reset time.
    fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str, _reset_ms: Option<u64>) {
        write_error_json(out, code.as_str(), message);
    }

    fn write_user_joined(out: &mut Vec<u8>, member: &str) {
        out.extend_from_slice(br#"{"type":"userJoined","user":"#);
        out.extend_from_slice(member.as_bytes());
        out.push(b'}');
    }

    fn write_user_left(out: &mut Vec<u8>, user_id: &str) {
        out.extend_from_slice(br#"{"type":"userLeft","userId":""#);
        out.extend_from_slice(user_id.as_bytes());
        out.extend_from_slice(br#""}"#);
    }

    fn write_user_list<'m>(out: &mut Vec<u8>, members: impl Iterator<Item = &'m str>) {
        out.extend_from_slice(br#"{"type":"userList","users":["#);
        for (i, member) in members.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(member.as_bytes());
        }
        out.extend_from_slice(b"]}");
    }

    /// `userTyping` with the member.
    fn write_typing(out: &mut Vec<u8>, member: &str, is_typing: bool) {
        out.extend_from_slice(br#"{"type":"userTyping","user":"#);
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(if is_typing {
            br#","isTyping":true}"#.as_slice()
        } else {
            br#","isTyping":false}"#.as_slice()
        });
    }

    /// `reaction` with the member (the id is inside it).
    fn write_reaction(out: &mut Vec<u8>, member: &str, _user_id: &str, reaction: &Reaction<'_>) {
        out.extend_from_slice(br#"{"type":"reaction","messageId":""#);
        out.extend_from_slice(reaction.message_id.as_bytes());
        out.extend_from_slice(br#"","user":"#);
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(br#","emoji":"#);
        push_json_string(out, &reaction.emoji);
        out.push(b'}');
    }
}

// ------------------------------------------------------------------ requests

#[derive(Deserialize)]
struct JoinFields<'a> {
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
    /// Present even when `null` (which is not a valid `since`).
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
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

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
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
    // Checked after the room and the user; a bad value is no join.
    let since = crate::history::parse_since(fields.since).map_err(|_| ErrorCode::InvalidMessage)?;
    Ok(JoinRequest {
        room: room.into_owned(),
        user_id: id.into_owned(),
        user_json: String::from_utf8(json).expect("JSON built from UTF-8 strings"),
        since,
    })
}

/// The content of a `message` frame in the exact shape clients send,
/// `{"type":"message","data":{"content":"…"}}` with valid content: read
/// without the general parser, since it is most of what a relay reads.
/// Valid content is base64 and dots, so it holds no quote or escape, and
/// the frame is then exactly that object. `None` for anything else (other
/// spacing, order, fields, or content that is not valid), which the
/// general parser answers.
pub(super) fn canonical_message(text: &str) -> Option<&str> {
    let content = text
        .strip_prefix(r#"{"type":"message","data":{"content":""#)?
        .strip_suffix(r#""}}"#)?;
    super::is_valid_content(content).then_some(content)
}

/// A message's `content`. A body that is not an object is `INVALID_MESSAGE`.
fn parse_content(body: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    let fields: MessageFields<'_> = object_fields(body).ok_or(ErrorCode::InvalidMessage)?;
    checked_content(fields.content)
}

/// A reaction: a message id and an emoji, no action.
fn parse_reaction(body: Option<&RawValue>) -> Result<Reaction<'_>, ErrorCode> {
    let (message_id, emoji, _) = checked_reaction(body)?;
    Ok(Reaction {
        message_id,
        emoji,
        action: None,
    })
}

// ------------------------------------------------------------ outgoing frames

/// `{"type":"error","code":..,"message":..}` as JSON text: v2's error frame,
/// and the body of the HTTP side's error answers. Both strings are escaped:
/// the codes are constants today, but valid JSON must not depend on that
/// (found by the `protocol` fuzz target with a client's `type` as code).
pub fn write_error_json(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":");
    push_json_string(out, code);
    out.extend_from_slice(b",\"message\":");
    push_json_string(out, message);
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
    crate::clock::push_rfc3339_millis(out, unix_millis);
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::{parse, v2};

    fn v2_request(text: &str) -> Request<'_> {
        parse(text, v2()).0.unwrap()
    }

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
    fn join_since() {
        use crate::history::Since;
        let since = |v: &str| {
            let text = format!(r#"{{"room":"r","user":{{"id":"a","name":"A"}}{v}}}"#);
            let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
            parse_join(Some(&raw)).map(|j| j.since)
        };
        assert_eq!(since(""), Ok(None));
        assert_eq!(since(r#","since":"""#), Ok(Some(Since::All)));
        let id = Since::from_text("abc-12").unwrap();
        assert_eq!(since(r#","since":"abc-12""#), Ok(Some(id)));
        for bad in ["null", "1", "{}", "[]", "true", r#""a b""#, r#""a.b""#] {
            let got = since(&format!(r#","since":{bad}"#));
            assert_eq!(got, Err(ErrorCode::InvalidMessage), "{bad}");
        }
        let long = format!(r#","since":"{}""#, "x".repeat(65));
        assert_eq!(since(&long), Err(ErrorCode::InvalidMessage));
        // The room and the user are checked first.
        let text = r#"{"room":"a b","user":{"id":"a","name":"A"},"since":7}"#;
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        assert_eq!(parse_join(Some(&raw)).err(), Some(ErrorCode::InvalidRoomId));
    }
}
