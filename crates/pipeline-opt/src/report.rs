//! Renderers of a finished [`RunRecord`]: markdown, JSON, a self-contained HTML timeline,
//! Prometheus text metrics, GitHub step summaries and annotations, and the run history.
//! They read the record and nothing else (no command, no environment, no clock), so a
//! saved run.json renders the same reports; [`write_reports`] and [`rerender`] are the
//! entry points that touch disk, and only to write their files (and the history's).

pub mod explore;
pub mod github;
pub mod history;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod progress;
pub mod prometheus;
pub mod recommend;
mod text;

use std::io::Write as _;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::record::RunRecord;
use crate::state::StateDir;

/// Where to write the reports of one run. `None` means the default under `state_dir`.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub state_dir: StateDir,
    pub markdown: Option<Utf8PathBuf>,
    pub json: Option<Utf8PathBuf>,
    pub prometheus: Option<Utf8PathBuf>,
    /// GitHub Actions' step summary (`$GITHUB_STEP_SUMMARY`), which gets the markdown
    /// report appended; `None` outside GitHub Actions and in tests of a tool that itself
    /// runs in CI, which must not write to the job's summary.
    pub step_summary: Option<std::path::PathBuf>,
}

/// The paths every report of a run went to, so the caller can print them.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenReports {
    pub markdown: Utf8PathBuf,
    pub json: Utf8PathBuf,
    pub html: Utf8PathBuf,
    pub prometheus: Option<Utf8PathBuf>,
    pub history: Utf8PathBuf,
    /// The run's JUnit XML, which `optimize` writes beside the reports.
    pub junit: Option<Utf8PathBuf>,
    /// GitHub Actions workflow commands (`::error …`), one a line, for the caller to
    /// print under GitHub Actions: the library prints nothing to stdout.
    pub annotations: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the report {path}: {source}; check that its directory is writable")]
    Write {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the run history {path}: {source}; delete it to start a new history")]
    ReadHistory {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the run record as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode the prometheus metrics: {0}")]
    Prometheus(std::fmt::Error),
}

pub const MARKDOWN_FILE: &str = "pipeline-optimization-report.md";
pub const JSON_FILE: &str = "run.json";
pub const HTML_FILE: &str = "report.html";
pub const HISTORY_FILE: &str = "history.jsonl";

/// Writes every report of `record`: markdown, JSON, HTML, the history line, the
/// Prometheus file when asked for and the step summary when given, and returns the
/// GitHub annotations. A run whose workspace no longer loads still gets its reports:
/// the workspace facts the recommendations need are in the record.
pub fn write_reports(
    record: &RunRecord,
    opts: &ReportOptions,
) -> Result<WrittenReports, ReportError> {
    let rendered = Rendered::render(record)?;
    // Each command has its own files: a `check` never overwrites `optimize`'s reports,
    // nor do its runs enter `optimize`'s history, trends and metrics.
    let own = |base: &str| opts.state_dir.report(&record.kind.file_name(base));
    let markdown_path = opts.markdown.clone().unwrap_or_else(|| own(MARKDOWN_FILE));
    write_atomic(&markdown_path, rendered.markdown.as_bytes())?;
    let json_path = opts.json.clone().unwrap_or_else(|| own(JSON_FILE));
    write_atomic(&json_path, rendered.json.as_bytes())?;
    let html_path = own(HTML_FILE);
    write_atomic(&html_path, rendered.html.as_bytes())?;

    // The history first, so the histogram below counts this run too.
    let history_path = own(HISTORY_FILE);
    let entries = history::append(&history_path, &history::HistoryEntry::from_record(record))?;

    let prometheus_path = match &opts.prometheus {
        Some(path) => {
            let text = prometheus::render(record, &entries).map_err(ReportError::Prometheus)?;
            write_atomic(path, text.as_bytes())?;
            Some(path.clone())
        }
        None => None,
    };
    if let Some(summary) = &opts.step_summary {
        github::append_summary(summary, &rendered.markdown)?;
    }

    Ok(WrittenReports {
        markdown: markdown_path,
        json: json_path,
        html: html_path,
        prometheus: prometheus_path,
        history: history_path,
        junit: None,
        annotations: github::annotations(record),
    })
}

/// `cargo xtask report --from`: the reports that are a function of the record alone
/// (markdown, JSON, HTML) written again into `dir` under the names the run gave them.
/// The history and the Prometheus file also depend on the runs before, so they are left
/// alone: rendering a run twice must not count it twice.
pub fn rerender(record: &RunRecord, dir: &Utf8Path) -> Result<Vec<Utf8PathBuf>, ReportError> {
    let rendered = Rendered::render(record)?;
    let files = [
        (MARKDOWN_FILE, &rendered.markdown),
        (JSON_FILE, &rendered.json),
        (HTML_FILE, &rendered.html),
    ];
    let mut written = Vec::new();
    for (base, text) in files {
        let path = dir.join(record.kind.file_name(base));
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// The reports that are a function of the record alone.
struct Rendered {
    markdown: String,
    json: String,
    html: String,
}

impl Rendered {
    fn render(record: &RunRecord) -> Result<Rendered, ReportError> {
        let recommendations = recommend::recommend(record, &record.workspace_facts);
        Ok(Rendered {
            markdown: markdown::render(record, &recommendations),
            json: json::render(record)?,
            html: html::render(record),
        })
    }
}

/// Writes `contents` to a temporary file beside `path` and renames it into place, so a
/// reader (a browser, the node-exporter textfile collector) never sees half a file.
pub fn write_atomic(path: &Utf8Path, contents: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(p) if !p.as_str().is_empty() => p,
        _ => Utf8Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", path.file_name().unwrap_or("report")))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(contents).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// `12.3 s`: one decimal is what a person compares at a glance.
/// The sentence both the markdown and the HTML report close their shards table with.
pub(crate) fn shards_balance_sentence(sh: &crate::record::ShardsSummary) -> String {
    let balance = sh.balance.map(|b| format!("{b:.2}")).unwrap_or_else(|| "-".into());
    let error = sh
        .prediction_error
        .map(|e| format!("{:.0} %", e * 100.0))
        .unwrap_or_else(|| "- (no prediction)".into());
    format!(
        "Balance (slowest shard's wall ÷ mean): {balance}; median prediction error of the test time: {error}."
    )
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A limit the user set (a target), as `secs` unless that would round it: a 1 ms
/// target shows as `1ms`, never as `0.0 s`.
pub(crate) fn limit(d: Duration) -> String {
    if d.as_millis().is_multiple_of(100) && d.subsec_nanos().is_multiple_of(1_000_000) {
        secs(d)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// `42%` of `part` in `whole`; `0%` when the whole is empty.
/// `1 unit`, `3 units`.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 { "0%".into() } else { format!("{:.0}%", 100.0 * part / whole) }
}

/// How many tests the "slowest tests" tables of the reports list.
pub(crate) const SLOWEST_TESTS: usize = 10;

/// One of a run's slowest tests, measured against the stage that ran it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowTest<'a> {
    /// The test binary as the runner names it (nextest's binary id, `app::t`); empty
    /// when the runner named the test alone.
    pub binary: &'a str,
    pub test: &'a str,
    pub stage: &'a str,
    pub duration: Duration,
    pub stage_wall: Duration,
}

impl SlowTest<'_> {
    /// The test's share of its stage's wall time.
    pub fn share(&self) -> f64 {
        self.duration.as_secs_f64() / self.stage_wall.as_secs_f64().max(f64::EPSILON)
    }

    /// ``` `test` in `binary` ```, or the test alone, in backticks.
    pub fn named(&self) -> String {
        if self.binary.is_empty() {
            format!("`{}`", self.test)
        } else {
            format!("`{}` in `{}`", self.test, self.binary)
        }
    }

    /// A command that runs this test alone (with nextest, or `cargo test` for another
    /// runner), when its binary id says which target holds it: `pkg` is the library,
    /// `pkg::name` an integration test, `pkg::bin/name` a binary, and so on.
    pub fn rerun_command(&self, nextest: bool) -> Option<String> {
        let (package, target) = match self.binary.split_once("::") {
            None if !self.binary.is_empty() => (self.binary, "--lib".to_string()),
            None => return None,
            Some((package, target)) => match target.split_once('/') {
                None => (package, format!("--test {target}")),
                Some((kind @ ("bin" | "example" | "bench"), name)) => {
                    (package, format!("--{kind} {name}"))
                }
                Some(_) => return None,
            },
        };
        let run = if nextest { "nextest run" } else { "test" };
        Some(format!("cargo {run} -p {package} {target} -- --exact {}", self.test))
    }
}

/// The `n` slowest tests of the stages that ran, slowest first.
pub(crate) fn slowest_tests(record: &RunRecord, n: usize) -> Vec<SlowTest<'_>> {
    let mut out: Vec<SlowTest<'_>> = record
        .tests
        .iter()
        .filter_map(|t| {
            let stage = record.stages.iter().find(|s| s.id == t.stage)?;
            let (binary, test) = t.name.split_once(' ').unwrap_or(("", &t.name));
            Some(SlowTest {
                binary,
                test,
                stage: &stage.id,
                duration: t.duration,
                stage_wall: stage.wall,
            })
        })
        .collect();
    out.sort_by(|a, b| b.duration.cmp(&a.duration).then_with(|| a.test.cmp(b.test)));
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_shows_as_set() {
        let ms = Duration::from_millis;
        assert_eq!(limit(ms(1)), "1ms");
        assert_eq!(limit(ms(25_000)), "25.0 s");
        assert_eq!(limit(ms(2_500)), "2.5 s");
        assert_eq!(limit(ms(1_250)), "1s 250ms");
    }
}
