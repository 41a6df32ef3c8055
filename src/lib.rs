//! rtce2ee-whisper: a WebSocket relay for end-to-end encrypted chat rooms.
//!
//! The relay binary (`src/main.rs`) and the benchmark (`whisper-bench`) are thin
//! binaries over this library; the integration tests and the fuzz targets use its
//! framing and types.
#![allow(missing_docs)]

pub mod board;
pub mod clock;
pub mod config;
pub mod fdstore;
pub mod handshake;
pub mod history;
pub mod http;
pub mod limits;
pub mod logging;
pub mod outbound;
pub mod page;
pub mod protocol;
pub mod reading;
pub mod rooms;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod systemd;
