//! WebSocket framing (RFC 6455, section 5.2): frame headers written and
//! parsed, client-side masking, and the few whole frames the relay sends.
//!
//! The relay, the integration tests, the benchmark and the fuzz targets all
//! frame through this module. It knows header bytes only: which payloads are
//! valid is for tungstenite (reading) and [`crate::protocol`] (writing).
//!
//! ```text
//!  byte 0: FIN, three reserved bits, opcode
//!  byte 1: MASK, 7-bit length (126: a 16-bit length follows, 127: a 64-bit one)
//!  then the extended length (0, 2 or 8 bytes), then the mask key (0 or 4 bytes)
//! ```

use std::rc::Rc;

/// Opcode of a continuation frame (a later fragment of a message).
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Longest frame header: 2 bytes, a 64-bit length and a mask key.
pub const MAX_HEADER_LEN: usize = 14;
/// Longest header of an unmasked (server) frame.
pub const MAX_SERVER_HEADER_LEN: usize = 10;

/// A frame header as read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The frame is the last of its message.
    pub fin: bool,
    /// The low four bits of the first byte.
    pub opcode: u8,
    /// A mask key follows the length (client frames).
    pub masked: bool,
    /// The payload length as sent (RFC 6455 wants the top bit clear; this is
    /// not checked here).
    pub len: u64,
    /// Bytes of the header itself, mask key included.
    pub header_len: usize,
}

/// The full header length, known from the first two bytes of a frame;
/// `None` while fewer than two are given.
#[inline]
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    let second = *bytes.get(1)?;
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

/// Parses the header at the start of `bytes`; `None` until all of it is
/// there. Reads lengths and flags only, never the payload.
#[inline]
pub fn parse_header(bytes: &[u8]) -> Option<Header> {
    let header_len = header_len(bytes)?;
    if bytes.len() < header_len {
        return None;
    }
    let len = match bytes[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        127 => u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
        n => u64::from(n),
    };
    Some(Header {
        fin: bytes[0] & 0x80 != 0,
        opcode: bytes[0] & 0x0f,
        masked: bytes[1] & 0x80 != 0,
        len,
        header_len,
    })
}

/// An encoded frame header, held in a fixed array.
#[derive(Clone, Copy, Debug)]
pub struct HeaderBytes {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBytes {
    /// The header's bytes, in wire order.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Encodes the header of a frame of `len` payload bytes, in the shortest
/// length form; with `mask`, the MASK bit and the key (client frames).
#[inline]
pub fn encode_header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> HeaderBytes {
    let mut bytes = [0u8; MAX_HEADER_LEN];
    bytes[0] = (u8::from(fin) << 7) | (opcode & 0x0f);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if len < 126 {
        bytes[1] = mask_bit | len as u8;
        2
    } else if len <= 0xFFFF {
        bytes[1] = mask_bit | 126;
        bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        bytes[1] = mask_bit | 127;
        bytes[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        bytes[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    HeaderBytes {
        bytes,
        len: at as u8,
    }
}

/// XORs `payload` with the mask `key`, in place: masks a client payload, or
/// unmasks one.
#[inline]
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// One whole masked client frame (FIN set) carrying `payload`, masked with
/// `key`.
pub fn masked_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header = encode_header(true, opcode, payload.len() as u64, Some(key));
    let mut f = Vec::with_capacity(header.as_slice().len() + payload.len());
    f.extend_from_slice(header.as_slice());
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    f
}

/// The WebSocket ping the heartbeat sends (empty payload).
pub const PING_FRAME: [u8; 2] = [0x80 | OP_PING, 0x00];

/// A close frame with `code` and a short `reason` (at most 123 bytes).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x80 | OP_CLOSE);
    f.push((2 + reason.len()) as u8);
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

/// A pong frame echoing a ping's payload (at most 125 bytes by the protocol).
pub fn pong_control_frame(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut f = Vec::with_capacity(2 + payload.len());
    f.push(0x80 | OP_PONG);
    f.push(payload.len() as u8);
    f.extend_from_slice(payload);
    f
}

/// Builds JSON text messages into a reusable buffer and frames them.
///
/// The buffer starts with room for the longest header, so the finished frame
/// is one contiguous slice and is copied exactly once, into its shared `Rc`.
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        FrameBuilder::new()
    }
}

impl FrameBuilder {
    /// An empty builder with a small scratch buffer.
    pub fn new() -> FrameBuilder {
        FrameBuilder {
            buf: Vec::with_capacity(256),
        }
    }

    /// Starts a new message and returns the buffer to write its JSON into.
    pub fn begin(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; MAX_SERVER_HEADER_LEN]);
        &mut self.buf
    }

    /// The framed bytes of the message written since [`begin`](Self::begin).
    fn framed(&mut self) -> &[u8] {
        let len = self.buf.len() - MAX_SERVER_HEADER_LEN;
        let header = encode_header(true, OP_TEXT, len as u64, None);
        let header = header.as_slice();
        let start = MAX_SERVER_HEADER_LEN - header.len();
        self.buf[start..MAX_SERVER_HEADER_LEN].copy_from_slice(header);
        &self.buf[start..]
    }

    /// Finishes the message as a shared frame.
    pub fn finish_shared(&mut self) -> Rc<[u8]> {
        Rc::from(self.framed())
    }

    /// Finishes the message by appending its frame to `out`.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.framed());
    }

    /// Keeps the scratch buffer from holding on to a large message's memory.
    pub fn shrink(&mut self) {
        if self.buf.capacity() > 4096 {
            self.buf = Vec::with_capacity(256);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_correct_headers() {
        let mut b = FrameBuilder::new();
        b.begin().extend_from_slice(b"{}");
        assert_eq!(&*b.finish_shared(), b"\x81\x02{}");
        let body = vec![b'a'; 300];
        b.begin().extend_from_slice(&body);
        let f = b.finish_shared();
        assert_eq!(&f[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(f.len(), 304);
        let body = vec![b'a'; 70_000];
        b.begin().extend_from_slice(&body);
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(&out[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
        assert_eq!(
            close_frame(1001, "bye"),
            vec![0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']
        );
    }

    #[test]
    fn control_frames_are_capped() {
        let close = close_frame(1000, &"r".repeat(200));
        assert_eq!((close.len(), close[1]), (4 + 123, 125));
        assert_eq!(pong_control_frame(b"hi"), vec![0x8A, 2, b'h', b'i']);
        assert_eq!(pong_control_frame(&[7; 300]).len(), 2 + 125);
        assert_eq!(PING_FRAME, [0x89, 0]);
    }

    #[test]
    fn each_length_form_round_trips() {
        let key = [0x37, 0xa1, 0x5c, 0x02];
        for (len, form) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (0xFFFF, 4),
            (0x1_0000, 10),
            (1 << 40, 10),
        ] {
            for (fin, opcode) in [(true, OP_TEXT), (false, OP_CONTINUATION), (true, OP_CLOSE)] {
                for mask in [None, Some(key)] {
                    let h = encode_header(fin, opcode, len, mask);
                    let bytes = h.as_slice();
                    let want = form + if mask.is_some() { 4 } else { 0 };
                    assert_eq!(bytes.len(), want, "{len} {mask:?}");
                    assert_eq!(header_len(bytes), Some(want));
                    let parsed = parse_header(bytes).expect("a whole header");
                    assert_eq!(
                        parsed,
                        Header {
                            fin,
                            opcode,
                            masked: mask.is_some(),
                            len,
                            header_len: want,
                        }
                    );
                    if let Some(key) = mask {
                        assert_eq!(&bytes[want - 4..], &key);
                    }
                    // One byte short of the header: not yet.
                    assert_eq!(parse_header(&bytes[..want - 1]), None);
                }
            }
        }
        assert_eq!(header_len(&[0x81]), None);
        assert_eq!(header_len(&[]), None);
    }

    #[test]
    fn parsing_ignores_what_follows_and_keeps_a_bad_length() {
        let mut bytes = vec![0x02, 0x05, 1, 2, 3, 4, 5, 0x81];
        assert_eq!(
            parse_header(&bytes),
            Some(Header {
                fin: false,
                opcode: OP_BINARY,
                masked: false,
                len: 5,
                header_len: 2,
            })
        );
        // The top bit of a 64-bit length is reported, not refused.
        bytes = vec![0x81, 0xff];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let h = parse_header(&bytes).unwrap();
        assert_eq!((h.len >> 63, h.header_len, h.masked), (1, 14, true));
    }

    #[test]
    fn masked_frames_unmask_to_their_payload() {
        let key = [0x37, 0xa1, 0x5c, 0x02];
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let f = masked_frame(OP_TEXT, &payload, key);
        assert_eq!(
            &f[..8],
            &[0x81, 0x80 | 126, 0x01, 0x2c, 0x37, 0xa1, 0x5c, 0x02]
        );
        let h = parse_header(&f).unwrap();
        assert_eq!((h.len, h.header_len), (300, 8));
        let mut body = f[h.header_len..].to_vec();
        assert_ne!(body, payload);
        apply_mask(&mut body, key);
        assert_eq!(body, payload);
        assert_eq!(
            masked_frame(OP_PING, b"", key),
            vec![0x89, 0x80, 0x37, 0xa1, 0x5c, 0x02]
        );
    }
}
