//! systemd integration: sd_notify over a real datagram socket, socket
//! activation with a real inherited listener, journald priority prefixes.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

fn recv_until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while start.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {limit:?}; saw {seen:?}");
}

#[test]
fn notify_ready_watchdog_status_and_stopping() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path_s = path.to_str().unwrap().to_string();
    let mut srv = Server::start(&[
        ("NOTIFY_SOCKET", &path_s),
        ("WATCHDOG_USEC", "400000"),
        ("SHUTDOWN_TIMEOUT_SECS", "2"),
    ]);
    let first = recv_until(&sock, "READY=1", Duration::from_secs(10));
    assert_eq!(first.len(), 1, "READY=1 comes first: {first:?}");
    // The server is serving once READY=1 is sent.
    assert_eq!(srv.health()["status"], "healthy");
    let mut c = srv.connect();
    c.join("r", "a", "A");
    // WATCHDOG=1 at half of WATCHDOG_USEC, with a STATUS line of counts.
    // A datagram sent before the join was counted may still be queued:
    // the counts show up within a few pings.
    let start = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("1 connections")) {
        assert!(start.elapsed() < Duration::from_secs(5), "{seen:?}");
        seen.extend(recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5)));
    }
    let between = Instant::now();
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(between.elapsed() < Duration::from_secs(2));
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=serving, 1 connections in 1 rooms"))
    );
    srv.signal(Signal::SIGTERM);
    recv_until(&sock, "STOPPING=1", Duration::from_secs(5));
    // The member does not answer the close: the drain lasts, and the
    // watchdog pings during it no longer say "serving".
    let draining = recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    let last = draining.last().unwrap();
    assert!(
        last.contains("STATUS=shutting down, 1 connections left"),
        "{draining:?}"
    );
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    drop(c);
}

#[test]
fn socket_activation_serves_the_inherited_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    // `sh` sets LISTEN_PID to its own pid, which exec keeps for the server.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg("LISTEN_PID=$$ exec \"$@\"").arg("sh");
    if let Ok(runner) = std::env::var("WHISPER_TEST_RUNNER") {
        cmd.args(runner.split_whitespace());
    }
    cmd.arg(BIN)
        .current_dir(temp_dir("activation"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LISTEN_FDS", "1")
        // A port that would fail if it were used: activation must win.
        .env("PORT", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; the closure runs in the child only.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if nix::libc::fcntl(3, nix::libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.contains("systemd"), "{line}");
    let r = http(port, "GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    let mut c = Client::connect(port, &[]);
    c.send(json!({"type":"ping"}));
    assert_eq!(c.recv()["type"], "pong");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn journald_priority_prefixes_when_stderr_is_the_journal() {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let st = nix::sys::stat::fstat(&write).unwrap();
    let stream = format!("{}:{}", st.st_dev, st.st_ino);
    let mut cmd = server_command();
    cmd.current_dir(temp_dir("journal"))
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", &stream)
        .env("BLOCK_STRIKE_LIMIT", "1")
        .stderr(Stdio::from(write));
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(read))
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.starts_with("<6>INFO"), "{first}");
    let port: u16 = first.rsplit(':').next().unwrap().trim().parse().unwrap();
    // One strike blocks: a warning.
    let mut c = Client::connect(port, &[]);
    c.send_text("{oops");
    c.recv_error();
    let warn = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(warn.starts_with("<4>WARN"), "{warn}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // Without JOURNAL_STREAM there is no prefix.
    let srv = Server::start(&[]);
    assert!(!srv.logs().starts_with('<'));
}
