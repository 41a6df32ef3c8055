//! What a retained frame looks like: one complete, unmasked WebSocket text
//! frame holding a v2 `message` or `reaction` exactly as the relay writes
//! them. [`fast_kind`] and [`message_id`] look at the fixed start only (they
//! run for every retained frame and every id lookup); [`check_frame`]
//! checks everything (for frames that come back from a restart).

use std::borrow::Cow;

use serde::Deserialize;

use crate::protocol::{
    is_valid_avatar, is_valid_content, is_valid_emoji, is_valid_id, is_valid_username,
};

/// Largest frame retention accepts back from a restart: the largest
/// configurable message with room for the member and the envelope.
pub const FRAME_MAX: usize = crate::config::MESSAGE_SIZE_CAP as usize + 4096;

/// How a relayed `message` starts (the relay's writer puts `id` first).
const MESSAGE_START: &[u8] = br#"{"type":"message","id":""#;
/// How a relayed `reaction` starts.
const REACTION_START: &[u8] = br#"{"type":"reaction","messageId":""#;

/// The two kinds of retained frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `message`, with an `id` of its own.
    Message,
    /// A `reaction` to a message (it has no id of its own).
    Reaction,
}

/// The payload of `frame` if it is exactly one complete, unmasked, final
/// text frame whose length is written in its shortest form.
pub fn text_payload(frame: &[u8]) -> Option<&[u8]> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b0 != 0x81 || b1 & 0x80 != 0 {
        return None;
    }
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let (n, rest) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*n));
            if len < 126 {
                return None;
            }
            (len, rest)
        }
        127 => {
            let (n, rest) = rest.split_first_chunk::<8>()?;
            let len = u64::from_be_bytes(*n);
            if len <= 0xFFFF || len >> 63 != 0 {
                return None;
            }
            (usize::try_from(len).ok()?, rest)
        }
        n => (usize::from(n), rest),
    };
    (rest.len() == len).then_some(rest)
}

/// The kind of a frame the relay built, from its first bytes only; `None`
/// for anything retention does not keep (typing, membership, legacy frames).
#[inline]
pub fn fast_kind(frame: &[u8]) -> Option<Kind> {
    let payload = text_payload(frame)?;
    if payload.starts_with(MESSAGE_START) {
        Some(Kind::Message)
    } else if payload.starts_with(REACTION_START) {
        Some(Kind::Reaction)
    } else {
        None
    }
}

/// The `id` of a relayed `message` frame, read from its fixed place.
pub fn message_id(frame: &[u8]) -> Option<&[u8]> {
    let rest = text_payload(frame)?.strip_prefix(MESSAGE_START)?;
    let end = rest.iter().take(65).position(|&b| b == b'"')?;
    Some(&rest[..end])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserShape<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    avatar: Option<Cow<'a, str>>,
}

impl UserShape<'_> {
    fn is_valid(&self) -> bool {
        is_valid_id(&self.id)
            && is_valid_username(&self.name)
            && self.avatar.as_deref().is_none_or(is_valid_avatar)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageShape<'a> {
    #[serde(rename = "type")]
    _type: IgnoredStr,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    user: UserShape<'a>,
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReactionShape<'a> {
    #[serde(rename = "type")]
    _type: IgnoredStr,
    #[serde(borrow, rename = "messageId")]
    message_id: Cow<'a, str>,
    #[serde(borrow)]
    user: UserShape<'a>,
    #[serde(borrow)]
    emoji: Cow<'a, str>,
}

/// A string field whose value was already checked by the fixed start.
struct IgnoredStr;

impl<'de> Deserialize<'de> for IgnoredStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _: Cow<'de, str> = Deserialize::deserialize(d)?;
        Ok(IgnoredStr)
    }
}

/// A millisecond RFC 3339 UTC time as the relay writes it:
/// `2026-01-06T12:00:00.123Z`.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Checks that `frame` is a frame the relay could have retained: one
/// complete text frame holding a v2 `message` (with a valid id, member,
/// content and timestamp) or `reaction` (valid message id, member, emoji),
/// with no other fields, starting the way the relay's writers start. Never
/// panics; allocates at most a copy of the strings in the frame.
pub fn check_frame(frame: &[u8]) -> Option<Kind> {
    if frame.len() > FRAME_MAX {
        return None;
    }
    let kind = fast_kind(frame)?;
    let payload = text_payload(frame)?;
    let ok = match kind {
        Kind::Message => {
            let m: MessageShape<'_> = serde_json::from_slice(payload).ok()?;
            // The id read from its fixed place is the id (no escapes).
            message_id(frame) == Some(m.id.as_bytes())
                && is_valid_id(&m.id)
                && m.user.is_valid()
                && is_valid_content(&m.content)
                && is_timestamp(&m.timestamp)
        }
        Kind::Reaction => {
            let r: ReactionShape<'_> = serde_json::from_slice(payload).ok()?;
            is_valid_id(&r.message_id) && r.user.is_valid() && is_valid_emoji(&r.emoji)
        }
    };
    ok.then_some(kind)
}

/// Appends the JSON text of the frame that ends a replay:
/// `{"type":"history","count":N,"complete":B}`.
pub fn write_history_json(out: &mut Vec<u8>, count: u32, complete: bool) {
    out.extend_from_slice(br#"{"type":"history","count":"#);
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(if complete {
        br#","complete":true}"#.as_slice()
    } else {
        br#","complete":false}"#.as_slice()
    });
}
