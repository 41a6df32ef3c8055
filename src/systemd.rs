//! systemd integration without libsystemd: `sd_notify` datagrams to
//! `NOTIFY_SOCKET`, the watchdog period from `WATCHDOG_USEC`, and socket
//! activation from `LISTEN_FDS`/`LISTEN_PID`.

use std::os::fd::FromRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::rc::Rc;
use std::time::Duration;

/// Sends state changes to systemd when it asked for them. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    target: Option<Rc<(UnixDatagram, SocketAddr)>>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            let sock = UnixDatagram::unbound().ok()?;
            // Never let a slow or stuck receiver block the event loop.
            sock.set_nonblocking(true).ok()?;
            Some(Rc::new((sock, addr)))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us && target.is_some())
            .map(|us| Duration::from_micros(us / 2));
        Notifier { target, watchdog }
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Errors are ignored:
    /// notification is advisory.
    pub fn send(&self, state: &str) {
        if let Some(t) = &self.target {
            let _ = t.0.send_to_addr(state.as_bytes(), &t.1);
        }
    }

    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), if at all.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// The listening socket passed by systemd socket activation, if any.
pub fn inherited_listener() -> Option<std::net::TcpListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: with LISTEN_PID naming this process, systemd passed descriptor
    // 3 (SD_LISTEN_FDS_START) to us; nothing else in the process owns it.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    // Children must not inherit the activation variables.
    // SAFETY: called during start-up on the only thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    Some(listener)
}
