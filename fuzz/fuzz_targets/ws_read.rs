//! WebSocket reading as the relay configures it: tungstenite in the server role
//! with `ws_reader::ws_config` (the relay's size limits and buffers) over a byte
//! stream whose writes are discarded (as `ws_reader::WsIo` does), fed the fuzz
//! input in reads of the relay's chunk size. Bytes in, frames or an error out:
//! never a panic, never a message over the configured limit, never a loop that
//! does not consume input.
#![no_main]

use std::io::{self, Read, Write};
use std::sync::OnceLock;

use async_tungstenite::tungstenite::protocol::{Role, WebSocket};
use async_tungstenite::tungstenite::{Error, Message};
use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper::{config, ws_reader};

/// Reads hand out at most `chunk` bytes; writes vanish.
struct Input<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl Write for Input<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn base_config() -> &'static config::Config {
    static CFG: OnceLock<config::Config> = OnceLock::new();
    CFG.get_or_init(|| {
        config::Config::load(&config::Source::from_process()).expect("default configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // Byte 0: the message size limit (small, so the limits are reached);
    // byte 1: the read size (1..=512, like the relay's 512-byte reads).
    let mut cfg = base_config().clone();
    cfg.max_message_size = 16 + u32::from(data[0]) * 8;
    let chunk = 1 + (data[1] as usize * 2);
    let input = Input {
        data: &data[2..],
        chunk,
    };
    let mut ws = WebSocket::from_raw_socket(input, Role::Server, Some(ws_reader::ws_config(&cfg)));
    let limit = cfg.max_message_size as usize;
    // Every frame takes at least 2 bytes: more rounds than that is a loop.
    for _ in 0..data.len() + 4 {
        match ws.read() {
            Ok(Message::Text(t)) => assert!(t.len() <= limit),
            Ok(Message::Binary(b)) => assert!(b.len() <= limit),
            Ok(_) => {}
            Err(Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_)) => return,
            // The errors the relay turns into close codes (session::on_error).
            Err(Error::Capacity(_) | Error::Protocol(_) | Error::Utf8(_)) => return,
            Err(e) => panic!("unexpected error from the read path: {e:?}"),
        }
    }
    panic!("the reader did not finish {} bytes of input", data.len());
});
