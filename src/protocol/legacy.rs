//! The legacy dialect (the original relay's, `LEGACY-DIALECT.md`): bodies
//! under `payload`, members stored as the inside of a payload object,
//! `message` frames carrying the ciphertext alone, reactions with an
//! `action`, and the original server's error texts.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{object_fields, push_decimal, push_json_string, string_value};
use super::validate::{
    checked_content, checked_reaction, checked_room, checked_typing, checked_user_id,
    checked_username,
};
use super::{Action, Codec, ErrorCode, JoinRequest, Reaction, Request};

/// The legacy dialect's [`Codec`].
pub(super) struct Legacy;

impl Codec for Legacy {
    const LISTS_JOINER: bool = false;
    const ECHOES_TO_SENDER: bool = false;
    const QUIET_OUTSIDE_ROOM: bool = true;

    fn request<'a>(kind: &str, body: Option<&'a RawValue>) -> Request<'a> {
        match kind {
            "ping" => Request::Ping,
            "join" => Request::Join(parse_legacy_join(body)),
            "leave" => Request::Leave,
            "message" => Request::Message(parse_content(body)),
            "typing" => Request::Typing(checked_typing(body)),
            "reaction" => Request::Reaction(parse_reaction(body)),
            "fileTransfer" => Request::FileTransfer,
            _ => Request::Unknown,
        }
    }

    /// Legacy clients know a bad ciphertext as `INVALID_FORMAT`.
    fn error_code(code: ErrorCode) -> &'static str {
        match code {
            ErrorCode::InvalidContent => "INVALID_FORMAT",
            other => other.as_str(),
        }
    }

    /// The original server's texts (LEGACY-DIALECT.md section 7) where its
    /// field names differ.
    fn error_text(code: ErrorCode) -> &'static str {
        match code {
            ErrorCode::InvalidRoomId => "Invalid room ID format",
            ErrorCode::InvalidUserId => "userId must be 1-64 characters of A-Z a-z 0-9 _ -",
            ErrorCode::InvalidUsername => {
                "username must be 1-32 characters, not only whitespace, without control characters"
            }
            ErrorCode::InvalidContent => "encrypted must be 1-8 base64 segments joined by '.'",
            other => other.message(),
        }
    }

    /// `{"type":"error","payload":{"code":..,"message":..}}`, plus
    /// `resetTime` (milliseconds) when `reset_ms` is given.
    fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str, reset_ms: Option<u64>) {
        out.extend_from_slice(b"{\"type\":\"error\",\"payload\":{\"code\":\"");
        out.extend_from_slice(Self::error_code(code).as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        push_json_string(out, message);
        if let Some(ms) = reset_ms {
            out.extend_from_slice(b",\"resetTime\":");
            push_decimal(out, ms);
        }
        out.extend_from_slice(b"}}");
    }

    fn write_user_joined(out: &mut Vec<u8>, member: &str) {
        out.extend_from_slice(br#"{"type":"userJoined","payload":{"#);
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(b"}}");
    }

    fn write_user_left(out: &mut Vec<u8>, user_id: &str) {
        out.extend_from_slice(br#"{"type":"userLeft","payload":{"userId":""#);
        out.extend_from_slice(user_id.as_bytes());
        out.extend_from_slice(br#""}}"#);
    }

    /// Entries are exactly `{"id":..,"name":..}`.
    fn write_user_list<'m>(out: &mut Vec<u8>, members: impl Iterator<Item = &'m str>) {
        out.extend_from_slice(br#"{"type":"userList","payload":{"users":["#);
        for (i, member) in members.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            list_entry(out, member);
        }
        out.extend_from_slice(b"]}}");
    }

    /// `typing` with `userId`, `username` and `isTyping` in the payload.
    fn write_typing(out: &mut Vec<u8>, member: &str, is_typing: bool) {
        out.extend_from_slice(br#"{"type":"typing","payload":{"#);
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(if is_typing {
            br#","isTyping":true}}"#.as_slice()
        } else {
            br#","isTyping":false}}"#.as_slice()
        });
    }

    /// `reaction` with `userId` and `action` in the payload.
    fn write_reaction(out: &mut Vec<u8>, _member: &str, user_id: &str, reaction: &Reaction<'_>) {
        out.extend_from_slice(br#"{"type":"reaction","payload":{"messageId":""#);
        out.extend_from_slice(reaction.message_id.as_bytes());
        out.extend_from_slice(br#"","emoji":"#);
        push_json_string(out, &reaction.emoji);
        out.extend_from_slice(br#","userId":""#);
        out.extend_from_slice(user_id.as_bytes());
        out.extend_from_slice(br#"","action":""#);
        out.extend_from_slice(reaction.action.unwrap_or(Action::Add).as_str().as_bytes());
        out.extend_from_slice(br#""}}"#);
    }
}

// ------------------------------------------------------------------ requests

/// A legacy `join` payload: `{roomId, userId, username}`.
#[derive(Deserialize)]
struct JoinFields<'a> {
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
    encrypted: Option<&'a RawValue>,
}

/// Start of a legacy member's JSON, up to its id.
const ID_KEY: &str = "\"userId\":\"";
/// Between a legacy member's id and its name.
const NAME_KEY: &str = "\",\"username\":";

/// Validates a legacy `join` payload: `roomId` is the room, `userId` and
/// `username` the user's id and name, under `PROTOCOL.md`'s rules (there is
/// no avatar).
pub fn parse_legacy_join(payload: Option<&RawValue>) -> Result<JoinRequest, ErrorCode> {
    let fields: JoinFields<'_> = object_fields(payload).ok_or(ErrorCode::InvalidMessage)?;
    let room = checked_room(fields.room_id)?;
    let id = checked_user_id(fields.user_id)?;
    let name = checked_username(fields.username)?;
    let mut json = Vec::with_capacity(32 + id.len() + name.len());
    json.extend_from_slice(ID_KEY.as_bytes());
    json.extend_from_slice(id.as_bytes());
    json.extend_from_slice(NAME_KEY.as_bytes());
    push_json_string(&mut json, &name);
    Ok(JoinRequest {
        room: room.into_owned(),
        user_id: id.into_owned(),
        user_json: String::from_utf8(json).expect("JSON built from UTF-8 strings"),
        since: None,
    })
}

/// A message's `encrypted` ciphertext. A payload that is not an object is
/// `INVALID_MESSAGE`; a bad ciphertext `INVALID_CONTENT`, which these
/// clients see as `INVALID_FORMAT`.
fn parse_content(body: Option<&RawValue>) -> Result<Cow<'_, str>, ErrorCode> {
    let fields: MessageFields<'_> = object_fields(body).ok_or(ErrorCode::InvalidMessage)?;
    checked_content(fields.encrypted)
}

/// A reaction: a message id, an emoji and an `action` of `add` or `remove`
/// (`INVALID_MESSAGE` otherwise).
fn parse_reaction(body: Option<&RawValue>) -> Result<Reaction<'_>, ErrorCode> {
    let (message_id, emoji, action) = checked_reaction(body)?;
    let action = match action.and_then(string_value).as_deref() {
        Some("add") => Action::Add,
        Some("remove") => Action::Remove,
        _ => return Err(ErrorCode::InvalidMessage),
    };
    Ok(Reaction {
        message_id,
        emoji,
        action: Some(action),
    })
}

// ------------------------------------------------------------ outgoing frames

/// `{"id":..,"name":..}` from a legacy member's `"userId":..,"username":..`.
/// The id holds no quote or escape: it ends at the first quote, and the
/// name's JSON follows the fixed key after it.
fn list_entry(out: &mut Vec<u8>, member: &str) {
    let rest = member.strip_prefix(ID_KEY).unwrap_or(member);
    let id_end = rest.find('"').unwrap_or(rest.len());
    let id = &rest[..id_end];
    let name = rest
        .get(id_end + NAME_KEY.len()..)
        .filter(|n| !n.is_empty())
        .unwrap_or("null");
    out.extend_from_slice(br#"{"id":""#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#"","name":"#);
    out.extend_from_slice(name.as_bytes());
    out.push(b'}');
}

/// A relayed legacy `message`: the ciphertext alone, as the payload. (It
/// passed the content rule, so it needs no escaping.)
pub fn write_legacy_message(out: &mut Vec<u8>, content: &str) {
    out.extend_from_slice(br#"{"type":"message","payload":""#);
    out.extend_from_slice(content.as_bytes());
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::{legacy, parse};

    fn legacy_request(text: &str) -> Request<'_> {
        parse(text, legacy()).0.unwrap()
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
}
