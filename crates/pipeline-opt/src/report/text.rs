//! Words and predicates that more than one renderer shows a record with (markdown,
//! HTML, GitHub annotations, the live view), kept in one place below them so that the
//! renderers never import each other and say the same thing the same way.

use std::time::Duration;

use crate::record::{CompileCacheStats, CrateTiming, RunOutcome, RunRecord, StageStatus};

/// The words a run's outcome is shown with in every report.
pub(crate) fn outcome_text(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::StageFailed => "a stage failed",
        RunOutcome::Interrupted => "interrupted",
    }
}

/// The words a stage's status is shown with in every report.
pub(crate) fn status_text(status: &StageStatus) -> String {
    match status {
        StageStatus::Succeeded => "succeeded".into(),
        StageStatus::Failed => "failed".into(),
        StageStatus::TimedOut => "timed out".into(),
        StageStatus::Cancelled => "cancelled".into(),
        StageStatus::Skipped { reason } => format!("skipped: {reason}"),
        StageStatus::Cached { from_run } => format!("cached (run `{from_run}`)"),
    }
}

/// Whether compile unit `c` is one of the critical path's steps. The profiler names a
/// crate step after its package and copies the unit's start and end.
pub(crate) fn on_critical_path(record: &RunRecord, c: &CrateTiming) -> bool {
    record.critical_path.iter().any(|s| {
        s.kind == "crate"
            && s.name.contains(&c.package)
            && s.start.abs_diff(c.start) < Duration::from_millis(1)
            && s.end.abs_diff(c.end) < Duration::from_millis(1)
    })
}

/// The sentence every report opens its compile-cache section with (markdown, HTML, and
/// so the step summary): what sccache did, from the record alone.
pub(crate) fn compile_cache_sentence(c: &CompileCacheStats) -> String {
    let rate = c.hit_rate().map(|h| format!("{:.1} %", h * 100.0)).unwrap_or_else(|| "-".into());
    let before = c
        .entries_before
        .map(|n| format!(" The cache held {n} entries before the run."))
        .unwrap_or_default();
    format!(
        "sccache on {}: {} compile requests, {} hits, {} misses ({rate} of cacheable compiles), {} not cacheable; {} write errors, {} read errors, {} cache errors.{before}",
        c.backend,
        c.compile_requests,
        c.hits,
        c.misses,
        c.not_cacheable,
        c.write_errors,
        c.read_errors,
        c.cache_errors
    )
}

/// What every report (and a GitHub annotation) warns about the compile cache: a warm
/// cache that gave no hit, and results that were compiled but could not be stored.
pub(crate) fn compile_cache_warnings(c: &CompileCacheStats) -> Vec<String> {
    let mut out = Vec::new();
    if c.warm_without_hits() {
        out.push(format!(
            "the cache held {} entries before the run and gave no hit: the paths (workspace, CARGO_HOME, target directory) or the toolchain and flags differ from the runs that filled it; sccache's keys include absolute paths, so every machine must build in the same places (docs/scale-out.md)",
            c.entries_before.unwrap_or(0)
        ));
    }
    if c.write_errors > 0 {
        out.push(format!(
            "{} compile results could not be written to the cache: later builds will compile them again; check that the backend is writable and not full",
            c.write_errors
        ));
    }
    out
}
