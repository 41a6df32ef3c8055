//! Step 1 of a message's path: the socket reader. [`WsIo`] is the byte
//! stream tungstenite reads client frames from; it follows the frame
//! boundaries ([`FrameTracker`]) and keeps the memory used for reading within
//! one process-wide [`ReadBudget`].
//!
//! tungstenite keeps one read buffer per connection and grows it to the
//! largest frame it has read; left alone, every connection could pin a
//! buffer of the largest message size, and a client that sends half a large
//! message and stops would pin it for good. Two rules keep that small:
//!
//! - A frame that does not fit in one read chunk, and every fragment of a
//!   fragmented message, is read only while it holds a share of the
//!   [`ReadBudget`]; a connection waiting for a share is simply not read (its
//!   bytes wait in the kernel).
//! - Reads stop exactly at the end of such a frame, so when it completes a
//!   message tungstenite holds nothing else: the session then replaces
//!   tungstenite's state, and with it the grown buffer, by a fresh one
//!   ([`WsIo::renewed`]).
//!
//! Between messages the session holds no tungstenite state at all: when
//! tungstenite asks for more bytes with the stream at rest
//! ([`FrameTracker::at_rest`]), its state is dropped, and built again when
//! the socket becomes readable. [`WsIo`] therefore never waits for readiness
//! itself (that would leave tungstenite's waker in the socket's
//! registration): the session does, with its own waker.
//!
//! [`FrameTracker`] only reads lengths and flags, never payload. Writes to
//! [`WsIo`] are discarded: the relay frames and writes everything itself
//! (`crate::outbound`).

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use smol::Async;

use crate::config::Config;

/// tungstenite's read chunk and initial buffer. Small: the buffer lives as long
/// as the connection (see the README's memory section).
pub const READ_BUFFER_BYTES: usize = 512;

/// Bytes read at a time while discarding input after a framing error.
const DISCARD_CHUNK: usize = 512;

/// Reads handled by one [`WsIo::poll_discard`] before yielding.
const DISCARD_BATCH: usize = 16;

/// tungstenite's configuration: size limits from the contract, small buffers.
pub fn ws_config(cfg: &Config) -> WebSocketConfig {
    let max = cfg.max_message_size as usize;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(4096)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

// ------------------------------------------- the budget and the frames

use crate::frame;

/// Frames whose payload is at most this many bytes are read without a share
/// of the budget: they fit in tungstenite's normal read chunk.
pub const SMALL_FRAME: u64 = 256;

/// The process-wide allowance for frames being read that need more than a
/// read chunk.
pub struct ReadBudget {
    free: usize,
    capacity: usize,
    /// Tasks waiting for a share; woken whenever one is returned.
    waiters: Vec<Waker>,
}

impl ReadBudget {
    /// A budget of at least 2 MiB, and at least four messages of the largest
    /// size, so any single message can always be read.
    pub fn new(max_message: usize) -> ReadBudget {
        let capacity = (2 << 20).max(4 * max_message);
        ReadBudget {
            free: capacity,
            capacity,
            waiters: Vec::new(),
        }
    }

    /// The budget's size in bytes (tests only).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes handed out now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.free
    }

    /// Takes `n` bytes, or registers `waker` to be woken when bytes return.
    pub fn try_take(&mut self, n: usize, waker: &Waker) -> bool {
        if n <= self.free {
            self.free -= n;
            return true;
        }
        if !self.waiters.iter().any(|w| w.will_wake(waker)) {
            self.waiters.push(waker.clone());
        }
        false
    }

    /// Returns `n` bytes and wakes everyone waiting (the first to run wins).
    pub fn give_back(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.free += n;
        debug_assert!(self.free <= self.capacity);
        for w in self.waiters.drain(..) {
            w.wake();
        }
        if self.waiters.capacity() > 64 {
            self.waiters = Vec::new();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// Reading a frame header; this many bytes of it are in `header`.
    Header(u8),
    /// Inside a payload; this many bytes of it are still to come.
    Payload(u64),
}

/// Follows frame boundaries in the byte stream handed to tungstenite.
#[derive(Debug)]
pub struct FrameTracker {
    position: Position,
    header: [u8; 14],
    /// Largest frame payload tungstenite accepts: larger ones are refused
    /// by it as soon as it reads the header, so they need no share.
    max_frame: u32,
    /// The current frame counts against the budget.
    shared: bool,
    /// The current frame completes a message that counts against the budget.
    completes_message: bool,
    /// Bytes to take from the budget before anything more is read.
    owed: usize,
    /// Bytes of the budget held: the current frame's share and, in a
    /// fragmented message, the shares of its earlier fragments.
    held: usize,
    /// A data frame without FIN was seen and its final fragment was not.
    fragmented: bool,
    /// The current frame gives tungstenite a message of its own to return
    /// (a control frame, or a data frame with FIN).
    gives_message: bool,
    /// Frames observed so far that give a message.
    messages: u32,
    /// Non-final data frames observed since [`FrameTracker::take_fragments`]:
    /// tungstenite joins them into one message, but every frame counts
    /// against the frame rate limit.
    fragments: u32,
    /// Opcode of the current frame.
    opcode: u8,
    /// A close frame was observed in full.
    close_seen: bool,
    /// Payload bytes of the data message being received, fragments summed.
    message_len: u64,
    /// A data message was announced larger than `max_frame`: a fragment's
    /// header already tells, before tungstenite (which checks the sum only
    /// once a fragment is complete) would.
    oversize: bool,
    /// A 64-bit length with its top bit set (RFC 6455: it must be 0).
    bad_length: bool,
    /// Set when the last byte observed ended a frame that completed a
    /// message which counted against the budget: the number of that message.
    /// Once tungstenite has returned that many messages it holds nothing
    /// more, and its state may be replaced.
    fresh: Option<u32>,
}

impl FrameTracker {
    /// A tracker at the start of a stream, for frames of at most `max_frame`
    /// bytes.
    pub fn new(max_frame: u32) -> FrameTracker {
        FrameTracker {
            position: Position::Header(0),
            header: [0; 14],
            max_frame,
            shared: false,
            completes_message: false,
            owed: 0,
            held: 0,
            fragmented: false,
            gives_message: false,
            messages: 0,
            fragments: 0,
            opcode: 0,
            close_seen: false,
            message_len: 0,
            oversize: false,
            bad_length: false,
            fresh: None,
        }
    }

    /// The share to take from the budget before the next read.
    pub fn share_needed(&self) -> Option<usize> {
        (self.owed > 0).then_some(self.owed)
    }

    /// The share was taken.
    pub fn granted(&mut self) {
        self.held += std::mem::take(&mut self.owed);
    }

    /// Gives up every share: nothing more of the current message will be
    /// kept. Returns the bytes held.
    #[must_use]
    pub fn release_all(&mut self) -> usize {
        self.owed = 0;
        std::mem::take(&mut self.held)
    }

    /// Bytes of the budget held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// At most how many bytes the next read may take: up to the end of a
    /// frame that counts against the budget, so that nothing past it is read.
    pub fn read_limit(&self) -> Option<usize> {
        match self.position {
            Position::Payload(rest) if self.shared && rest > 0 => {
                Some(rest.min(usize::MAX as u64) as usize)
            }
            _ => None,
        }
    }

    /// Whether a data message was announced larger than the limit.
    pub fn oversize(&self) -> bool {
        self.oversize
    }

    /// Whether a frame header carried a 64-bit length with its top bit set.
    pub fn bad_length(&self) -> bool {
        self.bad_length
    }

    /// Non-final data frames begun since the last call.
    pub fn take_fragments(&mut self) -> u32 {
        std::mem::take(&mut self.fragments)
    }

    /// Whether the peer's close frame has arrived in full. After a framing
    /// error tungstenite is no longer asked; the tracker still knows where
    /// frames start, so the session can tell when the peer answered a close.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Whether the stream is at rest between messages: no byte of a frame
    /// seen past the last complete one, no fragmented message open, no
    /// budget share held or owed, no close frame. When tungstenite then asks
    /// for more bytes it holds nothing, and its state may be dropped until
    /// the socket has data again.
    pub fn at_rest(&self) -> bool {
        self.position == Position::Header(0)
            && !self.fragmented
            && self.owed == 0
            && self.held == 0
            && !self.close_seen
    }

    /// Whether tungstenite's state may be replaced now that it has returned
    /// `returned` messages in all (see the module documentation); true once
    /// per such message.
    pub fn take_fresh(&mut self, returned: u32) -> bool {
        let fresh = self.fresh == Some(returned);
        if fresh {
            self.fresh = None;
        }
        fresh
    }

    /// Follows `bytes`, just handed to tungstenite. Returns the bytes of the
    /// budget to give back (messages that ended).
    #[must_use]
    pub fn observe(&mut self, mut bytes: &[u8]) -> usize {
        let mut released = 0;
        if !bytes.is_empty() {
            self.fresh = None;
        }
        while !bytes.is_empty() {
            match self.position {
                Position::Header(have) => {
                    let have = have as usize;
                    self.header[have] = bytes[0];
                    bytes = &bytes[1..];
                    let have = have + 1;
                    match frame::parse_header(&self.header[..have]) {
                        Some(header) => self.start_payload(header),
                        None => self.position = Position::Header(have as u8),
                    }
                }
                Position::Payload(rest) => {
                    let take = rest.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.position = Position::Payload(rest - take);
                }
            }
            if self.position == Position::Payload(0) {
                let completes = self.completes_message;
                released += self.end_frame();
                if completes && bytes.is_empty() {
                    self.fresh = Some(self.messages);
                }
            }
        }
        released
    }

    fn start_payload(&mut self, header: frame::Header) {
        let frame::Header {
            fin, opcode, len, ..
        } = header;
        self.bad_length |= len >> 63 != 0;
        self.opcode = opcode;
        if opcode <= 2 && !fin {
            self.fragments = self.fragments.saturating_add(1);
        }
        let data = opcode <= 2;
        let max = u64::from(self.max_frame);
        if opcode == 1 || opcode == 2 {
            self.message_len = len;
        } else if opcode == 0 {
            self.message_len = self.message_len.saturating_add(len);
        }
        self.oversize |= data && self.message_len > max;
        let in_fragments = data && (opcode == 0 || !fin);
        self.shared = data && len <= max && (len > SMALL_FRAME || in_fragments);
        if opcode == 1 || opcode == 2 {
            self.fragmented = !fin;
        } else if opcode == 0 && fin {
            self.fragmented = false;
        }
        self.completes_message = self.shared && fin;
        self.gives_message = !data || fin;
        if self.shared {
            self.owed += len as usize;
        }
        self.position = Position::Payload(len);
    }

    /// A frame ended: when it completed its message, the message's shares
    /// are given back (and any share still owed is forgiven).
    fn end_frame(&mut self) -> usize {
        self.position = Position::Header(0);
        self.close_seen |= self.opcode == 8;
        if std::mem::take(&mut self.gives_message) {
            self.messages = self.messages.wrapping_add(1);
        }
        let mut released = 0;
        if self.shared && !self.fragmented {
            released = std::mem::take(&mut self.held);
            self.owed = 0;
        }
        self.shared = false;
        self.completes_message = false;
        released
    }
}

// ------------------------------------------------------------ the socket

/// The byte stream tungstenite reads from. Writes are discarded: the relay
/// frames and writes everything itself, including the pong and close replies
/// tungstenite would otherwise queue. Reads follow the frame boundaries and
/// the shared [`ReadBudget`].
pub struct WsIo {
    sock: Arc<Async<TcpStream>>,
    /// The socket may have data: try `read` before waiting for readiness.
    readable: bool,
    frames: FrameTracker,
    budget: Rc<RefCell<ReadBudget>>,
}

impl WsIo {
    /// A reader over `sock` for messages of at most `max_message` bytes;
    /// `readable` says whether to try a read before waiting for readiness.
    pub fn new(
        sock: Arc<Async<TcpStream>>,
        readable: bool,
        max_message: u32,
        budget: Rc<RefCell<ReadBudget>>,
    ) -> WsIo {
        WsIo {
            sock,
            readable,
            frames: FrameTracker::new(max_message),
            budget,
        }
    }

    /// A fresh reader over the same socket and budget, for a fresh
    /// tungstenite state (the frame tracker starts over).
    pub fn renewed(&self) -> WsIo {
        WsIo::new(
            self.sock.clone(),
            self.readable,
            self.frames.max_frame,
            self.budget.clone(),
        )
    }

    /// After a framing error: a reader that takes this one's frame tracker
    /// (it still tells where the client's close frame is), with every budget
    /// share given back, since nothing more of the current message is kept.
    pub fn abandoned(&mut self) -> WsIo {
        let mut frames = std::mem::replace(&mut self.frames, FrameTracker::new(0));
        self.budget.borrow_mut().give_back(frames.release_all());
        let mut io = self.renewed();
        io.frames = frames;
        io
    }

    /// The frame boundaries seen so far.
    #[inline]
    pub fn frames(&self) -> &FrameTracker {
        &self.frames
    }

    /// The frame boundaries seen so far, to take counts from.
    #[inline]
    pub fn frames_mut(&mut self) -> &mut FrameTracker {
        &mut self.frames
    }

    /// Records that the socket may have data (its readiness event was
    /// consumed elsewhere): the next read is tried at once.
    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Follows bytes handed to tungstenite without a read (those read with
    /// the request head) and gives back what they release.
    pub fn observe(&mut self, bytes: &[u8]) {
        let released = self.frames.observe(bytes);
        self.budget.borrow_mut().give_back(released);
    }

    /// Takes the budget share the current frame needs before more of it is
    /// read; false (with `cx` registered) while there is none to take.
    pub fn take_share(&mut self, cx: &Context<'_>) -> bool {
        match self.frames.share_needed() {
            None => true,
            // The message is refused anyway (see `Session::refuse_oversize`).
            Some(_) if self.frames.oversize() => false,
            Some(n) => {
                let ok = self.budget.borrow_mut().try_take(n, cx.waker());
                if ok {
                    self.frames.granted();
                }
                ok
            }
        }
    }

    /// Raw reading after a framing error: discards bytes until the peer's
    /// close frame (the frame tracker still knows where frames start) or
    /// EOF. Ready when the peer is done.
    pub fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; DISCARD_CHUNK];
        for _ in 0..DISCARD_BATCH {
            if self.frames.close_seen() {
                return Poll::Ready(());
            }
            let mut stream: &TcpStream = self.sock.get_ref();
            match stream.read(&mut scratch) {
                Ok(0) => return Poll::Ready(()),
                Ok(n) => self.observe(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.sock.poll_readable(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Ready(Ok(())) => {}
                    }
                }
                Err(_) => return Poll::Ready(()),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for WsIo {
    fn drop(&mut self) {
        if let Ok(mut budget) = self.budget.try_borrow_mut() {
            budget.give_back(self.frames.held());
        }
    }
}

impl smol::io::AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.take_share(cx) {
            return Poll::Pending;
        }
        // Never read past the end of a frame that holds a share.
        let limit = this
            .frames
            .read_limit()
            .map_or(buf.len(), |l| l.min(buf.len()));
        let buf = &mut buf[..limit];
        loop {
            // The session waits for readiness itself, with its own task's
            // waker, and says so with `set_readable`: tungstenite's waker
            // proxies are never left in the socket's registration, so its
            // state can be dropped while the connection is idle.
            if !this.readable {
                return Poll::Pending;
            }
            let mut stream: &TcpStream = this.sock.get_ref();
            match stream.read(buf) {
                Ok(n) => {
                    // A short read means the socket is drained for now.
                    if n < buf.len() {
                        this.readable = false;
                    }
                    let released = this.frames.observe(&buf[..n]);
                    this.budget.borrow_mut().give_back(released);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl smol::io::AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let header = frame::encode_header(fin, opcode, len as u64, Some([1, 2, 3, 4]));
        let mut out = header.as_slice().to_vec();
        out.extend(std::iter::repeat_n(b'a', len));
        out
    }

    #[test]
    fn small_frames_need_no_share_and_are_never_limited() {
        let mut t = FrameTracker::new(10_240);
        let bytes: Vec<u8> = [frame(true, 1, 100), frame(true, 9, 0), frame(true, 1, 256)].concat();
        // Byte by byte or all at once: the same result.
        for chunk in bytes.chunks(7) {
            assert_eq!(t.observe(chunk), 0);
            assert_eq!((t.share_needed(), t.read_limit()), (None, None));
        }
        assert!(!t.take_fresh(3));
    }

    #[test]
    fn a_large_frame_waits_for_its_share_and_reads_stop_at_its_end() {
        let mut t = FrameTracker::new(10_240);
        let f = frame(true, 1, 5000);
        assert_eq!(t.observe(&f[..100]), 0);
        assert_eq!(t.share_needed(), Some(5000));
        t.granted();
        assert_eq!(t.share_needed(), None);
        assert_eq!(t.held(), 5000);
        let rest = f.len() - 100;
        assert_eq!(t.read_limit(), Some(rest));
        assert_eq!(t.observe(&f[100..]), 5000);
        assert_eq!((t.held(), t.read_limit()), (0, None));
        assert!(!t.take_fresh(0), "tungstenite has not returned it yet");
        assert!(t.take_fresh(1));
        assert!(!t.take_fresh(1), "once");
    }

    #[test]
    fn a_fragmented_message_holds_its_shares_until_the_final_fragment() {
        let mut t = FrameTracker::new(10_240);
        let mut released = 0;
        for (i, f) in [
            frame(false, 1, 100),
            frame(true, 10, 4),
            frame(false, 0, 3000),
            frame(true, 0, 50),
        ]
        .iter()
        .enumerate()
        {
            let header = if f[1] & 0x7f == 126 { 8 } else { 6 };
            released += t.observe(&f[..header]);
            let control = i == 1;
            assert_eq!(t.share_needed().is_none(), control, "fragment {i}");
            if !control {
                t.granted();
            }
            released += t.observe(&f[header..]);
            if i < 3 {
                assert_eq!(released, 0, "nothing returned before the final fragment");
            }
        }
        assert_eq!(released, 3150);
        assert_eq!(t.held(), 0);
        // The ping and the message.
        assert!(t.take_fresh(2));
    }

    #[test]
    fn a_message_completed_behind_others_waits_for_them() {
        // Found by fuzzing (ws_renew): one read holds a small text, a ping
        // and a small final fragment; the text is returned first, while
        // tungstenite still holds the rest.
        let mut t = FrameTracker::new(10_240);
        let bytes: Vec<u8> = [frame(false, 1, 10), frame(true, 9, 0), frame(true, 0, 7)].concat();
        let _ = t.observe(&bytes[..6]);
        t.granted();
        let _ = t.observe(&bytes[6..]);
        assert!(!t.take_fresh(1), "only the ping was returned");
        assert!(t.take_fresh(2));
    }

    #[test]
    fn the_stream_is_at_rest_only_between_messages() {
        let mut t = FrameTracker::new(10_240);
        assert!(t.at_rest());
        let text = frame(true, 1, 20);
        let _ = t.observe(&text[..3]);
        assert!(!t.at_rest(), "inside a header");
        let _ = t.observe(&text[3..10]);
        assert!(!t.at_rest(), "inside a payload");
        let _ = t.observe(&text[10..]);
        assert!(t.at_rest());
        let _ = t.observe(&frame(false, 1, 10));
        assert!(!t.at_rest(), "a fragmented message is open");
        let _ = t.observe(&frame(true, 0, 10));
        assert!(t.at_rest());
        let big = frame(true, 2, 1000);
        let _ = t.observe(&big[..8]);
        t.granted();
        let released = t.observe(&big[8..]);
        assert_eq!((released, t.at_rest()), (1000, true));
        let _ = t.observe(&frame(true, 8, 2));
        assert!(!t.at_rest(), "the peer closed");
    }

    #[test]
    fn fragments_are_counted_and_a_close_is_seen() {
        let mut t = FrameTracker::new(100);
        let bytes: Vec<u8> = [
            frame(false, 1, 10),
            frame(false, 0, 10),
            frame(true, 9, 0),
            frame(true, 0, 10),
        ]
        .concat();
        let _ = t.observe(&bytes);
        assert_eq!((t.take_fragments(), t.take_fragments()), (2, 0));
        // After an oversize frame (refused by tungstenite from its header)
        // the tracker still finds the close frame behind its payload.
        let _ = t.observe(&frame(true, 2, 500));
        assert!(!t.close_seen());
        let close = frame(true, 8, 2);
        let _ = t.observe(&close[..5]);
        assert!(!t.close_seen(), "not before the whole frame");
        let _ = t.observe(&close[5..]);
        assert!(t.close_seen());
    }

    #[test]
    fn an_oversize_fragmented_message_is_known_from_a_header() {
        // Found by a black-box probe: tungstenite sums fragments only once
        // each is complete, so the relay held up to twice the limit.
        let mut t = FrameTracker::new(10_000);
        let _ = t.observe(&frame(false, 1, 8000));
        assert!(!t.oversize());
        let _ = t.observe(&frame(true, 0, 8000)[..8]);
        assert!(t.oversize(), "known as soon as the second header is read");
        let mut t = FrameTracker::new(10_000);
        let mut huge = vec![0x81, 0xff];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        let _ = t.observe(&huge);
        assert!(t.bad_length());
    }

    #[test]
    fn oversize_and_control_frames_need_no_share() {
        let mut t = FrameTracker::new(1000);
        let _ = t.observe(&frame(true, 1, 2000)[..14]);
        assert_eq!(
            t.share_needed(),
            None,
            "tungstenite refuses it from the header"
        );
        let mut t = FrameTracker::new(1000);
        let _ = t.observe(&frame(true, 9, 125)[..6]);
        assert_eq!(t.share_needed(), None);
    }

    #[test]
    fn the_budget_wakes_waiters_when_shares_return() {
        use std::sync::atomic::Ordering;
        let (count, waker) = crate::test_support::counting_waker();
        let mut b = ReadBudget::new(1 << 20);
        assert_eq!(b.capacity(), 4 << 20);
        assert!(b.try_take(3 << 20, &waker));
        assert!(!b.try_take(2 << 20, &waker));
        assert!(!b.try_take(2 << 20, &waker));
        assert_eq!(b.in_use(), 3 << 20);
        b.give_back(3 << 20);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "one registration per task"
        );
        assert!(b.try_take(2 << 20, &waker));
    }
}
