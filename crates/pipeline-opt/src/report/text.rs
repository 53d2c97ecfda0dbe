//! Words and predicates that more than one renderer shows a record with (markdown,
//! HTML, the live view), kept in one place below them so that the renderers never
//! import each other and say the same thing the same way.

use std::time::Duration;

use crate::record::{CrateTiming, RunOutcome, RunRecord, StageStatus};

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
