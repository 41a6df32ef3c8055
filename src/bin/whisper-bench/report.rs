//! Results: metrics of each run, their summary over runs, the printed table
//! and the JSON document.

use serde_json::{Value, json};

use crate::relay::Exit;
use crate::stats::{Summary, summarize};

/// What a metric measures, where that changes how it is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// Server CPU nanoseconds per delivery: also shown as a multiple of the floor.
    CpuPerDelivery,
    /// The floor itself: CPU nanoseconds of one loopback write of one frame.
    Floor,
    /// The same write when the reader is asleep and must be woken: what one
    /// write per delivery costs at a fixed, unhurried rate.
    PacedFloor,
}

/// One number from one run.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub kind: Kind,
}

impl Metric {
    pub fn new(name: impl Into<String>, unit: &'static str, value: f64) -> Metric {
        Metric {
            name: name.into(),
            unit,
            value,
            kind: Kind::Plain,
        }
    }

    pub fn cpu_per_delivery(name: impl Into<String>, value: f64) -> Metric {
        Metric {
            kind: Kind::CpuPerDelivery,
            ..Metric::new(name, "ns", value)
        }
    }

    pub fn floor(name: impl Into<String>, value: f64) -> Metric {
        Metric {
            kind: Kind::Floor,
            ..Metric::new(name, "ns", value)
        }
    }

    pub fn paced_floor(name: impl Into<String>, value: f64) -> Metric {
        Metric {
            kind: Kind::PacedFloor,
            ..Metric::new(name, "ns", value)
        }
    }
}

/// One run of one scenario.
#[derive(Debug, Default)]
pub struct Run {
    pub metrics: Vec<Metric>,
    /// Why the run produced no (or only some) numbers.
    pub error: Option<String>,
    /// Things worth reading next to the numbers (server log lines, anomalies).
    pub notes: Vec<String>,
    /// How each relay of the run ended.
    pub exits: Vec<Exit>,
}

/// All runs of one scenario.
pub struct ScenarioReport {
    pub name: &'static str,
    pub runs: Vec<Run>,
}

/// A metric summarised over runs.
struct Row {
    name: String,
    unit: &'static str,
    kind: Kind,
    values: Vec<f64>,
    summary: Option<Summary>,
}

impl ScenarioReport {
    /// Metrics in order of first appearance, with their values over runs.
    fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for m in self.runs.iter().flat_map(|r| &r.metrics) {
            match rows.iter_mut().find(|r| r.name == m.name) {
                Some(row) => row.values.push(m.value),
                None => rows.push(Row {
                    name: m.name.clone(),
                    unit: m.unit,
                    kind: m.kind,
                    values: vec![m.value],
                    summary: None,
                }),
            }
        }
        for row in &mut rows {
            row.summary = summarize(&row.values);
        }
        rows
    }

    fn crashes(&self) -> usize {
        self.runs
            .iter()
            .flat_map(|r| &r.exits)
            .filter(|e| !e.clean)
            .count()
    }

    fn relays(&self) -> usize {
        self.runs.iter().map(|r| r.exits.len()).sum()
    }
}

/// The floor (median ns per single-frame write) if the floor scenario ran.
pub fn floor_ns(reports: &[ScenarioReport]) -> Option<f64> {
    floor_of(reports, Kind::Floor)
}

/// The median of the first row of `kind` (a floor), if positive.
fn floor_of(reports: &[ScenarioReport], kind: Kind) -> Option<f64> {
    reports
        .iter()
        .flat_map(|s| s.rows())
        .find(|r| r.kind == kind)
        .and_then(|r| r.summary)
        .map(|s| s.median)
        .filter(|&ns| ns > 0.0)
}

/// A number for the table: integers as such, others with a precision that
/// suits their size.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// One line of the table: scenario, metric, median, spread, unit, x floor,
/// x paced floor.
type Line = [String; 7];

/// The table lines of one scenario: its metrics, then its crash count.
fn scenario_lines(s: &ScenarioReport, floors: (Option<f64>, Option<f64>)) -> Vec<Line> {
    let mut lines = Vec::new();
    let ratio = |value: f64, floor: Option<f64>| {
        floor.map_or(String::new(), |f| format!("{:.2}x", value / f))
    };
    for row in s.rows() {
        let Some(sum) = row.summary else { continue };
        let (times, paced) = match row.kind {
            Kind::CpuPerDelivery => (ratio(sum.median, floors.0), ratio(sum.median, floors.1)),
            _ => (String::new(), String::new()),
        };
        lines.push([
            s.name.into(),
            row.name,
            fmt_num(sum.median),
            format!("{} – {}", fmt_num(sum.min), fmt_num(sum.max)),
            row.unit.into(),
            times,
            paced,
        ]);
    }
    if s.relays() > 0 {
        lines.push([
            s.name.into(),
            "crashes".into(),
            s.crashes().to_string(),
            format!("of {} relay runs", s.relays()),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    lines
}

/// Failures, unclean relay exits, notes and relay warnings, per run.
fn scenario_notes(s: &ScenarioReport) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, run) in s.runs.iter().enumerate() {
        let at = format!("{} run {}", s.name, i + 1);
        if let Some(e) = &run.error {
            notes.push(format!("{at}: FAILED: {e}"));
        }
        for exit in run.exits.iter().filter(|e| !e.clean) {
            notes.push(format!("{at}: relay {}", exit.detail));
        }
        let logged = run.exits.iter().flat_map(|e| &e.log);
        for n in run.notes.iter().chain(logged) {
            notes.push(format!("{at}: {n}"));
        }
    }
    notes
}

/// Lines as aligned columns: numbers right-aligned, words left-aligned.
fn render(lines: &[Line]) -> String {
    let mut widths = [0usize; 7];
    for l in lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, (cell, w)) in l.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if (2..=3).contains(&i) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The printed table, one line per metric, then failures and notes.
pub fn table(reports: &[ScenarioReport]) -> String {
    let floors = (floor_ns(reports), floor_of(reports, Kind::PacedFloor));
    let header: Line = [
        "scenario",
        "metric",
        "median",
        "min – max",
        "unit",
        "x floor",
        "x min relay",
    ]
    .map(String::from);
    let mut lines = vec![header];
    for s in reports {
        lines.extend(scenario_lines(s, floors));
    }
    let mut out = render(&lines);
    for n in reports.iter().flat_map(scenario_notes) {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

fn run_json(run: &Run) -> Value {
    let metrics: serde_json::Map<String, Value> = run
        .metrics
        .iter()
        .map(|m| (m.name.clone(), json!(m.value)))
        .collect();
    json!({
        "metrics": metrics,
        "error": run.error,
        "notes": run.notes,
        "relays": run.exits.iter().map(|e| json!({
            "clean_exit": e.clean,
            "exit": e.detail,
            "log": e.log,
        })).collect::<Vec<_>>(),
    })
}

/// The scenarios as JSON: per metric its unit, per-run values and summary.
pub fn scenarios_json(reports: &[ScenarioReport]) -> Value {
    let floor = floor_ns(reports);
    let list: Vec<Value> = reports
        .iter()
        .map(|s| {
            let metrics: Vec<Value> = s
                .rows()
                .into_iter()
                .map(|r| {
                    let sum = r.summary;
                    let times = match (r.kind, floor, sum) {
                        (Kind::CpuPerDelivery, Some(f), Some(s)) => json!(s.median / f),
                        _ => Value::Null,
                    };
                    json!({
                        "name": r.name,
                        "unit": r.unit,
                        "values": r.values,
                        "median": sum.map(|s| s.median),
                        "min": sum.map(|s| s.min),
                        "max": sum.map(|s| s.max),
                        "x_floor": times,
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "crashes": s.crashes(),
                "relay_runs": s.relays(),
                "metrics": metrics,
                "runs": s.runs.iter().map(run_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_by_size() {
        assert_eq!(fmt_num(12.0), "12");
        assert_eq!(fmt_num(1234.567), "1235");
        assert_eq!(fmt_num(123.456), "123.5");
        assert_eq!(fmt_num(1.23456), "1.23");
        assert_eq!(fmt_num(0.0123), "0.012");
        assert_eq!(fmt_num(f64::NAN), "-");
    }

    #[test]
    fn table_shows_multiples_of_the_floor() {
        let run = |metrics| Run {
            metrics,
            ..Run::default()
        };
        let reports = vec![
            ScenarioReport {
                name: "floor",
                runs: vec![run(vec![
                    Metric::floor("write_1_frame", 1000.0),
                    Metric::paced_floor("fan-out write", 250.0),
                ])],
            },
            ScenarioReport {
                name: "fanout",
                runs: vec![
                    run(vec![Metric::cpu_per_delivery("cpu", 400.0)]),
                    run(vec![Metric::cpu_per_delivery("cpu", 600.0)]),
                ],
            },
        ];
        let t = table(&reports);
        let line = t
            .lines()
            .find(|l| l.starts_with("fanout") && l.contains("cpu"))
            .unwrap();
        assert!(line.contains("500") && line.contains("0.50x"), "{line}");
        assert!(
            line.contains("2.00x"),
            "multiple of the fan-out floor: {line}"
        );
    }
}
