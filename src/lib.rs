//! rtce2ee-whisper: a WebSocket relay for end-to-end encrypted chat rooms.
//!
//! The relay binary (`src/main.rs`) and the benchmark (`whisper-bench`) are thin
//! binaries over this library; the integration tests and the fuzz targets use its
//! framing and types.
#![allow(missing_docs)]

pub mod board;
pub mod clock;
pub mod config;
pub mod conns;
pub mod fdstore;
pub mod footprint;
pub mod frame;
pub mod handshake;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod outbound;
pub mod page;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod systemd;
pub mod ws_reader;
