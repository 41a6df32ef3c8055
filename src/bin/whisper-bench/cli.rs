//! Command-line options and the sizes and durations of the two modes.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
whisper-bench: benchmark suite of the rtce2ee-whisper relay

USAGE:
    whisper-bench [--quick] [--runs N] [--only SCENARIO[,..]] [--json PATH] [--server PATH]
                  [--messages N]

    --quick          one short run of each scenario with small N (well under a minute)
    --runs N         runs per scenario (default 3, --quick: 1)
    --only LIST      comma-separated scenarios: idle, fanout, chatty, churn, worst-case, floor,
                     burst, wifi, closes, storm, slowloris, catch-up;
                     idle-legacy, fanout-legacy (idle and fanout with legacy `payload` clients);
                     `count` (never run by default) sends exactly --messages N messages
                     to a room of 50, for instruction counting (.ci/callgrind);
                     `count-legacy` the same with legacy clients
    --messages N     messages of the `count` scenario (default 1000)
    --json PATH      also write the JSON document to PATH
    --server PATH    relay binary (default: rtce2ee-whisper beside this executable)

Every run starts a fresh relay on 127.0.0.1 with an ephemeral port. With two or
more CPUs the relay is pinned to the first and the generator to the second.
WHISPER_TEST_RUNNER (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`) prefixes the
relay's command line, for cross-compiled runs.
";

/// Parsed command line.
#[derive(Debug, Default)]
pub struct Options {
    pub quick: bool,
    pub runs: Option<u32>,
    pub only: Option<Vec<String>>,
    pub json: Option<PathBuf>,
    pub server: Option<PathBuf>,
    pub messages: Option<u32>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Options),
    Help,
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quick" => opts.quick = true,
            "--runs" => {
                let v = value()?;
                let n = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| format!("--runs {v:?}: expected 1 to 100"))?;
                opts.runs = Some(n);
            }
            "--only" => {
                let list = value()?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                opts.only = Some(list);
            }
            "--json" => opts.json = Some(PathBuf::from(value()?)),
            "--server" => opts.server = Some(PathBuf::from(value()?)),
            "--messages" => {
                let v = value()?;
                let n = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=10_000_000).contains(n))
                    .ok_or_else(|| format!("--messages {v:?}: expected 1 to 10000000"))?;
                opts.messages = Some(n);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Command::Run(opts))
}

/// Sizes, durations and timeouts of a mode.
#[derive(Clone, Debug)]
pub struct Params {
    pub quick: bool,
    /// `idle`: (connections, rooms) pairs, one relay each.
    pub idle_sets: Vec<(u32, u32)>,
    pub idle_settle: Duration,
    pub fanout_rooms: u32,
    pub fanout_members: u32,
    /// Messages per second per sender in the fixed-rate phase.
    pub fanout_rate: u32,
    /// Messages in flight per sender in the closed-loop phase.
    pub fanout_window: u32,
    pub fanout_phase: Duration,
    pub chatty_rooms: u32,
    pub chatty_members: u32,
    /// Messages per second per member.
    pub chatty_rate: f64,
    pub chatty_phase: Duration,
    pub churn_cycles: u32,
    /// `worst-case`: MAX_CONNECTIONS; rooms are full (MAX_ROOM_USERS each).
    pub worst_connections: u32,
    pub worst_room_users: u32,
    pub worst_phase: Duration,
    pub floor_writes: u32,
    /// `burst`: members of its one room (each sends its whole budget at once).
    pub burst_members: u32,
    /// `wifi`: members of its one room (senders, paced readers, one that
    /// stops) and how long the senders talk.
    pub wifi_members: u32,
    pub wifi_phase: Duration,
    /// `closes`: trials of each kind of close.
    pub close_trials: u32,
    /// `count`: messages sent to its room of 50.
    pub count_messages: u32,
    /// `catch-up`: phones that rejoin at once, and the frames each replays.
    pub catchup_phones: u32,
    pub catchup_frames: u32,
    /// Longest wait for deliveries still in flight after a phase.
    pub drain_limit: Duration,
    pub startup_timeout: Duration,
    pub stop_timeout: Duration,
    /// Setup limit: this much plus `setup_per_conn` per connection.
    pub setup_base: Duration,
    pub setup_per_conn: Duration,
}

impl Params {
    pub fn full() -> Params {
        Params {
            quick: false,
            idle_sets: vec![(1_000, 100), (10_000, 1_000)],
            idle_settle: Duration::from_secs(1),
            fanout_rooms: 10,
            fanout_members: 50,
            fanout_rate: 200,
            fanout_window: 4,
            fanout_phase: Duration::from_secs(5),
            chatty_rooms: 200,
            chatty_members: 5,
            chatty_rate: 2.0,
            chatty_phase: Duration::from_secs(5),
            churn_cycles: 2_000,
            worst_connections: 4_096,
            worst_room_users: 64,
            worst_phase: Duration::from_secs(20),
            floor_writes: 200_000,
            burst_members: 64,
            wifi_members: 32,
            wifi_phase: Duration::from_secs(12),
            close_trials: 200,
            count_messages: 1_000,
            catchup_phones: 64,
            catchup_frames: 256,
            drain_limit: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(20),
            setup_base: Duration::from_secs(10),
            setup_per_conn: Duration::from_millis(5),
        }
    }

    /// Short phases and small N; timeouts generous enough for a relay
    /// running under an emulator.
    pub fn quick() -> Params {
        Params {
            quick: true,
            idle_sets: vec![(200, 20)],
            fanout_phase: Duration::from_secs(1),
            chatty_rooms: 40,
            chatty_phase: Duration::from_secs(2),
            churn_cycles: 200,
            worst_connections: 512,
            worst_phase: Duration::from_secs(5),
            floor_writes: 20_000,
            burst_members: 16,
            wifi_members: 16,
            wifi_phase: Duration::from_secs(5),
            close_trials: 50,
            catchup_phones: 32,
            drain_limit: Duration::from_secs(20),
            startup_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
            setup_base: Duration::from_secs(30),
            setup_per_conn: Duration::from_millis(50),
            ..Params::full()
        }
    }

    pub fn setup_limit(&self, conns: u32) -> Duration {
        self.setup_base + self.setup_per_conn * conns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_every_option() {
        let Command::Run(o) = parse(args(
            "--quick --runs 2 --only idle,floor --json=x.json --server /s",
        ))
        .unwrap() else {
            panic!("not a run");
        };
        assert!(o.quick);
        assert_eq!(o.runs, Some(2));
        assert_eq!(o.only, Some(vec!["idle".to_string(), "floor".to_string()]));
        assert_eq!(o.json, Some(PathBuf::from("x.json")));
        assert_eq!(o.server, Some(PathBuf::from("/s")));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(args("--runs 0")).is_err());
        assert!(parse(args("--runs")).is_err());
        assert!(parse(args("--fast")).is_err());
        assert!(matches!(parse(args("--help")), Ok(Command::Help)));
    }
}
