//! A minimal WebSocket client for load generation: a hand-written HTTP
//! upgrade, masked frames out, unmasked server frames in.
//!
//! A connection is split into a [`Reader`] and a [`Writer`] over clones of
//! one `async_net::TcpStream`. Both keep one small buffer each; the reader's
//! grows only when a frame does not fit.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use async_net::TcpStream;
use rtce2ee_whisper::frame;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::Dialect;

pub use rtce2ee_whisper::frame::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// Largest server frame accepted; anything bigger is a protocol error.
const MAX_FRAME_BYTES: usize = 4 << 20;
/// Largest response head accepted during the upgrade.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// Room kept in front of a frame being built for its header.
const HEADER_ROOM: usize = frame::MAX_HEADER_LEN;

/// How to open a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// Initial size of the reader's buffer.
    pub read_buffer: usize,
    /// `SO_RCVBUF` set before connecting, for clients meant to be slow.
    pub rcvbuf: Option<usize>,
    /// The message shape spoken (and so the upgrade path).
    pub dialect: Dialect,
}

/// One frame from the server, borrowed from the reader's buffer.
pub struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// The receiving half: a growable buffer and the parse position in it.
pub struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// The sending half: a reusable frame buffer and the next mask key.
pub struct Writer {
    stream: TcpStream,
    scratch: Vec<u8>,
    mask: u32,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Opens a TCP connection and performs the WebSocket upgrade on the
/// dialect's path (`/ws`, or `/` for legacy).
pub async fn connect(addr: SocketAddr, opts: ConnectOptions) -> io::Result<(Reader, Writer)> {
    let stream = open_tcp(addr, opts.rcvbuf, None).await?;
    upgrade(stream, opts).await
}

/// [`connect`] from the local address `source` (another loopback address,
/// so that the relay counts the connection against an IP of its own).
pub async fn connect_from(
    addr: SocketAddr,
    source: IpAddr,
    opts: ConnectOptions,
) -> io::Result<(Reader, Writer)> {
    let stream = open_tcp(addr, opts.rcvbuf, Some(source)).await?;
    upgrade(stream, opts).await
}

/// Performs the WebSocket upgrade on `/ws` over an open connection.
async fn upgrade(stream: TcpStream, opts: ConnectOptions) -> io::Result<(Reader, Writer)> {
    let addr = stream.peer_addr()?;
    stream.set_nodelay(true)?;
    let mut reader = Reader::new(stream.clone(), opts.read_buffer);
    let mut writer = Writer::new(stream);
    let path = opts.dialect.path();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: d2hpc3Blci1iZW5jaC0xMw==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    writer.stream.write_all(request.as_bytes()).await?;
    reader.read_upgrade().await?;
    Ok((reader, writer))
}

/// Connects, setting `SO_RCVBUF` first when asked (it must precede the
/// handshake to limit the advertised window), from `source` when given.
async fn open_tcp(
    addr: SocketAddr,
    rcvbuf: Option<usize>,
    source: Option<IpAddr>,
) -> io::Result<TcpStream> {
    if rcvbuf.is_none() && source.is_none() {
        return TcpStream::connect(addr).await;
    }
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(family, SockType::Stream, flags, None)?;
    if let Some(bytes) = rcvbuf {
        socket::setsockopt(&fd, sockopt::RcvBuf, &bytes)?;
    }
    if let Some(ip) = source {
        let local = SockaddrStorage::from(SocketAddr::new(ip, 0));
        socket::bind(fd.as_raw_fd(), &local)?;
    }
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let sock = Async::new(std::net::TcpStream::from(fd))?;
    sock.writable().await?;
    if let Some(e) = sock.get_ref().take_error()? {
        return Err(e);
    }
    sock.get_ref().peer_addr()?;
    Ok(TcpStream::from(sock))
}

/// Parses a frame header: `(opcode, header length, payload length)`.
fn parse_header(b: &[u8]) -> io::Result<Option<(u8, usize, usize)>> {
    let Some(h) = frame::parse_header(b) else {
        return Ok(None);
    };
    if h.masked {
        return Err(invalid("server frame is masked".into()));
    }
    let len = usize::try_from(h.len).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(invalid(format!("server frame of {len} bytes")));
    }
    Ok(Some((h.opcode, h.header_len, len)))
}

impl Reader {
    /// The connection (for its socket options and pending error).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn new(stream: TcpStream, capacity: usize) -> Reader {
        Reader {
            stream,
            buf: vec![0; capacity.max(64)],
            start: 0,
            end: 0,
        }
    }

    /// Makes room for `need` bytes from `start`, then reads once.
    /// Returns false at end of stream.
    async fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.start + need > self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() {
            self.buf.resize(need.next_power_of_two(), 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Reads the upgrade response head and checks for `101`.
    async fn read_upgrade(&mut self) -> io::Result<()> {
        loop {
            let data = &self.buf[self.start..self.end];
            let have = data.len();
            if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let line = data.split(|&b| b == b'\r').next().unwrap_or_default();
                let status = String::from_utf8_lossy(line);
                if !status.starts_with("HTTP/1.1 101") {
                    return Err(io::Error::other(format!("upgrade refused: {status}")));
                }
                self.start += pos + 4;
                return Ok(());
            }
            if have >= MAX_HEAD_BYTES {
                return Err(invalid("upgrade response head too large".into()));
            }
            if !self.fill(have + 512).await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the upgrade",
                ));
            }
        }
    }

    /// The next complete frame, or `None` at end of stream.
    pub async fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        let (opcode, header, len) = loop {
            let avail = self.end - self.start;
            let need = match parse_header(&self.buf[self.start..self.end])? {
                Some((op, h, n)) if avail >= h + n => break (op, h, n),
                Some((_, h, n)) => h + n,
                None => 10,
            };
            if !self.fill(need).await? {
                return Ok(None);
            }
        };
        let from = self.start + header;
        self.start = from + len;
        Ok(Some(Frame {
            opcode,
            payload: &self.buf[from..from + len],
        }))
    }
}

impl Writer {
    fn new(stream: TcpStream) -> Writer {
        Writer {
            stream,
            scratch: Vec::new(),
            mask: 0x5eed_0001,
        }
    }

    /// Sends one masked frame whose payload `build` appends to the buffer
    /// it is given; the header is written in front of it afterwards.
    pub async fn send_with(
        &mut self,
        opcode: u8,
        build: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        self.scratch.clear();
        self.scratch.resize(HEADER_ROOM, 0);
        build(&mut self.scratch);
        let len = self.scratch.len() - HEADER_ROOM;
        self.mask = self.mask.wrapping_mul(0x0001_0DCD).wrapping_add(1);
        let key = self.mask.to_be_bytes();
        frame::apply_mask(&mut self.scratch[HEADER_ROOM..], key);
        let header = frame::encode_header(true, opcode, len as u64, Some(key));
        let header = header.as_slice();
        let at = HEADER_ROOM - header.len();
        self.scratch[at..HEADER_ROOM].copy_from_slice(header);
        self.stream.write_all(&self.scratch[at..]).await
    }

    /// Sends a frame with a ready payload.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.send_with(opcode, |buf| buf.extend_from_slice(payload))
            .await
    }

    /// Sends a close frame with `code`.
    pub async fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.send(OP_CLOSE, &code.to_be_bytes()).await
    }
}

/// The status code of a close frame's payload (1005 when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_each_length_form() {
        assert_eq!(parse_header(&[0x81, 5]).unwrap(), Some((1, 2, 5)));
        assert_eq!(parse_header(&[0x81, 126, 1, 0]).unwrap(), Some((1, 4, 256)));
        assert_eq!(parse_header(&[0x81, 126, 1]).unwrap(), None);
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(parse_header(&long).unwrap(), Some((2, 10, 70_000)));
        assert!(parse_header(&[0x81, 0x85, 1, 2, 3, 4]).is_err());
    }
}
