//! What a run measured. The orchestrator emits [`Event`]s; [`PipelineProfiler`] turns
//! them into a [`RunRecord`] (per-stage [`StageMetrics`], per-crate compile timings, the
//! measured critical path), which every reporter renders. The record is plain data with
//! a schema version, so reports can be produced from a saved record.

use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`RunRecord`]'s JSON form.
pub const SCHEMA_VERSION: u32 = 2;

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
    /// Why each stage ran instead of being served from the stage cache, or the run it
    /// was cached from; keyed by stage id, and `test <package>` for per-package tests.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cache: std::collections::BTreeMap<String, String>,
    /// The machine's CPU utilisation sampled along the run (schema 2; empty where
    /// `/proc/stat` is missing, and in records of version 1).
    #[serde(default)]
    pub cpu_samples: Vec<CpuSample>,
    /// `--explore`: the profile-setting variants tried and their measured times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<crate::report::explore::Exploration>,
    /// The test runners' settings (threads, nextest profile and retries) and where each
    /// came from: the user's environment, the nextest config, or the tool's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_settings: Vec<crate::test_settings::TestSetting>,
    /// Compile units that processes started by a stage's tests (or build scripts)
    /// compiled in cargo runs of their own: not units of the workspace, so they are
    /// counted here, per stage, and kept out of `crates` and every recommendation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled_by_tests: Vec<CompiledByTests>,
    /// How many tests each test stage passed, failed and skipped, as its runner counted
    /// them; stages that ran no test runner (or were cached) have no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_counts: Vec<TestCounts>,
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
        let plain = crate::orchestrator::strip_ansi(line);
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
/// script ran rustc. See [`run_rustc_shim_if_requested`] for how they are told apart.
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

/// How often the orchestrator samples CPU utilisation: fine enough to see a link step
/// or a serial test binary, coarse enough to cost nothing (one read of `/proc/stat`).
pub const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Reads `/proc/stat` and turns the change of its first (all-cores) line between two
/// reads into a [`CpuSample`].
#[derive(Debug, Clone)]
pub struct CpuSampler {
    last: (u64, u64),
}

impl CpuSampler {
    /// `None` where `/proc/stat` cannot be read (not Linux): the record then has no
    /// samples and the timeline says so.
    pub fn new() -> Option<CpuSampler> {
        Some(CpuSampler { last: read_proc_stat()? })
    }

    /// The utilisation since the previous call (or since [`CpuSampler::new`]).
    pub fn sample(&mut self, at: Duration) -> Option<CpuSample> {
        let now = read_proc_stat()?;
        let (busy, total) = (now.0.saturating_sub(self.last.0), now.1.saturating_sub(self.last.1));
        self.last = now;
        (total > 0).then(|| CpuSample { at, busy: (busy as f64 / total as f64).clamp(0.0, 1.0) })
    }
}

/// (busy, total) jiffies of all cores: `cpu user nice system idle iowait irq softirq
/// steal ...`; idle and iowait are the idle ones. Guest time is already in user.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
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
    /// A stage served from the stage cache: it never ran, so it has no times.
    pub fn cached(stage: &crate::plan::Stage, from_run: String) -> StageMetrics {
        StageMetrics::not_run(stage, StageStatus::Cached { from_run })
    }

    /// A stage that did not run (cached, or skipped because of a dependency or an
    /// interrupt): no time, no resources, nothing logged.
    pub fn not_run(stage: &crate::plan::Stage, status: StageStatus) -> StageMetrics {
        StageMetrics {
            id: stage.id.clone(),
            command: stage.command.display(),
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
            proves: stage.proves.iter().map(ToString::to_string).collect(),
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
    StageStarted {
        id: String,
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
    /// The machine's CPU utilisation over the last [`CPU_SAMPLE_INTERVAL`].
    CpuSampled(CpuSample),
    StageFinished(StageMetrics),
    RunFinished {
        outcome: RunOutcome,
        total: Duration,
    },
}

/// Consumes events and builds the run record.
#[derive(Debug, Default)]
pub struct PipelineProfiler {
    pub stages: Vec<StageMetrics>,
    pub crates: Vec<CrateTiming>,
    pub compiled_by_tests: Vec<CompiledByTests>,
    pub tests: Vec<TestTiming>,
    pub test_counts: Vec<TestCounts>,
    pub cpu_samples: Vec<CpuSample>,
    pub outcome: Option<RunOutcome>,
    pub total: Duration,
}

/// What the record says about the run besides what the events carry.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    pub started_at: std::time::SystemTime,
    pub workspace_root: Utf8PathBuf,
    pub command: String,
    pub plan: crate::plan::Plan,
    pub cores: usize,
    pub targets: crate::targets::PerformanceTargets,
}

impl PipelineProfiler {
    pub fn new() -> PipelineProfiler {
        PipelineProfiler::default()
    }

    pub fn observe(&mut self, ev: &Event) {
        match ev {
            Event::StageFinished(m) => self.stages.push(m.clone()),
            Event::CrateCompiled(c) => self.crates.push(c.clone()),
            Event::CompiledByTests(c) => {
                let d = c.end.saturating_sub(c.start);
                match self.compiled_by_tests.iter_mut().find(|n| n.stage == c.stage) {
                    Some(n) => {
                        n.units += 1;
                        n.time += d;
                    }
                    None => self.compiled_by_tests.push(CompiledByTests {
                        stage: c.stage.clone(),
                        units: 1,
                        time: d,
                    }),
                }
            }
            Event::TestFinished(t) => {
                // A retried test counts with its last try, which decided its outcome.
                self.tests.retain(|o| !(o.stage == t.stage && o.name == t.name));
                self.tests.push(t.clone());
            }
            Event::CpuSampled(c) => self.cpu_samples.push(*c),
            Event::RunFinished { outcome, total } => {
                self.outcome = Some(*outcome);
                self.total = *total;
            }
            Event::StageOutput { id, line } => {
                if let Some(found) = TestCounts::in_line(line) {
                    match self.test_counts.iter_mut().find(|c| c.stage == *id) {
                        Some(c) => c.add(found),
                        None => {
                            let mut c = TestCounts { stage: id.clone(), ..Default::default() };
                            c.add(found);
                            self.test_counts.push(c);
                        }
                    }
                }
            }
            Event::StageStarted { .. } => {}
        }
    }

    /// The run record: stages in plan order, the critical path, the verdict.
    pub fn into_record(self, ctx: RunContext) -> RunRecord {
        let order: Vec<&str> = ctx.plan.stages.iter().map(|s| s.id.as_str()).collect();
        let mut stages = self.stages;
        stages.sort_by_key(|s| order.iter().position(|o| *o == s.id).unwrap_or(usize::MAX));
        let mut crates = self.crates;
        crates.sort_by_key(|a| a.start);
        let critical_path = critical_path(&ctx.plan, &stages, &crates);
        let cpu: Duration = stages.iter().map(|s| s.cpu_user + s.cpu_system).sum();
        let idle_cpu = (self.total * ctx.cores as u32).saturating_sub(cpu);
        let verdict = ctx.targets.verdict(self.total, &stages);
        RunRecord {
            schema_version: SCHEMA_VERSION,
            run_id: ctx.run_id,
            started_at: humantime::format_rfc3339_seconds(ctx.started_at).to_string(),
            workspace_root: ctx.workspace_root,
            command: ctx.command,
            kind: RunKind::default(),
            outcome: self.outcome.unwrap_or(RunOutcome::Interrupted),
            total: self.total,
            stages,
            crates,
            critical_path,
            dropped: ctx.plan.dropped.iter().map(crate::plan::Dropped::to_record).collect(),
            notes: ctx.plan.notes.clone(),
            cores: ctx.cores,
            targets: ctx.targets,
            verdict,
            naive: None,
            tests: self.tests,
            idle_cpu,
            cache: Default::default(),
            cpu_samples: self.cpu_samples,
            explore: None,
            test_settings: Vec::new(),
            compiled_by_tests: self.compiled_by_tests,
            test_counts: self.test_counts,
        }
    }
}

/// The chain that set the total: from the stage that finished last, back through the
/// dependency (or the earlier user of the same build directory) that finished last
/// before it started; inside each stage on the chain, the crate units that did the same
/// (the unit that ended last, then the one that ended last before it started). The
/// crate chain is measured, not derived from the dependency graph: it names what the
/// stage was waiting on at each moment.
pub fn critical_path(
    plan: &crate::plan::Plan,
    stages: &[StageMetrics],
    crates: &[CrateTiming],
) -> Vec<CriticalStep> {
    let ran = |s: &&StageMetrics| !matches!(s.status, StageStatus::Skipped { .. });
    let end = |s: &StageMetrics| s.start + s.wall;
    let Some(mut cur) = stages.iter().filter(ran).max_by_key(|s| end(s)) else {
        return Vec::new();
    };
    let slack = Duration::from_millis(50);
    let mut chain = vec![cur];
    loop {
        let stage = plan.stage(&cur.id);
        let dir = stage.and_then(|s| s.build_dir.as_ref());
        let before = |s: &&StageMetrics| {
            s.id != cur.id && end(s) <= cur.start + slack && !chain.iter().any(|c| c.id == s.id)
        };
        // What `cur` waited for: a stage that ended just as it started (a dependency,
        // the build-directory lock or the cores it needed), else its latest dependency
        // or earlier user of its build directory.
        let released_it = stages
            .iter()
            .filter(ran)
            .filter(before)
            .filter(|s| end(s) + slack >= cur.start)
            .max_by_key(|s| end(s));
        let pred = released_it.or_else(|| {
            stages
                .iter()
                .filter(ran)
                .filter(before)
                .filter(|s| {
                    stage.is_some_and(|st| st.depends_on.contains(&s.id))
                        || (dir.is_some()
                            && plan.stage(&s.id).and_then(|p| p.build_dir.as_ref()) == dir)
                })
                .max_by_key(|s| end(s))
        });
        match pred {
            Some(p) if !chain.iter().any(|c| c.id == p.id) => {
                chain.push(p);
                cur = p;
            }
            _ => break,
        }
    }
    chain.reverse();
    let mut out = Vec::new();
    for s in chain {
        out.push(CriticalStep {
            kind: "stage".into(),
            name: s.id.clone(),
            start: s.start,
            end: end(s),
        });
        let units: Vec<&CrateTiming> = crates.iter().filter(|c| c.stage == s.id).collect();
        let mut unit_chain = Vec::new();
        let mut cur = units.iter().max_by_key(|c| c.end).copied();
        while let Some(u) = cur {
            unit_chain.push(u);
            cur = units
                .iter()
                .filter(|c| c.end <= u.start + Duration::from_millis(5) && !std::ptr::eq(**c, u))
                .max_by_key(|c| c.end)
                .copied();
        }
        unit_chain.reverse();
        for u in unit_chain {
            out.push(CriticalStep {
                kind: "crate".into(),
                name: format!("{} ({} {})", u.package, u.kind, u.target),
                start: u.start,
                end: u.end,
            });
        }
    }
    out
}

/// Environment variable naming the file the rustc shim appends to. Its presence, with a
/// rustc-like first argument, is what puts the xtask binary into shim mode.
pub const SHIM_LOG_VAR: &str = "PIPELINE_OPT_RUSTC_SHIM_LOG";
/// A `RUSTC_WRAPPER` the user already had (sccache, ...), which the shim runs in turn.
pub const SHIM_CHAIN_VAR: &str = "PIPELINE_OPT_RUSTC_CHAINED_WRAPPER";
/// The build directory of the stage the shim times: a unit whose `--out-dir` lies
/// elsewhere belongs to another cargo run (a test's own workspace).
pub const SHIM_TARGET_DIR_VAR: &str = "PIPELINE_OPT_RUSTC_SHIM_TARGET_DIR";
/// The pid of the process that started the stage (the orchestrator): a unit is the
/// stage's own when only cargo processes stand between the shim and it.
pub const SHIM_OWNER_VAR: &str = "PIPELINE_OPT_RUSTC_SHIM_OWNER";

/// One rustc invocation as the shim saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RustcInvocation {
    pub crate_name: String,
    /// `lib`, `bin`, `test`, `build-script`, ...
    pub kind: String,
    /// The package, from the `CARGO_PKG_NAME` cargo gives rustc.
    #[serde(default)]
    pub package: String,
    /// The package's version, from `CARGO_PKG_VERSION`.
    #[serde(default)]
    pub version: String,
    /// Seconds since the Unix epoch.
    pub start: f64,
    pub end: f64,
    pub exit_code: Option<i32>,
    /// Compiled by a cargo or rustc run that a test or build script started, not by
    /// the stage's own cargo ([`started_by_the_stage`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_tests: bool,
}

/// Call first thing in `main`: when cargo runs this binary as `RUSTC_WRAPPER` (the
/// orchestrator sets [`SHIM_LOG_VAR`]), run the real rustc (through a chained wrapper if
/// the user had one), append the invocation's start and end to the log, and exit with
/// rustc's status. Otherwise return at once.
///
/// Why a shim rather than `--timings`: cargo's JSON messages carry finish times only,
/// and `--timings` writes an HTML report per cargo run whose data layout is unstable;
/// a wrapper sees every rustc start and end directly, also inside nextest's and
/// `cargo test`'s own builds, and costs one extra exec per crate.
pub fn run_rustc_shim_if_requested() {
    let Some(log) = std::env::var_os(SHIM_LOG_VAR) else { return };
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Some(first) = args.get(1) else { return };
    let name = std::path::Path::new(first)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let rustc_like =
        name.contains("rustc") || name.contains("clippy-driver") || name.contains("rustdoc");
    if !rustc_like {
        return;
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let start = now();
    let mut cmd = match std::env::var_os(SHIM_CHAIN_VAR).filter(|w| !w.is_empty()) {
        Some(wrapper) => {
            let mut c = std::process::Command::new(wrapper);
            c.args(&args[1..]);
            // The chained wrapper runs rustc itself; should it be a shim too, it must not
            // chain again.
            c.env_remove(SHIM_CHAIN_VAR).env_remove(SHIM_LOG_VAR);
            c
        }
        None => {
            let mut c = std::process::Command::new(&args[1]);
            c.args(&args[2..]);
            c
        }
    };
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeline-opt rustc shim: could not run {}: {e}", first.to_string_lossy());
            std::process::exit(1);
        }
    };
    let end = now();
    let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().to_string()).collect();
    let value_of = |flag: &str| rest.iter().position(|a| a == flag).and_then(|i| rest.get(i + 1));
    if let Some(crate_name) = value_of("--crate-name").filter(|n| *n != "___") {
        let kind = if rest.iter().any(|a| a == "--test") {
            "test".to_string()
        } else if crate_name.starts_with("build_script_") {
            "build-script".to_string()
        } else if value_of("--crate-type").is_none()
            && std::env::var_os("CARGO_TARGET_TMPDIR").is_some()
        {
            harnessless_kind(crate_name).to_string()
        } else {
            value_of("--crate-type").cloned().unwrap_or_else(|| "bin".into())
        };
        let inv = RustcInvocation {
            crate_name: crate_name.clone(),
            kind,
            package: std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| crate_name.clone()),
            version: std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
            start,
            end,
            exit_code: status.code(),
            by_tests: !started_by_the_stage(value_of("--out-dir").map(|s| s.as_str())),
        };
        if let Ok(line) = serde_json::to_string(&inv) {
            use std::io::Write as _;
            // One short append per line: O_APPEND keeps concurrent writers' lines whole.
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
        }
    }
    std::process::exit(status.code().unwrap_or(1));
}

/// Whether the stage's own cargo asked for this rustc run, rather than a cargo (or
/// rustc) run that one of its tests or build scripts started: trybuild, escargot,
/// snapbox or fixture tests inherit `RUSTC_WRAPPER` and our variables with the rest of
/// the environment, so the shim sees their units too. Two signs, each enough:
/// - the unit's `--out-dir` is not in the stage's build directory
///   (`<dir>[/<triple>]/<profile>/{deps,examples,build/<unit>}`); a test's workspace
///   under `target/tmp` or trybuild's `target/tests/trybuild` are deeper;
/// - on Linux, a process other than cargo (a test binary, a build script, a shell)
///   stands between the shim and the process that started the stage.
///
/// What cannot be read counts as the stage's own: a unit is never hidden on a guess.
fn started_by_the_stage(out_dir: Option<&str>) -> bool {
    if let (Some(dir), Some(out)) = (std::env::var_os(SHIM_TARGET_DIR_VAR), out_dir)
        && !in_build_dir(std::path::Path::new(&dir), std::path::Path::new(out))
    {
        return false;
    }
    let Some(owner) = std::env::var(SHIM_OWNER_VAR).ok().and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if pid == owner {
            return true;
        }
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        let Ok(exe) = std::fs::read_link(proc.join("exe")) else { return true };
        if !is_cargo_process(&exe) {
            return false;
        }
        // `pid (comm) state ppid ...`; the command name may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else { return true };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            return true;
        };
        if ppid <= 1 {
            // Reparented to init: whoever started it is gone, and it was not the stage.
            return false;
        }
        pid = ppid;
    }
    true
}

/// `cargo`, `cargo-nextest`, `cargo-clippy`, the rustup proxy: the processes between a
/// stage's command and its rustc. A test binary (`target/*/deps/name-hash`) never is,
/// whatever its name.
fn is_cargo_process(exe: &std::path::Path) -> bool {
    let name = exe.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let in_deps = exe.parent().and_then(|p| p.file_name()).is_some_and(|d| d == "deps");
    !in_deps && (name == "cargo" || name == "rustup" || name.starts_with("cargo-"))
}

/// `out` is a unit directory of the build directory `dir`: `<profile>/deps`,
/// `<profile>/examples`, `<profile>/build/<unit>`, each optionally under a target
/// triple's directory.
fn in_build_dir(dir: &std::path::Path, out: &std::path::Path) -> bool {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (dir, out) = (canon(dir), canon(out));
    let Ok(rel) = out.strip_prefix(&dir) else { return false };
    let mut parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    match parts.len() {
        n if n >= 3 && parts[n - 2] == "build" => parts.truncate(n - 2),
        n if n >= 2 => parts.truncate(n - 1),
        _ => return false,
    }
    // Left: the profile's directory, alone or under a target triple (which has dashes).
    match parts.as_slice() {
        [_profile] => true,
        [triple, _profile] => triple.contains('-'),
        _ => false,
    }
}

/// A `harness = false` test or bench: cargo passes neither `--test` nor `--crate-type`
/// and sets `CARGO_TARGET_TMPDIR` for both, so the package's manifest, which must
/// declare such a target, says which of the two it is.
fn harnessless_kind(crate_name: &str) -> &'static str {
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else { return "test" };
    let Ok(manifest) = Utf8PathBuf::try_from(std::path::PathBuf::from(dir).join("Cargo.toml"))
    else {
        return "test";
    };
    let declared = crate::workspace::custom_harness_targets(&manifest);
    let is_bench = declared.iter().any(|(kind, name)| {
        *kind == crate::workspace::TargetKind::Bench && name.replace('-', "_") == crate_name
    });
    if is_bench { "bench" } else { "test" }
}

/// Copies the running executable to `<state_dir>/bin/pipeline-opt-rustc-shim` and
/// returns its path, so that cargo can use it as `RUSTC_WRAPPER` even while a build of
/// this very workspace replaces the original.
pub fn install_rustc_shim(state_dir: &camino::Utf8Path) -> std::io::Result<Utf8PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = state_dir.join("bin");
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join("pipeline-opt-rustc-shim");
    let tmp = dir.join(format!(".pipeline-opt-rustc-shim.{}", std::process::id()));
    std::fs::copy(&exe, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// The crate timings the shim recorded for `stage`, relative to `run_start`.
pub fn read_rustc_log(
    path: &camino::Utf8Path,
    stage: &str,
    run_start: std::time::SystemTime,
) -> Vec<CrateTiming> {
    RustcLogTail::new(path.to_owned(), stage, run_start).read_new()
}

/// Follows a stage's rustc shim log while the stage runs, so compile units are reported
/// as they finish (the live view counts them) rather than when the stage ends. Only
/// whole lines are consumed: the shim appends each line with one write, but a read may
/// still land between two writes.
#[derive(Debug, Clone)]
pub struct RustcLogTail {
    path: Utf8PathBuf,
    stage: String,
    base: f64,
    offset: u64,
}

impl RustcLogTail {
    pub fn new(path: Utf8PathBuf, stage: &str, run_start: std::time::SystemTime) -> RustcLogTail {
        let base =
            run_start.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        RustcLogTail { path, stage: stage.to_string(), base, offset: 0 }
    }

    /// The units appended since the last call (none while the file does not exist),
    /// leaving out those compiled by tests ([`RustcLogTail::read_events`] has them).
    pub fn read_new(&mut self) -> Vec<CrateTiming> {
        self.read_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::CrateCompiled(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The units appended since the last call, each as [`Event::CrateCompiled`], or as
    /// [`Event::CompiledByTests`] when a test's own cargo run compiled it.
    pub fn read_events(&mut self) -> Vec<Event> {
        use std::io::{Read as _, Seek as _};
        let Ok(mut file) = std::fs::File::open(&self.path) else { return Vec::new() };
        if file.metadata().map(|m| m.len() <= self.offset).unwrap_or(true) {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file.seek(std::io::SeekFrom::Start(self.offset)).is_err()
            || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        self.offset += last_newline as u64 + 1;
        let rel = |t: f64| Duration::from_secs_f64((t - self.base).max(0.0));
        String::from_utf8_lossy(&bytes[..last_newline])
            .lines()
            .filter_map(|l| serde_json::from_str::<RustcInvocation>(l).ok())
            .map(|inv| {
                let by_tests = inv.by_tests;
                let unit = CrateTiming {
                    package: if inv.package.is_empty() {
                        inv.crate_name.clone()
                    } else {
                        inv.package
                    },
                    version: inv.version,
                    target: inv.crate_name,
                    kind: inv.kind,
                    stage: self.stage.clone(),
                    start: rel(inv.start),
                    end: rel(inv.end),
                };
                if by_tests { Event::CompiledByTests(unit) } else { Event::CrateCompiled(unit) }
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LockUse, Plan, Stage, StageCommand, StageKind};

    fn stage(id: &str, deps: &[&str]) -> Stage {
        Stage {
            id: id.into(),
            kind: StageKind::Custom,
            command: StageCommand::argv("true", vec![], "/".into()),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            reason: String::new(),
            proves: vec![],
            build_dir: None,
            lock: LockUse::Exclusive,
            cpu_heavy: true,
            timeout: None,
        }
    }

    fn ran(id: &str, start: u64, end: u64) -> StageMetrics {
        StageMetrics {
            id: id.into(),
            command: String::new(),
            status: StageStatus::Succeeded,
            start: Duration::from_secs(start),
            wall: Duration::from_secs(end - start),
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            peak_rss_kib: 0,
            exit_code: Some(0),
            log_path: None,
            tail: vec![],
            failed_tests: vec![],
            flaky_tests: vec![],
            proves: vec![],
        }
    }

    #[test]
    fn proc_stat_busy_and_total() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        // busy = user + nice + system + irq + softirq + steal; idle + iowait are not.
        assert_eq!(parse_proc_stat(text), Some((160, 1000)));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn critical_path_follows_what_each_stage_waited_for() {
        let plan = Plan {
            workspace_root: "/".into(),
            stages: vec![
                stage("fetch", &[]),
                stage("build", &["fetch"]),
                stage("bench-build", &["fetch"]),
                stage("test", &["build"]),
            ],
            dropped: vec![],
            notes: vec![],
        };
        // bench-build only depends on fetch but waited for build's cores.
        let stages = [
            ran("fetch", 0, 1),
            ran("build", 1, 10),
            ran("bench-build", 10, 15),
            ran("test", 10, 12),
        ];
        let crates = [CrateTiming {
            package: "a".into(),
            version: "0.1.0".into(),
            target: "a".into(),
            kind: "lib".into(),
            stage: "build".into(),
            start: Duration::from_secs(2),
            end: Duration::from_secs(9),
        }];
        let path: Vec<String> = critical_path(&plan, &stages, &crates)
            .into_iter()
            .map(|c| format!("{} {}", c.kind, c.name))
            .collect();
        assert_eq!(path, ["stage fetch", "stage build", "crate a (lib a)", "stage bench-build"]);
    }
}
