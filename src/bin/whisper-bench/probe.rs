//! The allocator probe behind the `memory` scenario: a counting global
//! allocator, and a relay run from the library inside this executable
//! (`whisper-bench --probe-relay`) that reports the allocator's counts on
//! request. The relay code is the library's, the allocator underneath is the
//! system's (glibc or musl); the probe only counts, so its figures are those
//! of the relay binary.
//!
//! The counts are live totals of the whole process: requested bytes, usable
//! bytes (`malloc_usable_size`, what the allocator really set aside), the
//! number of blocks, and the number of live blocks by requested size, from
//! which the scenario tells which allocations one connection adds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use nix::libc;

/// Size classes: exact to 8 bytes up to `EXACT` bytes, then one class per
/// power of two.
const EXACT: usize = 4096;
const CLASSES: usize = EXACT / 8 + 48;

static ON: AtomicBool = AtomicBool::new(false);
static REQUESTED: AtomicI64 = AtomicI64::new(0);
static USABLE: AtomicI64 = AtomicI64::new(0);
static BLOCKS: AtomicI64 = AtomicI64::new(0);
static BY_SIZE: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];

/// The size class of a request of `size` bytes.
fn class(size: usize) -> usize {
    if size <= EXACT {
        size.div_ceil(8)
    } else {
        EXACT / 8 + (usize::BITS - (size - 1).leading_zeros()) as usize - 12
    }
}

/// The largest request in class `c` (its label).
pub fn class_size(c: usize) -> usize {
    if c <= EXACT / 8 {
        c * 8
    } else {
        1 << (c - EXACT / 8 + 12)
    }
}

/// The system allocator, counted while the probe is on.
pub struct Counting;

fn usable(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` is a live block of the system allocator.
    unsafe { libc::malloc_usable_size(ptr.cast()) as i64 }
}

fn count(ptr: *mut u8, size: usize, sign: i64) {
    REQUESTED.fetch_add(sign * size as i64, Ordering::Relaxed);
    USABLE.fetch_add(sign * usable(ptr), Ordering::Relaxed);
    BLOCKS.fetch_add(sign, Ordering::Relaxed);
    BY_SIZE[class(size).min(CLASSES - 1)].fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System`; the counting only reads the
// blocks' sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && ON.load(Ordering::Relaxed) {
            count(ptr, layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && ON.load(Ordering::Relaxed) {
            count(ptr, layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Ordering::Relaxed) {
            count(ptr, layout.size(), -1);
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let on = ON.load(Ordering::Relaxed);
        if on {
            count(ptr, layout.size(), -1);
        }
        // SAFETY: forwarded.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if on {
            if new.is_null() {
                count(ptr, layout.size(), 1);
            } else {
                count(new, new_size, 1);
            }
        }
        new
    }
}

/// The counts at one moment, as the probe reports them.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Requested bytes of the live blocks.
    pub requested: i64,
    /// Usable bytes of the live blocks.
    pub usable: i64,
    /// Live blocks.
    pub blocks: i64,
    /// glibc's `mallinfo2().uordblks`: bytes of the chunks in use, headers
    /// included (0 elsewhere).
    pub in_use: i64,
    /// Live blocks by size class.
    pub by_size: Vec<i64>,
}

impl Counts {
    fn now() -> Counts {
        Counts {
            requested: REQUESTED.load(Ordering::Relaxed),
            usable: USABLE.load(Ordering::Relaxed),
            blocks: BLOCKS.load(Ordering::Relaxed),
            in_use: in_use(),
            by_size: BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        }
    }

    fn line(&self) -> String {
        let sizes: Vec<String> = self.by_size.iter().map(i64::to_string).collect();
        format!(
            "{} {} {} {} {}",
            self.requested,
            self.usable,
            self.blocks,
            self.in_use,
            sizes.join(",")
        )
    }

    /// Parses a line of [`Counts::line`].
    pub fn parse(line: &str) -> Option<Counts> {
        let mut f = line.split_whitespace();
        let mut num = || f.next()?.parse::<i64>().ok();
        let (requested, usable, blocks, in_use) = (num()?, num()?, num()?, num()?);
        let by_size = f
            .next()?
            .split(',')
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<i64>>>()?;
        Some(Counts {
            requested,
            usable,
            blocks,
            in_use,
            by_size,
        })
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            requested: self.requested - earlier.requested,
            usable: self.usable - earlier.usable,
            blocks: self.blocks - earlier.blocks,
            in_use: self.in_use - earlier.in_use,
            by_size: (self.by_size.iter().zip(&earlier.by_size))
                .map(|(a, b)| a - b)
                .collect(),
        }
    }
}

#[cfg(target_env = "gnu")]
fn in_use() -> i64 {
    // SAFETY: a plain query of glibc's statistics.
    unsafe { libc::mallinfo2().uordblks as i64 }
}

#[cfg(not(target_env = "gnu"))]
fn in_use() -> i64 {
    0
}

/// `whisper-bench --probe-relay`: the relay, configured from the environment
/// like the relay binary, with the counting on; each line read from stdin is
/// answered with one line of counts on stdout. Returns the exit code.
pub fn relay_main() -> u8 {
    use rtce2ee_whisper::{config, fdstore, history, logging, server, systemd};
    let cfg = match config::Config::load(&config::Source::from_process()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("whisper-bench --probe-relay: {e}");
            return 2;
        }
    };
    logging::init(&cfg);
    let listener = match std::net::TcpListener::bind((cfg.host.as_str(), cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("whisper-bench --probe-relay: cannot listen: {e}");
            return 1;
        }
    };
    ON.store(true, Ordering::Relaxed);
    std::thread::spawn(|| {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            if line.is_err() {
                return;
            }
            let text = Counts::now().line();
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return;
            }
        }
    });
    // No inherited history: the probe always starts empty.
    let restored = fdstore::take_back(
        None,
        history::Limits::new(&cfg),
        &systemd::Notifier::from_env(),
    );
    server::run(cfg, listener, restored) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_cover_every_size() {
        assert_eq!((class(1), class(8), class(9)), (1, 1, 2));
        assert_eq!(class_size(class(512)), 512);
        assert_eq!(class_size(class(4097)), 8192);
        assert_eq!(class_size(class(8192)), 8192);
        assert_eq!(class_size(class(8193)), 16384);
        assert!(class(1 << (usize::BITS - 8)) < CLASSES);
    }
}
