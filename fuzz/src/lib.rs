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
#[path = "../../src/conns.rs"]
pub mod conns;
#[path = "../../src/handshake.rs"]
pub mod handshake;
#[path = "../../src/http.rs"]
pub mod http;
#[path = "../../src/hub.rs"]
pub mod hub;
#[path = "../../src/limits.rs"]
pub mod limits;
#[path = "../../src/outbound/mod.rs"]
pub mod outbound;
#[path = "../../src/protocol.rs"]
pub mod protocol;
#[path = "../../src/relay.rs"]
pub mod relay;
#[path = "../../src/session/mod.rs"]
pub mod session;
#[path = "../../src/ws_reader.rs"]
pub mod ws_reader;
