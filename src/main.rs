//! rtce2ee-whisper: a WebSocket relay for end-to-end encrypted chat rooms.

use std::process::ExitCode;

use rtce2ee_whisper::{config, fdstore, health_check, history, logging, server, systemd};

const USAGE: &str = "\
rtce2ee-whisper: a WebSocket relay for end-to-end encrypted chat rooms

USAGE:
    rtce2ee-whisper [--help | --version | --health-check]

    --health-check   GET /health from the relay on this machine (the port and
                     address below); exit 0 when healthy, 1 otherwise

Configuration comes from environment variables, then from a .env file in the
working directory for variables the environment leaves unset:

    HOST                                 listen address          [0.0.0.0]
    PORT                                 listen port (0: any)    [8080]
    HANDSHAKE_TIMEOUT_SECS               HTTP head deadline      [10]
    HTTP_PENDING_LIMIT                   HTTP-phase connections  [256]
    HTTP_PENDING_LIMIT_PER_IP            of those per client IP  [16]
    RATE_LIMIT_MESSAGE_LIMIT             message+reaction / min  [30]
    RATE_LIMIT_JOIN_LIMIT                join / min              [5]
    RATE_LIMIT_FRAME_LIMIT               frames / min            [300]
    RATE_LIMIT_CONNECTION_LIMIT_PER_IP   open connections per IP [10]
    RATE_LIMIT_MAX_MESSAGE_SIZE          bytes per message       [10240]
    MAX_CONNECTIONS                      WebSocket connections   [4096]
    MAX_ROOMS                            rooms                   [1024]
    MAX_ROOM_USERS                       members per room        [64]
    HEARTBEAT_INTERVAL_SECS              ping interval           [30]
    SHUTDOWN_TIMEOUT_SECS                graceful shutdown limit [5]
    SLOW_CONSUMER_QUEUE_BYTES            queued bytes per client [1048576]
    SLOW_CONSUMER_STALL_SECS             unsent and no progress  [10]
    QUEUE_BUDGET_BYTES                   queued bytes in all     [16777216]
    BLOCK_STRIKE_LIMIT                   strikes/min to block IP [20]
    HISTORY_SECS                         catch-up seconds (0: off) [86400]
    HISTORY_ROOM_FRAMES                  frames kept per room    [256]
    HISTORY_BUDGET_BYTES                 bytes of all history    [8388608]
    HISTORY_ROOMS                        rooms with history      [1024]
    TRUSTED_PROXIES                      proxy IPs for X-Forwarded-For []
    ALLOWED_ORIGINS                      allowed Origin values   [any]
    RUST_LOG                             log filter              [info]
    LOG_FORMAT                           text or json            [text]

Endpoints: GET /health, GET /metrics, GET /ws (WebSocket), GET /app/ (the chat page).
Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad configuration.
";

fn main() -> ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("rtce2ee-whisper {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--health-check" => return health_check::main(),
            other => {
                eprintln!("rtce2ee-whisper: unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }

    let cfg = match config::Config::load(&config::Source::from_process()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("rtce2ee-whisper: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&cfg);

    // Before any thread: the descriptors systemd passed (socket activation
    // and the history hand-over from the file descriptor store).
    let inherited = systemd::inherited_fds();
    let listener = match inherited.listener {
        Some(l) => {
            log::info!("using the listening socket passed by systemd");
            l
        }
        None => match std::net::TcpListener::bind((cfg.host.as_str(), cfg.port)) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot listen on {}:{}: {e}", cfg.host, cfg.port);
                return ExitCode::from(1);
            }
        },
    };
    let notifier = systemd::Notifier::from_env();
    let restored = fdstore::take_back(inherited.history, history::Limits::new(&cfg), &notifier);
    ExitCode::from(server::run(cfg, listener, restored) as u8)
}
