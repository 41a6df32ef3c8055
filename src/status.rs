//! The relay's health and metrics: the counters it keeps ([`Stats`],
//! [`HttpPhase`]), the [`Snapshot`] of them taken for one request, and the two
//! bodies made from it: `/health` JSON and `/metrics` in Prometheus text
//! format.
//!
//! Plain data and text: whoever owns the numbers fills in a snapshot.

use std::fmt::Write;

use crate::clock;

/// Counters of the hub's events, reported by `/health` and `/metrics`.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// WebSocket connections accepted.
    pub connections_total: u64,
    /// Chat messages relayed to a room.
    pub messages_relayed: u64,
    /// Reactions relayed to a room.
    pub reactions_relayed: u64,
    /// Room frames written to members.
    pub deliveries: u64,
    /// Frames answered with `RATE_LIMITED`.
    pub rate_limited: u64,
    /// Frames answered with an error code.
    pub protocol_errors: u64,
    /// Connections closed for an oversize message.
    pub oversize_messages: u64,
    /// Connections closed for exceeding the frame limit.
    pub flood_closes: u64,
    /// Connections closed with 1013 as slow consumers.
    pub slow_consumer_closes: u64,
    /// Connections dropped for silence.
    pub heartbeat_timeouts: u64,
    /// Upgrades refused because the client IP is blocked.
    pub rejected_ip_blocked: u64,
    /// Upgrades refused because the client IP holds its share of connections.
    pub rejected_too_many_connections: u64,
    /// Upgrades refused because the server holds `MAX_CONNECTIONS`.
    pub rejected_server_full: u64,
    /// Upgrades refused for their `Origin`.
    pub rejected_origin: u64,
}

/// The numbers `/health` and `/metrics` report, taken at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Whether the shutdown has begun (`/health` answers 503 then).
    pub shutting_down: bool,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// Open WebSocket connections.
    pub active_connections: u32,
    /// Rooms with at least one member.
    pub active_rooms: usize,
    /// Connections that are in a room.
    pub total_users: u32,
    /// Open v2 connections (`/metrics` only: `/health` keeps its shape).
    pub connections_v2: u32,
    /// Open legacy connections (`/metrics` only).
    pub connections_legacy: u32,
    /// `MAX_CONNECTIONS`.
    pub max_connections: u32,
    /// `MAX_ROOMS`.
    pub max_rooms: u32,
    /// Outbound bytes waiting for slow sockets.
    pub queued_bytes: usize,
    /// Bytes of the shared budget for reading large frames in use.
    pub read_buffer_bytes: usize,
    /// Client IPs blocked right now.
    pub blocked_ips: usize,
    /// Abuse strikes counted since start.
    pub strikes_total: u64,
    /// Client IPs blocked since start.
    pub ip_blocks_total: u64,
    /// Resident memory now.
    pub rss_bytes: u64,
    /// The README's worst-case memory bound at this configuration.
    pub memory_bound_bytes: u64,
    /// Rooms with catch-up history, empty ones included.
    pub history_rooms: usize,
    /// Bytes charged to `HISTORY_BUDGET_BYTES` (frames and bookkeeping).
    pub history_bytes: usize,
    /// The hub's event counters.
    pub stats: Stats,
    /// The HTTP phase (`/metrics` only).
    pub http: HttpPhase,
}

/// The HTTP phase's table and what ended connections in it early.
#[derive(Debug, Clone, Default)]
pub struct HttpPhase {
    /// Connections whose request head is being read now.
    pub pending: u32,
    /// Refused on accept: their IP's share of the table was used (429).
    pub refused_per_ip: u64,
    /// Evicted from a full table (408).
    pub evicted: u64,
    /// Heads arriving below the minimum rate (408).
    pub too_slow: u64,
    /// Heads not complete within `HANDSHAKE_TIMEOUT_SECS` (408).
    pub timed_out: u64,
}

/// The `/health` JSON body.
pub fn health_body(s: &Snapshot) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(if s.shutting_down {
        "{\"status\":\"shutting_down\",\"timestamp\":\""
    } else {
        "{\"status\":\"healthy\",\"timestamp\":\""
    });
    clock::write_rfc3339(&mut out, clock::unix_millis(), false);
    let st = &s.stats;
    let _ = write!(
        out,
        "\",\"stats\":{{\"uptime_seconds\":{},\"active_connections\":{},\"active_rooms\":{},\"total_users\":{},\
\"max_connections\":{},\"max_rooms\":{},\"connections_total\":{},\"messages_relayed\":{},\"reactions_relayed\":{},\
\"deliveries\":{},\"queued_bytes\":{},\"rate_limited\":{},\"protocol_errors\":{},\"oversize_messages\":{},\
\"flood_closes\":{},\"slow_consumer_closes\":{},\"heartbeat_timeouts\":{},\"strikes\":{},\"ip_blocks\":{},\
\"blocked_ips\":{},\"rejected_connections\":{},\"read_buffer_bytes\":{},\"rss_bytes\":{},\"memory_bound_bytes\":{},\
\"history_rooms\":{},\"history_bytes\":{}}}}}",
        s.uptime_seconds,
        s.active_connections,
        s.active_rooms,
        s.total_users,
        s.max_connections,
        s.max_rooms,
        st.connections_total,
        st.messages_relayed,
        st.reactions_relayed,
        st.deliveries,
        s.queued_bytes,
        st.rate_limited,
        st.protocol_errors,
        st.oversize_messages,
        st.flood_closes,
        st.slow_consumer_closes,
        st.heartbeat_timeouts,
        s.strikes_total,
        s.ip_blocks_total,
        s.blocked_ips,
        st.rejected_ip_blocked
            + st.rejected_too_many_connections
            + st.rejected_server_full
            + st.rejected_origin,
        s.read_buffer_bytes,
        s.rss_bytes,
        s.memory_bound_bytes,
        s.history_rooms,
        s.history_bytes,
    );
    out
}

/// A metric of one sample: name (after `whisper_`), type, help, value.
type Single = (&'static str, &'static str, &'static str, u64);

/// The metrics of one sample each, in the order `/metrics` lists them.
#[rustfmt::skip]
fn single_metrics(s: &Snapshot) -> [Single; 23] {
    const GAUGE: &str = "gauge";
    const COUNTER: &str = "counter";
    let st = &s.stats;
    [
        ("up", GAUGE, "1 while serving, 0 while shutting down.", u64::from(!s.shutting_down)),
        ("uptime_seconds", GAUGE, "Seconds since start.", s.uptime_seconds),
        ("connections_active", GAUGE, "Open WebSocket connections.", s.active_connections.into()),
        ("rooms_active", GAUGE, "Rooms with at least one member.", s.active_rooms as u64),
        ("users_in_rooms", GAUGE, "Connections that are in a room.", s.total_users.into()),
        ("connections_max", GAUGE, "MAX_CONNECTIONS.", s.max_connections.into()),
        ("queued_bytes", GAUGE, "Outbound bytes waiting for slow sockets.", s.queued_bytes as u64),
        ("read_buffer_bytes", GAUGE, "Bytes of the shared budget for reading large frames in use.", s.read_buffer_bytes as u64),
        ("blocked_ips", GAUGE, "Client IPs blocked right now.", s.blocked_ips as u64),
        ("history_rooms", GAUGE, "Rooms with catch-up history, empty ones included.", s.history_rooms as u64),
        ("history_bytes", GAUGE, "Bytes of retained catch-up history with its bookkeeping.", s.history_bytes as u64),
        ("connections_total", COUNTER, "WebSocket connections accepted.", st.connections_total),
        ("messages_relayed_total", COUNTER, "Chat messages relayed to a room.", st.messages_relayed),
        ("reactions_relayed_total", COUNTER, "Reactions relayed to a room.", st.reactions_relayed),
        ("deliveries_total", COUNTER, "Room frames written to members.", st.deliveries),
        ("rate_limited_total", COUNTER, "Frames answered with RATE_LIMITED.", st.rate_limited),
        ("protocol_errors_total", COUNTER, "Frames answered with an error code.", st.protocol_errors),
        ("oversize_messages_total", COUNTER, "Connections closed for an oversize message.", st.oversize_messages),
        ("flood_closes_total", COUNTER, "Connections closed for exceeding the frame limit.", st.flood_closes),
        ("slow_consumer_closes_total", COUNTER, "Connections closed with 1013 as slow consumers.", st.slow_consumer_closes),
        ("heartbeat_timeouts_total", COUNTER, "Connections dropped for silence.", st.heartbeat_timeouts),
        ("strikes_total", COUNTER, "Abuse strikes counted against client IPs.", s.strikes_total),
        ("ip_blocks_total", COUNTER, "Client IPs blocked.", s.ip_blocks_total),
    ]
}

/// The `/metrics` body in Prometheus text format 0.0.4.
pub fn metrics_body(s: &Snapshot) -> String {
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in single_metrics(s) {
        let _ = write!(
            out,
            "# HELP whisper_{name} {help}\n# TYPE whisper_{name} {kind}\nwhisper_{name} {value}\n"
        );
    }
    let st = &s.stats;
    let _ = write!(
        out,
        "# HELP whisper_rejected_connections_total WebSocket upgrades refused, by reason.\n\
# TYPE whisper_rejected_connections_total counter\n\
whisper_rejected_connections_total{{reason=\"ip_blocked\"}} {}\n\
whisper_rejected_connections_total{{reason=\"too_many_connections\"}} {}\n\
whisper_rejected_connections_total{{reason=\"server_full\"}} {}\n\
whisper_rejected_connections_total{{reason=\"origin_not_allowed\"}} {}\n",
        st.rejected_ip_blocked,
        st.rejected_too_many_connections,
        st.rejected_server_full,
        st.rejected_origin
    );
    let h = &s.http;
    let _ = write!(
        out,
        "# HELP whisper_http_pending Connections whose request head is being read.\n\
# TYPE whisper_http_pending gauge\n\
whisper_http_pending {}\n\
# HELP whisper_http_ended_total Connections ended in their HTTP phase, by reason.\n\
# TYPE whisper_http_ended_total counter\n\
whisper_http_ended_total{{reason=\"ip_share\"}} {}\n\
whisper_http_ended_total{{reason=\"evicted\"}} {}\n\
whisper_http_ended_total{{reason=\"too_slow\"}} {}\n\
whisper_http_ended_total{{reason=\"timeout\"}} {}\n",
        h.pending, h.refused_per_ip, h.evicted, h.too_slow, h.timed_out
    );
    let _ = write!(
        out,
        "# HELP whisper_connections Open WebSocket connections by dialect.\n\
# TYPE whisper_connections gauge\n\
whisper_connections{{dialect=\"v2\"}} {}\n\
whisper_connections{{dialect=\"legacy\"}} {}\n",
        s.connections_v2, s.connections_legacy
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_json_with_required_keys() {
        let body = health_body(&Snapshot::default());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "healthy");
        for key in [
            "uptime_seconds",
            "active_connections",
            "active_rooms",
            "total_users",
            "rss_bytes",
            "memory_bound_bytes",
            "history_rooms",
            "history_bytes",
        ] {
            assert!(v["stats"][key].is_u64(), "{key}");
        }
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn health_counts_every_rejection_and_reports_shutdown() {
        let mut s = Snapshot {
            shutting_down: true,
            ..Snapshot::default()
        };
        s.stats.rejected_ip_blocked = 1;
        s.stats.rejected_too_many_connections = 2;
        s.stats.rejected_server_full = 3;
        s.stats.rejected_origin = 4;
        let v: serde_json::Value = serde_json::from_str(&health_body(&s)).unwrap();
        assert_eq!(v["status"], "shutting_down");
        assert_eq!(v["stats"]["rejected_connections"], 10);
    }

    #[test]
    fn metrics_are_prometheus_text_with_labels() {
        let mut s = Snapshot::default();
        s.stats.rejected_origin = 7;
        s.http.too_slow = 3;
        s.connections_legacy = 2;
        let text = metrics_body(&s);
        assert!(text.contains("whisper_up 1\n"));
        assert!(text.contains("whisper_history_rooms 0\n"));
        assert!(text.contains("whisper_history_bytes 0\n"));
        assert!(
            text.contains("whisper_rejected_connections_total{reason=\"origin_not_allowed\"} 7\n")
        );
        assert!(text.contains("whisper_http_ended_total{reason=\"too_slow\"} 3\n"));
        assert!(text.contains("whisper_connections{dialect=\"legacy\"} 2\n"));
        // Every sample follows its HELP and TYPE lines.
        let mut described = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                described.insert(name.to_string());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(described.contains(name), "{line}");
            }
        }
    }
}
