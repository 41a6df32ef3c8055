//! The relay under test as a child process: started fresh for each run on
//! an ephemeral loopback port, pinned to its own CPU, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::proc;

/// Configuration variables the relay reads; inherited values are removed so
/// that every run sees only what the scenario sets.
const CONFIG_VARS: &[&str] = &[
    "HOST",
    "PORT",
    "HANDSHAKE_TIMEOUT_SECS",
    "RATE_LIMIT_MESSAGE_LIMIT",
    "RATE_LIMIT_JOIN_LIMIT",
    "RATE_LIMIT_FRAME_LIMIT",
    "RATE_LIMIT_CONNECTION_LIMIT_PER_IP",
    "RATE_LIMIT_MAX_MESSAGE_SIZE",
    "MAX_CONNECTIONS",
    "MAX_ROOMS",
    "MAX_ROOM_USERS",
    "HEARTBEAT_INTERVAL_SECS",
    "SHUTDOWN_TIMEOUT_SECS",
    "BLOCK_STRIKE_LIMIT",
    "TRUSTED_PROXIES",
    "ALLOWED_ORIGINS",
    "RUST_LOG",
    "LOG_FORMAT",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
];

/// Log lines kept from one run (warnings and errors only).
const KEPT_LINES: usize = 20;

/// How relays are started: the same for every run of the suite.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub program: PathBuf,
    /// A command prefix such as `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
    pub runner: Vec<String>,
    /// The CPU to pin the relay to.
    pub cpu: Option<usize>,
    /// An empty directory to run in (the relay reads `.env` from its cwd).
    pub workdir: PathBuf,
    pub startup_timeout: Duration,
    pub stop_timeout: Duration,
}

/// Warnings and errors the relay logged.
#[derive(Default)]
struct LogTail {
    notable: Vec<String>,
    dropped: usize,
}

/// A running relay.
pub struct Relay {
    pub(crate) child: Child,
    pub pid: i32,
    pub addr: SocketAddr,
    log: Arc<Mutex<LogTail>>,
    log_thread: Option<JoinHandle<()>>,
    stop_timeout: Duration,
}

/// How a relay ended.
#[derive(Clone, Debug)]
pub struct Exit {
    /// Exited with status 0 after SIGTERM.
    pub clean: bool,
    pub detail: String,
    /// Warning and error lines it logged.
    pub log: Vec<String>,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".into(),
    }
}

/// Follows the relay's stderr: reports the listening address once, then
/// keeps warning and error lines.
fn follow_log(stderr: ChildStderr, tx: mpsc::Sender<SocketAddr>, tail: Arc<Mutex<LogTail>>) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    let mut tx = Some(tx);
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end();
        if let Some(addr) = line.split("listening on ").nth(1)
            && let Ok(addr) = addr.trim().parse::<SocketAddr>()
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(addr);
            continue;
        }
        if line.contains(" WARN ") || line.contains(" ERROR ") || tx.is_some() {
            let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.notable.len() < KEPT_LINES {
                tail.notable.push(line.to_string());
            } else {
                tail.dropped += 1;
            }
        }
    }
}

impl Launcher {
    /// The relay's command line, through the runner when there is one.
    fn base_command(&self) -> Command {
        match self.runner.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        }
    }

    fn command(&self) -> Command {
        self.configure(self.base_command())
    }

    /// `cmd` with the relay's environment, directory, pipes and CPU.
    fn configure(&self, mut cmd: Command) -> Command {
        for var in CONFIG_VARS {
            cmd.env_remove(var);
        }
        cmd.env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpu) = self.cpu {
            let set = proc::cpu_set(cpu);
            // SAFETY: the hook only makes one system call (sched_setaffinity),
            // which is async-signal-safe, on a value prepared before fork.
            unsafe {
                cmd.pre_exec(move || proc::pin_current(&set));
            }
        }
        cmd
    }

    /// Starts a relay with the scenario's variables and waits until it listens.
    pub fn start(&self, env: &[(&str, String)]) -> Result<Relay, String> {
        self.spawn(self.command(), env)
    }

    /// Starts the allocator probe (this executable as a relay, see
    /// `probe.rs`) with the scenario's variables; its stdin and stdout are
    /// the query pipe. Through the runner when there is one (an emulator
    /// runs this executable as it runs the relay).
    pub fn start_probe(&self, env: &[(&str, String)]) -> Result<Relay, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
        let mut cmd = match self.runner.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.arg(crate::PROBE_ARG);
        let mut cmd = self.configure(cmd);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        self.spawn(cmd, env)
    }

    fn spawn(&self, mut cmd: Command, env: &[(&str, String)]) -> Result<Relay, String> {
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let pid = child.id() as i32;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(LogTail::default()));
        let tail = log.clone();
        let log_thread = thread::spawn(move || follow_log(stderr, tx, tail));
        let mut relay = Relay {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            log_thread: Some(log_thread),
            stop_timeout: self.stop_timeout,
        };
        match rx.recv_timeout(self.startup_timeout) {
            Ok(addr) => {
                relay.addr = addr;
                Ok(relay)
            }
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => format!(
                        "relay did not report listening within {} s",
                        self.startup_timeout.as_secs()
                    ),
                    mpsc::RecvTimeoutError::Disconnected => "relay ended at start-up".into(),
                };
                let _ = relay.child.kill();
                let status = relay.child.wait().map(describe).unwrap_or_default();
                let log = relay.collect_log();
                let log = if log.is_empty() {
                    String::new()
                } else {
                    format!("; its log: {}", log.join(" | "))
                };
                Err(format!("{why} ({status}{log})"))
            }
        }
    }
}

impl Relay {
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_until(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Sends SIGTERM and waits for the exit; kills the process if it does not
    /// exit in time. Clean means exit status 0 after the signal.
    pub fn stop(mut self) -> Exit {
        let early = self.child.try_wait().ok().flatten();
        let (clean, detail) = match early {
            Some(status) => (false, format!("died during the run: {}", describe(status))),
            None => {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
                match self.wait_until(self.stop_timeout) {
                    Some(status) => (status.code() == Some(0), describe(status)),
                    None => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        let secs = self.stop_timeout.as_secs();
                        (false, format!("no exit within {secs} s of SIGTERM; killed"))
                    }
                }
            }
        };
        let log = self.collect_log();
        Exit { clean, detail, log }
    }

    /// Waits for the log reader to reach the end of stderr (the process has
    /// exited) and returns the warning and error lines.
    fn collect_log(&mut self) -> Vec<String> {
        if let Some(t) = self.log_thread.take() {
            let _ = t.join();
        }
        let tail = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut log = tail.notable.clone();
        if tail.dropped > 0 {
            log.push(format!("... and {} more warning/error lines", tail.dropped));
        }
        log
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Only reached when `stop` was not: never leave a relay behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The relay binary beside the bench's own executable.
pub fn default_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("rtce2ee-whisper"))
}

/// The relay's `--version` line, if it runs.
pub fn version(launcher: &Launcher) -> Option<String> {
    let out = launcher
        .base_command()
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Whether `path` looks like something that can be started.
pub fn check_program(path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!(
            "relay binary {} not found: build it with `cargo build --release` or pass --server PATH",
            path.display()
        ))
    }
}
