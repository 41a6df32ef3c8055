//! The read-buffer give-back of `ws_reader::FrameTracker`, checked against
//! plain tungstenite. The same bytes are read twice: once by one tungstenite
//! stream, once the way the relay reads them (reads limited by the tracker,
//! tungstenite replaced by a fresh one whenever the tracker says it holds
//! nothing more). Both must see the same messages in the same order, and
//! after every message the tracker holds no budget unless a fragmented
//! message is still open.
#![no_main]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper::ws_reader::FrameTracker;

/// The remaining input, shared by the successive tungstenite streams.
struct Shared {
    data: Vec<u8>,
    at: usize,
    tracker: FrameTracker,
}

/// Reads of at most `chunk` bytes, limited like `ws_reader::WsIo`.
struct Tracked {
    shared: Rc<RefCell<Shared>>,
    chunk: usize,
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.shared.borrow_mut();
        if s.tracker.share_needed().is_some() {
            s.tracker.granted();
        }
        let limit = s
            .tracker
            .read_limit()
            .map_or(buf.len(), |l| l.min(buf.len()));
        let n = limit.min(self.chunk).min(s.data.len() - s.at);
        let at = s.at;
        buf[..n].copy_from_slice(&s.data[at..at + n]);
        s.at += n;
        let _ = s.tracker.observe(&buf[..n]);
        Ok(n)
    }
}

/// Plain reads of at most `chunk` bytes.
struct Plain<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Plain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

macro_rules! discard_writes {
    ($t:ty) => {
        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}
discard_writes!(Tracked);
discard_writes!(Plain<'_>);

/// The relay's limits, scaled down so fuzzing reaches them.
fn config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(4096)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Messages until the first error or the end of input (data and control).
fn plain_messages(data: &[u8], chunk: usize, max: usize) -> Vec<Message> {
    let mut ws = WebSocket::from_raw_socket(Plain { data, chunk }, Role::Server, Some(config(max)));
    let mut out = Vec::new();
    for _ in 0..data.len() + 4 {
        match ws.read() {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 64 + usize::from(data[0]) * 16;
    let chunk = 1 + usize::from(data[1]) * 2;
    let data = &data[2..];
    let expected = plain_messages(data, chunk, max);

    let shared = Rc::new(RefCell::new(Shared {
        data: data.to_vec(),
        at: 0,
        tracker: FrameTracker::new(max as u32),
    }));
    let open = |shared: &Rc<RefCell<Shared>>| {
        let io = Tracked {
            shared: shared.clone(),
            chunk,
        };
        WebSocket::from_raw_socket(io, Role::Server, Some(config(max)))
    };
    let mut ws = open(&shared);
    let mut got = Vec::new();
    let mut returned: u32 = 0;
    for _ in 0..data.len() + 4 {
        match ws.read() {
            Ok(m) => {
                got.push(m);
                returned += 1;
                let fresh = shared.borrow_mut().tracker.take_fresh(returned);
                if fresh {
                    ws = open(&shared);
                    returned = 0;
                }
            }
            Err(_) => break,
        }
    }
    assert_eq!(got.len(), expected.len(), "{got:?}\n{expected:?}");
    assert_eq!(got, expected);
});
