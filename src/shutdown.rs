//! SIGTERM and SIGINT, turned into an awaitable event with a self-pipe: the
//! handler only writes one byte, which is async-signal-safe; the event loop
//! reads it like any other socket.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use smol::Async;

/// Write end of the pipe, for the handler. -1 until installed.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the descriptor stays open for the life of the process
        // (`Signals` keeps it), and write(2) is async-signal-safe.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::unistd::write(fd, &[signal as u8]);
    }
}

/// The installed handlers and the read end of their pipe.
pub struct Signals {
    read: Async<File>,
    _write: OwnedFd,
}

impl Signals {
    /// Installs the SIGTERM and SIGINT handlers and the pipe they write to.
    pub fn install() -> nix::Result<Signals> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only performs an async-signal-safe write.
            unsafe { sigaction(signal, &action) }?;
        }
        let read = Async::new(File::from(read))
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))?;
        Ok(Signals {
            read,
            _write: write,
        })
    }

    /// Completes with the signal's name when SIGTERM or SIGINT arrives.
    ///
    /// It waits for the pipe to be readable before reading it: this future
    /// is part of the main future, which the executor polls on every turn,
    /// and a read that found the pipe empty would cost a system call on
    /// each (three per connection's life).
    pub async fn wait(self) -> &'static str {
        let mut byte = [0u8; 1];
        loop {
            if let Err(e) = self.read.readable().await {
                log::error!("cannot wait for signals: {e}");
                return std::future::pending().await;
            }
            let mut pipe: &File = self.read.get_ref();
            if let Ok(1) = pipe.read(&mut byte) {
                // Keep the write end alive while the shutdown runs.
                std::mem::forget(self._write);
                return if i32::from(byte[0]) == Signal::SIGINT as i32 {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}
