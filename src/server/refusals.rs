//! Every way the HTTP phase refuses a connection, as one table: the status,
//! the contract's error code and message, the header line that goes with it,
//! and the counter it adds one to.

use super::Shared;
use crate::http;
use crate::limits::Refusal;
use crate::status::{HttpPhase, Stats};

/// `Retry-After` for refusals that are not blocks.
const RETRY_AFTER_SECS: u64 = 5;
/// `Retry-After` for a connection refused or evicted in its HTTP phase: the
/// table frees within moments, so a client may come straight back.
const PENDING_RETRY_AFTER_SECS: u64 = 1;

/// Why a connection in its HTTP phase is answered with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reject {
    /// Its IP's share of the HTTP-phase table is used.
    TooManyPending,
    /// Evicted from a full table before its head was complete.
    Evicted,
    /// Its head was not complete within `HANDSHAKE_TIMEOUT_SECS`.
    HeadTimeout,
    /// Its head arrived below the minimum rate.
    HeadTooSlow,
    /// Its head is over `MAX_HEAD_BYTES`.
    HeadTooLarge,
    /// Its head has over `MAX_HEADERS` header lines.
    TooManyHeaders,
    /// Its head is not a request head the relay accepts.
    Malformed,
    /// No such path.
    NotFound,
    /// A known path with a method it does not take; the value is `Allow`.
    MethodNotAllowed(&'static str),
    /// `/ws` without an upgrade to WebSocket.
    NotUpgrade,
    /// A WebSocket version other than 13.
    BadVersion,
    /// A malformed WebSocket key, or not HTTP/1.1.
    BadHandshake,
    /// The server is shutting down.
    ShuttingDown,
    /// The client IP is blocked for this many more seconds.
    IpBlocked(u64),
    /// The client IP holds its share of connections.
    TooManyConnections,
    /// The server holds `MAX_CONNECTIONS` (or its IP table is full).
    ServerFull,
    /// An `Origin` outside `ALLOWED_ORIGINS`, or none when it is set.
    OriginNotAllowed,
}

/// The header line an answer carries besides the usual ones.
enum Header {
    /// None.
    No,
    /// A fixed line, ending in `\r\n`.
    Line(&'static str),
    /// `Retry-After` with this many seconds.
    RetryAfter(u64),
    /// `Allow` with these methods.
    Allow(&'static str),
}

impl Reject {
    /// The answer's status, code, message and extra header line.
    #[rustfmt::skip]
    fn row(self) -> (u16, &'static str, &'static str, Header) {
        use Header::*;
        const PENDING: Header = RetryAfter(PENDING_RETRY_AFTER_SECS);
        const LATER: Header = RetryAfter(RETRY_AFTER_SECS);
        match self {
            // The request head (admission, then `head`).
            Reject::TooManyPending => (429, "TOO_MANY_PENDING", "too many unfinished requests from this address", PENDING),
            Reject::Evicted => (408, "REQUEST_TIMEOUT", "request head not received: the server is busy", PENDING),
            Reject::HeadTimeout => (408, "REQUEST_TIMEOUT", "request head not received in time", No),
            Reject::HeadTooSlow => (408, "REQUEST_TIMEOUT", "request head arriving too slowly", No),
            Reject::HeadTooLarge => (431, "HEADERS_TOO_LARGE", "request head exceeds 8 KiB", No),
            // The message names MAX_HEADERS (a test checks it).
            Reject::TooManyHeaders => (431, "HEADERS_TOO_LARGE", "more than 128 header lines", No),
            Reject::Malformed => (400, "BAD_REQUEST", "malformed HTTP request", No),
            // Routing.
            Reject::NotFound => (404, "NOT_FOUND", "no such path", No),
            Reject::MethodNotAllowed(allow) => (405, "METHOD_NOT_ALLOWED", "method not allowed on this path", Allow(allow)),
            // The WebSocket handshake.
            Reject::NotUpgrade => (426, "UPGRADE_REQUIRED", "this endpoint speaks WebSocket only", Line("Upgrade: websocket\r\n")),
            Reject::BadVersion => (426, "UNSUPPORTED_VERSION", "WebSocket version 13 is required", Line("Sec-WebSocket-Version: 13\r\n")),
            Reject::BadHandshake => (400, "BAD_REQUEST", "invalid WebSocket handshake", No),
            // Admission to the hub, in the contract's order.
            Reject::ShuttingDown => (503, "SHUTTING_DOWN", "the server is shutting down", LATER),
            Reject::IpBlocked(secs) => (429, "IP_BLOCKED", "this address is temporarily blocked", RetryAfter(secs)),
            Reject::TooManyConnections => (429, "TOO_MANY_CONNECTIONS", "too many connections from this address", LATER),
            Reject::ServerFull => (503, "SERVER_FULL", "the server holds its maximum number of connections", LATER),
            Reject::OriginNotAllowed => (403, "ORIGIN_NOT_ALLOWED", "origin not allowed", No),
        }
    }

    /// The counter this refusal adds one to, if any: the hub's [`Stats`] for
    /// upgrades, the HTTP phase's counters for heads. Evictions are counted
    /// when they happen (`admission::make_room`), not when answered.
    fn counter<'a>(self, stats: &'a mut Stats, phase: &'a mut HttpPhase) -> Option<&'a mut u64> {
        match self {
            Reject::TooManyPending => Some(&mut phase.refused_per_ip),
            Reject::HeadTimeout => Some(&mut phase.timed_out),
            Reject::HeadTooSlow => Some(&mut phase.too_slow),
            Reject::IpBlocked(_) => Some(&mut stats.rejected_ip_blocked),
            Reject::TooManyConnections => Some(&mut stats.rejected_too_many_connections),
            Reject::ServerFull => Some(&mut stats.rejected_server_full),
            Reject::OriginNotAllowed => Some(&mut stats.rejected_origin),
            _ => None,
        }
    }

    /// The complete HTTP answer, with the contract's JSON error body.
    pub(super) fn response(self) -> Vec<u8> {
        let (status, code, message, header) = self.row();
        let extra = match header {
            Header::No => String::new(),
            Header::Line(line) => line.to_string(),
            Header::RetryAfter(secs) => format!("Retry-After: {secs}\r\n"),
            Header::Allow(methods) => format!("Allow: {methods}\r\n"),
        };
        http::error_response(status, code, message, &extra)
    }
}

impl From<Refusal> for Reject {
    fn from(refusal: Refusal) -> Reject {
        match refusal {
            Refusal::Blocked(secs) => Reject::IpBlocked(secs),
            Refusal::TooManyConnections => Reject::TooManyConnections,
            Refusal::TableFull => Reject::ServerFull,
        }
    }
}

impl From<http::HeadError> for Reject {
    fn from(error: http::HeadError) -> Reject {
        match error {
            http::HeadError::TooManyHeaders => Reject::TooManyHeaders,
            http::HeadError::Malformed => Reject::Malformed,
        }
    }
}

/// Counts `reject` and returns its answer.
pub(super) fn refuse(shared: &Shared, reject: Reject) -> Vec<u8> {
    let mut hub = shared.hub.borrow_mut();
    let mut phase = shared.http_phase.borrow_mut();
    if let Some(counter) = reject.counter(&mut hub.stats, &mut phase) {
        *counter += 1;
    }
    reject.response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Reject; 17] = [
        Reject::TooManyPending,
        Reject::Evicted,
        Reject::HeadTimeout,
        Reject::HeadTooSlow,
        Reject::HeadTooLarge,
        Reject::TooManyHeaders,
        Reject::Malformed,
        Reject::NotFound,
        Reject::MethodNotAllowed("GET, HEAD"),
        Reject::NotUpgrade,
        Reject::BadVersion,
        Reject::BadHandshake,
        Reject::ShuttingDown,
        Reject::IpBlocked(42),
        Reject::TooManyConnections,
        Reject::ServerFull,
        Reject::OriginNotAllowed,
    ];

    fn text(reject: Reject) -> String {
        String::from_utf8(reject.response()).unwrap()
    }

    #[test]
    fn every_answer_is_a_json_error_with_its_header() {
        for reject in ALL {
            let (status, code, message, _) = reject.row();
            let r = text(reject);
            assert!(r.starts_with(&format!("HTTP/1.1 {status} ")), "{r}");
            let body = &r[http::head_end(r.as_bytes()).unwrap()..];
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                (v["code"].as_str(), v["message"].as_str()),
                (Some(code), Some(message))
            );
        }
        assert!(text(Reject::IpBlocked(42)).contains("\r\nRetry-After: 42\r\n"));
        assert!(text(Reject::ShuttingDown).contains("\r\nRetry-After: 5\r\n"));
        assert!(text(Reject::Evicted).contains("\r\nRetry-After: 1\r\n"));
        assert!(text(Reject::NotUpgrade).contains("\r\nUpgrade: websocket\r\n"));
        assert!(text(Reject::BadVersion).contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text(Reject::MethodNotAllowed("GET")).contains("\r\nAllow: GET\r\n"));
        assert!(!text(Reject::OriginNotAllowed).contains("Retry-After"));
    }

    #[test]
    fn the_header_count_message_names_the_limit() {
        let (_, _, message, _) = Reject::TooManyHeaders.row();
        assert_eq!(
            message,
            format!("more than {} header lines", http::MAX_HEADERS)
        );
    }

    #[test]
    fn each_counted_refusal_has_a_counter_of_its_own() {
        let mut seen = Vec::new();
        for reject in ALL {
            let (mut stats, mut phase) = (Stats::default(), HttpPhase::default());
            if let Some(counter) = reject.counter(&mut stats, &mut phase) {
                *counter += 1;
                let counts = format!("{stats:?} {phase:?}");
                assert!(!seen.contains(&counts), "{reject:?} shares a counter");
                seen.push(counts);
            }
        }
        assert_eq!(seen.len(), 7);
        let (mut stats, mut phase) = (Stats::default(), HttpPhase::default());
        *Reject::OriginNotAllowed
            .counter(&mut stats, &mut phase)
            .unwrap() += 1;
        assert_eq!(stats.rejected_origin, 1);
        assert!(Reject::Evicted.counter(&mut stats, &mut phase).is_none());
    }

    #[test]
    fn ip_table_refusals_map_to_their_answers() {
        assert_eq!(Reject::from(Refusal::Blocked(9)), Reject::IpBlocked(9));
        assert_eq!(Reject::from(Refusal::TableFull), Reject::ServerFull);
        assert_eq!(
            Reject::from(http::HeadError::TooManyHeaders),
            Reject::TooManyHeaders
        );
    }
}
