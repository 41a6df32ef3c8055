//! `floor`: what one loopback TCP write of a frame costs this machine, the
//! yardstick for the relay's CPU per delivery.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use nix::libc;
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

/// Pause between paced writes: long enough for the reader to fall asleep.
const PACE: Duration = Duration::from_micros(100);

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let writes = lab.params.floor_writes as usize;
    let single = measure(lab.pinning, writes, 1).map_err(|e| format!("floor: {e}"))?;
    lab.metric(Metric::floor("write of 1 frame", single));
    let paced = measure_paced(lab.pinning, writes / 20).map_err(|e| format!("floor: {e}"))?;
    lab.metric(Metric::new("write of 1 frame, reader asleep", "ns", paced));
    let fan = measure_fan(lab.pinning, writes / 50).map_err(|e| format!("floor: {e}"))?;
    lab.metric(Metric::paced_floor(
        format!("minimal relay, {FAN_ROOMS}x{FAN_MEMBERS} at {FAN_RATE}/s"),
        fan,
    ));
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

/// A loopback connection through `listener`: the writing end configured as
/// the relay configures its client sockets, and the reading end.
fn writer_pair(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let writer = TcpStream::connect(listener.local_addr()?)?;
    writer.set_nodelay(true)?;
    setsockopt(&writer, sockopt::SndBuf, &SEND_BUFFER)?;
    let (reader, _) = listener.accept()?;
    Ok((writer, reader))
}

/// The fixed-rate fan-out pattern without a relay: rooms, members and rate
/// of the `fanout` scenario.
const FAN_ROOMS: usize = 10;
const FAN_MEMBERS: usize = 50;
const FAN_RATE: u32 = 2000;

/// CPU ns per delivery of the smallest possible relay of the fixed-rate
/// fan-out pattern: one thread that sleeps in a blocking `read` until the
/// next message arrives (one every `1/FAN_RATE` s, fed from the generator's
/// CPU), then writes it with one plain `write` to each of the room's member
/// sockets, while one reader thread (like the generator) drains all sockets
/// through epoll. Waking up for each message and one write per delivery are
/// what any relay pays here; the relay's figure over this one is its own cost.
fn measure_fan(pinning: Option<Pinning>, messages: usize) -> io::Result<f64> {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut writers = Vec::with_capacity(FAN_ROOMS * FAN_MEMBERS);
    let mut readers = Vec::with_capacity(FAN_ROOMS * FAN_MEMBERS);
    for _ in 0..FAN_ROOMS * FAN_MEMBERS {
        let (w, r) = writer_pair(&listener)?;
        r.set_nonblocking(true)?;
        writers.push(w);
        readers.push(r);
    }
    let total = (messages * FAN_MEMBERS * FRAME_BYTES) as u64;
    let drain = thread::spawn(move || -> io::Result<u64> {
        if let Some(p) = pinning {
            let _ = proc::pin_current(&proc::cpu_set(p.generator));
        }
        // SAFETY: plain epoll calls on descriptors owned by `readers`, which
        // outlive the loop; `events` is a valid buffer of its stated length.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if ep < 0 {
                return Err(io::Error::last_os_error());
            }
            for (i, r) in readers.iter().enumerate() {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: i as u64,
                };
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, r.as_raw_fd(), &mut ev);
            }
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = 0u64;
            while got < total {
                let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 5000);
                if n <= 0 {
                    break;
                }
                for ev in &events[..n as usize] {
                    let mut r = &readers[ev.u64 as usize];
                    while let Ok(k) = r.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        got += k as u64;
                    }
                }
            }
            libc::close(ep);
            Ok(got)
        }
    });
    // The messages to relay arrive on a socket of their own, one every
    // `1/FAN_RATE` s, from a feeder thread on the generator's CPU.
    let inbox = TcpListener::bind("127.0.0.1:0")?;
    let mut feed = TcpStream::connect(inbox.local_addr()?)?;
    feed.set_nodelay(true)?;
    let (mut source, _) = inbox.accept()?;
    let feeder = thread::spawn(move || -> io::Result<()> {
        if let Some(p) = pinning {
            let _ = proc::pin_current(&proc::cpu_set(p.generator));
        }
        let period = Duration::from_secs(1) / FAN_RATE;
        let start = std::time::Instant::now();
        for m in 0..messages {
            let due = start + period * m as u32;
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                thread::sleep(wait);
            }
            feed.write_all(&[b'm'; FRAME_BYTES])?;
        }
        Ok(())
    });
    let write = thread::spawn(move || -> io::Result<f64> {
        if let Some(p) = pinning {
            proc::pin_current(&proc::cpu_set(p.relay))?;
        }
        let mut frame = [b'x'; FRAME_BYTES];
        let start = proc::thread_cpu_ns();
        for m in 0..messages {
            // Block until the next message arrives, as a relay sleeps in its
            // event loop, then write it to every member of its room.
            source.read_exact(&mut frame)?;
            let room = m % FAN_ROOMS;
            for w in &mut writers[room * FAN_MEMBERS..(room + 1) * FAN_MEMBERS] {
                w.write_all(&frame)?;
            }
        }
        let used = proc::thread_cpu_ns() - start;
        drop(writers);
        Ok(used as f64 / (messages * FAN_MEMBERS).max(1) as f64)
    });
    let cpu = write
        .join()
        .map_err(|_| io::Error::other("writer thread failed"))??;
    feeder
        .join()
        .map_err(|_| io::Error::other("feeder thread failed"))??;
    let got = drain
        .join()
        .map_err(|_| io::Error::other("reader thread failed"))??;
    if got != total {
        return Err(io::Error::other(format!("{got} of {total} bytes arrived")));
    }
    Ok(cpu)
}

/// Writer-thread CPU ns of one single-frame write to a reader that is asleep
/// in `read` when the frame arrives, so the write also pays for waking it:
/// what a relay pays per delivery when messages trickle in at a fixed rate.
/// Only the `write` call is timed; the cost of reading the clock is
/// measured alongside and subtracted.
fn measure_paced(pinning: Option<Pinning>, writes: usize) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let (mut writer, mut reader) = writer_pair(&listener)?;
    let drain = thread::spawn(move || {
        if let Some(p) = pinning {
            let _ = proc::pin_current(&proc::cpu_set(p.generator));
        }
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    let write = thread::spawn(move || -> io::Result<f64> {
        if let Some(p) = pinning {
            proc::pin_current(&proc::cpu_set(p.relay))?;
        }
        let frame = [b'x'; FRAME_BYTES];
        let (mut timed, mut clock) = (0u64, 0u64);
        for _ in 0..writes {
            thread::sleep(PACE);
            let t0 = proc::thread_cpu_ns();
            writer.write_all(&frame)?;
            let t1 = proc::thread_cpu_ns();
            let t2 = proc::thread_cpu_ns();
            timed += t1 - t0;
            clock += t2 - t1;
        }
        drop(writer);
        Ok(timed.saturating_sub(clock) as f64 / writes.max(1) as f64)
    });
    let cpu = write
        .join()
        .map_err(|_| io::Error::other("writer thread failed"))??;
    drain
        .join()
        .map_err(|_| io::Error::other("reader thread failed"))?;
    Ok(cpu)
}

/// Writer-thread CPU ns per write of `frames` frames (one `writev`), over
/// `writes` writes to a reader draining the other end.
fn measure(pinning: Option<Pinning>, writes: usize, frames: usize) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let (writer, mut reader) = writer_pair(&listener)?;
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
