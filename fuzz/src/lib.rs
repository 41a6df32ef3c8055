//! The relay's own modules, compiled into this crate unchanged (`#[path]`), so
//! the fuzz targets call exactly the code the binary runs without making the
//! relay a library. `crate::…` paths inside them resolve to the modules here.
//! Only the modules the parsers and the WebSocket read path need are included
//! (the server, signals and systemd glue are not).
#![allow(dead_code, unused_imports)]

#[path = "../../src/clock.rs"]
pub mod clock;
#[path = "../../src/config.rs"]
pub mod config;
#[path = "../../src/handshake.rs"]
pub mod handshake;
#[path = "../../src/http.rs"]
pub mod http;
#[path = "../../src/limits.rs"]
pub mod limits;
#[path = "../../src/outbound.rs"]
pub mod outbound;
#[path = "../../src/protocol.rs"]
pub mod protocol;
#[path = "../../src/reading.rs"]
pub mod reading;
#[path = "../../src/rooms.rs"]
pub mod rooms;
#[path = "../../src/session.rs"]
pub mod session;
#[path = "../../src/status.rs"]
pub mod status;
