//! systemd integration without libsystemd: `sd_notify` datagrams to
//! `NOTIFY_SOCKET` (with a descriptor attached for the file descriptor
//! store), the watchdog period from `WATCHDOG_USEC`, and the descriptors
//! passed at start (`LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`): the socket
//! unit's listener and the history memfd from the store.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::rc::Rc;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockType, SockaddrLike,
    SockaddrStorage, UnixAddr, getsockname, getsockopt, recvmsg, sendmsg, sockopt,
};

/// `FDNAME=` of the catch-up history memfd in systemd's file descriptor store.
pub const HISTORY_FDNAME: &str = "history";

/// Most descriptors taken from `LISTEN_FDS` (the rest are left alone).
pub const LISTEN_FDS_MAX: u32 = 64;

/// Sends state changes to systemd when it asked for them. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    target: Option<Rc<(UnixDatagram, SocketAddr)>>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .and_then(|path| Notifier::to_socket(&path).target);
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

    /// A notifier sending to the socket at `path` (`@name` for an abstract
    /// one), as `NOTIFY_SOCKET` names it (empty: none); without a watchdog.
    /// Tests use it to play systemd.
    pub fn to_socket(path: &str) -> Notifier {
        let target = (|| {
            if path.is_empty() {
                return None;
            }
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(path).ok()?,
            };
            let sock = UnixDatagram::unbound().ok()?;
            // Never let a slow or stuck receiver block the event loop.
            sock.set_nonblocking(true).ok()?;
            Some(Rc::new((sock, addr)))
        })();
        Notifier {
            target,
            watchdog: None,
        }
    }

    /// Whether there is a service manager to notify.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` with descriptor `fd` attached (`SCM_RIGHTS`), as
    /// `FDSTORE=1` needs. Unlike [`send`](Self::send) it reports failure,
    /// and waits up to a second for room in a full socket.
    pub fn send_with_fd(&self, state: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        let Some(t) = &self.target else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no NOTIFY_SOCKET",
            ));
        };
        let addr = match (t.1.as_pathname(), t.1.as_abstract_name()) {
            (Some(path), _) => UnixAddr::new(path)?,
            (None, Some(name)) => UnixAddr::new_abstract(name)?,
            (None, None) => return Err(io::ErrorKind::InvalidInput.into()),
        };
        for _ in 0..100 {
            match send_fd_datagram(t.0.as_fd(), Some(&addr), state.as_bytes(), fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Sends one datagram holding `payload` and descriptor `fd` on `sock`, to
/// `to` (or to the connected peer).
pub fn send_fd_datagram(
    sock: BorrowedFd<'_>,
    to: Option<&UnixAddr>,
    payload: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(payload)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        to,
    )?;
    if sent != payload.len() {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

/// Receives one datagram of at most 4 KiB and the descriptors that came
/// with it (at most 8; any beyond are closed by the kernel), as systemd's
/// side of [`Notifier::send_with_fd`]. For tests that play systemd.
pub fn receive_with_fds(sock: &UnixDatagram) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    Ok((String::from_utf8_lossy(&buf[..len]).into_owned(), fds))
}

/// What systemd passed at start: the socket unit's listening socket and
/// the history memfd from the file descriptor store, each when present.
#[derive(Debug, Default)]
pub struct Inherited {
    /// A listening TCP socket (socket activation): serve it instead of binding.
    pub listener: Option<TcpListener>,
    /// The memfd stored under [`HISTORY_FDNAME`] by the previous process.
    pub history: Option<OwnedFd>,
}

/// The descriptors passed by `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`
/// (as the values read from the environment), each with its name when
/// there is one: `LISTEN_PID` must be `pid`; at most [`LISTEN_FDS_MAX`].
pub fn parse_listen_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    pid: u32,
) -> Vec<(RawFd, Option<String>)> {
    let for_us = listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(pid);
    let count = listen_fds.and_then(|n| n.trim().parse::<u32>().ok());
    let (true, Some(count)) = (for_us, count) else {
        return Vec::new();
    };
    let mut names = names.map(|n| n.split(':'));
    (0..count.min(LISTEN_FDS_MAX))
        .map(|i| {
            let name = names
                .as_mut()
                .and_then(Iterator::next)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            (3 + i as RawFd, name)
        })
        .collect()
}

/// Whether `fd` is a listening TCP socket.
fn is_tcp_listener(fd: BorrowedFd<'_>) -> bool {
    let stream = getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let inet = getsockname::<SockaddrStorage>(fd.as_raw_fd()).is_ok_and(|a| {
        matches!(
            a.family(),
            Some(AddressFamily::Inet) | Some(AddressFamily::Inet6)
        )
    });
    stream && listening && inet
}

/// Whether `fd` is a regular file (a memfd is one), not a socket or pipe.
fn is_regular_file(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG)
}

/// Sorts passed descriptors, taking ownership of each: the first listening
/// TCP socket (whatever its name) is the listener; the first regular file
/// named [`HISTORY_FDNAME`] is the history; every other one is closed.
/// Each kept one is made close-on-exec.
pub fn classify(passed: Vec<(OwnedFd, Option<String>)>) -> Inherited {
    let mut out = Inherited::default();
    for (fd, name) in passed {
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        if out.listener.is_none() && is_tcp_listener(fd.as_fd()) {
            out.listener = Some(TcpListener::from(fd));
        } else if out.history.is_none()
            && name.as_deref() == Some(HISTORY_FDNAME)
            && is_regular_file(fd.as_fd())
        {
            out.history = Some(fd);
        } else {
            log::debug!("closing an unexpected descriptor passed by systemd ({name:?})");
        }
    }
    out
}

/// Takes what systemd passed to this process (see [`Inherited`]) and
/// removes the activation variables, so that children do not inherit them.
/// Call once, at start-up, before other threads exist.
pub fn inherited_fds() -> Inherited {
    let var = |k: &str| std::env::var(k).ok();
    let passed = parse_listen_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    // SAFETY: called during start-up on the only thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let owned = passed
        .into_iter()
        // Only descriptors that are open (LISTEN_FDS may overstate).
        // SAFETY: F_GETFD only reads the descriptor's flags; a closed one
        // answers EBADF.
        .filter(|(fd, _)| unsafe { nix::libc::fcntl(*fd, nix::libc::F_GETFD) } != -1)
        // SAFETY: with LISTEN_PID naming this process, systemd passed these
        // descriptors (from SD_LISTEN_FDS_START, 3) to us; nothing else in
        // the process owns them.
        .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
        .collect();
    classify(owned)
}
