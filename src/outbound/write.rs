//! Step 6 of a message's path: the socket write. One vectored write of the
//! slices an outbox gathered, retried on interruption and when the socket
//! becomes writable again.

use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::task::{Context, Poll};

use smol::Async;

/// Writes `iov` to `sock` in one system call. Ready with the bytes the
/// socket took; Pending (with `cx` registered) while it is full.
#[inline]
pub fn poll_write_vectored(
    sock: &Async<TcpStream>,
    iov: &[IoSlice<'_>],
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        let mut stream: &TcpStream = sock.get_ref();
        match stream.write_vectored(iov) {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::task::ready!(sock.poll_writable(cx))?;
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
