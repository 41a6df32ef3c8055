//! The contract's error codes, their texts, and which of them are strikes.
//!
//! The texts here are `PROTOCOL.md`'s; a dialect that names its fields
//! otherwise overrides some of them in its own file (`Codec::error_text`).

use super::{Codec, Dialect};

/// Error codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    InvalidJson,
    /// An unknown type, or a body of the wrong shape.
    InvalidMessage,
    /// The room name breaks the id rule.
    InvalidRoomId,
    /// The user id breaks the id rule.
    InvalidUserId,
    /// The user name breaks the name rule.
    InvalidUsername,
    /// The avatar breaks the avatar rule.
    InvalidAvatar,
    /// The ciphertext breaks the content rule.
    InvalidContent,
    /// The emoji breaks the emoji rule.
    InvalidEmoji,
    /// Another member of the room has that user id.
    UserIdTaken,
    /// The room holds its maximum number of members.
    RoomFull,
    /// The relay holds its maximum number of rooms.
    TooManyRooms,
    /// The request needs a room and the connection has joined none.
    NotInRoom,
    /// The connection's rate limit is reached.
    RateLimited,
    /// The frame exceeds the size limit.
    MessageTooLarge,
}

impl ErrorCode {
    /// The code as `PROTOCOL.md` spells it.
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

    /// The code as `dialect` sends it (legacy clients know a bad ciphertext
    /// as `INVALID_FORMAT`).
    pub fn wire(self, dialect: Dialect) -> &'static str {
        per_dialect!(dialect, |D| D::error_code(self))
    }

    /// The human-readable text sent with the code, naming the fields of
    /// `dialect`.
    pub fn message_in(self, dialect: Dialect) -> &'static str {
        per_dialect!(dialect, |D| D::error_text(self))
    }

    /// The human-readable text sent with the code (`PROTOCOL.md`'s field
    /// names).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts_per_dialect() {
        let code = ErrorCode::InvalidContent;
        assert_eq!(code.wire(Dialect::V2), "INVALID_CONTENT");
        assert_eq!(code.wire(Dialect::Legacy), "INVALID_FORMAT");
        assert_eq!(ErrorCode::RoomFull.wire(Dialect::Legacy), "ROOM_FULL");
        assert_eq!(code.message_in(Dialect::V2), code.message());
        assert!(code.message_in(Dialect::Legacy).starts_with("encrypted "));
        assert_eq!(
            ErrorCode::InvalidRoomId.message_in(Dialect::Legacy),
            "Invalid room ID format"
        );
        assert_eq!(
            ErrorCode::RoomFull.message_in(Dialect::Legacy),
            ErrorCode::RoomFull.message()
        );
        assert!(ErrorCode::InvalidJson.is_strike() && !ErrorCode::RoomFull.is_strike());
    }
}
