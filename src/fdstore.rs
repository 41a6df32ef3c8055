//! Restart hand-over of the catch-up history without touching the disk.
//!
//! At shutdown the whole retention store is written into a sealed memfd
//! (memory only) and handed to systemd's file descriptor store
//! (`FDSTORE=1`, `FDNAME=history`); at the next start systemd passes it back
//! with the listening socket ([`crate::systemd::inherited_fds`]), it is
//! mapped read-only, decoded into a fresh store under the current limits,
//! and removed from the store (`FDSTOREREMOVE=1`) so that it holds no memory
//! while the relay runs. A memfd that does not decode costs one warning
//! line and an empty history, never a crash.
//!
//! # Format, version 1
//!
//! Little-endian integers; every count and length is checked against what
//! is left, and the whole must be exactly `total_len` bytes.
//!
//! ```text
//! magic         8 bytes  "WHSPHIST"
//! version       u32      1
//! total_len     u64      bytes of the whole snapshot, header included
//! written_at    u64      Unix time of writing, ms (ages grow by the gap)
//! prefix        u8 len + bytes   message-id prefix of the writer ("" or id-shaped)
//! last_seq      u64      its last message sequence number
//! flags         u8       bit 0: evicted rooms were forgotten
//! tombstones    u32 n + n × u64   hashes of evicted rooms' names, oldest first
//! rooms         u32 n + n × (u8 len, name, u8 flags: bit 0 complete)
//!                                  least active first
//! frames        u32 n + n × (u32 room, u64 age_ms, u32 len, frame)
//!                                  oldest first; each a whole server frame
//! ```
//!
//! # Memory
//!
//! At shutdown the snapshot is written while the store still exists, and at
//! start the mapped memfd and the rebuilt store coexist until the memfd is
//! released: about twice the retained bytes for a moment, at times when no
//! connection is held (after the shutdown drain, before the first accept).
//!
//! The message-id prefix is carried so that the new process draws a
//! different one: ids then never repeat across restarts, even ids the old
//! process made after its snapshot was written.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::history::{FRAME_MAX, History, Limits, MessageIds, Restorer, Snapshot, check_frame};
use crate::protocol::is_valid_id;
use crate::systemd::{HISTORY_FDNAME, Notifier};

/// First bytes of a snapshot.
pub const MAGIC: [u8; 8] = *b"WHSPHIST";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest snapshot mapped: the largest budget with room for the
/// bookkeeping of the most rooms and tombstones.
pub const SNAPSHOT_MAX: u64 = crate::config::HISTORY_BUDGET_CAP as u64 + (64 << 20);

/// `MFD_NOEXEC_SEAL` (Linux 6.3): the memfd can never be made executable.
/// Older kernels refuse the flag; the memfd is then created without it.
const MFD_NOEXEC_SEAL: u32 = 0x0008;

/// Why a hand-over was refused. Never names or shows its content.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a snapshot (the first bytes are not [`MAGIC`]).
    Magic,
    /// A snapshot of another format version.
    Version(u32),
    /// The declared length is not the length found.
    Length {
        /// Bytes the header declares.
        declared: u64,
        /// Bytes there are.
        actual: u64,
    },
    /// It ends inside the named part.
    Truncated(&'static str),
    /// A malformed part: the named field has a value no writer makes.
    Malformed(&'static str),
    /// Frame number `n` is not a well-formed retained frame.
    Frame(u32),
    /// Bytes after the last frame.
    Trailing,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Magic => write!(f, "not a history snapshot"),
            DecodeError::Version(v) => {
                write!(f, "snapshot format version {v}, this build reads {VERSION}")
            }
            DecodeError::Length { declared, actual } => {
                write!(f, "snapshot of {actual} bytes declares {declared}")
            }
            DecodeError::Truncated(part) => write!(f, "snapshot truncated in {part}"),
            DecodeError::Malformed(part) => write!(f, "malformed snapshot {part}"),
            DecodeError::Frame(n) => write!(f, "frame {n} of the snapshot is malformed"),
            DecodeError::Trailing => write!(f, "bytes after the snapshot's last frame"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Bytes [`encode`] writes for `snap` and `ids`.
pub fn encoded_len(snap: &Snapshot, ids: &MessageIds) -> u64 {
    let rooms: usize = snap.rooms.iter().map(|r| 2 + r.name.len()).sum();
    let frames: usize = snap.frames.iter().map(|f| 16 + f.2.len()).sum();
    (8 + 4 + 8 + 8 + 1 + ids.prefix().len() + 8 + 1) as u64
        + 4
        + 8 * snap.tombstones.len() as u64
        + 4
        + rooms as u64
        + 4
        + frames as u64
}

/// Writes `snap` and the message-id state `ids` at Unix time `unix_ms` in
/// the format above.
pub fn encode(
    out: &mut impl Write,
    snap: &Snapshot,
    ids: &MessageIds,
    unix_ms: u64,
) -> io::Result<()> {
    let count = |n: usize| {
        u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many"))
    };
    out.write_all(&MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&encoded_len(snap, ids).to_le_bytes())?;
    out.write_all(&unix_ms.to_le_bytes())?;
    out.write_all(&[ids.prefix().len() as u8])?;
    out.write_all(ids.prefix().as_bytes())?;
    out.write_all(&ids.last_seq().to_le_bytes())?;
    out.write_all(&[u8::from(snap.forgot)])?;
    out.write_all(&count(snap.tombstones.len())?.to_le_bytes())?;
    for t in &snap.tombstones {
        out.write_all(&t.to_le_bytes())?;
    }
    out.write_all(&count(snap.rooms.len())?.to_le_bytes())?;
    for r in &snap.rooms {
        out.write_all(&[r.name.len() as u8])?;
        out.write_all(r.name.as_bytes())?;
        out.write_all(&[u8::from(r.complete)])?;
    }
    out.write_all(&count(snap.frames.len())?.to_le_bytes())?;
    for (room, age_ms, frame) in &snap.frames {
        out.write_all(&room.to_le_bytes())?;
        out.write_all(&age_ms.to_le_bytes())?;
        out.write_all(&count(frame.len())?.to_le_bytes())?;
        out.write_all(frame)?;
    }
    Ok(())
}

/// What a hand-over gives the new process.
pub struct Restored {
    /// The retained history, under the current limits.
    pub history: History,
    /// Message ids for this process: a prefix unlike the writer's.
    pub ids: MessageIds,
}

/// Reads a snapshot, checking every part, into a store under `limits`
/// (`now_ms` on the caller's monotonic clock, `unix_ms` the wall clock:
/// frames have aged by the time since the snapshot was written). Never
/// panics; allocates at most what the limits let it keep, plus a set of
/// room names bounded by the input's length.
pub fn decode(
    data: &[u8],
    limits: Limits,
    now_ms: u64,
    unix_ms: u64,
) -> Result<Restored, DecodeError> {
    let mut r = Reader { data };
    let header = read_header(&mut r, data.len())?;
    // Time passed since the writing, as far as the wall clock can tell.
    let gap_ms = unix_ms
        .saturating_sub(header.written_at)
        .min(u64::from(crate::config::HISTORY_SECS_CAP) * 1000 + 1000);
    let mut rebuilt = History::restorer(limits, now_ms);
    if header.forgot {
        rebuilt.forgot();
    }
    let tombs = r.count(8, "tombstones")?;
    for _ in 0..tombs {
        rebuilt.tombstone(r.u64("tombstones")?);
    }
    let rooms = read_rooms(&mut r, &mut rebuilt)?;
    read_frames(&mut r, &mut rebuilt, rooms, gap_ms)?;
    if !r.data.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(Restored {
        history: rebuilt.finish(),
        ids: MessageIds::new(Some(header.prefix)),
    })
}

/// The fixed part at the front of a snapshot.
struct Header<'a> {
    written_at: u64,
    prefix: &'a str,
    forgot: bool,
}

/// Checks the magic, version and length, and reads the id prefix and flags.
fn read_header<'a>(r: &mut Reader<'a>, total: usize) -> Result<Header<'a>, DecodeError> {
    if r.bytes(8, "header")? != MAGIC {
        return Err(DecodeError::Magic);
    }
    let version = r.u32("header")?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let declared = r.u64("header")?;
    if declared != total as u64 {
        return Err(DecodeError::Length {
            declared,
            actual: total as u64,
        });
    }
    let written_at = r.u64("header")?;
    let prefix_len = usize::from(r.u8("ids")?);
    let prefix = std::str::from_utf8(r.bytes(prefix_len, "ids")?)
        .ok()
        .filter(|p| p.is_empty() || is_valid_id(p))
        .ok_or(DecodeError::Malformed("message-id prefix"))?;
    let _last_seq = r.u64("ids")?;
    let flags = r.u8("flags")?;
    if flags > 1 {
        return Err(DecodeError::Malformed("flags"));
    }
    Ok(Header {
        written_at,
        prefix,
        forgot: flags & 1 != 0,
    })
}

/// Reads the room list into `rebuilt`; returns how many rooms there are.
fn read_rooms(r: &mut Reader<'_>, rebuilt: &mut Restorer) -> Result<u32, DecodeError> {
    let rooms = r.count(3, "rooms")?;
    let mut names = std::collections::HashSet::new();
    for _ in 0..rooms {
        let len = usize::from(r.u8("rooms")?);
        let name = std::str::from_utf8(r.bytes(len, "rooms")?)
            .ok()
            .filter(|n| is_valid_id(n))
            .ok_or(DecodeError::Malformed("room name"))?;
        if !names.insert(name) {
            return Err(DecodeError::Malformed("room list (a name twice)"));
        }
        let complete = match r.u8("rooms")? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Malformed("room flags")),
        };
        rebuilt.room(name, complete);
    }
    Ok(rooms)
}

/// Reads the frames, oldest first, each checked to be a relayed frame.
fn read_frames(
    r: &mut Reader<'_>,
    rebuilt: &mut Restorer,
    rooms: u32,
    gap_ms: u64,
) -> Result<(), DecodeError> {
    let frames = r.count(16, "frames")?;
    let mut last_age = u64::MAX;
    for n in 0..frames {
        let room = r.u32("frames")?;
        let age_ms = r.u64("frames")?;
        let len = r.u32("frames")? as usize;
        if room >= rooms {
            return Err(DecodeError::Malformed("frame room"));
        }
        if age_ms > last_age {
            return Err(DecodeError::Malformed("frame order"));
        }
        last_age = age_ms;
        if len > FRAME_MAX {
            return Err(DecodeError::Frame(n));
        }
        let frame = r.bytes(len, "frames")?;
        if check_frame(frame).is_none() {
            return Err(DecodeError::Frame(n));
        }
        rebuilt.frame(room, age_ms.saturating_add(gap_ms), frame);
    }
    Ok(())
}

/// Reads fixed-size fields off the front of a slice.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, part: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Truncated(part));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, part: &'static str) -> Result<[u8; N], DecodeError> {
        Ok(self.bytes(N, part)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self, part: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(part)?[0])
    }

    fn u32(&mut self, part: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(part)?))
    }

    fn u64(&mut self, part: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(part)?))
    }

    /// A count of items of at least `min` bytes each: no more than what is
    /// left could hold.
    fn count(&mut self, min: usize, part: &'static str) -> Result<u32, DecodeError> {
        let n = self.u32(part)?;
        if (n as usize).saturating_mul(min) > self.data.len() {
            return Err(DecodeError::Truncated(part));
        }
        Ok(n)
    }
}

// ------------------------------------------------------------------ memfd

/// Seals that make a memfd immutable: it can neither change size nor be
/// written, and the seals cannot be lifted.
fn immutable() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL
}

/// Writes `snap` into a new memfd and seals it (see `immutable`).
pub fn write_memfd(snap: &Snapshot, ids: &MessageIds, unix_ms: u64) -> io::Result<OwnedFd> {
    let name = c"rtce2ee-whisper-history";
    let base = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let fd = memfd_create(
        name,
        base | MFdFlags::from_bits_retain(MFD_NOEXEC_SEAL as _),
    )
    .or_else(|_| memfd_create(name, base))?;
    let mut file = std::fs::File::from(fd);
    {
        let mut w = BufWriter::with_capacity(64 * 1024, &mut file);
        encode(&mut w, snap, ids, unix_ms)?;
        w.flush()?;
    }
    fcntl(&file, FcntlArg::F_ADD_SEALS(immutable()))?;
    Ok(file.into())
}

/// A read-only mapping of a sealed memfd.
pub struct Mapped {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`;
        // the memfd is sealed against writes and shrinking, so they neither
        // change nor disappear.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map_sealed`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// Maps `fd` read-only if it is a memfd sealed against writes and
/// shrinking (so reading it can never fault), not empty, and at most
/// [`SNAPSHOT_MAX`] bytes.
pub fn map_sealed(fd: impl AsFd) -> io::Result<Mapped> {
    let fd = fd.as_fd();
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let seals = SealFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GET_SEALS)?);
    if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_WRITE) {
        return Err(invalid("the memfd is not sealed"));
    }
    let size = nix::sys::stat::fstat(fd)?.st_size;
    let size = u64::try_from(size).map_err(|_| invalid("negative size"))?;
    if size > SNAPSHOT_MAX {
        return Err(invalid("the memfd is larger than any snapshot"));
    }
    let len = NonZeroUsize::new(size as usize).ok_or_else(|| invalid("the memfd is empty"))?;
    // SAFETY: a fresh private read-only mapping of a sealed file; the
    // kernel picks the address.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ,
            MapFlags::MAP_PRIVATE,
            fd,
            0,
        )?
    };
    Ok(Mapped {
        ptr,
        len: len.get(),
    })
}

// ------------------------------------------------------ start and shutdown

/// At start: the history (and message ids) from the memfd systemd passed
/// back, if any, which is then removed from systemd's store. Without one,
/// or if it does not decode (one warning line), an empty history and a
/// fresh prefix.
pub fn take_back(fd: Option<OwnedFd>, limits: Limits, notifier: &Notifier) -> Restored {
    let empty = || Restored {
        history: History::new(limits),
        ids: MessageIds::new(None),
    };
    let Some(fd) = fd else {
        return empty();
    };
    let now_ms = crate::clock::now_micros() / 1000;
    let result = map_sealed(&fd).map_err(|e| e.to_string()).and_then(|data| {
        decode(&data, limits, now_ms, crate::clock::unix_millis()).map_err(|e| e.to_string())
    });
    drop(fd);
    // systemd's copy would keep the memory for as long as the relay runs.
    notifier.send(&format!("FDSTOREREMOVE=1\nFDNAME={HISTORY_FDNAME}"));
    match result {
        Ok(r) => {
            log::info!(
                "history taken over from the previous process: {} rooms, {} frames, {} bytes",
                r.history.rooms(),
                r.history.frames(),
                r.history.bytes()
            );
            r
        }
        Err(e) => {
            log::warn!("history hand-over refused ({e}); starting with an empty history");
            empty()
        }
    }
}

/// At shutdown: hands the history to systemd's file descriptor store, when
/// running under systemd with history on and something to keep. Returns
/// whether it did.
pub fn hand_over(history: &History, ids: &MessageIds, notifier: &Notifier) -> io::Result<bool> {
    if !notifier.is_active() || !history.limits().enabled() || history.rooms() == 0 {
        return Ok(false);
    }
    let snap = history.snapshot(crate::clock::now_micros() / 1000);
    let fd = write_memfd(&snap, ids, crate::clock::unix_millis())?;
    drop(snap);
    // Replace, never accumulate: one history memfd in the store at most.
    notifier.send(&format!("FDSTOREREMOVE=1\nFDNAME={HISTORY_FDNAME}"));
    notifier.send_with_fd(
        &format!("FDSTORE=1\nFDNAME={HISTORY_FDNAME}\nFDPOLL=0"),
        fd.as_fd(),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests;
