//! The saved run record: what a run measured, as `run.json` holds it and every reporter
//! reads it, and the [`Event`]s the orchestrator emits while it runs. Plain data with
//! serde forms and a schema version, importing nothing else of the crate, so a record
//! can be saved, read back and rendered by any layer above without pulling in the one
//! that measured it.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`RunRecord`]'s JSON form.
/// 3: `shards` (a merged scale-out run); 2: `cpu_samples`.
pub const SCHEMA_VERSION: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub schema_version: u32,
    /// Unique per run; also the marker every child process carries in its environment.
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub workspace_root: Utf8PathBuf,
    pub command: String,
    /// Which command made the run: its reports and history are its own.
    #[serde(default)]
    pub kind: RunKind,
    pub outcome: RunOutcome,
    /// The time the user waited: from the command's start (loading the workspace,
    /// planning, fingerprints, the cache lock) to the end of its last stage.
    #[serde(with = "secs")]
    pub total: Duration,
    pub stages: Vec<StageMetrics>,
    pub crates: Vec<CrateTiming>,
    /// Stage ids, then crate units, whose chain set the total time.
    pub critical_path: Vec<CriticalStep>,
    pub dropped: Vec<DroppedStage>,
    pub notes: Vec<String>,
    /// Logical cores the run could use.
    pub cores: usize,
    /// The targets the run was held to, and how it measured up.
    pub targets: PerformanceTargets,
    pub verdict: Verdict,
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
    /// Why each stage ran instead of being served from the stage cache, or the run it
    /// was cached from; keyed by stage id, and `test <package>` for per-package tests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache: BTreeMap<String, String>,
    /// The machine's CPU utilisation sampled along the run (schema 2; empty where
    /// `/proc/stat` is missing, and in records of version 1).
    #[serde(default)]
    pub cpu_samples: Vec<CpuSample>,
    /// `--explore`: the profile-setting variants tried and their measured times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<Exploration>,
    /// The test runners' settings (threads, nextest profile and retries) and where each
    /// came from: the user's environment, the nextest config, or the tool's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_settings: Vec<TestSetting>,
    /// Compile units that processes started by a stage's tests (or build scripts)
    /// compiled in cargo runs of their own: not units of the workspace, so they are
    /// counted here, per stage, and kept out of `crates` and every recommendation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled_by_tests: Vec<CompiledByTests>,
    /// Units that a stage after the build stage compiled again in its directory, each
    /// with why: the build stage should have produced everything the later stages use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled_after_build: Vec<LateUnit>,
    /// Flame graphs drawn of this run's tests by `flamegraph`, which the reports link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flamegraphs: Vec<FlameGraphLink>,
    /// How many tests each test stage passed, failed and skipped, as its runner counted
    /// them; stages that ran no test runner (or were cached) have no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_counts: Vec<TestCounts>,
    /// What the recommendations need to know about the workspace, measured when the run
    /// loaded it, so that the saved record renders the same reports.
    #[serde(default, skip_serializing_if = "WorkspaceFacts::is_empty")]
    pub workspace_facts: WorkspaceFacts,
    /// What the stages could not have beaten on this machine; absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<LowerBound>,
    /// `shard merge` (schema 3): the shards the tests ran on, predicted against measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardsSummary>,
    /// Each crate's doctests as the doctest stage's `cargo test --doc` reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doctests: Vec<DoctestTiming>,
    /// `--compile-cache`: what the shared compile cache (sccache) did for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<CompileCacheStats>,
}

/// The statistics of the run's sccache server, from `sccache --show-stats`, counted
/// from the run's start (counts per language summed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CompileCacheStats {
    /// The backend, without credentials: `redis://HOST:PORT/DB`, or the GitHub Actions
    /// cache.
    pub backend: String,
    /// rustc invocations sccache saw.
    pub compile_requests: u64,
    pub hits: u64,
    pub misses: u64,
    /// Requests it cannot cache (binaries and test binaries, proc-macros, build
    /// scripts, `--crate-type` sets it does not handle), with sccache's reasons below.
    pub not_cacheable: u64,
    /// Reason -> count, as sccache names them.
    #[serde(default)]
    pub not_cached: BTreeMap<String, u64>,
    pub write_errors: u64,
    pub read_errors: u64,
    /// Errors reading or writing the backend, counted per language.
    pub cache_errors: u64,
    /// Keys the backend held before the run (Redis `DBSIZE`): a warm cache has some.
    /// `None` for the GitHub Actions cache, which a job cannot count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_before: Option<u64>,
}

impl CompileCacheStats {
    /// Hits among the cacheable compiles (hits and misses), `None` when there were none.
    pub fn hit_rate(&self) -> Option<f64> {
        let cacheable = self.hits + self.misses;
        (cacheable > 0).then(|| self.hits as f64 / cacheable as f64)
    }

    /// A cache that held entries and gave no hit: paths or the toolchain differ from
    /// the runs that filled it.
    pub fn warm_without_hits(&self) -> bool {
        self.entries_before.is_some_and(|n| n > 0) && self.hits == 0 && self.misses > 0
    }
}

/// One crate's doctests in a run, from rustdoc's own report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DoctestTiming {
    pub stage: String,
    /// The library's crate name, as cargo prints it after `Doc-tests`.
    pub crate_name: String,
    /// Doctests run (passed and failed).
    pub tests: usize,
    /// Rustdoc's time for them: libtest's `finished in` (each doctest is compiled,
    /// linked and run inside its test), or with merged doctests `all doctests ran in`
    /// (which includes compiling the merged binary).
    #[serde(with = "secs")]
    pub time: Duration,
    /// Edition 2024 merged them into one binary (rustdoc printed `merged doctests
    /// compilation took`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merged: bool,
}

impl DoctestTiming {
    /// The crate a `Doc-tests NAME` line of `cargo test --doc` starts, if it is one.
    pub fn started_by(line: &str) -> Option<String> {
        let plain = strip_ansi(line);
        let name = plain.trim().strip_prefix("Doc-tests ")?.trim();
        (!name.is_empty() && !name.contains(' ')).then(|| name.to_string())
    }

    /// libtest's `finished in 1.23s` at the end of a `test result:` line.
    pub fn finished_in(line: &str) -> Option<Duration> {
        let plain = strip_ansi(line);
        let t = plain.trim().split("finished in ").nth(1)?.trim().strip_suffix('s')?;
        Duration::try_from_secs_f64(t.parse().ok()?).ok()
    }

    /// Rustdoc's `all doctests ran in 1.60s; merged doctests compilation took 1.46s`:
    /// the first figure, the whole time.
    pub fn merged_in(line: &str) -> Option<Duration> {
        let plain = strip_ansi(line);
        let rest = plain.trim().strip_prefix("all doctests ran in ")?;
        let (t, after) = rest.split_once("s;")?;
        if !after.contains("merged doctests compilation took") {
            return None;
        }
        Duration::try_from_secs_f64(t.trim().parse().ok()?).ok()
    }
}

/// The shards of a merged scale-out run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardsSummary {
    /// `durations`, or `slice (WHY)` when the plan fell back to nextest's partition.
    pub strategy: String,
    pub shards: Vec<ShardResult>,
    /// The slowest shard's wall time over the mean of all shards' (1.0: perfect).
    pub balance: Option<f64>,
    /// The median over shards of |measured test time − predicted| ÷ predicted; absent
    /// without predictions.
    pub prediction_error: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardResult {
    pub index: usize,
    pub run_id: String,
    pub tests: usize,
    /// The sum of its tests' weights in the plan.
    #[serde(with = "opt_secs")]
    pub predicted: Option<Duration>,
    /// The sum of its tests' measured durations, as the plan's prediction counts.
    #[serde(with = "secs")]
    pub test_time: Duration,
    /// The shard run's wall time, start-up and extraction included.
    #[serde(with = "secs")]
    pub wall: Duration,
}

/// The tests of one stage by outcome. Failed counts a test that failed its last try
/// (timed out and crashed included); a flaky test that passed a retry is passed;
/// skipped counts ignored tests and those a filter left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestCounts {
    pub stage: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl TestCounts {
    /// The counts a line of a test stage's output carries: nextest's closing
    /// `Summary [ 1.2s] 5 tests run: 4 passed, 1 failed, 2 skipped`, or one of the
    /// `test result: ok. 4 passed; 0 failed; 1 ignored; …` lines libtest prints per test
    /// binary (and `cargo test --doc` per crate), which add up; ignored and filtered-out
    /// tests are skipped, as nextest counts them. `None` for other lines.
    pub fn in_line(line: &str) -> Option<(TestCountsKind, usize, usize, usize)> {
        let plain = strip_ansi(line);
        let l = plain.trim();
        let (kind, parts, sep) = if let Some(rest) = l.strip_prefix("test result: ") {
            (TestCountsKind::PerBinary, rest.split_once(". ")?.1, ';')
        } else if l.starts_with("Summary [") {
            (TestCountsKind::Whole, l.split_once(" run: ")?.1, ',')
        } else {
            return None;
        };
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for part in parts.split(sep) {
            let mut words = part.split_whitespace();
            let Some(n) = words.next().and_then(|n| n.parse::<usize>().ok()) else { continue };
            match words.next() {
                Some("passed") => passed += n,
                Some("failed" | "timed" | "exec") => failed += n,
                Some("skipped" | "ignored" | "filtered") => skipped += n,
                _ => {}
            }
        }
        Some((kind, passed, failed, skipped))
    }

    /// Adds what [`TestCounts::in_line`] found in a line of this stage's output.
    pub fn add(&mut self, (kind, passed, failed, skipped): (TestCountsKind, usize, usize, usize)) {
        if kind == TestCountsKind::Whole {
            // nextest's summary already covers every binary (and a second summary,
            // from a rerun, replaces the first).
            (self.passed, self.failed, self.skipped) = (0, 0, 0);
        }
        self.passed += passed;
        self.failed += failed;
        self.skipped += skipped;
    }

    /// `4 passed, 1 failed, 2 skipped`.
    pub fn text(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// Whether a counts line covers the whole stage or one test binary of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCountsKind {
    Whole,
    PerBinary,
}

/// Compile units of one stage that the stage's own cargo did not ask for: a test ran
/// cargo on a workspace of its own (trybuild, escargot, fixture tests), or a build
/// script ran rustc. The rustc shim tells them apart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompiledByTests {
    pub stage: String,
    pub units: usize,
    /// Their compile times added up.
    #[serde(with = "secs")]
    pub time: Duration,
}

/// How busy the machine's cores were over the interval that ends at `at`: all
/// processes, not only the run's (`/proc/stat`), so other load on the machine shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct CpuSample {
    /// The end of the interval, from the start of the run.
    #[serde(with = "secs")]
    pub at: Duration,
    /// Busy share of all cores over the interval, 0 to 1.
    pub busy: f64,
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

impl NaiveComparison {
    /// Why the ratio compares nothing, if it does not: a side that stopped early did
    /// less work than a full run, so its time is no baseline.
    pub fn not_comparable(&self, optimized_outcome: RunOutcome) -> Option<String> {
        let side = |name: &str, o: RunOutcome| {
            (o != RunOutcome::Succeeded).then(|| format!("the {name} side did not succeed ({o:?})"))
        };
        let why: Vec<String> =
            [side("optimized", optimized_outcome), side("naive", self.naive_outcome)]
                .into_iter()
                .flatten()
                .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }
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

/// The command a run belongs to. `check` is a different pipeline from `optimize`, so
/// its reports, history and metrics never mix with `optimize`'s.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    #[default]
    Optimize,
    Check,
}

impl RunKind {
    pub fn name(self) -> &'static str {
        match self {
            RunKind::Optimize => "optimize",
            RunKind::Check => "check",
        }
    }

    /// `report.html` for `optimize`, `check-report.html` for `check`.
    pub fn file_name(self, base: &str) -> String {
        match self {
            RunKind::Optimize => base.to_string(),
            RunKind::Check => format!("check-{base}"),
        }
    }
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
    /// What kind of work the command does, as the planner built it, so reporters never
    /// read the command text (`other` in records written before it was kept).
    #[serde(default)]
    pub kind: CommandKind,
    /// The cargo profile the command builds in (`dev` unless told otherwise), for a cargo
    /// command that builds, checks or tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The run's lower bound: the longest chain of dependent stages at their measured wall
/// times (as if each started the moment its dependencies ended, with cores to spare),
/// and the stages' CPU work spread over every core. The larger one is the bound; how far
/// the run's total lies above it says whether more overlap or less work is what is left.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LowerBound {
    #[serde(with = "secs")]
    pub chain: Duration,
    /// The stages of that chain, first to last.
    pub chain_stages: Vec<String>,
    /// CPU time (user + system) of every stage's process tree.
    #[serde(with = "secs")]
    pub cpu_work: Duration,
    /// `cpu_work` over the run's cores.
    #[serde(with = "secs")]
    pub cpu: Duration,
}

impl LowerBound {
    pub fn bound(&self) -> Duration {
        self.chain.max(self.cpu)
    }
}

/// What a stage's command does, from the planner's structured command.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CommandKind {
    /// `cargo fetch`: waits on the network, not on the cores.
    Fetch,
    /// Compiles or checks without running tests: build, check, clippy, doc,
    /// `bench --no-run`.
    Compile,
    /// Runs tests (or doctests) with `cargo test`.
    CargoTest,
    /// Runs tests with cargo-nextest.
    Nextest,
    /// Another cargo command (`fmt`, a custom stage's `cargo …`).
    Cargo,
    /// Not cargo: a custom stage's program, the services.
    #[default]
    Other,
}

impl StageStatus {
    /// The state's kebab-case name, as in the JSON `state` field.
    pub fn name(&self) -> &'static str {
        match self {
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
            StageStatus::TimedOut => "timed-out",
            StageStatus::Cancelled => "cancelled",
            StageStatus::Skipped { .. } => "skipped",
            StageStatus::Cached { .. } => "cached",
        }
    }
}

impl StageMetrics {
    /// A stage that did not run (cached, or skipped because of a dependency or an
    /// interrupt): no time, no resources, nothing logged. `command` and `proves` are
    /// the plan's, as a stage that ran would carry them.
    pub fn not_run(
        id: &str,
        command: String,
        proves: &[String],
        status: StageStatus,
    ) -> StageMetrics {
        StageMetrics {
            id: id.to_string(),
            command,
            kind: CommandKind::default(),
            profile: None,
            status,
            start: Duration::ZERO,
            wall: Duration::ZERO,
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            peak_rss_kib: 0,
            exit_code: None,
            log_path: None,
            tail: Vec::new(),
            failed_tests: Vec::new(),
            flaky_tests: Vec::new(),
            proves: proves.to_vec(),
        }
    }
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
    /// The package's version, from the `CARGO_PKG_VERSION` cargo gives rustc; empty in
    /// records written before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub target: String,
    /// `lib`, `bin`, `test`, `build-script`, ...
    pub kind: String,
    pub stage: String,
    #[serde(with = "secs")]
    pub start: Duration,
    #[serde(with = "secs")]
    pub end: Duration,
    /// Cargo's `-C metadata` hash of the unit, while the run is measured; the record
    /// keeps only the verdict drawn from it ([`RunRecord::compiled_after_build`]).
    #[serde(skip)]
    pub metadata: String,
    /// The rustc arguments that decide the unit's output, while the run is measured.
    #[serde(skip)]
    pub settings: Vec<String>,
}

/// A flame graph of one test: where its process spent its CPU time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlameGraphLink {
    /// The test as the reports name it (`BINARY TEST`).
    pub test: String,
    /// The SVG, relative to the directory of the reports.
    pub svg: String,
    /// The CPU time its samples stand for (perf's `cpu-clock` periods added up).
    #[serde(with = "secs")]
    pub cpu: Duration,
}

/// A unit that a stage after the build stage compiled in the build stage's directory:
/// work the build stage was meant to have done, with why it was done again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LateUnit {
    pub stage: String,
    pub package: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub target: String,
    pub kind: String,
    #[serde(with = "secs")]
    pub time: Duration,
    pub why: LateReason,
}

/// Why a later stage compiled a unit again, from the rustc arguments the shim saw in
/// both stages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum LateReason {
    /// The build stage compiled no unit of this package, target and kind: the later
    /// stage selects a target (or a dependency) the build stage does not.
    NotInBuild,
    /// Another unit of the same target: cargo's metadata differs, so features, profile
    /// or target differ; the arguments only one side had.
    OtherSettings { only_in_build: Vec<String>, only_here: Vec<String> },
    /// The same unit rebuilt with other compiler flags (`RUSTFLAGS` and the like).
    OtherFlags { only_in_build: Vec<String>, only_here: Vec<String> },
    /// The same unit with the same arguments: an input changed between the stages (a
    /// source file, or a variable its build script watches).
    InputChanged,
}

impl std::fmt::Display for LateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let diff = |f: &mut std::fmt::Formatter<'_>, build: &[String], here: &[String]| {
            let list =
                |v: &[String]| v.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ");
            match (build.is_empty(), here.is_empty()) {
                (true, true) => f.write_str(
                    "its own arguments are the same (a dependency's features, or the profile, differ)",
                ),
                (false, true) => write!(f, "only the build stage had {}", list(build)),
                (true, false) => write!(f, "only this stage had {}", list(here)),
                (false, false) => write!(
                    f,
                    "only the build stage had {}; only this stage had {}",
                    list(build),
                    list(here)
                ),
            }
        };
        match self {
            LateReason::NotInBuild => {
                f.write_str("the build stage compiled no such unit (this stage selects a target or dependency it does not)")
            }
            LateReason::OtherSettings { only_in_build, only_here } => {
                f.write_str("features, profile or target differ from the build stage's unit: ")?;
                diff(f, only_in_build, only_here)
            }
            LateReason::OtherFlags { only_in_build, only_here } => {
                f.write_str("the same unit with other compiler flags: ")?;
                diff(f, only_in_build, only_here)
            }
            LateReason::InputChanged => f.write_str(
                "the same unit with the same arguments: an input changed between the stages (a source file, or a variable its build script watches)",
            ),
        }
    }
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

/// The version of the JSON lines `--message-format json` prints: one [`Event`] a line
/// with `version` beside its `event` tag. Bumped on every incompatible change.
pub const MESSAGE_FORMAT_VERSION: u32 = 1;

/// What the orchestrator reports while it runs. Reporters and the profiler only consume
/// these; they never look inside the orchestrator. As JSON (`--message-format json`),
/// the variant is the `event` field in kebab case (`stage-finished`), durations are
/// seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The orchestrator emits this before anything else, so a consumer (the live view)
    /// learns what the run has from the run, not by asking the machine itself.
    RunStarted {
        run_id: String,
        /// The machine's logical cores: what a [`CpuSample`]'s busy share is a share of.
        cores: usize,
        /// The ids of the stages the orchestrator was given, in plan order.
        stages: Vec<String>,
    },
    StageStarted {
        id: String,
        #[serde(with = "secs")]
        at: Duration,
    },
    StageOutput {
        id: String,
        line: String,
    },
    CrateCompiled(CrateTiming),
    /// A unit compiled by a cargo (or rustc) run that a stage's tests or build scripts
    /// started, not by the stage's own cargo: counted apart, never advised on.
    CompiledByTests(CrateTiming),
    /// A test (or one try of a retried test) ended, as nextest reported it.
    TestFinished(TestTiming),
    /// The machine's CPU utilisation over the last sampling interval.
    CpuSampled(CpuSample),
    StageFinished(StageMetrics),
    RunFinished {
        outcome: RunOutcome,
        #[serde(with = "secs")]
        total: Duration,
    },
}

/// `line` without ANSI escape sequences: a tool that decides to colour its output (an
/// inherited `CARGO_TERM_COLOR`, `CLICOLOR_FORCE`) must not hide its status words. Here
/// because the test counts read from stage output are part of the record.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A stage the planner left out, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DroppedStage {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceTargets {
    #[serde(with = "secs")]
    pub required: Duration,
    #[serde(with = "secs")]
    pub stretch: Duration,
    /// Per-stage targets, by stage id.
    #[serde(with = "secs_map")]
    pub stages: BTreeMap<String, Duration>,
}

impl Default for PerformanceTargets {
    fn default() -> Self {
        PerformanceTargets {
            required: Self::required().required,
            stretch: Self::stretch().stretch,
            stages: BTreeMap::new(),
        }
    }
}

/// Which total `--gate` holds a run to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    Required,
    Stretch,
    /// A total given on the command line.
    #[serde(with = "secs")]
    Custom(Duration),
}

impl PerformanceTargets {
    /// The total a CI pipeline must stay under: 60 s.
    pub fn required() -> PerformanceTargets {
        PerformanceTargets {
            required: Duration::from_secs(60),
            stretch: Duration::from_secs(45),
            stages: BTreeMap::new(),
        }
    }

    /// The total to aim for: 45 s (the required total stays 60 s).
    pub fn stretch() -> PerformanceTargets {
        Self::required()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(with = "secs")]
    pub total: Duration,
    #[serde(with = "secs")]
    pub required: Duration,
    #[serde(with = "secs")]
    pub stretch: Duration,
    pub required_met: bool,
    pub stretch_met: bool,
    pub stages: Vec<StageCheck>,
    /// The `--gate` the run was held to, if any: only then does a missed target fail
    /// the run (exit 101) or annotate it as an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateCheck>,
}

/// A run against its `--gate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    pub gate: Gate,
    /// The total the gate allows.
    #[serde(with = "secs")]
    pub limit: Duration,
    /// The total under the limit and, for `required` and `stretch`, every per-stage
    /// target met.
    pub met: bool,
}

impl GateCheck {
    /// `gate`, `required gate` or `stretch gate`: the annotation's title.
    pub fn gate_name(&self) -> &'static str {
        match self.gate {
            Gate::Required => "required gate",
            Gate::Stretch => "stretch gate",
            Gate::Custom(_) => "gate",
        }
    }

    /// `gate 1ms` (as given) or `gate required (60.0 s)`, as the result lines name it.
    pub fn describe(&self) -> String {
        let limit = format!("{:.1} s", self.limit.as_secs_f64());
        match self.gate {
            Gate::Required => format!("gate required ({limit})"),
            Gate::Stretch => format!("gate stretch ({limit})"),
            Gate::Custom(l) => format!("gate {}", humantime::format_duration(l)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCheck {
    pub id: String,
    #[serde(with = "secs")]
    pub target: Duration,
    #[serde(with = "secs")]
    pub actual: Duration,
    pub met: bool,
}

impl Verdict {
    /// Whether the run passes `gate`: the total under the gate's limit and, for the
    /// configured gates, every per-stage target met.
    pub fn passes(&self, gate: Gate) -> bool {
        let stages_ok = self.stages.iter().all(|s| s.met);
        match gate {
            Gate::Required => self.required_met && stages_ok,
            Gate::Stretch => self.stretch_met && stages_ok,
            Gate::Custom(limit) => self.total < limit,
        }
    }

    /// Why `gate` was missed beyond the total, for the result lines: under `required`
    /// and `stretch`, `stage build over its 1ms target, ...`; empty when none was.
    pub fn missed_stages(&self, gate: Gate) -> String {
        if matches!(gate, Gate::Custom(_)) {
            return String::new();
        }
        let missed = self.stages.iter().filter(|c| !c.met);
        let each = missed.map(|c| {
            format!("stage {} over its {} target", c.id, humantime::format_duration(c.target))
        });
        each.collect::<Vec<_>>().join(", ")
    }

    /// The verdict of `gate`, to keep in the record.
    pub fn check(&self, gate: Gate) -> GateCheck {
        let limit = match gate {
            Gate::Required => self.required,
            Gate::Stretch => self.stretch,
            Gate::Custom(limit) => limit,
        };
        GateCheck { gate, limit, met: self.passes(gate) }
    }
}

mod secs_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.as_secs_f64())))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                Duration::try_from_secs_f64(v).map(|d| (k, d)).map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingSource {
    /// A variable in the environment the tool was started with.
    UserEnv,
    /// The workspace's nextest config, in the selected profile or the default profile.
    NextestConfig,
    /// `[env]` in a cargo config file (`.cargo/config.toml`), which cargo gives the tests.
    CargoConfig,
    /// Nobody set it: the tool (or the runner's own default) decides.
    ToolDefault,
}

/// One setting as the run used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestSetting {
    /// `nextest profile`, `nextest test threads`, `nextest retries`, `libtest threads`.
    pub setting: String,
    pub value: String,
    pub source: SettingSource,
    /// The variable, or the config file and table, or what the tool does.
    pub origin: String,
}

/// What `--explore` measured, as kept in the run record and rendered in the reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exploration {
    /// The command every variant ran, from an empty target directory.
    pub command: String,
    pub rounds: usize,
    /// The baseline first.
    pub variants: Vec<ExploredVariant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExploredVariant {
    pub name: String,
    /// The variables the variant set.
    pub env: BTreeMap<String, String>,
    /// Best wall time of its rounds; null when every round failed.
    #[serde(with = "opt_secs")]
    pub wall: Option<Duration>,
    /// Least CPU time (user + system, whole process tree) of its rounds.
    #[serde(with = "opt_secs")]
    pub cpu: Option<Duration>,
    /// Rounds that succeeded.
    pub rounds_ok: usize,
    pub error: Option<String>,
}

/// What the recommendations know about the workspace beyond the measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkspaceFacts {
    /// Every package of the resolved dependency graph; empty when it could not be loaded.
    pub packages: Vec<ResolvedPackage>,
    /// The `debug` setting test builds use; `None` when the manifest could not be read.
    pub test_debug: Option<TestDebug>,
    /// cargo-nextest was not installed when the run planned, so its tests ran with
    /// `cargo test` (a fact of the machine, kept with what the advice needs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nextest_missing: bool,
    /// The edition of each member's library, by crate name (rustdoc merges doctests
    /// into one binary from edition 2024 on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lib_editions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPackage {
    pub name: String,
    pub version: String,
    pub features: Vec<String>,
    /// A workspace member depends on this package (this version) directly, so the
    /// workspace can change which version it asks for.
    pub member_dep: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestDebug {
    pub level: DebugLevel,
    /// Where the setting comes from, e.g. `[profile.dev] debug = 2`.
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DebugLevel {
    None,
    LineDirectivesOnly,
    LineTablesOnly,
    Limited,
    Full,
}

impl WorkspaceFacts {
    /// Whether nothing is known: a record of an older version, or a workspace whose
    /// metadata had no resolve and whose manifest could not be read.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.test_debug.is_none() && !self.nextest_missing
    }
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
