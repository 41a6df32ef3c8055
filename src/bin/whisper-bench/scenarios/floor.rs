//! `floor`: what one loopback TCP write of a frame costs this machine, the
//! yardstick for the relay's CPU per delivery.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use nix::sys::socket::{setsockopt, sockopt};

use super::{Lab, Pinning};
use crate::proc;
use crate::report::Metric;

/// Bytes of one frame (a relayed chat message is about this size).
const FRAME_BYTES: usize = 200;
/// Frames per vectored write in the batched measurement.
const BATCH: usize = 8;
/// The relay's fixed send buffer (see its README).
const SEND_BUFFER: usize = 64 * 1024;

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let writes = lab.params.floor_writes as usize;
    let single = measure(lab.pinning, writes, 1).map_err(|e| format!("floor: {e}"))?;
    lab.metric(Metric::floor("write of 1 frame", single));
    let batched = measure(lab.pinning, writes / BATCH, BATCH).map_err(|e| format!("floor: {e}"))?;
    lab.metric(Metric::new(
        format!("write of {BATCH} frames"),
        "ns",
        batched,
    ));
    lab.metric(Metric::new(
        format!("per frame, {BATCH} per write"),
        "ns",
        batched / BATCH as f64,
    ));
    Ok(())
}

/// Writer-thread CPU ns per write of `frames` frames (one `writev`), over
/// `writes` writes to a reader draining the other end.
fn measure(pinning: Option<Pinning>, writes: usize, frames: usize) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let writer = TcpStream::connect(listener.local_addr()?)?;
    let (mut reader, _) = listener.accept()?;
    writer.set_nodelay(true)?;
    setsockopt(&writer, sockopt::SndBuf, &SEND_BUFFER)?;
    let drain = thread::spawn(move || {
        if let Some(p) = pinning {
            let _ = proc::pin_current(&proc::cpu_set(p.generator));
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let write = thread::spawn(move || write_all_frames(writer, pinning, writes, frames));
    let cpu = write
        .join()
        .map_err(|_| io::Error::other("writer thread failed"))??;
    let received = drain
        .join()
        .map_err(|_| io::Error::other("reader thread failed"))?;
    let sent = (writes * frames * FRAME_BYTES) as u64;
    if received != sent {
        return Err(io::Error::other(format!(
            "{received} of {sent} bytes arrived"
        )));
    }
    Ok(cpu as f64 / writes as f64)
}

/// The writer thread (pinned where the relay would run): CPU ns spent on
/// `writes` vectored writes of `frames` frames each.
fn write_all_frames(
    mut sock: TcpStream,
    pinning: Option<Pinning>,
    writes: usize,
    frames: usize,
) -> io::Result<u64> {
    if let Some(p) = pinning {
        proc::pin_current(&proc::cpu_set(p.relay))?;
    }
    let frame = [b'x'; FRAME_BYTES];
    let slices: Vec<IoSlice<'_>> = (0..frames).map(|_| IoSlice::new(&frame)).collect();
    let want = frames * FRAME_BYTES;
    let start = proc::thread_cpu_ns();
    for _ in 0..writes {
        let n = sock.write_vectored(&slices)?;
        if n < want {
            // A blocking socket only writes short when interrupted.
            let rest: Vec<u8> = (n..want).map(|_| b'x').collect();
            sock.write_all(&rest)?;
        }
    }
    let used = proc::thread_cpu_ns() - start;
    drop(sock);
    Ok(used)
}
