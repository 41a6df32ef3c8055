//! One HTTP request from its head to its answer: the route, the health and
//! metrics snapshot, the page, and the WebSocket upgrade with its checks.
//!
//! The client's address is the TCP peer, or the last `X-Forwarded-For`
//! entry when the peer is one of `TRUSTED_PROXIES`.

use std::net::{IpAddr, SocketAddr, TcpStream};

use smol::Async;

use super::Shared;
use super::head;
use super::refusals::{Reject, refuse};
use crate::config::Config;
use crate::conns::ConnId;
use crate::http::{self, Request, Route};
use crate::limits::canonical_ip;
use crate::protocol::Dialect;
use crate::relay::Relay;
use crate::status::{self, HttpPhase, Snapshot};
use crate::{board, clock, handshake};

/// Answers one request (`is_head`: a HEAD request); `leftover` are the bytes
/// that followed its head. Returns the connection id and those bytes when the
/// connection was upgraded to a WebSocket.
pub(super) async fn serve(
    shared: &Shared,
    sock: &Async<TcpStream>,
    peer: SocketAddr,
    req: Request,
    leftover: Vec<u8>,
    is_head: bool,
) -> Option<(ConnId, Vec<u8>)> {
    let reply = match route_upgrades(&req) {
        Route::Health { head } => {
            let snap = snapshot(shared);
            let status = if snap.shutting_down { 503 } else { 200 };
            let body = status::health_body(&snap);
            http::response(status, "application/json", "", &body, head)
        }
        Route::Metrics { head } => {
            let body = status::metrics_body(&snapshot(shared));
            http::response(200, "text/plain; version=0.0.4", "", &body, head)
        }
        Route::Page => {
            let local = client_ip(&shared.cfg, peer.ip(), &req).is_loopback();
            crate::page::respond(&req, &shared.cfg, local)
        }
        Route::NotFound => refuse(shared, Reject::NotFound),
        Route::MethodNotAllowed(allow) => refuse(shared, Reject::MethodNotAllowed(allow)),
        Route::WebSocket => match upgrade(shared, &req, peer) {
            Ok((id, accept)) => return switch(shared, sock, &req, id, &accept, leftover).await,
            Err(reject) => refuse(shared, reject),
        },
    };
    // A HEAD request gets the status and headers of a GET, never a body
    // (`answer` strips it).
    head::answer(shared, sock, is_head, &reply).await;
    None
}

/// Answers an admitted upgrade with 101 and hands the connection over;
/// a client that does not take the 101 in time is removed again.
async fn switch(
    shared: &Shared,
    sock: &Async<TcpStream>,
    req: &Request,
    id: ConnId,
    accept: &str,
    leftover: Vec<u8>,
) -> Option<(ConnId, Vec<u8>)> {
    let dialect = path_dialect(&req.path);
    shared.hub.borrow_mut().set_dialect(id, dialect);
    // Built on the stack: the key is 28 bytes of base64.
    let mut response = heapless::Vec::<u8, 160>::new();
    let parts: [&[u8]; 3] = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        accept.as_bytes(),
        b"\r\n\r\n",
    ];
    for part in parts {
        let _ = response.extend_from_slice(part);
    }
    if !head::write_within(sock, &response, shared.handshake_limit()).await {
        shared.hub.borrow_mut().remove_conn(id);
        return None;
    }
    Some((id, leftover))
}

/// The route, with a WebSocket upgrade on `/` taken as one (a legacy
/// connection; LEGACY-DIALECT.md P1). A plain GET of `/` stays health.
fn route_upgrades(req: &Request) -> Route {
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

/// One handshake check: what the request must satisfy, and the refusal when
/// it does not.
type Check = (fn(&Request) -> bool, Reject);

/// What a WebSocket handshake must satisfy, in the contract's order.
const HANDSHAKE: [Check; 3] = [
    (
        |r| {
            r.method != "HEAD"
                && r.header_has_token("upgrade", "websocket")
                && r.header_has_token("connection", "upgrade")
        },
        Reject::NotUpgrade,
    ),
    (
        |r| r.header("sec-websocket-version") == Some("13"),
        Reject::BadVersion,
    ),
    (
        |r| r.version_minor == 1 && key_is_plausible(websocket_key(r)),
        Reject::BadHandshake,
    ),
];

/// The `Sec-WebSocket-Key` value ("" without one).
fn websocket_key(req: &Request) -> &str {
    req.header("sec-websocket-key").unwrap_or("")
}

/// Whether `key` looks like base64 of 16 bytes, as the handshake requires.
fn key_is_plausible(key: &str) -> bool {
    key.len() == 24 && key.ends_with("==")
}

/// The first handshake check `req` fails, if any.
fn check_handshake(req: &Request) -> Result<(), Reject> {
    match HANDSHAKE.iter().find(|(holds, _)| !holds(req)) {
        Some(&(_, reject)) => Err(reject),
        None => Ok(()),
    }
}

/// Checks a WebSocket upgrade request and admits it. On success the
/// connection is registered in the hub; the value is its id and the
/// `Sec-WebSocket-Accept` value.
fn upgrade(shared: &Shared, req: &Request, peer: SocketAddr) -> Result<(ConnId, String), Reject> {
    check_handshake(req)?;
    let ip = client_ip(&shared.cfg, peer.ip(), req);
    let now = clock::now_micros();
    let mut hub = shared.hub.borrow_mut();
    admit(&mut hub, &shared.cfg, req, ip, now)?;
    let id = hub.add_conn(ip);
    Ok((id, handshake::accept_key(websocket_key(req))))
}

/// The hub's side of admission, in the contract's order: shutdown, block,
/// per-IP limit, server full, origin; then `ip` is counted.
fn admit(hub: &mut Relay, cfg: &Config, req: &Request, ip: IpAddr, now: u64) -> Result<(), Reject> {
    if hub.shutting_down {
        return Err(Reject::ShuttingDown);
    }
    hub.ips.check(ip, now)?;
    if hub.is_full() {
        return Err(Reject::ServerFull);
    }
    if !origin_allowed(cfg, req) {
        return Err(Reject::OriginNotAllowed);
    }
    hub.ips.admit(ip, now)?;
    Ok(())
}

/// Whether the request's origin may connect: any when `ALLOWED_ORIGINS` is
/// empty; else there must be an `Origin`, and every one must be allowed (a
/// second one is not a way in).
fn origin_allowed(cfg: &Config, req: &Request) -> bool {
    cfg.allowed_origins.is_empty()
        || (req.header("origin").is_some()
            && req
                .headers("origin")
                .all(|o| cfg.allowed_origins.iter().any(|a| a == o)))
}

/// The numbers `/health` and `/metrics` report, from the hub, the
/// configuration, the board and the HTTP-phase table.
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
        rss_bytes: board::rss_bytes(),
        memory_bound_bytes: board::memory_bound_bytes(&shared.cfg),
        history_rooms: hub.history_rooms(),
        history_bytes: hub.history_bytes(),
        stats: hub.stats.clone(),
        http: HttpPhase {
            pending: shared.table.len() as u32,
            ..shared.http_phase.borrow().clone()
        },
    }
}

/// The client's address: the TCP peer, or the last `X-Forwarded-For` entry
/// when the peer is a trusted proxy.
fn client_ip(cfg: &Config, peer: IpAddr, req: &Request) -> IpAddr {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn cfg(vars: &[(&str, &str)]) -> Config {
        Config::load(&Source::from_vars(vars)).unwrap()
    }

    fn request(head: &str) -> Request {
        http::parse_head(head.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    const UPGRADE: &str = "GET /ws HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade\n\
Sec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n";

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

    #[test]
    fn the_client_is_the_last_forwarded_entry_of_a_trusted_proxy() {
        let c = cfg(&[("TRUSTED_PROXIES", "10.0.0.1")]);
        let req = request(
            "GET / HTTP/1.1\nX-Forwarded-For: 1.1.1.1\nX-Forwarded-For: 2.2.2.2, ::ffff:3.3.3.3\n\n",
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_ip(&c, ip("10.0.0.1"), &req), ip("3.3.3.3"));
        assert_eq!(client_ip(&c, ip("::ffff:10.0.0.1"), &req), ip("3.3.3.3"));
        // Anyone else's header is ignored.
        assert_eq!(client_ip(&c, ip("10.0.0.2"), &req), ip("10.0.0.2"));
        // A trusted proxy with an unreadable entry is the client itself.
        let junk = request("GET / HTTP/1.1\nX-Forwarded-For: 1.1.1.1, unknown\n\n");
        assert_eq!(client_ip(&c, ip("10.0.0.1"), &junk), ip("10.0.0.1"));
    }

    #[test]
    fn handshake_checks_in_order() {
        assert_eq!(check_handshake(&request(&format!("{UPGRADE}\n"))), Ok(()));
        let without = |line: &str| {
            let head = UPGRADE.replace(line, "");
            check_handshake(&request(&format!("{head}\n")))
        };
        assert_eq!(without("Connection: Upgrade\n"), Err(Reject::NotUpgrade));
        assert_eq!(without("Upgrade: websocket\n"), Err(Reject::NotUpgrade));
        assert_eq!(
            without("Sec-WebSocket-Version: 13\n"),
            Err(Reject::BadVersion)
        );
        let no_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n";
        assert_eq!(without(no_key), Err(Reject::BadHandshake));
        // The first failing check decides: no upgrade and no version is 426 UPGRADE_REQUIRED.
        let bare = request("GET /ws HTTP/1.1\nSec-WebSocket-Key: short\n\n");
        assert_eq!(check_handshake(&bare), Err(Reject::NotUpgrade));
        let head = request(&format!("{}\n", UPGRADE.replacen("GET", "HEAD", 1)));
        assert_eq!(check_handshake(&head), Err(Reject::NotUpgrade));
        let old = request(&format!("{}\n", UPGRADE.replace("HTTP/1.1", "HTTP/1.0")));
        assert_eq!(check_handshake(&old), Err(Reject::BadHandshake));
    }

    #[test]
    fn origins_must_all_be_allowed() {
        let open = cfg(&[]);
        let shut = cfg(&[("ALLOWED_ORIGINS", "https://a.example")]);
        let none = request("GET /ws HTTP/1.1\n\n");
        let good = request("GET /ws HTTP/1.1\nOrigin: https://a.example\n\n");
        let mixed =
            request("GET /ws HTTP/1.1\nOrigin: https://a.example\nOrigin: https://b.example\n\n");
        assert!(origin_allowed(&open, &none) && origin_allowed(&open, &mixed));
        assert!(origin_allowed(&shut, &good));
        assert!(!origin_allowed(&shut, &none));
        assert!(!origin_allowed(&shut, &mixed));
    }

    #[test]
    fn upgrades_on_the_root_are_legacy_connections() {
        let root = request(&format!("{}\n", UPGRADE.replacen("/ws", "/", 1)));
        assert_eq!(route_upgrades(&root), Route::WebSocket);
        assert_eq!(path_dialect(&root.path), Dialect::Legacy);
        let health = request("GET / HTTP/1.1\n\n");
        assert_eq!(route_upgrades(&health), Route::Health { head: false });
        assert_eq!(path_dialect("/ws"), Dialect::V2);
    }
}
