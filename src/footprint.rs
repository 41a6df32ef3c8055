//! The sizes of the per-connection types, for the benchmark's memory
//! accounting (`whisper-bench --only memory`) and the README's table: what
//! `size_of` says of each, beside what the allocator is seen to hold.

use std::mem::size_of;

use async_tungstenite::WebSocketStream;

use crate::conns::Conn;
use crate::outbound::outbox::Outbox;
use crate::session::Session;
use crate::ws_reader::WsIo;

/// `(item, bytes)` for every per-connection type whose size the code fixes.
pub fn layout() -> Vec<(&'static str, usize)> {
    vec![
        ("Session (in the task)", size_of::<Session>()),
        ("WebSocketStream<WsIo>", size_of::<WebSocketStream<WsIo>>()),
        ("Conn slot", size_of::<Option<Conn>>()),
        ("Outbox slot", size_of::<Outbox>()),
        ("seat slot", crate::hub::MEMBER_RECORD_BYTES),
        ("room record", crate::hub::ROOM_RECORD_BYTES),
    ]
}
