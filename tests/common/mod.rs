//! Test harness: starts the real binary on an ephemeral port and talks to it
//! over real sockets with a blocking tungstenite client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtce2ee_whisper::frame;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

pub const BIN: &str = env!("CARGO_BIN_EXE_rtce2ee-whisper");

/// A fresh, empty working directory for one server (so no stray `.env`).
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("whisper-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command to run the server binary: under `WHISPER_TEST_RUNNER` (a qemu
/// user-mode emulator, for cross-compiled test runs) when that is set.
pub fn server_command() -> Command {
    match std::env::var("WHISPER_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().unwrap());
            cmd.args(parts);
            cmd.arg(BIN);
            cmd
        }
        _ => Command::new(BIN),
    }
}

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_in(temp_dir("srv"), env)
    }

    pub fn start_in(dir: PathBuf, env: &[(&str, &str)]) -> Server {
        let mut cmd = server_command();
        cmd.current_dir(&dir)
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    // `listening on 127.0.0.1:PORT`, in text or inside a JSON string.
                    let addr: String = line[i + 13..]
                        .chars()
                        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '[' | ']'))
                        .collect();
                    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok())
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(port);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not report its port");
        Server {
            child,
            port,
            logs,
            dir,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn health(&self) -> Value {
        let resp = http(self.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        serde_json::from_str(&resp.body).expect("health JSON")
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}\n---", self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON body: {:?}", self.body))
    }
}

/// Sends raw request bytes and reads the response until the server closes.
pub fn http_raw(port: u16, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn http(port: u16, request: &str) -> Response {
    http_raw(port, request.as_bytes())
}

pub fn parse_response(buf: &[u8]) -> Response {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A WebSocket upgrade request for `/ws`.
pub fn upgrade_request(extra_headers: &[(&str, &str)]) -> String {
    upgrade_request_to("/ws", extra_headers)
}

/// A WebSocket upgrade request for `path` (`/` starts a legacy connection).
pub fn upgrade_request_to(path: &str, extra_headers: &[(&str, &str)]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    for (k, v) in extra_headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// Reads an HTTP response head byte by byte, so no frame bytes are consumed.
/// An interrupted read is retried (see [`Client::next_event`]).
pub fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    head
}

/// A blocking WebSocket client.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

/// What `Client::next_event` saw.
#[derive(Debug)]
pub enum Event {
    Json(Value),
    Binary,
    Closed(Option<u16>),
    Ping,
}

impl Client {
    pub fn connect(port: u16, headers: &[(&str, &str)]) -> Client {
        Client::try_connect(port, headers).expect("WebSocket upgrade")
    }

    /// Upgrades; on refusal returns the HTTP response.
    pub fn try_connect(port: u16, headers: &[(&str, &str)]) -> Result<Client, Response> {
        Client::try_connect_to(port, "/ws", headers)
    }

    /// Upgrades on `path`; on refusal returns the HTTP response.
    pub fn try_connect_to(
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, Response> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(upgrade_request_to(path, headers).as_bytes())
            .unwrap();
        let mut head = read_head(&mut s);
        let resp = parse_response(&head);
        if resp.status != 101 {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            head.extend_from_slice(&rest);
            return Err(parse_response(&head));
        }
        let ws = WebSocket::from_raw_socket(s, tungstenite::protocol::Role::Client, None);
        Ok(Client { ws })
    }

    /// Connects with a small kernel receive buffer, set before connecting so
    /// the advertised window stays small.
    pub fn connect_with_rcvbuf(port: u16, bytes: usize) -> Client {
        let mut s = tcp_connect(port, None, Some(bytes));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(upgrade_request(&[]).as_bytes()).unwrap();
        assert_eq!(parse_response(&read_head(&mut s)).status, 101);
        let ws = WebSocket::from_raw_socket(s, tungstenite::protocol::Role::Client, None);
        Client { ws }
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    pub fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_string())).unwrap();
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.ws.get_mut().set_read_timeout(Some(d)).unwrap();
    }

    /// The next event, or None after `timeout` of silence.
    ///
    /// A read interrupted by the kernel is retried with what is left of
    /// `timeout`: on Linux a `recv` on a socket with `SO_RCVTIMEO` fails with
    /// EINTR when the test process is stopped and continued (job control, a
    /// cgroup freezer, a debugger), with no signal handler involved, and
    /// tungstenite passes that on with its state intact. It is no close.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        self.set_timeout(timeout);
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Some(Event::Json(
                        serde_json::from_str(t.as_str()).expect("server JSON"),
                    ));
                }
                Ok(Message::Binary(_)) => return Some(Event::Binary),
                Ok(Message::Ping(_)) => return Some(Event::Ping),
                Ok(Message::Close(f)) => {
                    return Some(Event::Closed(f.map(|f: CloseFrame| u16::from(f.code))));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.set_timeout(left);
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => {
                    eprintln!("client read error: {e}");
                    return Some(Event::Closed(None));
                }
            }
        }
    }

    /// The next JSON message (heartbeat pings are skipped).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.next_event(Duration::from_secs(10)) {
                Some(Event::Json(v)) => return v,
                Some(Event::Ping) => continue,
                other => panic!("expected a JSON message, got {other:?}"),
            }
        }
    }

    /// The next JSON message of type `kind`, skipping others.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        for _ in 0..1000 {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
        panic!("no {kind} message");
    }

    /// Asserts nothing arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.next_event(d) {
            None | Some(Event::Ping) => {}
            Some(other) => panic!("expected silence, got {other:?}"),
        }
    }

    /// The error code of the next message, which must be an error.
    pub fn recv_error(&mut self) -> String {
        let v = self.recv();
        assert_eq!(v["type"], "error", "expected an error, got {v}");
        assert!(v["message"].is_string());
        v["code"].as_str().unwrap().to_string()
    }

    /// Waits for a close frame; returns its code.
    pub fn recv_close(&mut self) -> Option<u16> {
        for _ in 0..10_000 {
            match self.next_event(Duration::from_secs(10)) {
                Some(Event::Closed(code)) => {
                    // Send tungstenite's queued close reply, as a browser would.
                    let _ = self.ws.flush();
                    return code;
                }
                Some(_) => continue,
                None => panic!("no close frame"),
            }
        }
        panic!("no close frame");
    }

    pub fn join(&mut self, room: &str, id: &str, name: &str) -> Value {
        self.send(
            json!({"type":"join","data":{"room":room,"user":{"id":id,"name":name,"avatar":null}}}),
        );
        self.recv_type("userList")
    }

    pub fn message(&mut self, content: &str) {
        self.send(json!({"type":"message","data":{"content":content}}));
    }
}

/// Two members, `a` and `b`, in room `r`; `a` has seen `b` join.
pub fn pair(srv: &Server) -> (Client, Client) {
    let mut a = srv.connect();
    a.join("r", "a", "A");
    let mut b = srv.connect();
    b.join("r", "b", "B");
    a.recv_type("userJoined");
    (a, b)
}

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

// ------------------------------------------------------------------------
// A raw WebSocket client: masked frames out, frames parsed by hand in, and
// every I/O error returned rather than panicked on, so that a TCP reset is
// a result a test can count. Its stream can be cloned for a writer thread.

/// Opens a TCP connection to the relay: from `source` (another loopback
/// address, so that strikes land on an IP of its own) and with a small
/// `SO_RCVBUF` set before connecting (so the advertised window stays small),
/// when asked.
pub fn tcp_connect(
    port: u16,
    source: Option<std::net::Ipv4Addr>,
    rcvbuf: Option<usize>,
) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    if let Some(bytes) = rcvbuf {
        setsockopt(&fd, sockopt::RcvBuf, &bytes).unwrap();
    }
    if let Some(ip) = source {
        let [a, b, c, d] = ip.octets();
        bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).unwrap();
    }
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    TcpStream::from(fd)
}

/// One masked client frame (FIN set) with a fixed mask key.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame::masked_frame(opcode, payload, [0x37, 0xa1, 0x5c, 0x02])
}

/// A close frame's status code (None when it carries none).
pub fn close_code_of(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

pub use rtce2ee_whisper::frame::{OP_CLOSE, OP_TEXT};

/// One server frame.
#[derive(Debug)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A WebSocket client over a plain `TcpStream` (see the section comment).
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    /// Largest single `read`: small values read at a phone's pace.
    pub chunk: usize,
    /// Bytes taken from the socket so far (upgrade response excluded).
    pub bytes_read: u64,
}

impl RawWs {
    pub fn connect(port: u16) -> RawWs {
        RawWs::connect_with(port, None, None)
    }

    /// Connects (see [`tcp_connect`]) and upgrades; panics unless `101`.
    pub fn connect_with(
        port: u16,
        source: Option<std::net::Ipv4Addr>,
        rcvbuf: Option<usize>,
    ) -> RawWs {
        let mut s = tcp_connect(port, source, rcvbuf);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(upgrade_request(&[]).as_bytes()).unwrap();
        let head = read_head(&mut s);
        assert_eq!(parse_response(&head).status, 101, "upgrade refused");
        RawWs {
            stream: s,
            buf: Vec::new(),
            start: 0,
            chunk: 64 << 10,
            bytes_read: 0,
        }
    }

    pub fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(&masked_frame(opcode, payload))
    }

    pub fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(OP_TEXT, text.as_bytes())
    }

    /// Sends a close frame with `code`.
    pub fn send_close(&mut self, code: u16) -> std::io::Result<()> {
        self.send(OP_CLOSE, &code.to_be_bytes())
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// A complete frame already buffered, if any.
    fn buffered_frame(&mut self) -> Option<RawFrame> {
        let b = &self.buf[self.start..];
        let h = frame::parse_header(b)?;
        assert!(!h.masked, "server frames are not masked");
        let (header, len) = (h.header_len, h.len as usize);
        if b.len() < header + len {
            return None;
        }
        let frame = RawFrame {
            opcode: h.opcode,
            payload: b[header..header + len].to_vec(),
        };
        self.start += header + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Some(frame)
    }

    /// The next frame; `Ok(None)` at end of stream; read errors (a reset, a
    /// timeout as `WouldBlock`/`TimedOut`) as they are.
    pub fn read_frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        loop {
            if let Some(f) = self.buffered_frame() {
                return Ok(Some(f));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + self.chunk, 0);
            let n = loop {
                match self.stream.read(&mut self.buf[have..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match n {
                Ok(n) => {
                    self.buf.truncate(have + n);
                    self.bytes_read += n as u64;
                    if n == 0 {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            }
        }
    }

    /// Joins `room` as `id` and reads until the `userList`.
    pub fn join(&mut self, room: &str, id: &str) {
        let join =
            json!({"type":"join","data":{"room":room,"user":{"id":id,"name":id,"avatar":null}}});
        self.send_text(&join.to_string()).unwrap();
        loop {
            let f = self
                .read_frame()
                .expect("read while joining")
                .expect("closed while joining");
            assert_ne!(f.opcode, OP_CLOSE, "closed while joining");
            if f.opcode == OP_TEXT {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                assert_ne!(v["type"], "error", "join refused: {v}");
                if v["type"] == "userList" {
                    return;
                }
            }
        }
    }
}

/// Aborts a connection with a TCP reset (SO_LINGER 0, then close).
pub fn abort_with_reset(stream: TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    drop(stream);
}
