//! Configuration: environment variables first, then a `.env` file in the
//! working directory for whatever the environment leaves unset.
//!
//! Every value is checked against a range. The upper ends are the compiled
//! capacities of the fixed-size tables, so a configuration that validates is
//! one the process can actually hold.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use crate::limits::{STRIKE_LIMIT_CAP, canonical_ip};

/// Compiled capacity: most WebSocket connections the relay can be told to hold.
pub const CONNECTIONS_CAP: u32 = 65_536;
/// Compiled capacity: most rooms.
pub const ROOMS_CAP: u32 = 65_536;
/// Compiled capacity: most members of one room (the size of a room's member array).
pub const ROOM_USERS_CAP: usize = 256;
/// Compiled capacity: largest accepted incoming WebSocket message.
pub const MESSAGE_SIZE_CAP: u32 = 1 << 20;
/// Compiled capacity: largest per-connection queue bound and process queue budget.
pub const QUEUE_CAP: u32 = 1 << 30;
/// Compiled capacity: connections in their HTTP phase (each may hold an 8 KiB
/// request head), and the per-IP share of them.
pub const PENDING_CAP: u32 = 4096;
/// Compiled capacity: entries in `TRUSTED_PROXIES` and in `ALLOWED_ORIGINS`.
pub const LIST_CAP: usize = 32;
/// Compiled capacity: longest catch-up retention (`HISTORY_SECS`), a week.
pub const HISTORY_SECS_CAP: u32 = 7 * 86_400;
/// Compiled capacity: frames retained per room (`HISTORY_ROOM_FRAMES`).
pub const HISTORY_ROOM_FRAMES_CAP: u32 = 4096;
/// Compiled capacity: bytes of all retained history (`HISTORY_BUDGET_BYTES`).
pub const HISTORY_BUDGET_CAP: u32 = 1 << 30;
/// Smallest accepted `HISTORY_BUDGET_BYTES` (the contract's 64 KiB).
pub const HISTORY_BUDGET_MIN: u32 = 64 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain text lines (with journald priority prefixes under systemd).
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of one server process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`HOST`).
    pub host: String,
    /// Port to listen on, 0 for any (`PORT`).
    pub port: u16,
    /// Deadline for a whole request head (`HANDSHAKE_TIMEOUT_SECS`).
    pub handshake_timeout_secs: u32,
    /// Connections in their HTTP phase at once (`HTTP_PENDING_LIMIT`).
    pub pending_limit: u32,
    /// Of those, from one client IP (`HTTP_PENDING_LIMIT_PER_IP`); trusted
    /// proxies are exempt.
    pub pending_limit_per_ip: u32,
    /// Messages and reactions per minute per connection (`RATE_LIMIT_MESSAGE_LIMIT`).
    pub message_limit: u32,
    /// Joins per minute per connection (`RATE_LIMIT_JOIN_LIMIT`).
    pub join_limit: u32,
    /// Frames of any kind per minute per connection (`RATE_LIMIT_FRAME_LIMIT`).
    pub frame_limit: u32,
    /// Open WebSocket connections per client IP (`RATE_LIMIT_CONNECTION_LIMIT_PER_IP`).
    pub connection_limit_per_ip: u32,
    /// Largest client message in bytes (`RATE_LIMIT_MAX_MESSAGE_SIZE`).
    pub max_message_size: u32,
    /// Open WebSocket connections in all (`MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Rooms with members (`MAX_ROOMS`).
    pub max_rooms: u32,
    /// Members per room (`MAX_ROOM_USERS`).
    pub max_room_users: u32,
    /// Seconds between pings (`HEARTBEAT_INTERVAL_SECS`).
    pub heartbeat_interval_secs: u32,
    /// Longest graceful shutdown (`SHUTDOWN_TIMEOUT_SECS`).
    pub shutdown_timeout_secs: u32,
    /// Strikes within a minute that block an IP (`BLOCK_STRIKE_LIMIT`).
    pub block_strike_limit: u32,
    /// A connection with more than this queued for it is a slow consumer.
    pub slow_consumer_queue_bytes: u32,
    /// A connection whose socket took nothing for this long while bytes
    /// waited is a slow consumer.
    pub slow_consumer_stall_secs: u32,
    /// All queued outbound bytes of the process.
    pub queue_budget_bytes: u32,
    /// Catch-up retention in seconds (`HISTORY_SECS`); 0 turns history off.
    pub history_secs: u32,
    /// Frames retained per room (`HISTORY_ROOM_FRAMES`).
    pub history_room_frames: u32,
    /// Bytes of all retained history (`HISTORY_BUDGET_BYTES`).
    pub history_budget_bytes: u32,
    /// Rooms with history, empty ones included (`HISTORY_ROOMS`).
    pub history_rooms: u32,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpAddr>,
    /// Allowed `Origin` values; empty allows any (`ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// How log lines are written (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// The log filter (`RUST_LOG`).
    pub rust_log: String,
}

/// A configuration value that cannot be used; printed as the single line
/// the process exits with.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// The value it had.
    pub value: String,
    /// What it should have been.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Where values come from: the process environment wins over the `.env` file.
pub struct Source {
    env: HashMap<String, String>,
    dotenv: HashMap<String, String>,
}

impl Source {
    /// Reads the process environment and `./.env` (if present).
    pub fn from_process() -> Source {
        let env = std::env::vars().collect();
        let dotenv = match std::fs::read_to_string(Path::new(".env")) {
            Ok(text) => parse_dotenv(&text),
            Err(_) => HashMap::new(),
        };
        Source { env, dotenv }
    }

    /// A source built from explicit maps, for tests.
    #[cfg(test)]
    pub fn from_maps(env: HashMap<String, String>, dotenv: HashMap<String, String>) -> Source {
        Source { env, dotenv }
    }

    /// A source of these environment variables alone, for tests.
    #[cfg(test)]
    pub fn from_vars(vars: &[(&str, &str)]) -> Source {
        let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Source::from_maps(env.collect(), HashMap::new())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .or_else(|| self.dotenv.get(key))
            .map(String::as_str)
    }
}

/// Parses `KEY=VALUE` lines; `#` comments, blank lines, an `export ` prefix
/// and single or double quotes around the value are accepted.
pub fn parse_dotenv(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let mut value = value.trim();
        let quoted = value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')));
        if quoted {
            value = &value[1..value.len() - 1];
        } else if let Some(hash) = value.find(" #") {
            value = value[..hash].trim_end();
        }
        if !key.is_empty() {
            out.insert(key.to_string(), value.to_string());
        }
    }
    out
}

fn number(
    src: &Source,
    key: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(raw) = src.get(key) else {
        return Ok(default);
    };
    let error = || ConfigError {
        variable: key,
        value: raw.to_string(),
        expected: format!("an integer from {min} to {max}"),
    };
    let value: u32 = raw.trim().parse().map_err(|_| error())?;
    if value < min || value > max {
        return Err(error());
    }
    Ok(value)
}

fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `HOST`: an IP address to listen on.
fn host(src: &Source) -> Result<String, ConfigError> {
    let host = src.get("HOST").unwrap_or("0.0.0.0").trim().to_string();
    if host.parse::<IpAddr>().is_err() {
        return Err(ConfigError {
            variable: "HOST",
            value: host,
            expected: "an IPv4 or IPv6 address such as 0.0.0.0 or ::".into(),
        });
    }
    Ok(host)
}

/// `TRUSTED_PROXIES`: up to [`LIST_CAP`] IP addresses.
fn trusted_proxies(src: &Source) -> Result<Vec<IpAddr>, ConfigError> {
    let raw = src.get("TRUSTED_PROXIES").unwrap_or("");
    let mut proxies = Vec::new();
    for item in list(raw) {
        let bad = || ConfigError {
            variable: "TRUSTED_PROXIES",
            value: raw.to_string(),
            expected: format!("up to {LIST_CAP} comma-separated IP addresses"),
        };
        let ip: IpAddr = item.parse().map_err(|_| bad())?;
        if proxies.len() == LIST_CAP {
            return Err(bad());
        }
        proxies.push(canonical_ip(ip));
    }
    Ok(proxies)
}

/// `ALLOWED_ORIGINS`: up to [`LIST_CAP`] origins.
fn allowed_origins(src: &Source) -> Result<Vec<String>, ConfigError> {
    let raw = src.get("ALLOWED_ORIGINS").unwrap_or("");
    let origins: Vec<String> = list(raw).map(str::to_string).collect();
    if origins.len() > LIST_CAP {
        return Err(ConfigError {
            variable: "ALLOWED_ORIGINS",
            value: raw.to_string(),
            expected: format!("up to {LIST_CAP} comma-separated origins"),
        });
    }
    Ok(origins)
}

/// `LOG_FORMAT`: `text` (the default) or `json`.
fn log_format(src: &Source) -> Result<LogFormat, ConfigError> {
    match src.get("LOG_FORMAT").map(str::trim) {
        None | Some("") | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError {
            variable: "LOG_FORMAT",
            value: other.to_string(),
            expected: "text or json".into(),
        }),
    }
}

impl Config {
    /// Builds and validates the configuration from `src`.
    pub fn load(src: &Source) -> Result<Config, ConfigError> {
        let host = host(src)?;
        let port = number(src, "PORT", 8080, 0, 65_535)? as u16;
        let trusted_proxies = trusted_proxies(src)?;
        let allowed_origins = allowed_origins(src)?;
        let log_format = log_format(src)?;

        Ok(Config {
            host,
            port,
            handshake_timeout_secs: number(src, "HANDSHAKE_TIMEOUT_SECS", 10, 1, 3600)?,
            pending_limit: number(src, "HTTP_PENDING_LIMIT", 256, 1, PENDING_CAP)?,
            pending_limit_per_ip: number(src, "HTTP_PENDING_LIMIT_PER_IP", 16, 1, PENDING_CAP)?,
            message_limit: number(src, "RATE_LIMIT_MESSAGE_LIMIT", 30, 1, 1_000_000)?,
            join_limit: number(src, "RATE_LIMIT_JOIN_LIMIT", 5, 1, 1_000_000)?,
            frame_limit: number(src, "RATE_LIMIT_FRAME_LIMIT", 300, 1, 1_000_000)?,
            connection_limit_per_ip: number(
                src,
                "RATE_LIMIT_CONNECTION_LIMIT_PER_IP",
                10,
                1,
                CONNECTIONS_CAP,
            )?,
            max_message_size: number(
                src,
                "RATE_LIMIT_MAX_MESSAGE_SIZE",
                10_240,
                1,
                MESSAGE_SIZE_CAP,
            )?,
            max_connections: number(src, "MAX_CONNECTIONS", 4096, 1, CONNECTIONS_CAP)?,
            max_rooms: number(src, "MAX_ROOMS", 1024, 1, ROOMS_CAP)?,
            max_room_users: number(src, "MAX_ROOM_USERS", 64, 1, ROOM_USERS_CAP as u32)?,
            heartbeat_interval_secs: number(src, "HEARTBEAT_INTERVAL_SECS", 30, 1, 3600)?,
            shutdown_timeout_secs: number(src, "SHUTDOWN_TIMEOUT_SECS", 5, 1, 3600)?,
            block_strike_limit: number(src, "BLOCK_STRIKE_LIMIT", 20, 1, STRIKE_LIMIT_CAP)?,
            slow_consumer_queue_bytes: number(
                src,
                "SLOW_CONSUMER_QUEUE_BYTES",
                1 << 20,
                16 * 1024,
                QUEUE_CAP,
            )?,
            slow_consumer_stall_secs: number(src, "SLOW_CONSUMER_STALL_SECS", 10, 1, 3600)?,
            queue_budget_bytes: number(src, "QUEUE_BUDGET_BYTES", 16 << 20, 64 * 1024, QUEUE_CAP)?,
            history_secs: number(src, "HISTORY_SECS", 86_400, 0, HISTORY_SECS_CAP)?,
            history_room_frames: number(
                src,
                "HISTORY_ROOM_FRAMES",
                256,
                1,
                HISTORY_ROOM_FRAMES_CAP,
            )?,
            history_budget_bytes: number(
                src,
                "HISTORY_BUDGET_BYTES",
                8 << 20,
                HISTORY_BUDGET_MIN,
                HISTORY_BUDGET_CAP,
            )?,
            history_rooms: number(src, "HISTORY_ROOMS", 1024, 1, ROOMS_CAP)?,
            trusted_proxies,
            allowed_origins,
            log_format,
            rust_log: src.get("RUST_LOG").unwrap_or("info").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)], dotenv: &str) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&Source::from_maps(env, parse_dotenv(dotenv)))
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(&[], "").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8080));
        assert_eq!(c.handshake_timeout_secs, 10);
        assert_eq!((c.pending_limit, c.pending_limit_per_ip), (256, 16));
        assert_eq!((c.message_limit, c.join_limit, c.frame_limit), (30, 5, 300));
        assert_eq!(c.connection_limit_per_ip, 10);
        assert_eq!(c.max_message_size, 10_240);
        assert_eq!(
            (c.max_connections, c.max_rooms, c.max_room_users),
            (4096, 1024, 64)
        );
        assert_eq!(
            (c.heartbeat_interval_secs, c.shutdown_timeout_secs),
            (30, 5)
        );
        assert_eq!(c.block_strike_limit, 20);
        assert_eq!(
            (
                c.slow_consumer_queue_bytes,
                c.slow_consumer_stall_secs,
                c.queue_budget_bytes
            ),
            (1 << 20, 10, 16 << 20)
        );
        assert!(c.trusted_proxies.is_empty() && c.allowed_origins.is_empty());
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(
            (
                c.history_secs,
                c.history_room_frames,
                c.history_budget_bytes,
                c.history_rooms
            ),
            (86_400, 256, 8 << 20, 1024)
        );
    }

    #[test]
    fn history_ranges() {
        // 0 turns history off; the caps are accepted, one past them is not.
        let c = load(
            &[
                ("HISTORY_SECS", "0"),
                ("HISTORY_ROOM_FRAMES", "4096"),
                ("HISTORY_BUDGET_BYTES", "65536"),
                ("HISTORY_ROOMS", "65536"),
            ],
            "",
        )
        .unwrap();
        assert_eq!(
            (
                c.history_secs,
                c.history_room_frames,
                c.history_budget_bytes,
                c.history_rooms
            ),
            (0, 4096, 65_536, 65_536)
        );
        let c = load(&[("HISTORY_SECS", "604800")], "").unwrap();
        assert_eq!(c.history_secs, 604_800);
        for (var, bad, range) in [
            ("HISTORY_SECS", "604801", "from 0 to 604800"),
            ("HISTORY_SECS", "-1", "from 0 to 604800"),
            ("HISTORY_ROOM_FRAMES", "0", "from 1 to 4096"),
            ("HISTORY_ROOM_FRAMES", "4097", "from 1 to 4096"),
            ("HISTORY_BUDGET_BYTES", "65535", "from 65536 to 1073741824"),
            (
                "HISTORY_BUDGET_BYTES",
                "1073741825",
                "from 65536 to 1073741824",
            ),
            ("HISTORY_ROOMS", "0", "from 1 to 65536"),
            ("HISTORY_ROOMS", "65537", "from 1 to 65536"),
            ("HISTORY_ROOMS", "many", "from 1 to 65536"),
        ] {
            let e = load(&[(var, bad)], "").unwrap_err();
            assert_eq!(e.variable, var);
            assert!(e.to_string().contains(range), "{e}");
        }
    }

    #[test]
    fn environment_wins_over_dotenv() {
        let c = load(&[("MAX_ROOMS", "7")], "MAX_ROOMS=9\nMAX_ROOM_USERS=3\n").unwrap();
        assert_eq!(c.max_rooms, 7);
        assert_eq!(c.max_room_users, 3);
    }

    #[test]
    fn dotenv_syntax() {
        let map = parse_dotenv(
            "# comment\n\nexport PORT=9000\nHOST=\"127.0.0.1\"\nLOG_FORMAT='json'\nRUST_LOG=debug # trailing\nnonsense\n",
        );
        assert_eq!(map["PORT"], "9000");
        assert_eq!(map["HOST"], "127.0.0.1");
        assert_eq!(map["LOG_FORMAT"], "json");
        assert_eq!(map["RUST_LOG"], "debug");
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn rejects_bad_values_naming_the_variable_and_range() {
        let e = load(&[("MAX_ROOMS", "0")], "").unwrap_err();
        assert_eq!(e.variable, "MAX_ROOMS");
        assert!(e.to_string().contains("from 1 to 65536"), "{e}");
        let e = load(&[("MAX_ROOM_USERS", "257")], "").unwrap_err();
        assert_eq!(e.variable, "MAX_ROOM_USERS");
        let e = load(&[("PORT", "http")], "").unwrap_err();
        assert_eq!(e.variable, "PORT");
        let e = load(&[("HOST", "example.org")], "").unwrap_err();
        assert_eq!(e.variable, "HOST");
        let e = load(&[("TRUSTED_PROXIES", "10.0.0.1,nope")], "").unwrap_err();
        assert_eq!(e.variable, "TRUSTED_PROXIES");
        let e = load(&[("LOG_FORMAT", "xml")], "").unwrap_err();
        assert_eq!(e.variable, "LOG_FORMAT");
        let e = load(&[("HTTP_PENDING_LIMIT", "4097")], "").unwrap_err();
        assert_eq!(e.variable, "HTTP_PENDING_LIMIT");
        let e = load(&[("HTTP_PENDING_LIMIT_PER_IP", "0")], "").unwrap_err();
        assert_eq!(e.variable, "HTTP_PENDING_LIMIT_PER_IP");
        let e = load(&[("BLOCK_STRIKE_LIMIT", "65")], "").unwrap_err();
        assert_eq!(e.variable, "BLOCK_STRIKE_LIMIT");
        let e = load(&[("SLOW_CONSUMER_QUEUE_BYTES", "1000")], "").unwrap_err();
        assert!(e.to_string().contains("from 16384 to 1073741824"), "{e}");
        let e = load(&[("QUEUE_BUDGET_BYTES", "2000000000")], "").unwrap_err();
        assert_eq!(e.variable, "QUEUE_BUDGET_BYTES");
        let e = load(&[("SLOW_CONSUMER_STALL_SECS", "0")], "").unwrap_err();
        assert_eq!(e.variable, "SLOW_CONSUMER_STALL_SECS");
    }

    #[test]
    fn lists_are_parsed() {
        let c = load(
            &[
                ("TRUSTED_PROXIES", " 10.0.0.1, ::1 ,"),
                ("ALLOWED_ORIGINS", "https://a.example,http://b.lan"),
            ],
            "",
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.allowed_origins, vec!["https://a.example", "http://b.lan"]);
    }
}
