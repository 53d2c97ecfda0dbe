//! What a run measured. The orchestrator emits [`Event`]s; [`PipelineProfiler`] turns
//! them into a [`RunRecord`] (per-stage [`StageMetrics`], per-crate compile timings, the
//! measured critical path), which every reporter renders. The record is plain data with
//! a schema version, so reports can be produced from a saved record.

use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`RunRecord`]'s JSON form.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub schema_version: u32,
    /// Unique per run; also the marker every child process carries in its environment.
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub workspace_root: Utf8PathBuf,
    pub command: String,
    pub outcome: RunOutcome,
    #[serde(with = "secs")]
    pub total: Duration,
    pub stages: Vec<StageMetrics>,
    pub crates: Vec<CrateTiming>,
    /// Stage ids, then crate units, whose chain set the total time.
    pub critical_path: Vec<CriticalStep>,
    pub dropped: Vec<crate::plan::DroppedStage>,
    pub notes: Vec<String>,
    /// Logical cores the run could use.
    pub cores: usize,
    /// The targets the run was held to, and how it measured up.
    pub targets: crate::targets::PerformanceTargets,
    pub verdict: crate::targets::Verdict,
    /// Per-test durations where the test runner reports them (nextest does; libtest on
    /// stable does not); empty otherwise. Recommendations use them.
    #[serde(default)]
    pub tests: Vec<TestTiming>,
    /// `--against-naive`: the naive sequence run beside ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naive: Option<NaiveComparison>,
    /// CPU time the run left idle along its length: `cores × total − Σ stage CPU`.
    #[serde(default, with = "secs")]
    pub idle_cpu: Duration,
}

/// `--against-naive`: both sides from a fresh target directory, one after the other on
/// the same machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NaiveComparison {
    /// The naive side's total wall time.
    #[serde(with = "secs")]
    pub naive_total: Duration,
    /// Our side's total wall time (from its own fresh target directory).
    #[serde(with = "secs")]
    pub optimized_total: Duration,
    /// `optimized_total / naive_total`: below 1 means we are faster.
    pub ratio: f64,
    pub naive_outcome: RunOutcome,
    /// The naive commands with their times.
    pub naive_stages: Vec<StageMetrics>,
    /// What the naive sequence proves that our plan does not, and the reverse.
    pub only_naive_proves: Vec<String>,
    pub only_optimized_proves: Vec<String>,
    /// How the two sides were run (order, target directories).
    pub method: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestTiming {
    pub stage: String,
    /// `binary::path::to::test`, as the runner names it.
    pub name: String,
    #[serde(with = "secs")]
    pub duration: Duration,
    pub passed: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Succeeded,
    StageFailed,
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageMetrics {
    pub id: String,
    pub command: String,
    pub status: StageStatus,
    /// When the stage started, from the start of the run.
    #[serde(with = "secs")]
    pub start: Duration,
    #[serde(with = "secs")]
    pub wall: Duration,
    /// User and system CPU time of the stage's whole process tree.
    #[serde(with = "secs")]
    pub cpu_user: Duration,
    #[serde(with = "secs")]
    pub cpu_system: Duration,
    /// Peak resident set of the largest process in the tree, KiB.
    pub peak_rss_kib: u64,
    pub exit_code: Option<i32>,
    /// Full output on disk.
    pub log_path: Option<Utf8PathBuf>,
    /// The last lines of output, for failure reports.
    pub tail: Vec<String>,
    pub failed_tests: Vec<String>,
    pub flaky_tests: Vec<String>,
    /// What a success proves, copied from the plan.
    pub proves: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StageStatus {
    Succeeded,
    Failed,
    TimedOut,
    /// Stopped because of an interrupt or another stage's failure.
    Cancelled,
    /// Not started because a dependency did not succeed.
    Skipped {
        reason: String,
    },
    /// Skipped because an earlier run proved the same inputs.
    Cached {
        from_run: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrateTiming {
    pub package: String,
    pub target: String,
    /// `lib`, `bin`, `test`, `build-script`, ...
    pub kind: String,
    pub stage: String,
    #[serde(with = "secs")]
    pub start: Duration,
    #[serde(with = "secs")]
    pub end: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CriticalStep {
    /// `stage` or `crate`.
    pub kind: String,
    pub name: String,
    #[serde(with = "secs")]
    pub start: Duration,
    #[serde(with = "secs")]
    pub end: Duration,
}

/// What the orchestrator reports while it runs. Reporters and the profiler only consume
/// these; they never look inside the orchestrator.
#[derive(Debug, Clone)]
pub enum Event {
    StageStarted { id: String, at: Duration },
    StageOutput { id: String, line: String },
    CrateCompiled(CrateTiming),
    StageFinished(StageMetrics),
    RunFinished { outcome: RunOutcome, total: Duration },
}

/// Consumes events and builds the run record.
#[derive(Debug, Default)]
pub struct PipelineProfiler {
    pub stages: Vec<StageMetrics>,
    pub crates: Vec<CrateTiming>,
}

/// Durations as fractional seconds in JSON.
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as fractional seconds or null in JSON.
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        v.map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)).transpose()
    }
}
