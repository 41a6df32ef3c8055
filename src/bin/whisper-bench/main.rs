//! whisper-bench: the benchmark suite of the relay. It starts a fresh relay
//! for every run of every scenario, drives it with its own WebSocket load
//! generator over loopback, reads the relay's memory, CPU time and write
//! syscalls from /proc, and prints a table and a JSON document.
//!
//! `cargo build --release && target/release/whisper-bench [--quick]`; see
//! `--help` and `cli.rs` for the options, `scenarios/` for what each measures.

mod cli;
mod client;
mod formula;
mod probe;
mod proc;
mod relay;
mod report;
mod scenarios;
mod stats;
mod traffic;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;

use crate::cli::{Command, Options, Params};
use crate::relay::Launcher;
use crate::report::ScenarioReport;
use crate::scenarios::{Pinning, Scenario};

/// Counts allocations only in the allocator probe (`probe.rs`).
#[global_allocator]
static ALLOCATOR: probe::Counting = probe::Counting;

/// The hidden first argument that runs this executable as the allocator probe.
pub const PROBE_ARG: &str = "--probe-relay";

/// The suite as configured from the command line and the machine.
struct Suite {
    params: Params,
    runs: u32,
    scenarios: Vec<Scenario>,
    launcher: Launcher,
    pinning: Option<Pinning>,
    nofile: Option<u64>,
    relay_version: Option<String>,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(PROBE_ARG) {
        return ExitCode::from(probe::relay_main());
    }
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("whisper-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let suite = match configure(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("whisper-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let reports = run_all(&suite, started);
    let _ = std::fs::remove_dir(&suite.launcher.workdir);
    let ok = output(&suite, &opts, &reports, started);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Checks the options, raises the descriptor limit, pins this thread.
fn configure(opts: &Options) -> Result<Suite, String> {
    let mut params = if opts.quick {
        Params::quick()
    } else {
        Params::full()
    };
    if let Some(n) = opts.messages {
        params.count_messages = n;
    }
    let runs = opts.runs.unwrap_or(if opts.quick { 1 } else { 3 });
    let scenarios = Scenario::select(opts.only.as_deref())?;
    let program = match &opts.server {
        Some(p) => p.clone(),
        None => relay::default_program().ok_or("cannot locate this executable")?,
    };
    relay::check_program(&program)?;
    let nofile = match proc::raise_nofile() {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("whisper-bench: warning: cannot raise RLIMIT_NOFILE: {e}");
            None
        }
    };
    let cpus = proc::allowed_cpus();
    let pinning = match cpus.as_slice() {
        [relay, generator, ..] => Some(Pinning {
            relay: *relay,
            generator: *generator,
        }),
        _ => None,
    };
    if let Some(p) = pinning
        && let Err(e) = proc::pin_current(&proc::cpu_set(p.generator))
    {
        eprintln!("whisper-bench: warning: cannot pin the generator: {e}");
    }
    let workdir = std::env::temp_dir().join(format!("whisper-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)
        .map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
    let runner = std::env::var("WHISPER_TEST_RUNNER")
        .map(|r| r.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let launcher = Launcher {
        program,
        runner,
        cpu: pinning.map(|p| p.relay),
        workdir,
        startup_timeout: params.startup_timeout,
        stop_timeout: params.stop_timeout,
    };
    let relay_version = relay::version(&launcher);
    Ok(Suite {
        params,
        runs,
        scenarios,
        launcher,
        pinning,
        nofile,
        relay_version,
    })
}

fn run_all(suite: &Suite, started: Instant) -> Vec<ScenarioReport> {
    let mut reports = Vec::new();
    for &scenario in &suite.scenarios {
        let mut runs = Vec::new();
        for i in 1..=suite.runs {
            eprintln!(
                "[{:6.1} s] {} run {i}/{}",
                started.elapsed().as_secs_f64(),
                scenario.name(),
                suite.runs
            );
            let run = scenarios::run(scenario, &suite.params, &suite.launcher, suite.pinning);
            if let Some(e) = &run.error {
                eprintln!("           failed: {e}");
            }
            runs.push(run);
        }
        reports.push(ScenarioReport {
            name: scenario.label(),
            runs,
        });
    }
    reports
}

fn header(suite: &Suite) -> String {
    let mode = if suite.params.quick { "quick" } else { "full" };
    let pinning = match suite.pinning {
        Some(p) => format!("relay on CPU {}, generator on CPU {}", p.relay, p.generator),
        None => "not pinned (fewer than 2 CPUs)".into(),
    };
    let runner = if suite.launcher.runner.is_empty() {
        String::new()
    } else {
        format!(
            " via `{}` (its memory figures include the emulator's own)",
            suite.launcher.runner.join(" ")
        )
    };
    format!(
        "whisper-bench: {mode} mode, {} run(s) per scenario, {} {}\n\
         relay: {}{runner} ({})\n\
         CPUs: {pinning}; RLIMIT_NOFILE {}\n\
         memory formula constants: {}\n",
        suite.runs,
        std::env::consts::OS,
        std::env::consts::ARCH,
        suite.launcher.program.display(),
        suite.relay_version.as_deref().unwrap_or("version unknown"),
        suite.nofile.map_or("unchanged".into(), |n| n.to_string()),
        formula::describe()
    )
}

/// Prints the table and the JSON document (also to `--json`). Returns
/// whether every run completed with clean relay exits.
fn output(suite: &Suite, opts: &Options, reports: &[ScenarioReport], started: Instant) -> bool {
    let elapsed = started.elapsed().as_secs_f64();
    let generator = proc::own_memory();
    println!("{}", header(suite));
    print!("{}", report::table(reports));
    println!(
        "\nsuite time {elapsed:.1} s; generator peak RSS {} KiB\n",
        generator.hwm_kib
    );
    let doc = json!({
        "tool": "whisper-bench",
        "mode": if suite.params.quick { "quick" } else { "full" },
        "runs_per_scenario": suite.runs,
        "relay": {
            "program": suite.launcher.program.display().to_string(),
            "runner": suite.launcher.runner,
            "version": suite.relay_version,
        },
        "machine": {
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "relay_cpu": suite.pinning.map(|p| p.relay),
            "generator_cpu": suite.pinning.map(|p| p.generator),
        },
        "formula_constants": formula::constants_json(),
        "floor_ns": report::floor_ns(reports),
        "elapsed_secs": elapsed,
        "generator_peak_rss_kib": generator.hwm_kib,
        "scenarios": report::scenarios_json(reports),
    });
    let text =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    println!("{text}");
    if let Some(path) = &opts.json {
        write_json(path, &text);
    }
    reports
        .iter()
        .flat_map(|s| &s.runs)
        .all(|r| r.error.is_none() && r.exits.iter().all(|e| e.clean))
}

fn write_json(path: &PathBuf, text: &str) {
    if let Err(e) = std::fs::write(path, format!("{text}\n")) {
        eprintln!("whisper-bench: cannot write {}: {e}", path.display());
    }
}
