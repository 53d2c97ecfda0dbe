//! The run history, `history.jsonl`: one JSON line per run, appended atomically and
//! trimmed to [`MAX_ENTRIES`]; and the trend view of `cargo xtask history` (table,
//! sparklines, the fastest-growing stage) with CSV export.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::record::{RunOutcome, RunRecord};
use crate::report::{ReportError, secs, write_atomic};

/// Bumped on every incompatible change of [`HistoryEntry`].
pub const HISTORY_SCHEMA_VERSION: u32 = 1;
/// Lines kept; older runs are dropped on append. A line is about 0.5–2 KB.
pub const MAX_ENTRIES: usize = 1000;
/// Entries that keep their per-test durations: the shard planner weighs a test by the
/// median of its last [`crate::shard::SAMPLES_KEPT`] successful runs.
pub const TEST_RUNS_KEPT: usize = crate::shard::SAMPLES_KEPT;
/// Runs a sparkline shows.
const SPARK_RUNS: usize = 40;
/// A trend needs this many runs of a stage to mean anything.
const MIN_TREND_RUNS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub schema_version: u32,
    pub run_id: String,
    pub started_at: String,
    pub command: String,
    pub outcome: RunOutcome,
    #[serde(with = "crate::record::secs")]
    pub total: Duration,
    pub required_met: bool,
    pub stretch_met: bool,
    pub stages: BTreeMap<String, HistoryStage>,
    /// Seconds of every test that passed, by `binary_id test_name` (nextest's; libtest
    /// reports no times on stable). Only the last [`TEST_RUNS_KEPT`] entries keep them,
    /// so a history of 10,000-test runs stays a few megabytes; absent in older lines.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tests: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryStage {
    /// `succeeded`, `failed`, `timed-out`, `cancelled`, `skipped` or `cached`.
    pub status: String,
    #[serde(with = "crate::record::secs")]
    pub wall: Duration,
}

impl HistoryStage {
    /// Whether the stage did its work in that run, so its time counts in a trend.
    pub fn ran(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "timed-out")
    }
}

impl HistoryEntry {
    pub fn from_record(r: &RunRecord) -> HistoryEntry {
        HistoryEntry {
            schema_version: HISTORY_SCHEMA_VERSION,
            run_id: r.run_id.clone(),
            started_at: r.started_at.clone(),
            command: r.command.clone(),
            outcome: r.outcome,
            total: r.total,
            required_met: r.verdict.required_met,
            stretch_met: r.verdict.stretch_met,
            stages: r
                .stages
                .iter()
                .map(|s| {
                    let status = s.status.name();
                    (s.id.clone(), HistoryStage { status: status.into(), wall: s.wall })
                })
                .collect(),
            tests: r
                .tests
                .iter()
                .filter(|t| t.passed)
                .map(|t| (t.name.clone(), t.duration.as_secs_f64()))
                .collect(),
        }
    }
}

/// The entries of a history file, and the lines that could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
    /// `line N: why`, for lines skipped (e.g. the last line of a run killed mid-write).
    pub warnings: Vec<String>,
}

/// Reads `path`; a missing file is an empty history, unreadable lines are skipped with
/// a warning.
pub fn read(path: &Utf8Path) -> Result<History, ReportError> {
    let lock_warning = crate::cache::store::set_aside_unusable_lock(&lock_path(path));
    let mut history = read_entries(path)?;
    history.warnings.extend(lock_warning);
    Ok(history)
}

/// The lock that [`append`] holds while it rewrites the history at `path`.
fn lock_path(path: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{path}.lock"))
}

fn read_entries(path: &Utf8Path) -> Result<History, ReportError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !crate::cache::store::is_symlink(path) =>
        {
            Ok(History::default())
        }
        // Invalid UTF-8, a directory in its place: set it aside and start a new history
        // rather than stop every run until someone removes it by hand.
        Err(source) => match crate::cache::store::set_aside(path) {
            Ok(aside) => Ok(History {
                warnings: vec![format!(
                    "set aside the unreadable run history {path} as {aside} ({source}); a new history starts"
                )],
                ..History::default()
            }),
            Err(_) => Err(ReportError::ReadHistory { path: path.to_owned(), source }),
        },
    }
}

impl History {
    /// Each stage's wall time in the latest run where it succeeded: what the next run
    /// can expect of it ([`crate::orchestrator::OrchestratorOptions::expected`]).
    pub fn expected_walls(&self) -> BTreeMap<String, Duration> {
        let mut out = BTreeMap::new();
        for e in self.entries.iter().rev() {
            for (id, s) in &e.stages {
                if s.status == "succeeded" {
                    out.entry(id.clone()).or_insert(s.wall);
                }
            }
        }
        out
    }

    /// Every test's passed durations, oldest first, as the shard planner weighs them.
    pub fn test_durations(&self) -> crate::shard::Durations {
        let mut d = crate::shard::Durations::default();
        for e in &self.entries {
            for (key, secs) in &e.tests {
                if let Ok(t) = Duration::try_from_secs_f64(*secs) {
                    d.add(key.clone(), t);
                }
            }
        }
        d
    }
}

pub fn parse(text: &str) -> History {
    let mut h = History::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<HistoryEntry>(line) {
            Ok(e) => h.entries.push(e),
            Err(e) => {
                h.warnings.push(format!("line {}: skipped, not a history entry ({e})", i + 1))
            }
        }
    }
    h
}

/// Appends `entry` to the history at `path` and returns the whole history including it.
///
/// Append is read, trim to [`MAX_ENTRIES`], write a temporary file, rename, all under
/// an exclusive lock on `<path>.lock`: concurrent runs never lose each other's lines and
/// a crash mid-write leaves the previous file intact. Unreadable lines are dropped here.
pub fn append(path: &Utf8Path, entry: &HistoryEntry) -> Result<Vec<HistoryEntry>, ReportError> {
    let write_err = |source| ReportError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let lock_path = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| ReportError::Write { path: lock_path.clone(), source })?;
    lock.lock().map_err(|source| ReportError::Write { path: lock_path.clone(), source })?;

    let mut entries = read(path)?.entries;
    entries.push(entry.clone());
    let excess = entries.len().saturating_sub(MAX_ENTRIES);
    entries.drain(..excess);
    let keep_tests_from = entries.len().saturating_sub(TEST_RUNS_KEPT);
    for e in &mut entries[..keep_tests_from] {
        e.tests.clear();
    }
    let mut text = String::new();
    for e in &entries {
        text.push_str(&serde_json::to_string(e)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())?;
    drop(lock);
    Ok(entries)
}

/// `▁▂▅█` for a series; a gap where a run did not measure the stage.
pub fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let known = values.iter().flatten();
    let (lo, hi) = known.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if hi <= lo => BARS[3],
            Some(v) => BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
        })
        .collect()
}

/// Least-squares slope of the measured points, in seconds per run.
fn slope(values: &[Option<f64>]) -> Option<f64> {
    let pts: Vec<(f64, f64)> =
        values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64, v))).collect();
    if pts.len() < MIN_TREND_RUNS {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Every stage id in the history, in order of first appearance.
fn stage_ids(entries: &[HistoryEntry]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in entries {
        for id in e.stages.keys() {
            if seen.insert(id.clone()) {
                out.push(id.clone());
            }
        }
    }
    out
}

fn stage_series(entries: &[HistoryEntry], id: &str) -> Vec<Option<f64>> {
    entries
        .iter()
        .map(|e| e.stages.get(id).filter(|s| s.ran()).map(|s| s.wall.as_secs_f64()))
        .collect()
}

/// The stage whose time grows fastest across runs, and by how much per run.
pub fn fastest_growing(entries: &[HistoryEntry]) -> Option<(String, f64)> {
    stage_ids(entries)
        .into_iter()
        .filter_map(|id| slope(&stage_series(entries, &id)).map(|s| (id, s)))
        .filter(|(_, s)| *s > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The trend table of `cargo xtask history` (warnings are the caller's to show).
pub fn render_trend(h: &History) -> String {
    let mut o = String::new();
    let entries = &h.entries;
    if entries.is_empty() {
        writeln!(o, "no runs recorded yet: `cargo xtask optimize` adds one per run").unwrap();
        return o;
    }
    let first = &entries[0].started_at;
    let last = &entries[entries.len() - 1].started_at;
    writeln!(o, "{} runs from {first} to {last}", entries.len()).unwrap();
    let window = &entries[entries.len().saturating_sub(SPARK_RUNS)..];
    writeln!(
        o,
        "sparklines show the last {} runs; blank: not run (cached, skipped)\n",
        window.len()
    )
    .unwrap();
    writeln!(
        o,
        "{:<16} {:>8} {:>8} {:>8} {:>10}  trend",
        "series", "last", "min", "max", "per run"
    )
    .unwrap();
    let totals: Vec<Option<f64>> = entries.iter().map(|e| Some(e.total.as_secs_f64())).collect();
    row(&mut o, "total", &totals, SPARK_RUNS);
    for id in stage_ids(entries) {
        row(&mut o, &id, &stage_series(entries, &id), SPARK_RUNS);
    }
    o.push('\n');
    match fastest_growing(entries) {
        Some((id, s)) => writeln!(
            o,
            "fastest-growing stage: `{id}`, +{:.2} s per run (least squares over its measured runs)",
            s
        )
        .unwrap(),
        None => writeln!(o, "no stage grows across the recorded runs").unwrap(),
    }
    let met = entries.iter().filter(|e| e.required_met).count();
    writeln!(o, "required target met in {met} of {} runs", entries.len()).unwrap();
    o
}

fn row(o: &mut String, name: &str, values: &[Option<f64>], spark: usize) {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let fmt =
        |v: Option<f64>| v.map(|v| secs(Duration::from_secs_f64(v))).unwrap_or_else(|| "-".into());
    let last = values.last().copied().flatten();
    let min = known.iter().copied().reduce(f64::min);
    let max = known.iter().copied().reduce(f64::max);
    let per_run = slope(values).map(|s| format!("{s:+.2} s")).unwrap_or_else(|| "-".into());
    let window = &values[values.len().saturating_sub(spark)..];
    writeln!(
        o,
        "{name:<16} {:>8} {:>8} {:>8} {per_run:>10}  {}",
        fmt(last),
        fmt(min),
        fmt(max),
        sparkline(window)
    )
    .unwrap();
}

/// One row per run: id, start, outcome, total and each stage's wall seconds (empty where
/// the stage did not run).
pub fn to_csv(entries: &[HistoryEntry]) -> String {
    let ids = stage_ids(entries);
    let mut o = String::from("run_id,started_at,outcome,total_seconds");
    for id in &ids {
        write!(o, ",{}", csv_field(&format!("{id}_seconds"))).unwrap();
    }
    o.push('\n');
    for e in entries {
        let outcome =
            serde_json::to_value(e.outcome).ok().and_then(|v| v.as_str().map(String::from));
        write!(
            o,
            "{},{},{},{:.3}",
            csv_field(&e.run_id),
            csv_field(&e.started_at),
            outcome.unwrap_or_default(),
            e.total.as_secs_f64()
        )
        .unwrap();
        for id in &ids {
            match e.stages.get(id).filter(|s| s.ran()) {
                Some(s) => write!(o, ",{:.3}", s.wall.as_secs_f64()).unwrap(),
                None => o.push(','),
            }
        }
        o.push('\n');
    }
    o
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
