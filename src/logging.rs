//! Log output through `env_logger`: plain text or one JSON object per line,
//! with journald priority prefixes when stderr is the journal.
//!
//! Nothing the relay logs contains message content; log lines carry counts,
//! addresses and error codes only.

use std::io::Write;

use crate::clock;
use crate::config::{Config, LogFormat};

/// syslog priority of a log level, as journald reads it from `<N>` prefixes.
pub fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether stderr is connected to the journal (`JOURNAL_STREAM` names its device and inode).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(st) => dev == st.st_dev.to_string() && ino == st.st_ino.to_string(),
        Err(_) => false,
    }
}

/// Installs the logger: the filter and format of `cfg`, to stderr.
pub fn init(cfg: &Config) {
    let format = cfg.log_format;
    let journal = stderr_is_journal();
    env_logger::Builder::new()
        .parse_filters(&cfg.rust_log)
        // tungstenite traces frame payloads: never let it log, whatever
        // RUST_LOG says, so no log line can carry message content.
        .filter_module("tungstenite", log::LevelFilter::Off)
        .filter_module("async_tungstenite", log::LevelFilter::Off)
        .format(move |buf, record| {
            if journal {
                write!(buf, "<{}>", priority(record.level()))?;
            }
            match format {
                LogFormat::Text => {
                    if journal {
                        // journald stamps its own time.
                        writeln!(
                            buf,
                            "{} {}: {}",
                            record.level(),
                            record.target(),
                            record.args()
                        )
                    } else {
                        writeln!(
                            buf,
                            "{} {} {}: {}",
                            clock::rfc3339(clock::unix_millis(), true),
                            record.level(),
                            record.target(),
                            record.args()
                        )
                    }
                }
                LogFormat::Json => {
                    let mut line = Vec::with_capacity(160);
                    line.extend_from_slice(b"{\"timestamp\":\"");
                    line.extend_from_slice(clock::rfc3339(clock::unix_millis(), true).as_bytes());
                    line.extend_from_slice(b"\",\"level\":\"");
                    line.extend_from_slice(record.level().as_str().as_bytes());
                    line.extend_from_slice(b"\",\"target\":");
                    crate::protocol::push_json_string(&mut line, record.target());
                    line.extend_from_slice(b",\"message\":");
                    crate::protocol::push_json_string(&mut line, &record.args().to_string());
                    line.extend_from_slice(b"}\n");
                    buf.write_all(&line)
                }
            }
        })
        .init();
}
