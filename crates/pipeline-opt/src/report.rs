//! Renderers of a finished [`crate::profile::RunRecord`]. This is the engine's minimal
//! version (the JSON record and a basic markdown file, both written atomically); the
//! full renderers (issue 8) replace it with the same `write_reports` signature.

use std::fmt::Write as _;

use camino::{Utf8Path, Utf8PathBuf};

use crate::profile::{RunRecord, StageStatus};

/// The report's file name under the state directory.
pub const MARKDOWN_NAME: &str = "pipeline-optimization-report.md";

#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub state_dir: Utf8PathBuf,
    /// Where to write the markdown report; `None` means `<state_dir>/MARKDOWN_NAME`.
    pub markdown: Option<Utf8PathBuf>,
    pub json: Option<Utf8PathBuf>,
    pub prometheus: Option<Utf8PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct WrittenReports {
    pub markdown: Utf8PathBuf,
    pub json: Option<Utf8PathBuf>,
    pub prometheus: Option<Utf8PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("could not write the report {path}: {source}; check that its directory is writable")]
    Write {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes every requested report of `record` and returns where they went.
pub fn write_reports(
    record: &RunRecord,
    options: &ReportOptions,
) -> Result<WrittenReports, ReportError> {
    let markdown =
        options.markdown.clone().unwrap_or_else(|| options.state_dir.join(MARKDOWN_NAME));
    write_atomic(&markdown, render_markdown(record).as_bytes())?;
    // The record is always kept beside the markdown, so reports can be re-rendered.
    let last = options.state_dir.join("last-run.json");
    let json_text = serde_json::to_string_pretty(record).expect("the record serializes");
    write_atomic(&last, json_text.as_bytes())?;
    if let Some(p) = &options.json {
        write_atomic(p, json_text.as_bytes())?;
    }
    if let Some(p) = &options.prometheus {
        write_atomic(p, render_prometheus(record).as_bytes())?;
    }
    Ok(WrittenReports {
        markdown,
        json: options.json.clone(),
        prometheus: options.prometheus.clone(),
    })
}

fn write_atomic(path: &Utf8Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write { path: path.to_owned(), source };
    let dir = path.parent().filter(|p| !p.as_str().is_empty()).unwrap_or(Utf8Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn status_word(s: &StageStatus) -> String {
    match s {
        StageStatus::Succeeded => "ok".into(),
        StageStatus::Failed => "FAILED".into(),
        StageStatus::TimedOut => "TIMED OUT".into(),
        StageStatus::Cancelled => "cancelled".into(),
        StageStatus::Skipped { reason } => format!("skipped ({reason})"),
        StageStatus::Cached { from_run } => format!("cached ({from_run})"),
    }
}

/// A basic markdown report: outcome, totals against targets, stages, failures.
pub fn render_markdown(r: &RunRecord) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Pipeline optimization report\n");
    let _ = writeln!(o, "- run: `{}` at {}", r.run_id, r.started_at);
    let _ = writeln!(o, "- workspace: `{}`", r.workspace_root);
    let _ = writeln!(o, "- command: `{}`", r.command);
    let _ = writeln!(o, "- outcome: **{:?}**", r.outcome);
    let _ = writeln!(
        o,
        "- total: {:.1}s (required < {:.0}s: {}, stretch < {:.0}s: {}) on {} cores\n",
        r.total.as_secs_f64(),
        r.verdict.required.as_secs_f64(),
        if r.verdict.required_met { "met" } else { "missed" },
        r.verdict.stretch.as_secs_f64(),
        if r.verdict.stretch_met { "met" } else { "missed" },
        r.cores
    );
    let _ = writeln!(o, "## Stages\n");
    let _ = writeln!(o, "| stage | status | start | wall | cpu | peak RSS |");
    let _ = writeln!(o, "| --- | --- | ---: | ---: | ---: | ---: |");
    for s in &r.stages {
        let _ = writeln!(
            o,
            "| {} | {} | {:.1}s | {:.1}s | {:.1}s | {} MiB |",
            s.id,
            status_word(&s.status),
            s.start.as_secs_f64(),
            s.wall.as_secs_f64(),
            (s.cpu_user + s.cpu_system).as_secs_f64(),
            s.peak_rss_kib / 1024
        );
    }
    if let Some(n) = &r.naive {
        let _ = writeln!(o, "\n## Against the naive sequence\n");
        let _ = writeln!(
            o,
            "naive {:.1}s, optimized {:.1}s, ratio {:.2}\n\n{}",
            n.naive_total.as_secs_f64(),
            n.optimized_total.as_secs_f64(),
            n.ratio,
            n.method
        );
        for p in &n.only_naive_proves {
            let _ = writeln!(o, "- only the naive sequence proves: {p}");
        }
    }
    if !r.critical_path.is_empty() {
        let _ = writeln!(o, "\n## Critical path\n");
        for c in &r.critical_path {
            let _ = writeln!(
                o,
                "- {} `{}` {:.1}s–{:.1}s",
                c.kind,
                c.name,
                c.start.as_secs_f64(),
                c.end.as_secs_f64()
            );
        }
    }
    let failures: Vec<_> = r
        .stages
        .iter()
        .filter(|s| matches!(s.status, StageStatus::Failed | StageStatus::TimedOut))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(o, "\n## Failures\n");
        for s in failures {
            let _ = writeln!(o, "### {} ({})\n", s.id, status_word(&s.status));
            if !s.failed_tests.is_empty() {
                let _ = writeln!(o, "failing tests: {}\n", s.failed_tests.join(", "));
            }
            if let Some(p) = &s.log_path {
                let _ = writeln!(o, "full log: `{p}`\n");
            }
            let _ = writeln!(o, "```\n{}\n```", s.tail.join("\n"));
        }
    }
    o
}

fn render_prometheus(r: &RunRecord) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "pipeline_opt_total_seconds {}", r.total.as_secs_f64());
    for s in &r.stages {
        let _ = writeln!(
            o,
            "pipeline_opt_stage_seconds{{stage=\"{}\"}} {}",
            s.id,
            s.wall.as_secs_f64()
        );
    }
    o
}
