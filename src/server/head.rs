//! Reading one request head, and writing the one reply of a connection that
//! is not upgraded.
//!
//! A head must be complete within `HANDSHAKE_TIMEOUT_SECS`, and once its
//! first byte has arrived, the rest must follow at a minimum average rate; a
//! connection evicted from a full table gives up at once. A reply lingers a
//! moment for the client to close first, so the kernel does not reset the
//! connection under the reply.

use std::cell::Cell;
use std::future::Future;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

use super::Shared;
use super::refusals::Reject;
use crate::clock;
use crate::http::{self, MAX_HEAD_BYTES, Request};

/// How long a finished HTTP exchange waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);
/// Once a request head's first byte has arrived, the rest must follow at
/// `HEAD_MIN_RATE` bytes a second on average, after `HEAD_GRACE_MICROS`.
const HEAD_GRACE_MICROS: u64 = 1_000_000;
/// Bytes a second a request head must arrive at, on average, after the grace.
const HEAD_MIN_RATE: u64 = 128;

/// Why no request head was read.
pub(super) enum HeadError {
    /// The client closed the connection or it failed: nothing to answer.
    Closed,
    /// The head, or the wait for it, was refused with this answer.
    Refused(Reject),
}

impl From<Reject> for HeadError {
    fn from(reject: Reject) -> HeadError {
        HeadError::Refused(reject)
    }
}

/// The signal a full HTTP-phase table gives a pending connection to give
/// up its slot: a flag and the waiting task's waker (no channel, so no
/// allocation per connection).
#[derive(Default)]
pub(super) struct Eviction {
    evicted: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Eviction {
    /// Tells the connection to give up, waking it if it waits.
    pub(super) fn evict(&self) {
        self.evicted.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Ready once evicted.
    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.evicted.get() {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
    }
}

/// What ends one wait of `read_head`.
enum Wake {
    Read(std::io::Result<usize>),
    Check,
    Evicted,
}

/// Reads one request head; returns it with any bytes that followed it.
/// Records when its last byte came in `progress`; gives up at `deadline`,
/// when the head falls below the minimum rate, or when evicted. `is_head`
/// tells, as soon as the first bytes say so, that the request is a HEAD (its
/// answer has no body).
pub(super) async fn read_head(
    sock: &Async<TcpStream>,
    progress: &Cell<u64>,
    deadline: Instant,
    evicted: &Eviction,
    is_head: &mut bool,
) -> Result<(Request, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut first_byte_at: Option<u64> = None;
    loop {
        // Wake up at the deadline, or when the bytes so far stop meeting the
        // minimum rate.
        let check = match first_byte_at {
            Some(t0) => {
                let wait = rate_due(t0, buf.len()).saturating_sub(clock::now_micros()) + 1;
                deadline.min(Instant::now() + Duration::from_micros(wait))
            }
            None => deadline,
        };
        let room = (MAX_HEAD_BYTES + 1 - buf.len()).min(chunk.len());
        let wake = async { Wake::Read((&*sock).read(&mut chunk[..room]).await) }
            .or(async {
                Timer::at(check).await;
                Wake::Check
            })
            .or(async {
                evicted.wait().await;
                Wake::Evicted
            })
            .await;
        let n = match wake {
            Wake::Evicted => return Err(Reject::Evicted.into()),
            Wake::Check => {
                if Instant::now() >= deadline {
                    return Err(Reject::HeadTimeout.into());
                }
                if let Some(t0) = first_byte_at
                    && too_slow(t0, buf.len(), clock::now_micros())
                {
                    return Err(Reject::HeadTooSlow.into());
                }
                continue;
            }
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return Err(HeadError::Closed),
            Wake::Read(Ok(n)) => n,
        };
        let now = clock::now_micros();
        progress.set(now);
        first_byte_at.get_or_insert(now);
        // Search from just before the new bytes: the terminator may straddle.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        // An error answer to a HEAD request has no body either.
        *is_head = buf.starts_with(b"HEAD ");
        if let Some((req, end)) = complete_head(&buf, from)? {
            return Ok((req, buf[end..].to_vec()));
        }
    }
}

/// When (µs) the bytes of a head whose first byte came at `first_byte_at`
/// fall below the minimum rate, with `len` bytes read so far.
fn rate_due(first_byte_at: u64, len: usize) -> u64 {
    first_byte_at + HEAD_GRACE_MICROS + len as u64 * 1_000_000 / HEAD_MIN_RATE
}

/// Whether `len` bytes, the first at `first_byte_at`, are below the minimum
/// rate at `now`.
fn too_slow(first_byte_at: u64, len: usize, now: u64) -> bool {
    let allowed = now.saturating_sub(first_byte_at + HEAD_GRACE_MICROS) * HEAD_MIN_RATE;
    (len as u64) * 1_000_000 < allowed
}

/// The parsed head and where it ends, once `buf` holds all of it; `from` is
/// where its end may begin (bytes before it were searched already).
fn complete_head(buf: &[u8], from: usize) -> Result<Option<(Request, usize)>, Reject> {
    if let Some(end) = http::head_end(&buf[from..]).map(|e| e + from) {
        if end > MAX_HEAD_BYTES {
            return Err(Reject::HeadTooLarge);
        }
        let req = http::parse_head(&buf[..end])?;
        return Ok(Some((req, end)));
    }
    if buf.len() > MAX_HEAD_BYTES {
        return Err(Reject::HeadTooLarge);
    }
    Ok(None)
}

/// Writes a response (bounded by the handshake timeout) and ends the
/// connection. What the client still sends (a request body, say) is read and
/// discarded for a moment first: closing a socket with unread input makes the
/// kernel answer with a reset, which can destroy the response in flight.
///
/// At most `HTTP_PENDING_LIMIT` connections wait like that at once; past it
/// the connection closes as soon as the response is written.
pub(super) async fn respond(shared: &Shared, sock: &Async<TcpStream>, bytes: &[u8]) {
    write_within(sock, bytes, shared.handshake_limit()).await;
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

/// [`respond`] to a request that may be a HEAD: then without the body.
pub(super) async fn answer(shared: &Shared, sock: &Async<TcpStream>, is_head: bool, reply: &[u8]) {
    let reply = if is_head {
        &reply[..http::head_end(reply).unwrap_or(reply.len())]
    } else {
        reply
    };
    respond(shared, sock, reply).await;
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
pub(super) async fn write_within(sock: &Async<TcpStream>, bytes: &[u8], limit: Duration) -> bool {
    // Most answers fit in the socket's empty send buffer: one write, and
    // no timer armed and cancelled.
    let mut stream: &TcpStream = sock.get_ref();
    let rest = match stream.write(bytes) {
        Ok(n) => &bytes[n..],
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => bytes,
        Err(_) => return false,
    };
    if rest.is_empty() {
        return true;
    }
    async { (&*sock).write_all(rest).await.is_ok() }
        .or(async {
            Timer::after(limit).await;
            false
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_rate_starts_after_the_grace() {
        let t0 = 5_000_000;
        // Within the grace nothing is too slow, not even one byte.
        assert!(!too_slow(t0, 1, t0 + HEAD_GRACE_MICROS));
        // One second past the grace: HEAD_MIN_RATE bytes are enough, one
        // fewer is not.
        let later = t0 + HEAD_GRACE_MICROS + 1_000_000;
        assert!(!too_slow(t0, HEAD_MIN_RATE as usize, later));
        assert!(too_slow(t0, HEAD_MIN_RATE as usize - 1, later));
        // The due time is the moment the bytes so far stop being enough.
        for len in [1, 100, 4000] {
            let due = rate_due(t0, len);
            assert!(!too_slow(t0, len, due), "{len}");
            assert!(
                too_slow(t0, len, due + 1_000_000 / HEAD_MIN_RATE + 1),
                "{len}"
            );
        }
    }

    #[test]
    fn an_eviction_wakes_the_waiting_task_once() {
        use std::sync::atomic::Ordering;
        let (count, waker) = crate::test_support::counting_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let eviction = Eviction::default();
        let mut wait = std::pin::pin!(eviction.wait());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        eviction.evict();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        eviction.evict();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "nobody waits any more");
    }

    #[test]
    fn a_head_completes_across_reads() {
        let raw = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nleft";
        let split = raw.len() - 6; // the blank line straddles the two reads
        assert!(complete_head(&raw[..split], 0).unwrap().is_none());
        let from = split.saturating_sub(3);
        let (req, end) = complete_head(raw, from).unwrap().unwrap();
        assert_eq!(req.path, "/health");
        assert_eq!(&raw[end..], b"left");
    }

    #[test]
    fn heads_too_large_or_malformed_are_refused() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(complete_head(&long, 0).err(), Some(Reject::HeadTooLarge));
        long.truncate(MAX_HEAD_BYTES - 2);
        assert!(complete_head(&long, 0).unwrap().is_none());
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete_head(&long, 0).err(), Some(Reject::HeadTooLarge));
        assert_eq!(
            complete_head(b"GET nowhere HTTP/1.1\r\n\r\n", 0).err(),
            Some(Reject::Malformed)
        );
    }
}
