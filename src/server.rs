//! The listener: accepts TCP connections, reads one HTTP request head under a
//! deadline, answers health/metrics/errors, admits WebSocket upgrades, and
//! runs the heartbeat and the shutdown sequence.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor, Timer};

use crate::clock;
use crate::config::Config;
use crate::http::{self, Route, Snapshot};
use crate::limits::{Refusal, canonical_ip};
use crate::rooms::Hub;
use crate::session::Session;
use crate::{handshake, shutdown, systemd};

/// Connections that may be in their HTTP phase at once; each holds a head
/// buffer of up to 8 KiB for at most `HANDSHAKE_TIMEOUT_SECS`.
pub const MAX_PENDING: u32 = 256;
/// Of those, from one client IP.
pub const MAX_PENDING_PER_IP: u32 = 16;
/// How long a finished HTTP exchange waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);
/// `Retry-After` for refusals that are not blocks.
const RETRY_AFTER_SECS: u32 = 5;

/// What every task of the server shares.
struct Shared {
    cfg: Rc<Config>,
    hub: Rc<RefCell<Hub>>,
    ex: Rc<LocalExecutor<'static>>,
    pending: Cell<u32>,
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
        hub: Rc::new(RefCell::new(Hub::new(&cfg))),
        cfg: Rc::new(cfg),
        ex: ex.clone(),
        pending: Cell::new(0),
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
fn tune_listener(listener: &std::net::TcpListener) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(listener, sockopt::TcpNoDelay, &true);
    let _ = setsockopt(
        listener,
        sockopt::SndBuf,
        &crate::session::SEND_BUFFER_BYTES,
    );
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
    let limit = Duration::from_secs(shared.cfg.shutdown_timeout_secs.into());
    let drained = async {
        while !shared.hub.borrow().all_closes_sent() {
            Timer::after(Duration::from_millis(20)).await;
        }
        true
    };
    let in_time = drained.or(async {
        Timer::after(limit).await;
        false
    });
    if in_time.await {
        log::info!("every connection sent its close frame");
    } else {
        let left = shared.hub.borrow().open_connections();
        log::warn!("shutdown timeout: dropping {left} connections");
    }
    0
}

/// Accepts until it is dropped (the shutdown path drops it, closing the listener).
async fn accept_loop(shared: Rc<Shared>, listener: async_net::TcpListener) -> &'static str {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.pending.get() >= MAX_PENDING {
            continue;
        }
        let ip = canonical_ip(peer.ip());
        if !shared
            .hub
            .borrow_mut()
            .ips
            .begin_pending(ip, MAX_PENDING_PER_IP, clock::now_micros())
        {
            continue;
        }
        shared.pending.set(shared.pending.get() + 1);
        let sock: Arc<Async<TcpStream>> = stream.into();
        let task_shared = shared.clone();
        shared
            .ex
            .spawn(async move {
                let upgraded = handle_http(&task_shared, &sock, peer).await;
                task_shared.pending.set(task_shared.pending.get() - 1);
                task_shared.hub.borrow_mut().ips.end_pending(ip);
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
    }
}

enum HeadError {
    TooLarge,
    Malformed,
    Closed,
}

/// Reads one request head; returns it with any bytes that followed it.
async fn read_head(sock: &Async<TcpStream>) -> Result<(http::Request, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = (http::MAX_HEAD_BYTES + 1 - buf.len()).min(chunk.len());
        let n = (&*sock)
            .read(&mut chunk[..room])
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        // Search from just before the new bytes: the terminator may straddle.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = http::head_end(&buf[from..]).map(|e| e + from) {
            if end > http::MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let req = http::parse_head(&buf[..end]).ok_or(HeadError::Malformed)?;
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
async fn respond(shared: &Shared, sock: &Async<TcpStream>, bytes: &[u8]) {
    let limit = Duration::from_secs(shared.cfg.handshake_timeout_secs.into());
    write_within(sock, bytes, limit).await;
    let _ = sock.get_ref().shutdown(Shutdown::Write);
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
        max_connections: shared.cfg.max_connections,
        max_rooms: shared.cfg.max_rooms,
        queued_bytes: hub.queued_bytes(),
        blocked_ips: hub.ips.blocked_count(now),
        strikes_total: hub.ips.strikes_total,
        ip_blocks_total: hub.ips.blocks_total,
        rss_bytes: crate::hubinfo::rss_bytes(),
        memory_bound_bytes: crate::hubinfo::memory_bound_bytes(&shared.cfg),
        stats: hub.stats.clone(),
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
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .map(canonical_ip)
        .unwrap_or(peer)
}

/// Serves one HTTP request. Returns the connection id and leftover bytes when
/// the connection was upgraded to a WebSocket.
async fn handle_http(
    shared: &Shared,
    sock: &Async<TcpStream>,
    peer: SocketAddr,
) -> Option<(u32, Vec<u8>)> {
    let limit = Duration::from_secs(shared.cfg.handshake_timeout_secs.into());
    let head = async { Some(read_head(sock).await) }
        .or(async {
            Timer::after(limit).await;
            None
        })
        .await;
    let (req, leftover) = match head {
        None => {
            let body = http::error_response(
                408,
                "REQUEST_TIMEOUT",
                "request head not received in time",
                "",
            );
            respond(shared, sock, &body).await;
            return None;
        }
        Some(Err(HeadError::Closed)) => return None,
        Some(Err(HeadError::TooLarge)) => {
            let body =
                http::error_response(431, "HEADERS_TOO_LARGE", "request head exceeds 8 KiB", "");
            respond(shared, sock, &body).await;
            return None;
        }
        Some(Err(HeadError::Malformed)) => {
            let body = http::error_response(400, "BAD_REQUEST", "malformed HTTP request", "");
            respond(shared, sock, &body).await;
            return None;
        }
        Some(Ok(x)) => x,
    };

    let reply = match http::route(&req.method, &req.path) {
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
            http::response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                &body,
                head,
            )
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
    // A HEAD request gets the status and headers of a GET, never a body.
    let reply = if req.method == "HEAD" {
        let end = http::head_end(&reply).unwrap_or(reply.len());
        &reply[..end]
    } else {
        &reply[..]
    };
    respond(shared, sock, reply).await;
    None
}

/// Checks a WebSocket upgrade request and admits it. On success the
/// connection is registered in the hub; the value is its id and the
/// `Sec-WebSocket-Accept` value.
fn upgrade(
    shared: &Shared,
    req: &http::Request,
    peer: SocketAddr,
) -> Result<(u32, String), Vec<u8>> {
    let cfg = &shared.cfg;
    if !req.header_has_token("upgrade", "websocket")
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
    let origin_ok = cfg.allowed_origins.is_empty()
        || req
            .header("origin")
            .is_some_and(|o| cfg.allowed_origins.iter().any(|a| a == o));
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
