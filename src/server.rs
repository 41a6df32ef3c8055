//! The listener: accepts TCP connections, reads one HTTP request head under a
//! deadline, answers health/metrics/errors, admits WebSocket upgrades, and
//! runs the heartbeat and the shutdown sequence.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor, Timer};

use crate::clock;
use crate::config::Config;
use crate::conns::ConnId;
use crate::http::{self, Route, Snapshot};
use crate::limits::{Refusal, canonical_ip};
use crate::protocol::Dialect;
use crate::relay::Relay;
use crate::session::Session;
use crate::{handshake, shutdown, systemd};

/// How long a finished HTTP exchange waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);
/// `Retry-After` for refusals that are not blocks.
const RETRY_AFTER_SECS: u32 = 5;
/// `Retry-After` for a connection refused or evicted in its HTTP phase: the
/// table frees within moments, so a client may come straight back.
const PENDING_RETRY_AFTER_SECS: u32 = 1;
/// Listen backlog: connections wait in the kernel's accept queue while the
/// HTTP-phase table is full (Linux caps it at `net.core.somaxconn`, 4096 by
/// default). The socket unit's `Backlog=` is the same.
const LISTEN_BACKLOG: i32 = 4096;
/// Once a request head's first byte has arrived, the rest must follow at
/// `HEAD_MIN_RATE` bytes a second on average, after `HEAD_GRACE`.
const HEAD_GRACE_MICROS: u64 = 1_000_000;
const HEAD_MIN_RATE: u64 = 128;
/// A full table makes room by closing the pending connection that has made
/// no progress for the longest time, once that is at least this long;
/// otherwise new connections wait in the accept queue.
const EVICT_IDLE_MICROS: u64 = 250_000;

/// One connection in its HTTP phase, shared by the table and its task.
struct Pending {
    /// When its last byte arrived (its accept time before the first).
    last_progress: Cell<u64>,
    /// Tells the task to give up its slot (answering 408).
    evict: smol::channel::Sender<()>,
}

/// What every task of the server shares.
struct Shared {
    cfg: Rc<Config>,
    hub: Rc<RefCell<Relay>>,
    ex: Rc<LocalExecutor<'static>>,
    /// Connections whose request head is being read (`HTTP_PENDING_LIMIT`).
    pending: RefCell<Vec<Rc<Pending>>>,
    /// Signalled whenever a slot of `pending` frees.
    freed: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
    /// Answered connections waiting for the client to close (at most
    /// `HTTP_PENDING_LIMIT` wait; past that they close at once).
    lingering: Cell<u32>,
    /// Counters for `/metrics` (`pending` is filled in by `snapshot`).
    http_phase: RefCell<http::HttpPhase>,
}

/// A slot in the HTTP-phase table; dropping it frees the slot and the IP's count.
struct Slot<'a> {
    shared: &'a Shared,
    entry: Rc<Pending>,
    /// The address counted against `HTTP_PENDING_LIMIT_PER_IP` (none for a
    /// trusted proxy).
    counted_ip: Option<IpAddr>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .borrow_mut()
            .retain(|p| !Rc::ptr_eq(p, &self.entry));
        if let Some(ip) = self.counted_ip {
            self.shared.hub.borrow_mut().ips.end_pending(ip);
        }
        let _ = self.shared.freed.0.try_send(());
    }
}

/// Runs the server on `listener` until a shutdown signal; returns the exit code.
pub fn run(cfg: Config, listener: std::net::TcpListener) -> i32 {
    let signals = match shutdown::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let ex = Rc::new(LocalExecutor::new());
    let shared = Rc::new(Shared {
        hub: Rc::new(RefCell::new(Relay::new(&cfg))),
        cfg: Rc::new(cfg),
        ex: ex.clone(),
        pending: RefCell::new(Vec::new()),
        freed: smol::channel::bounded(1),
        lingering: Cell::new(0),
        http_phase: RefCell::new(http::HttpPhase::default()),
    });
    smol::block_on(ex.run(serve(shared, listener, signals)))
}

/// Socket options set once on the listener and inherited by every accepted
/// socket (Linux copies them in `accept`), instead of two system calls per
/// connection: no Nagle delay, a fixed send buffer.
///
/// `TCP_DEFER_ACCEPT` would save a wake-up per connection, but it hides a
/// silent client from the process for the defer period, which would stretch
/// the `HANDSHAKE_TIMEOUT_SECS` deadline the contract promises: not used.
///
/// Also: the listen backlog is set to `LISTEN_BACKLOG` (`listen` again on a
/// listening socket only changes it; a socket from systemd gets the same),
/// and the open-file limit is raised to its hard limit, so `MAX_CONNECTIONS`
/// is not cut short by a soft limit of 1024 outside systemd.
fn tune_listener(listener: &std::net::TcpListener) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::socket::{Backlog, listen, setsockopt, sockopt};
    let _ = setsockopt(listener, sockopt::TcpNoDelay, &true);
    let _ = setsockopt(
        listener,
        sockopt::SndBuf,
        &crate::session::SEND_BUFFER_BYTES,
    );
    if let Ok(backlog) = Backlog::new(LISTEN_BACKLOG) {
        let _ = listen(listener, backlog);
    }
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn serve(
    shared: Rc<Shared>,
    listener: std::net::TcpListener,
    signals: shutdown::Signals,
) -> i32 {
    tune_listener(&listener);
    let listener = match async_net::TcpListener::try_from(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot use the listening socket: {e}");
            return 1;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        log::info!("listening on {addr}");
    }
    let notify = systemd::Notifier::from_env();
    notify.send("READY=1\nSTATUS=serving, 0 connections");
    shared.ex.spawn(heartbeat(shared.clone())).detach();
    shared.ex.spawn(stall_sweep(shared.clone())).detach();
    if let Some(period) = notify.watchdog_period() {
        shared
            .ex
            .spawn(watchdog(shared.clone(), notify.clone(), period))
            .detach();
    }

    let accepting = accept_loop(shared.clone(), listener);
    let signal = signals.wait();
    let name = accepting.or(signal).await;
    log::info!("{name}: shutting down");
    notify.send("STOPPING=1\nSTATUS=shutting down");

    shared.hub.borrow_mut().begin_shutdown();
    // A margin for noticing the signal and for the exit itself, so the
    // process is gone within SHUTDOWN_TIMEOUT_SECS of the signal.
    let limit = Duration::from_secs(shared.cfg.shutdown_timeout_secs.into())
        .saturating_sub(SHUTDOWN_MARGIN);
    let drained = async {
        while !shared.hub.borrow().all_closed() {
            Timer::after(Duration::from_millis(20)).await;
        }
        true
    };
    let in_time = drained.or(async {
        Timer::after(limit).await;
        false
    });
    if in_time.await {
        log::info!("all connections closed");
    } else {
        let left = shared.hub.borrow().open_connections();
        log::warn!("shutdown timeout: dropping {left} connections");
    }
    0
}

/// Accepts until it is dropped (the shutdown path drops it, closing the listener).
///
/// Every accepted connection gets an answer. While the HTTP-phase table is
/// full, new connections wait in the kernel's accept queue (`make_room`).
/// Once the table is half full, a client IP with `HTTP_PENDING_LIMIT_PER_IP`
/// connections in it gets `429 TOO_MANY_PENDING` with `Retry-After`
/// (trusted proxies are exempt).
async fn accept_loop(shared: Rc<Shared>, listener: async_net::TcpListener) -> &'static str {
    loop {
        make_room(&shared).await;
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical_ip(peer.ip());
        let sock: Arc<Async<TcpStream>> = stream.into();
        let now = clock::now_micros();
        let exempt = shared.cfg.trusted_proxies.contains(&ip);
        // The per-IP share binds once the table is half full: a burst from
        // one address (a NAT, a restart) uses the free room until then.
        let share = if shared.pending.borrow().len() * 2 >= shared.cfg.pending_limit as usize {
            shared.cfg.pending_limit_per_ip
        } else {
            u32::MAX
        };
        let counted = exempt || shared.hub.borrow_mut().ips.begin_pending(ip, share, now);
        let task_shared = shared.clone();
        if !counted {
            log::debug!("{ip}: too many connections in their HTTP phase");
            shared.http_phase.borrow_mut().refused_per_ip += 1;
            shared
                .ex
                .spawn(async move {
                    let body = http::error_response(
                        429,
                        "TOO_MANY_PENDING",
                        "too many unfinished requests from this address",
                        &format!("Retry-After: {PENDING_RETRY_AFTER_SECS}\r\n"),
                    );
                    respond(&task_shared, &sock, &body).await;
                })
                .detach();
            continue;
        }
        let (evict, evicted) = smol::channel::bounded(1);
        let entry = Rc::new(Pending {
            last_progress: Cell::new(now),
            evict,
        });
        shared.pending.borrow_mut().push(entry.clone());
        shared
            .ex
            .spawn(async move {
                let slot = Slot {
                    shared: &task_shared,
                    entry,
                    counted_ip: (!exempt).then_some(ip),
                };
                let upgraded = handle_http(&task_shared, &sock, peer, slot, evicted).await;
                if let Some((id, leftover)) = upgraded {
                    let session = Session::new(
                        id,
                        task_shared.hub.clone(),
                        task_shared.cfg.clone(),
                        sock,
                        leftover,
                    )
                    .await;
                    // A task of its own: its allocation is just the session.
                    task_shared.ex.spawn(session).detach();
                }
            })
            .detach();
        // Let the new connection read its head before the next accept: in a
        // burst, each request is served as it comes instead of all of them
        // piling into the table first.
        smol::future::yield_now().await;
    }
}

/// Returns once the HTTP-phase table has a free slot. A full table evicts
/// the connection that has made no progress for the longest time, once that
/// is `EVICT_IDLE_MICROS` or more; until then new connections stay in the
/// kernel's accept queue.
async fn make_room(shared: &Shared) {
    loop {
        let stalest = {
            let table = shared.pending.borrow();
            if table.len() < shared.cfg.pending_limit as usize {
                return;
            }
            table.iter().min_by_key(|p| p.last_progress.get()).cloned()
        };
        let Some(stalest) = stalest else { return };
        let idle = clock::now_micros().saturating_sub(stalest.last_progress.get());
        if idle >= EVICT_IDLE_MICROS {
            // Out of the table at once; its task answers 408 and closes.
            shared
                .pending
                .borrow_mut()
                .retain(|p| !Rc::ptr_eq(p, &stalest));
            let _ = stalest.evict.try_send(());
            shared.http_phase.borrow_mut().evicted += 1;
            return;
        }
        let wait = Duration::from_micros(EVICT_IDLE_MICROS - idle);
        async {
            let _ = shared.freed.1.recv().await;
        }
        .or(async {
            Timer::after(wait).await;
        })
        .await;
    }
}

enum HeadError {
    TooLarge,
    TooManyHeaders,
    Malformed,
    Closed,
    /// Not complete within `HANDSHAKE_TIMEOUT_SECS`.
    Timeout,
    /// Arriving slower than `HEAD_MIN_RATE`.
    TooSlow,
    /// Evicted from a full table.
    Evicted,
}

/// What ends one wait of `read_head`.
enum Wake {
    Read(std::io::Result<usize>),
    Check,
    Evicted,
}

/// Reads one request head; returns it with any bytes that followed it.
/// Records progress in `entry`; gives up at `deadline`, when the head falls
/// below the minimum rate, or when evicted.
async fn read_head(
    sock: &Async<TcpStream>,
    entry: &Pending,
    deadline: Instant,
    evicted: &smol::channel::Receiver<()>,
    is_head: &mut bool,
) -> Result<(http::Request, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut first_byte_at: Option<u64> = None;
    loop {
        // Wake up at the deadline, or when the bytes so far stop meeting the
        // minimum rate.
        let now = clock::now_micros();
        let check = match first_byte_at {
            Some(t0) => {
                let due = t0 + HEAD_GRACE_MICROS + buf.len() as u64 * 1_000_000 / HEAD_MIN_RATE;
                deadline.min(Instant::now() + Duration::from_micros(due.saturating_sub(now) + 1))
            }
            None => deadline,
        };
        let room = (http::MAX_HEAD_BYTES + 1 - buf.len()).min(chunk.len());
        let wake = async { Wake::Read((&*sock).read(&mut chunk[..room]).await) }
            .or(async {
                Timer::at(check).await;
                Wake::Check
            })
            .or(async {
                let _ = evicted.recv().await;
                Wake::Evicted
            })
            .await;
        let n = match wake {
            Wake::Evicted => return Err(HeadError::Evicted),
            Wake::Check => {
                if Instant::now() >= deadline {
                    return Err(HeadError::Timeout);
                }
                let now = clock::now_micros();
                if let Some(t0) = first_byte_at {
                    let allowed = now.saturating_sub(t0 + HEAD_GRACE_MICROS) * HEAD_MIN_RATE;
                    if buf.len() as u64 * 1_000_000 < allowed {
                        return Err(HeadError::TooSlow);
                    }
                }
                continue;
            }
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return Err(HeadError::Closed),
            Wake::Read(Ok(n)) => n,
        };
        let now = clock::now_micros();
        entry.last_progress.set(now);
        first_byte_at.get_or_insert(now);
        // Search from just before the new bytes: the terminator may straddle.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        // An error answer to a HEAD request has no body either.
        *is_head = buf.starts_with(b"HEAD ");
        if let Some(end) = http::head_end(&buf[from..]).map(|e| e + from) {
            if end > http::MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let req = http::parse_head(&buf[..end]).map_err(|e| match e {
                http::HeadError::TooManyHeaders => HeadError::TooManyHeaders,
                http::HeadError::Malformed => HeadError::Malformed,
            })?;
            return Ok((req, buf[end..].to_vec()));
        }
        if buf.len() > http::MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Writes a response (bounded by the handshake timeout) and ends the
/// connection. What the client still sends (a request body, say) is read and
/// discarded for a moment first: closing a socket with unread input makes the
/// kernel answer with a reset, which can destroy the response in flight.
///
/// At most `HTTP_PENDING_LIMIT` connections wait like that at once; past it
/// the connection closes as soon as the response is written.
async fn respond(shared: &Shared, sock: &Async<TcpStream>, bytes: &[u8]) {
    let limit = Duration::from_secs(shared.cfg.handshake_timeout_secs.into());
    write_within(sock, bytes, limit).await;
    let _ = sock.get_ref().shutdown(Shutdown::Write);
    if shared.lingering.get() >= shared.cfg.pending_limit {
        return;
    }
    shared.lingering.set(shared.lingering.get() + 1);
    let _counted = Defer(|| shared.lingering.set(shared.lingering.get() - 1));
    let drain = async {
        let mut scratch = [0u8; 512];
        let mut total = 0;
        while total < 64 * 1024 {
            match (&*sock).read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    drain
        .or(async {
            Timer::after(LINGER).await;
        })
        .await;
}

/// Runs its closure when dropped (also when the future holding it is).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Writes `bytes` unless that takes longer than `limit` (a client that does
/// not read). Whether everything was written.
async fn write_within(sock: &Async<TcpStream>, bytes: &[u8], limit: Duration) -> bool {
    async { (&*sock).write_all(bytes).await.is_ok() }
        .or(async {
            Timer::after(limit).await;
            false
        })
        .await
}

fn snapshot(shared: &Shared) -> Snapshot {
    let hub = shared.hub.borrow();
    let now = clock::now_micros();
    Snapshot {
        shutting_down: hub.shutting_down,
        uptime_seconds: clock::uptime_secs(),
        active_connections: hub.open_connections(),
        active_rooms: hub.active_rooms(),
        total_users: hub.users_in_rooms(),
        connections_v2: hub.connections_in(Dialect::V2),
        connections_legacy: hub.connections_in(Dialect::Legacy),
        max_connections: shared.cfg.max_connections,
        max_rooms: shared.cfg.max_rooms,
        queued_bytes: hub.queued_bytes(),
        read_buffer_bytes: hub.read_budget.borrow().in_use(),
        blocked_ips: hub.ips.blocked_count(now),
        strikes_total: hub.ips.strikes_total,
        ip_blocks_total: hub.ips.blocks_total,
        rss_bytes: crate::hubinfo::rss_bytes(),
        memory_bound_bytes: crate::hubinfo::memory_bound_bytes(&shared.cfg),
        stats: hub.stats.clone(),
        http: http::HttpPhase {
            pending: shared.pending.borrow().len() as u32,
            ..shared.http_phase.borrow().clone()
        },
    }
}

/// The client's address: the TCP peer, or the last `X-Forwarded-For` entry
/// when the peer is a trusted proxy.
fn client_ip(cfg: &Config, peer: IpAddr, req: &http::Request) -> IpAddr {
    let peer = canonical_ip(peer);
    if !cfg.trusted_proxies.contains(&peer) {
        return peer;
    }
    req.headers("x-forwarded-for")
        .last()
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| parse_forwarded_ip(last.trim()))
        .map(canonical_ip)
        .unwrap_or(peer)
}

/// An `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    entry.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// Serves one HTTP request. Returns the connection id and leftover bytes when
/// the connection was upgraded to a WebSocket. `slot` is its place in the
/// HTTP-phase table, given up as soon as the head is read (or not).
async fn handle_http(
    shared: &Shared,
    sock: &Async<TcpStream>,
    peer: SocketAddr,
    slot: Slot<'_>,
    evicted: smol::channel::Receiver<()>,
) -> Option<(ConnId, Vec<u8>)> {
    let limit = Duration::from_secs(shared.cfg.handshake_timeout_secs.into());
    let mut is_head = false;
    let head = read_head(
        sock,
        &slot.entry,
        Instant::now() + limit,
        &evicted,
        &mut is_head,
    )
    .await;
    drop(slot);
    let timeout =
        |message: &str, extra: &str| http::error_response(408, "REQUEST_TIMEOUT", message, extra);
    let (req, leftover) = match head {
        Err(HeadError::Timeout) => {
            shared.http_phase.borrow_mut().timed_out += 1;
            answer(
                shared,
                sock,
                is_head,
                &timeout("request head not received in time", ""),
            )
            .await;
            return None;
        }
        Err(HeadError::TooSlow) => {
            shared.http_phase.borrow_mut().too_slow += 1;
            let body = timeout("request head arriving too slowly", "");
            answer(shared, sock, is_head, &body).await;
            return None;
        }
        Err(HeadError::Evicted) => {
            let body = timeout(
                "request head not received: the server is busy",
                &format!("Retry-After: {PENDING_RETRY_AFTER_SECS}\r\n"),
            );
            answer(shared, sock, is_head, &body).await;
            return None;
        }
        Err(HeadError::Closed) => return None,
        Err(HeadError::TooLarge) => {
            let body =
                http::error_response(431, "HEADERS_TOO_LARGE", "request head exceeds 8 KiB", "");
            answer(shared, sock, is_head, &body).await;
            return None;
        }
        Err(HeadError::TooManyHeaders) => {
            let body = http::error_response(
                431,
                "HEADERS_TOO_LARGE",
                &format!("more than {} header lines", http::MAX_HEADERS),
                "",
            );
            answer(shared, sock, is_head, &body).await;
            return None;
        }
        Err(HeadError::Malformed) => {
            let body = http::error_response(400, "BAD_REQUEST", "malformed HTTP request", "");
            answer(shared, sock, is_head, &body).await;
            return None;
        }
        Ok(x) => x,
    };

    let reply = match route_upgrades(&req) {
        Route::Health { head } => {
            let snap = snapshot(shared);
            let status = if snap.shutting_down { 503 } else { 200 };
            http::response(
                status,
                "application/json",
                "",
                &http::health_body(&snap),
                head,
            )
        }
        Route::Metrics { head } => {
            let body = http::metrics_body(&snapshot(shared));
            http::response(200, "text/plain; version=0.0.4", "", &body, head)
        }
        Route::Page => {
            let local = client_ip(&shared.cfg, peer.ip(), &req).is_loopback();
            crate::page::respond(&req, &shared.cfg, local)
        }
        Route::NotFound => http::error_response(404, "NOT_FOUND", "no such path", ""),
        Route::MethodNotAllowed(allow) => http::error_response(
            405,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this path",
            &format!("Allow: {allow}\r\n"),
        ),
        Route::WebSocket => match upgrade(shared, &req, peer) {
            Ok((id, accept)) => {
                let dialect = path_dialect(&req.path);
                shared.hub.borrow_mut().set_dialect(id, dialect);
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                if !write_within(sock, response.as_bytes(), limit).await {
                    shared.hub.borrow_mut().remove_conn(id);
                    return None;
                }
                return Some((id, leftover));
            }
            Err(reply) => reply,
        },
    };
    // A HEAD request gets the status and headers of a GET, never a body
    // (`answer` strips it).
    answer(shared, sock, is_head, &reply).await;
    None
}

/// [`respond`] to a request that may be a HEAD: then without the body.
async fn answer(shared: &Shared, sock: &Async<TcpStream>, is_head: bool, reply: &[u8]) {
    let reply = if is_head {
        &reply[..http::head_end(reply).unwrap_or(reply.len())]
    } else {
        reply
    };
    respond(shared, sock, reply).await;
}

/// The route, with a WebSocket upgrade on `/` taken as one (a legacy
/// connection; LEGACY-DIALECT.md P1). A plain GET of `/` stays health.
fn route_upgrades(req: &http::Request) -> Route {
    match http::route(&req.method, &req.path) {
        Route::Health { head: false }
            if req.path == "/" && req.header_has_token("upgrade", "websocket") =>
        {
            Route::WebSocket
        }
        route => route,
    }
}

/// The dialect a connection starts in: legacy when upgraded on `/`.
fn path_dialect(path: &str) -> Dialect {
    if path == "/" {
        Dialect::Legacy
    } else {
        Dialect::V2
    }
}

/// Checks a WebSocket upgrade request and admits it. On success the
/// connection is registered in the hub; the value is its id and the
/// `Sec-WebSocket-Accept` value.
fn upgrade(
    shared: &Shared,
    req: &http::Request,
    peer: SocketAddr,
) -> Result<(ConnId, String), Vec<u8>> {
    let cfg = &shared.cfg;
    if req.method == "HEAD"
        || !req.header_has_token("upgrade", "websocket")
        || !req.header_has_token("connection", "upgrade")
    {
        return Err(http::error_response(
            426,
            "UPGRADE_REQUIRED",
            "this endpoint speaks WebSocket only",
            "Upgrade: websocket\r\n",
        ));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(http::error_response(
            426,
            "UNSUPPORTED_VERSION",
            "WebSocket version 13 is required",
            "Sec-WebSocket-Version: 13\r\n",
        ));
    }
    let key = req.header("sec-websocket-key").unwrap_or("");
    if req.version_minor != 1 || key.len() != 24 || !key.ends_with("==") {
        return Err(http::error_response(
            400,
            "BAD_REQUEST",
            "invalid WebSocket handshake",
            "",
        ));
    }

    let ip = client_ip(cfg, peer.ip(), req);
    let now = clock::now_micros();
    let mut hub = shared.hub.borrow_mut();
    if hub.shutting_down {
        return Err(http::error_response(
            503,
            "SHUTTING_DOWN",
            "the server is shutting down",
            &format!("Retry-After: {RETRY_AFTER_SECS}\r\n"),
        ));
    }
    // The contract's order: block, per-IP limit, server full, origin.
    // Every `Origin` header must be allowed (a second one is not a way in),
    // and there must be one.
    let origin_ok = cfg.allowed_origins.is_empty()
        || (req.header("origin").is_some()
            && req
                .headers("origin")
                .all(|o| cfg.allowed_origins.iter().any(|a| a == o)));
    let refusal = match hub.ips.check(ip, now) {
        Err(r) => Some(r),
        Ok(()) if hub.is_full() => Some(Refusal::TableFull),
        Ok(()) if !origin_ok => {
            hub.stats.rejected_origin += 1;
            return Err(http::error_response(
                403,
                "ORIGIN_NOT_ALLOWED",
                "origin not allowed",
                "",
            ));
        }
        Ok(()) => hub.ips.admit(ip, now).err(),
    };
    match refusal {
        None => {}
        Some(Refusal::Blocked(secs)) => {
            hub.stats.rejected_ip_blocked += 1;
            return Err(http::error_response(
                429,
                "IP_BLOCKED",
                "this address is temporarily blocked",
                &format!("Retry-After: {secs}\r\n"),
            ));
        }
        Some(Refusal::TooManyConnections) => {
            hub.stats.rejected_too_many_connections += 1;
            return Err(http::error_response(
                429,
                "TOO_MANY_CONNECTIONS",
                "too many connections from this address",
                &format!("Retry-After: {RETRY_AFTER_SECS}\r\n"),
            ));
        }
        Some(Refusal::TableFull) => {
            hub.stats.rejected_server_full += 1;
            return Err(http::error_response(
                503,
                "SERVER_FULL",
                "the server holds its maximum number of connections",
                &format!("Retry-After: {RETRY_AFTER_SECS}\r\n"),
            ));
        }
    }
    let id = hub.add_conn(ip);
    Ok((id, handshake::accept_key(key)))
}

/// Pings every connection each interval and drops those silent for 2.5
/// intervals. Ticks four times per interval so the drop is timely.
async fn heartbeat(shared: Rc<Shared>) {
    let interval_us = u64::from(shared.cfg.heartbeat_interval_secs) * 1_000_000;
    let tick = Duration::from_micros(interval_us / 4);
    let dead_after = interval_us * 5 / 2;
    let mut n: u64 = 0;
    loop {
        Timer::after(tick).await;
        n += 1;
        let mut hub = shared.hub.borrow_mut();
        if hub.shutting_down {
            return;
        }
        hub.heartbeat(clock::now_micros(), n % 4 == 0, dead_after);
    }
}

/// Taken off `SHUTDOWN_TIMEOUT_SECS` for the way in and out of the drain.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(200);

/// How often stalled sockets are looked for and paused senders re-checked.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

/// Four times a second, closes the connections whose sockets took no byte for the
/// stall time while bytes waited (`SLOW_CONSUMER_STALL_SECS`).
async fn stall_sweep(shared: Rc<Shared>) {
    loop {
        Timer::after(SWEEP_PERIOD).await;
        let mut hub = shared.hub.borrow_mut();
        if hub.shutting_down {
            return;
        }
        hub.evict_stalled(clock::now_micros());
    }
}

/// Sends `WATCHDOG=1` from the event loop itself, so a stuck loop stops the pings.
async fn watchdog(shared: Rc<Shared>, notify: systemd::Notifier, period: Duration) {
    loop {
        Timer::after(period).await;
        let (conns, rooms) = {
            let hub = shared.hub.borrow();
            (hub.open_connections(), hub.active_rooms())
        };
        notify.send(&format!(
            "WATCHDOG=1\nSTATUS=serving, {conns} connections in {rooms} rooms"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_with_or_without_a_port() {
        for (entry, ip) in [
            ("192.0.2.1", "192.0.2.1"),
            ("192.0.2.1:4711", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
        ] {
            assert_eq!(parse_forwarded_ip(entry), ip.parse().ok(), "{entry}");
        }
        assert_eq!(parse_forwarded_ip("unknown"), None);
    }
}
