//! GitHub Actions: the markdown report appended to the job's step summary, `::error`
//! annotations for failed stages and missed targets and `::warning`s for the compile
//! cache, which the caller prints.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::record::{RunRecord, StageStatus};
use crate::report::{ReportError, limit, secs};
use crate::targets::Gate;

/// Appends to the step summary file; GitHub renders everything appended to it.
pub fn append_summary(path: &std::path::Path, markdown: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: camino::Utf8PathBuf::from(path.to_string_lossy().into_owned()),
        source,
    };
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
    // One write call: summaries of concurrent steps do not interleave mid-report.
    let mut text = String::with_capacity(markdown.len() + 1);
    text.push_str(markdown);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    f.write_all(text.as_bytes()).map_err(err)
}

/// Workflow commands: an error per failed or timed-out stage and, under `--gate`, per
/// missed target of the gate (without a gate, targets annotate nothing), and a warning
/// per compile-cache warning of the reports.
pub fn annotations(record: &RunRecord) -> String {
    let mut o = String::new();
    for s in &record.stages {
        if !matches!(s.status, StageStatus::Failed | StageStatus::TimedOut) {
            continue;
        }
        let what = if s.status == StageStatus::TimedOut { "timed out" } else { "failed" };
        let mut msg = format!("`{}` {what}", s.command);
        if let Some(code) = s.exit_code {
            write!(msg, " with exit code {code}").unwrap();
        }
        if !s.failed_tests.is_empty() {
            write!(msg, "; failed tests: {}", s.failed_tests.join(", ")).unwrap();
        }
        if let Some(log) = &s.log_path {
            write!(msg, "; full log: {log}").unwrap();
        }
        if let Some(last) = s.tail.last() {
            write!(msg, "\n{last}").unwrap();
        }
        writeln!(
            o,
            "::error title={}::{}",
            property(&format!("stage {} {what}", s.id)),
            data(&msg)
        )
        .unwrap();
    }
    // The compile cache's warnings, as the reports have them: not a failure.
    if let Some(c) = &record.compile_cache {
        for w in crate::report::text::compile_cache_warnings(c) {
            writeln!(o, "::warning title={}::{}", property("compile cache"), data(&w)).unwrap();
        }
    }
    // Targets are a verdict only under `--gate`; without one they are information,
    // which the reports show, not a failure to annotate.
    let v = &record.verdict;
    let Some(gate) = &v.gate else { return o };
    if !gate.met && v.total >= gate.limit {
        writeln!(
            o,
            "::error title={}::{}",
            property(&format!("{} missed", gate.gate_name())),
            data(&format!("the pipeline took {}, over the {}", secs(v.total), gate.describe()))
        )
        .unwrap();
    }
    if matches!(gate.gate, Gate::Required | Gate::Stretch) {
        for c in v.stages.iter().filter(|c| !c.met) {
            writeln!(
                o,
                "::error title={}::{}",
                property(&format!("stage {} over its target", c.id)),
                data(&format!(
                    "stage `{}` took {}, over its target {} ({})",
                    c.id,
                    secs(c.actual),
                    limit(c.target),
                    gate.describe()
                ))
            )
            .unwrap();
        }
    }
    o
}

/// Escapes a workflow command's message (GitHub's `escapeData`).
fn data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a workflow command's property value (GitHub's `escapeProperty`).
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}
