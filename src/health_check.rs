//! `rtce2ee-whisper --health-check`: asks the relay on this machine for
//! `GET /health` and turns the answer into an exit code, for container
//! engines whose images hold no curl (the image is `FROM scratch`).
//!
//! The probe reads the same configuration the server would (environment,
//! then `./.env`), so it finds the port the server listens on. It connects to
//! the loopback address of the listening address's family (`HOST=0.0.0.0` →
//! `127.0.0.1`, `HOST=::` → `::1`), or to `HOST` itself when that names one
//! address. Exit 0: the relay answered `200` with `"status":"healthy"`;
//! exit 1 otherwise, with one line on stderr saying why.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{Config, Source};

/// The whole probe (connect, send, read) must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Most bytes read of the answer: the health body is well under 1 KiB.
const MAX_RESPONSE: usize = 16 * 1024;

/// The address to probe for a configuration: its port on loopback, or on
/// `HOST` when that is one specific address.
pub fn target(cfg: &Config) -> Result<SocketAddr, String> {
    if cfg.port == 0 {
        return Err("PORT=0 (any free port): no fixed port to probe".into());
    }
    let host: IpAddr = cfg
        .host
        .parse()
        .map_err(|_| format!("HOST={:?} is not an IP address", cfg.host))?;
    let ip = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    Ok(SocketAddr::new(ip, cfg.port))
}

/// Judges a raw HTTP answer to `GET /health`: `Ok` for a `200` whose JSON
/// body says `"status":"healthy"`, otherwise what was wrong.
pub fn judge(response: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(if text.is_empty() {
            "the connection closed without an answer".into()
        } else {
            "incomplete HTTP answer".into()
        });
    };
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("not an HTTP answer: {:?}", clip(status_line)));
    }
    let status = json_status(body);
    if code != "200" {
        return Err(match status {
            Some(s) => format!("HTTP {code}, status {s:?}"),
            None => format!("HTTP {code}"),
        });
    }
    match status {
        Some("healthy") => Ok(()),
        Some(s) => Err(format!("status {s:?}")),
        None => Err("the answer has no status field".into()),
    }
}

/// The top-level `status` string of a health body, if there is one.
fn json_status(body: &str) -> Option<&str> {
    let rest = &body[body.find("\"status\"")? + "\"status\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// At most 80 characters of `s`, for an error line.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Time left until `deadline`, or an error naming the step that ran out.
fn remaining(deadline: Instant, step: &str) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(format!("timed out {step}"))
    } else {
        Ok(left)
    }
}

/// Sends `GET /health` to `addr` and judges the answer, all within `timeout`.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(remaining(deadline, "connecting")?))
        .map_err(|e| e.to_string())?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    sock.write_all(request.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        sock.set_read_timeout(Some(remaining(deadline, "waiting for the answer")?))
            .map_err(|e| e.to_string())?;
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let room = MAX_RESPONSE - response.len();
                response.extend_from_slice(&chunk[..n.min(room)]);
                if response.len() == MAX_RESPONSE {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for the answer".into());
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    judge(&response)
}

/// The `--health-check` command: loads the configuration, probes, reports.
pub fn main() -> ExitCode {
    let addr = match Config::load(&Source::from_process()) {
        Ok(cfg) => target(&cfg),
        Err(e) => Err(e.to_string()),
    };
    let result = addr.and_then(|addr| probe(addr, TIMEOUT).map_err(|e| format!("{addr}: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtce2ee-whisper: health check failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(host: &str, port: &str) -> Config {
        Config::load(&Source::from_vars(&[("HOST", host), ("PORT", port)])).unwrap()
    }

    #[test]
    fn targets_loopback_for_wildcard_hosts_and_the_host_otherwise() {
        let t = |h, p| target(&cfg(h, p)).map(|a| a.to_string());
        assert_eq!(t("0.0.0.0", "8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(t("::", "9000").unwrap(), "[::1]:9000");
        assert_eq!(t("192.168.1.5", "8080").unwrap(), "192.168.1.5:8080");
        assert_eq!(t("::1", "81").unwrap(), "[::1]:81");
        assert!(t("0.0.0.0", "0").unwrap_err().contains("PORT=0"));
    }

    fn answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_healthy_200_passes() {
        let body = r#"{"status":"healthy","timestamp":"2026-01-01T00:00:00Z","stats":{}}"#;
        assert_eq!(judge(&answer("200 OK", body)), Ok(()));
        assert_eq!(
            judge(&answer("200 OK", r#"{ "status" : "healthy" }"#)),
            Ok(())
        );
    }

    #[test]
    fn anything_else_fails_with_a_reason() {
        let shutting = r#"{"status":"shutting_down","stats":{}}"#;
        let e = judge(&answer("503 Service Unavailable", shutting)).unwrap_err();
        assert!(e.contains("503") && e.contains("shutting_down"), "{e}");
        let e = judge(&answer("200 OK", shutting)).unwrap_err();
        assert!(e.contains("shutting_down"), "{e}");
        let e = judge(&answer("200 OK", "{}")).unwrap_err();
        assert!(e.contains("no status"), "{e}");
        let e = judge(&answer("404 Not Found", "nope")).unwrap_err();
        assert_eq!(e, "HTTP 404");
        assert!(judge(b"").unwrap_err().contains("without an answer"));
        assert!(judge(b"HTTP/1.1 200 OK\r\nContent-").is_err());
        assert!(
            judge(b"SSH-2.0-OpenSSH\r\n\r\n")
                .unwrap_err()
                .contains("not an HTTP")
        );
    }
}
