//! Readings from /proc, CPU clocks, CPU pinning and the descriptor limit.
//!
//! nix is built without its `resource`, `sched` and `time` features here, so
//! those calls go through `nix::libc` directly.

use std::fs;
use std::io;

use nix::libc;

/// Resident memory of a process, from /proc/PID/status.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak resident), KiB.
    pub hwm_kib: u64,
}

/// A process's counters at one moment, for deltas.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Nanoseconds on CPU, all threads.
    pub cpu_ns: u64,
    /// Write-type system calls (`syscw` of /proc/PID/io).
    pub syscw: u64,
    /// Read-type system calls (`syscr`): `read`, not `recv`, so for the
    /// relay the wake-up pipes and eventfds rather than its sockets.
    pub syscr: u64,
}

impl Sample {
    /// `self - earlier`, saturating.
    pub fn since(&self, earlier: &Sample) -> Sample {
        Sample {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            syscw: self.syscw.saturating_sub(earlier.syscw),
            syscr: self.syscr.saturating_sub(earlier.syscr),
        }
    }
}

fn field_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

pub fn memory(pid: i32) -> io::Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let missing = || io::Error::other(format!("no VmRSS/VmHWM in /proc/{pid}/status"));
    Ok(Memory {
        rss_kib: field_kib(&status, "VmRSS:").ok_or_else(missing)?,
        hwm_kib: field_kib(&status, "VmHWM:").ok_or_else(missing)?,
    })
}

/// CPU time of every thread: the sum of the first fields of
/// /proc/PID/task/*/schedstat, or utime + stime from /proc/PID/stat (tick
/// resolution) where schedstat is missing or reads zero.
pub fn cpu_ns(pid: i32) -> io::Result<u64> {
    match schedstat_ns(pid) {
        Ok(ns) if ns > 0 => Ok(ns),
        _ => stat_ns(pid),
    }
}

fn schedstat_ns(pid: i32) -> io::Result<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("unreadable schedstat"))?;
        total += ns;
    }
    Ok(total)
}

fn stat_ns(pid: i32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("unreadable stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| io::Error::other("short stat"))?
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

/// The write-type and read-type system calls of `pid` so far (`syscw`,
/// `syscr` of /proc/PID/io).
pub fn syscalls(pid: i32) -> io::Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/io"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {key} in /proc/PID/io")))
    };
    Ok((field("syscw:")?, field("syscr:")?))
}

/// CPU time and system call counts of `pid` now. Unreadable counters read 0 and
/// the error is returned beside the sample.
pub fn sample(pid: i32) -> (Sample, Option<String>) {
    let mut problem = None;
    let cpu_ns = cpu_ns(pid).unwrap_or_else(|e| {
        problem = Some(format!("server CPU time unreadable: {e}"));
        0
    });
    let (syscw, syscr) = syscalls(pid).unwrap_or_else(|e| {
        problem = Some(format!("server system call counts unreadable: {e}"));
        (0, 0)
    });
    (
        Sample {
            cpu_ns,
            syscw,
            syscr,
        },
        problem,
    )
}

/// Kernel network counters of this network namespace: on a loaded
/// loopback, drops of the per-CPU backlog and the retransmissions they cause
/// explain latency outliers that are not the relay's doing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetCounters {
    /// `RetransSegs` of /proc/net/snmp.
    pub tcp_retransmits: u64,
    /// Column 2 ("dropped") of /proc/net/softnet_stat, all CPUs.
    pub backlog_drops: u64,
}

impl NetCounters {
    /// `self - earlier`, saturating.
    pub fn since(&self, earlier: &NetCounters) -> NetCounters {
        NetCounters {
            tcp_retransmits: self.tcp_retransmits.saturating_sub(earlier.tcp_retransmits),
            backlog_drops: self.backlog_drops.saturating_sub(earlier.backlog_drops),
        }
    }
}

/// The network counters now; `None` where /proc/net is not readable.
pub fn net_counters() -> Option<NetCounters> {
    let snmp = fs::read_to_string("/proc/net/snmp").ok()?;
    // A "Tcp:" line of names, then a "Tcp:" line of values.
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let tcp_retransmits = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")?
        .1
        .parse()
        .ok()?;
    let softnet = fs::read_to_string("/proc/net/softnet_stat").ok()?;
    let backlog_drops = softnet
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum();
    Some(NetCounters {
        tcp_retransmits,
        backlog_drops,
    })
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X" | "x"))
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children inherit it).
/// Returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is narrower than u64 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the valid set.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// A set holding only `cpu`.
pub fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET writes
    // inside it for any cpu below CPU_SETSIZE (callers pass allowed CPUs).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (and the threads it creates later) to `set`.
/// Async-signal-safe: one system call, usable between fork and exec.
pub fn pin_current(set: &libc::cpu_set_t) -> io::Result<()> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_setaffinity(0, size, set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The generator's own resident memory (KiB), peak and current.
pub fn own_memory() -> Memory {
    memory(std::process::id() as i32).unwrap_or_default()
}
