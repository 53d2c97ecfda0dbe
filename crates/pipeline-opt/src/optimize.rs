//! The product's two entry points: [`run_optimized_pipeline`] (load, plan, run in
//! parallel, profile, gate, report; optionally beside the naive sequence) and
//! [`run_fast_validation`] (`cargo check --all-targets`, the quickest useful signal).

use std::collections::BTreeMap;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::compile_cache::CompileCache;
use crate::exit;
use crate::inputs::{Inputs, LoadInputsError};
use crate::orchestrator::{CancelToken, OrchestratorOptions, ParallelOrchestrator, RunError};
use crate::plan::{
    CargoArgs, DropReason, NextestToolConfig, Plan, PlanError, Proof, StageKind, TestRunnerCommand,
};
use crate::profile::{PipelineProfiler, RunContext};
use crate::record::{CommandKind, Event, NaiveComparison, RunOutcome, RunRecord, StageStatus};
use crate::report::junit::{self, LibtestSuites};
use crate::report::progress::{ProgressMode, ProgressReporter};
use crate::report::{ReportError, ReportOptions, WrittenReports};
use crate::state::StateDir;
use crate::targets::{Gate, PerformanceTargets};
use crate::workspace::Workspace;

#[derive(Debug, Clone, Default)]
pub struct OptimizeOptions {
    pub manifest_path: Option<Utf8PathBuf>,
    pub cargo: CargoArgs,
    /// Build exactly what the naive sequence builds.
    pub strict: bool,
    pub keep_going: bool,
    /// Most stages at once (default: twice the cores; CPU is budgeted separately).
    pub jobs: Option<usize>,
    /// Cores split among CPU-heavy stages (default: the cores).
    pub cpus: Option<usize>,
    pub gate: Option<Gate>,
    /// Markdown report path (default under the state directory).
    pub report: Option<Utf8PathBuf>,
    pub json: Option<Utf8PathBuf>,
    pub prometheus: Option<Utf8PathBuf>,
    pub against_naive: bool,
    /// nextest `--retries`: a test that fails and then passes is reported as flaky.
    pub retries: u32,
    /// The running executable answers the helper modes: it calls
    /// the crate's `run_helper_modes_if_requested` first thing in `main` (the xtask and the
    /// cargo subcommand do). Then a copy of it records per-crate compile times as
    /// `RUSTC_WRAPPER`, and it runs as `RUSTDOC` where the cache proved some packages'
    /// doctests.
    pub rustc_shim: bool,
    pub handle_signals: bool,
    pub subreaper: bool,
    /// Default: a fresh id.
    pub run_id: Option<String>,
    pub cancel: CancelToken,
    /// Between SIGTERM/SIGINT and SIGKILL (default 5 s).
    pub grace: Option<Duration>,
    /// `--since REF`: build and test only the packages that changes since this git ref
    /// can affect.
    pub since: Option<String>,
    /// Run every stage even when the stage cache has proven its inputs (the cache is
    /// still updated). `--against-naive` always does.
    pub no_cache: bool,
    /// Run the stages the cache has proven anyway (as `no_cache`) and report, in the
    /// record's notes and as exit 100, each whose result differs from the cached
    /// success: a sign that its fingerprint misses an input.
    pub verify_cache: bool,
    /// Show the run in the terminal as it goes (live bars, or plain lines; see
    /// [`ProgressMode::detect`]), besides passing every event to the caller.
    pub progress: Option<ProgressMode>,
    /// After a successful run, build again from scratch once per profile-setting variant
    /// ([`crate::report::explore`]) and report the measured times.
    pub explore: bool,
    /// `--shards N`: archive the tests instead of running them, and plan N shards
    /// (docs/scale-out.md).
    pub shards: Option<crate::scale::Shards>,
    /// `--compile-cache URL`: the shared compile cache, over the config's `compile-cache`.
    pub compile_cache: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OptimizeOutcome {
    pub record: RunRecord,
    pub reports: WrittenReports,
    /// From [`crate::exit`]: 0, 100 (a stage failed), 101 (`--gate` missed), 130.
    pub exit_code: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error(transparent)]
    Inputs(#[from] LoadInputsError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Affected(#[from] crate::affected::AffectedError),
    #[error(transparent)]
    Explore(#[from] crate::explore::ExploreError),
    #[error(transparent)]
    TestSettings(#[from] crate::test_settings::TestSettingsError),
    #[error(transparent)]
    Scale(#[from] crate::scale::ScaleError),
    #[error(
        "--shards needs a nextest test stage to archive the tests: install cargo-nextest (`cargo install cargo-nextest --locked`) and keep the `test` and `test-archive` stages enabled with test-runner = \"nextest\""
    )]
    ShardsNeedNextest,
    #[error(
        "could not write nextest's tool config {path}: {source}; check that the state directory is writable"
    )]
    ToolConfig {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Services(#[from] crate::pool::PoolError),
    #[error(transparent)]
    CompileCache(#[from] crate::compile_cache::CompileCacheError),
    #[error("could not find the running executable to start the services stage: {source}")]
    CurrentExe {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "could not install the rustc timing shim under {dir}: {source}; check that the state directory is writable"
    )]
    Shim {
        dir: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `cargo xtask optimize`: plans the workspace's pipeline, runs it in parallel, profiles
/// it, writes the reports (also for failed and interrupted runs) and decides the exit
/// code. Events go to `on_event` as they happen (the live terminal view).
pub fn run_optimized_pipeline(
    options: &OptimizeOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<OptimizeOutcome, OptimizeError> {
    let waited = Waited::start();
    let mut inputs = Inputs::load(options.manifest_path.as_deref())?;
    if let Some(url) = &options.compile_cache {
        // One place decides: the planner (incremental off) and the run read the config.
        inputs.config.compile_cache = Some(url.clone());
    }
    start_signal_handling(options);
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let sharded;
    let options = match &options.shards {
        None => options,
        Some(shards) => {
            // The archive must be this run's: no stage is served from the cache, and the
            // record goes beside the archive.
            let artifacts = shards.artifacts(&state_dir);
            crate::scale::prepare(&artifacts)?;
            sharded = OptimizeOptions {
                no_cache: true,
                // Beside the archive too (below), where `shard merge` looks for it.
                json: options.json.clone().or_else(|| Some(artifacts.build_record())),
                shards: Some(crate::scale::Shards {
                    count: shards.count,
                    dir: Some(artifacts.dir().to_owned()),
                }),
                ..options.clone()
            };
            &sharded
        }
    };
    let run_id = options.run_id.clone().unwrap_or_else(crate::orchestrator::new_run_id);
    let (mut plan, cargo) = pipeline_plan(&inputs, options)?;
    if options.shards.is_some() && plan.stage("test-archive").is_none() {
        return Err(OptimizeError::ShardsNeedNextest);
    }
    write_nextest_tool_config(&plan)?;
    let command = command_line("optimize", options);
    let targets = PerformanceTargets::from_config(&inputs.config.targets);
    let mut progress = options.progress.map(|mode| {
        ProgressReporter::new(mode, &targets).with_gate(options.gate).since(waited.start)
    });
    let on_event = &mut |ev: &Event| {
        if let Some(p) = &mut progress {
            p.handle(ev);
        }
        on_event(ev);
    };

    let fresh_root = state_dir.compare(&run_id);
    if options.against_naive {
        // Our side starts from its own fresh target directory too.
        let notes = plan.notes.clone();
        let mut narrowed = options.clone();
        narrowed.cargo = cargo;
        plan = fresh_plan(&inputs, &narrowed, &fresh_root.join("optimized"))?;
        plan.notes = notes;
        apply_test_settings(&inputs, &mut plan, options.retries, &state_dir)?;
        write_nextest_tool_config(&plan)?;
    }

    let mut junit = RunJunit::new(&inputs, &plan)?;
    let mut record = if options.against_naive {
        // Both sides must really run: the comparison is of work, not of the cache.
        let on_event = &mut |ev: &Event| {
            junit.observe(ev);
            on_event(ev)
        };
        let record = run_plan(&inputs, options, &plan, &run_id, &command, targets, on_event)?;
        junit.collect(&record);
        record
    } else {
        let run = (plan.clone(), run_id.as_str(), command.as_str());
        run_with_cache(&inputs, options, run, targets, &mut junit, on_event)?
    };
    // The naive side is compared with our stages' time, as it has no planning of its own.
    let stages_total = record.total;
    waited.apply(&mut record);
    let junit_path = state_dir.report(JUNIT_FILE);
    crate::report::write_atomic(&junit_path, junit.render(record.total).as_bytes())?;
    if options.against_naive && record.outcome != RunOutcome::Interrupted {
        let naive =
            run_naive(&inputs, options, &plan, &run_id, &fresh_root, stages_total, on_event)?;
        record.naive = Some(naive);
    }
    if options.against_naive {
        // The fresh target directories are large and never reused.
        let _ = std::fs::remove_dir_all(&fresh_root);
    }
    if options.explore {
        explore_settings(&inputs, &plan, &state_dir, &mut record, &mut progress)?;
    }
    if let Some(shards) = &options.shards {
        plan_shards_of(&inputs, shards, &state_dir, &mut record, &mut progress)?;
        // The merge, maybe on another machine, adds the shards' JUnit to this one.
        let to = shards.artifacts(&state_dir).build_junit();
        if let Err(e) = std::fs::copy(&junit_path, &to) {
            record.notes.push(format!("could not copy the JUnit file to {to}: {e}"));
        }
    }
    let mut outcome = report_and_decide(record, &inputs, options)?;
    outcome.reports.junit = Some(junit_path);
    if let Some(shards) = &options.shards {
        // `shard merge` reads the build's record beside the archive, wherever `--json`
        // put the user's copy.
        let beside = shards.artifacts(&state_dir).build_record();
        if options.json.as_ref() != Some(&beside) {
            let json =
                crate::report::json::render(&outcome.record).expect("a run record serialises");
            crate::report::write_atomic(&beside, json.as_bytes())?;
        }
    }
    Ok(outcome)
}

/// The JUnit file of an `optimize` run, in the state directory.
pub const JUNIT_FILE: &str = "junit.xml";

/// The JUnit of a run as it comes together: suites built from the output of the stages
/// that run `cargo test` (timed as their lines arrive), nextest's own file, and the
/// suites of what the cache served, recorded when it last ran.
struct RunJunit {
    started: std::time::Instant,
    started_at: std::time::SystemTime,
    /// Stage id → the suites of its libtest output so far.
    libtest: BTreeMap<String, LibtestSuites>,
    /// The test stage that runs nextest, and where its JUnit file lands.
    nextest: Option<(String, Utf8PathBuf)>,
    /// Stage id → the suites this run produced, once the stages ended.
    fresh: BTreeMap<String, Vec<quick_junit::TestSuite>>,
    /// Suites served from the cache.
    replayed: Vec<quick_junit::TestSuite>,
    /// The test stages in plan order, to list the suites in.
    order: Vec<String>,
}

impl RunJunit {
    fn new(inputs: &Inputs, plan: &Plan) -> Result<RunJunit, OptimizeError> {
        let mut libtest = BTreeMap::new();
        let mut nextest = None;
        let mut order = Vec::new();
        for s in &plan.stages {
            match s.command.kind() {
                CommandKind::CargoTest => {
                    libtest.insert(s.id.clone(), LibtestSuites::in_dir(Some(&s.command.cwd)));
                }
                CommandKind::Nextest => {
                    let Some(config) = s.command.nextest_tool_config() else { continue };
                    // A profile of the user's that sets `junit.path` outranks the tool's.
                    let settings = test_settings(inputs, plan)?;
                    let file = settings.nextest_junit.unwrap_or_else(|| config.junit.clone());
                    nextest = Some((s.id.clone(), file));
                }
                _ => continue,
            }
            order.push(s.id.clone());
        }
        Ok(RunJunit {
            started: std::time::Instant::now(),
            started_at: std::time::SystemTime::now(),
            libtest,
            nextest,
            fresh: BTreeMap::new(),
            replayed: Vec::new(),
            order,
        })
    }

    fn observe(&mut self, ev: &Event) {
        if let Event::StageOutput { id, line } = ev
            && let Some(suites) = self.libtest.get_mut(id)
        {
            suites.observe(line, Some(self.started.elapsed()));
        }
    }

    /// Takes in the suites of the stages that ran: libtest's as observed, nextest's
    /// from its file when this run wrote it (an older file is an earlier run's).
    fn collect(&mut self, record: &RunRecord) {
        let ran = |id: &str| {
            record.stages.iter().any(|m| {
                m.id == id
                    && !matches!(m.status, StageStatus::Skipped { .. } | StageStatus::Cached { .. })
            })
        };
        for (id, suites) in std::mem::take(&mut self.libtest) {
            if ran(&id) {
                self.fresh.insert(id, suites.into_suites());
            }
        }
        let Some((id, file)) = self.nextest.take() else { return };
        if !ran(&id) {
            return;
        }
        let written_now =
            std::fs::metadata(&file).and_then(|m| m.modified()).is_ok_and(|m| m >= self.started_at);
        if !written_now {
            return;
        }
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|x| junit::parse_suites(&x))
        {
            Ok(suites) => {
                self.fresh.insert(id, suites);
            }
            Err(e) => eprintln!(
                "warning: could not read nextest's JUnit file {file}: {e}; the JUnit report leaves its tests out"
            ),
        }
    }

    /// What the cache records with a stage's success: by package for the test and
    /// doctest stages (each package's part is cached on its own; a doctest suite is
    /// named by the library's crate name), the stage's whole JUnit otherwise.
    fn for_cache(&self, stage: &str, kind: StageKind, ws: &Workspace) -> BTreeMap<String, String> {
        let Some(suites) = self.fresh.get(stage) else { return BTreeMap::new() };
        if matches!(kind, StageKind::Test | StageKind::Doctest) {
            let package_of = |first: &str| {
                ws.packages
                    .iter()
                    .find(|p| p.name == first || p.lib_crate_name().as_deref() == Some(first))
                    .map_or_else(|| first.to_string(), |p| p.name.clone())
            };
            let mut out: BTreeMap<String, Vec<quick_junit::TestSuite>> = BTreeMap::new();
            for (first, s) in junit::by_package(suites.clone()) {
                out.entry(package_of(&first)).or_default().extend(s);
            }
            out.into_iter().map(|(p, s)| (p, junit::render(stage, s, None))).collect()
        } else {
            BTreeMap::from([(stage.to_string(), junit::render(stage, suites.clone(), None))])
        }
    }

    fn replay(&mut self, xml: &str) {
        match junit::parse_suites(xml) {
            Ok(suites) => self.replayed.extend(suites),
            Err(e) => eprintln!(
                "warning: a JUnit file in the stage cache does not parse ({e}); the JUnit report leaves its tests out"
            ),
        }
    }

    /// One document: the suites served from the cache, then this run's in plan order.
    /// A suite this run left empty because the cache served it (a proven package's
    /// doctests) appears once, as replayed.
    fn render(mut self, total: Duration) -> String {
        let mut suites = std::mem::take(&mut self.replayed);
        for id in &self.order {
            let fresh = self.fresh.remove(id).unwrap_or_default();
            let served = |s: &quick_junit::TestSuite| {
                s.test_cases.is_empty() && suites.iter().any(|r| r.name == s.name)
            };
            let fresh: Vec<_> = fresh.into_iter().filter(|s| !served(s)).collect();
            suites.extend(fresh);
        }
        junit::render("pipeline-opt", suites, Some(total))
    }
}

/// `--shards N`, after a successful run: the archive's inventory and the shard plan
/// made from it and the history's test durations, written beside the archive.
fn plan_shards_of(
    inputs: &Inputs,
    shards: &crate::scale::Shards,
    state_dir: &StateDir,
    record: &mut RunRecord,
    progress: &mut Option<ProgressReporter>,
) -> Result<(), OptimizeError> {
    if record.outcome != RunOutcome::Succeeded {
        record.notes.push("--shards: no shard plan, the run did not succeed".into());
        return Ok(());
    }
    let artifacts = shards.artifacts(state_dir);
    let inventory =
        crate::scale::list_archive(&inputs.workspace.manifest_path, &artifacts.archive())?;
    let history = state_dir.report(&record.kind.file_name(crate::report::HISTORY_FILE));
    let plan = crate::scale::plan_and_write(&inventory, &history, shards.count, &artifacts)?;
    let text = plan.render_text();
    match progress.as_mut() {
        Some(p) => text.lines().for_each(|l| p.note(l)),
        None => eprint!("{text}"),
    }
    record.notes.push(format!(
        "--shards {}: the tests are archived in {}, the shard plan is {} ({})",
        shards.count,
        artifacts.archive(),
        artifacts.plan(),
        text.lines().next().unwrap_or_default()
    ));
    Ok(())
}

/// `shard run --plan P --shard K`: runs shard K of the plan from the archive beside it
/// against this checkout, compiling nothing, and writes its run record, reports and
/// nextest's JUnit into its own directory (its history too: the merge, not the shard,
/// adds the durations to the workspace's history).
pub fn run_shard(
    shard: &crate::scale::ShardRunOptions,
    options: &OptimizeOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<OptimizeOutcome, OptimizeError> {
    use crate::scale::{JUNIT_TOOL_CONFIG, ScaleError, read_plan, write_file};
    let waited = Waited::start();
    let shard_plan = read_plan(&shard.plan)?;
    let Some(this) = shard_plan.shards.iter().find(|s| s.index == shard.shard) else {
        return Err(ScaleError::NoSuchShard {
            path: shard.plan.clone(),
            shard: shard.shard,
            count: shard_plan.shards.len(),
        }
        .into());
    };
    let inputs = Inputs::load(options.manifest_path.as_deref())?;
    start_signal_handling(options);
    let out = shard.out_dir();
    let tool_config = out.join("nextest-junit.toml");
    write_file(&tool_config, JUNIT_TOOL_CONFIG.as_bytes())?;
    // nextest extracts only into a directory that exists.
    let extracted = out.join("extracted");
    std::fs::create_dir_all(&extracted)
        .map_err(|source| ScaleError::Write { path: extracted.clone(), source })?;
    let plan = crate::plan::shard_run_plan(
        &inputs.workspace,
        &shard.artifacts().archive(),
        this.index,
        &this.selection,
        &out,
        &tool_config,
    );
    let run_id = options.run_id.clone().unwrap_or_else(crate::orchestrator::new_run_id);
    let command = format!("cargo xtask shard run --plan {} --shard {}", shard.plan, shard.shard);
    let targets = PerformanceTargets::from_config(&inputs.config.targets);
    let mut progress = options.progress.map(|mode| ProgressReporter::new(mode, &targets));
    let on_event = &mut |ev: &Event| {
        if let Some(p) = &mut progress {
            p.handle(ev);
        }
        on_event(ev);
    };
    // nextest writes JUnit under the remapped workspace's target directory; one left
    // from an earlier run must not pass for this one's.
    let junit = inputs.workspace.target_dir.join("nextest/default/junit.xml");
    let _ = std::fs::remove_file(&junit);
    let mut record = run_plan(&inputs, options, &plan, &run_id, &command, targets, on_event)?;
    waited.apply(&mut record);
    if junit.is_file() {
        let bytes = std::fs::read(&junit)
            .map_err(|source| ScaleError::Write { path: junit.clone(), source })?;
        write_file(&out.join("junit.xml"), &bytes)?;
    }
    record.workspace_facts = inputs.facts.clone();
    let reports = crate::report::write_reports(
        &record,
        &ReportOptions {
            state_dir: StateDir::new(out.clone()),
            markdown: options.report.clone(),
            json: Some(out.join("run.json")),
            prometheus: None,
            step_summary: None,
        },
    )?;
    let exit_code = exit_code(&record, None);
    Ok(OptimizeOutcome { record, reports, exit_code })
}

/// `shard merge DIR…`: the build's artifact directory (shard plan and build record) and
/// each shard's directory (its run record) become one run record beside the plan
/// (`merged-run.json`), the workspace's reports and one history line with every test's
/// duration. A test of the plan that ran on no shard or on two is exit 100, named.
pub fn merge_shards(
    dirs: &[Utf8PathBuf],
    options: &OptimizeOptions,
) -> Result<OptimizeOutcome, OptimizeError> {
    use crate::scale::{Artifacts, ScaleError, merge, read_plan, read_record};
    let mut plan_dir = None;
    let mut shards = Vec::new();
    let mut shard_dirs = Vec::new();
    for dir in dirs {
        let artifacts = Artifacts(dir.clone());
        if artifacts.plan().is_file() {
            if plan_dir.replace(artifacts).is_some() {
                return Err(ScaleError::MergeInput(
                    "two directories hold a shard-plan.json: merge one build's shards at a time"
                        .into(),
                )
                .into());
            }
            continue;
        }
        let record = read_record(&dir.join("run.json"))?;
        let index = record
            .stages
            .iter()
            .find_map(|s| s.id.strip_prefix("shard-").and_then(|k| k.parse::<usize>().ok()))
            .ok_or_else(|| {
                ScaleError::MergeInput(format!(
                    "{dir}/run.json is not a shard's record: pass the directories `shard run` wrote"
                ))
            })?;
        shards.push((index, record));
        shard_dirs.push(dir.clone());
    }
    let Some(artifacts) = plan_dir else {
        return Err(ScaleError::MergeInput(
            "no shard-plan.json in the directories given: add the artifact directory of `optimize --shards`".into(),
        )
        .into());
    };
    let plan = read_plan(&artifacts.plan())?;
    let build = read_record(&artifacts.build_record())?;
    let merged = merge(&plan, &build, &shards);
    let inputs = Inputs::load(options.manifest_path.as_deref())?;
    let mut record = merged.record;
    record.workspace_facts = inputs.facts.clone();
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let junit_path = state_dir.report(JUNIT_FILE);
    let junit = merge_junit(&artifacts, &shard_dirs, record.total, &mut record.notes);
    crate::report::write_atomic(&junit_path, junit.as_bytes())?;
    let reports = crate::report::write_reports(
        &record,
        &ReportOptions {
            state_dir,
            markdown: options.report.clone(),
            json: Some(
                options.json.clone().unwrap_or_else(|| artifacts.dir().join("merged-run.json")),
            ),
            prometheus: options.prometheus.clone(),
            step_summary: github_step_summary(),
        },
    )?;
    let exit_code = exit_code(&record, None);
    let mut outcome = OptimizeOutcome { record, reports, exit_code };
    outcome.reports.junit = Some(junit_path);
    Ok(outcome)
}

/// One JUnit document of the build machine's tests and every shard's, a suite whose
/// tests ran on several shards merged into one by its name. A file that is missing or
/// does not parse leaves its tests out, with a note.
fn merge_junit(
    artifacts: &crate::scale::Artifacts,
    shard_dirs: &[Utf8PathBuf],
    total: Duration,
    notes: &mut Vec<String>,
) -> String {
    let files = std::iter::once(artifacts.build_junit())
        .chain(shard_dirs.iter().map(|d| d.join(JUNIT_FILE)));
    let mut suites = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|x| junit::parse_suites(&x))
        {
            Ok(s) => suites.extend(s),
            Err(e) => notes.push(format!("JUnit {file} left out of the merged JUnit: {e}")),
        }
    }
    junit::render("pipeline-opt", junit::merge_by_name(suites), Some(total))
}

/// `optimize --shards N --local`: the whole scale-out on this machine. The build
/// (`optimize --shards N`, its record beside the archive), then every shard as its own
/// process (`shard run` of this binary) against its own copy of the checkout at another
/// path (a scratch directory under the system's temporary directory, removed at the
/// end), each extracting the archive into its own directory; then `shard merge` of them
/// all. The shard processes are stages of one orchestrator run: each in its own process
/// group with the run's marker, its output in the run's log directory (`-v` prints it
/// prefixed `[shard-K]`), all stopped on Ctrl-C. The exit code is the merged run's (130
/// when interrupted); a build that did not succeed ends the command with its own.
pub fn run_local_shards(
    options: &OptimizeOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<OptimizeOutcome, OptimizeError> {
    use crate::scale::{ScaleError, copy_checkout, read_plan};
    let Some(shards) = &options.shards else {
        return run_optimized_pipeline(options, on_event);
    };
    if std::env::var_os("CARGO_TARGET_DIR").is_some_and(|d| !d.is_empty()) {
        return Err(ScaleError::LocalSharedTargetDir.into());
    }
    // Taken before the build: when the build relinks this very program (a workspace's
    // own xtask, built by `cargo xtask` with other features than the workspace build
    // unifies), the running image is unlinked and, asked afterwards, the path reads
    // `… (deleted)`, which cannot be started. The path names the new build of the same
    // sources.
    let exe = std::env::current_exe().map_err(|source| OptimizeError::CurrentExe { source })?;
    // The merge reads the build's record from the artifact directory.
    let build_options = OptimizeOptions { json: None, ..options.clone() };
    let build = run_optimized_pipeline(&build_options, on_event)?;
    if build.record.outcome != RunOutcome::Succeeded {
        return Ok(build);
    }
    let inputs = Inputs::load(options.manifest_path.as_deref())?;
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let artifacts = shards.artifacts(&state_dir);
    let shard_plan = read_plan(&artifacts.plan())?;
    let run_id = options.run_id.clone().unwrap_or_else(crate::orchestrator::new_run_id);
    let temp = std::env::temp_dir();
    let scratch = Utf8PathBuf::from_path_buf(temp.join(format!("pipeline-opt-local-{run_id}")))
        .map_err(|p| {
            ScaleError::MergeInput(format!(
                "the temporary directory {} is not UTF-8: set TMPDIR to a UTF-8 path",
                p.display()
            ))
        })?;
    let _remove_scratch = RemoveOnDrop(scratch.clone());
    let root = &inputs.workspace.root;
    let manifest =
        inputs.workspace.manifest_path.strip_prefix(root).unwrap_or("Cargo.toml".as_ref());
    let skip = [
        inputs.workspace.target_dir.clone(),
        artifacts.dir().to_owned(),
        state_dir.to_path_buf(),
        // TMPDIR may lie inside the checkout.
        scratch.clone(),
    ];
    let mut local = Vec::new();
    for s in &shard_plan.shards {
        let checkout = scratch.join(format!("checkout-{}", s.index));
        copy_checkout(root, &checkout, &skip)?;
        let out = artifacts.dir().join(format!("shard-{}", s.index));
        // A record left by an earlier run must not pass for this one's.
        if out.exists() {
            std::fs::remove_dir_all(&out)
                .map_err(|source| ScaleError::Write { path: out.clone(), source })?;
        }
        local.push(crate::plan::LocalShard {
            index: s.index,
            plan_file: artifacts.plan(),
            out,
            manifest: checkout.join(manifest),
            target_dir: checkout.join("target"),
        });
    }
    let exe = exe.to_string_lossy();
    let plan = crate::plan::local_shards_plan(root, &exe, &local);
    let run_options = OptimizeOptions {
        // Every shard at once, none stopping the others when its tests fail.
        jobs: Some(local.len().max(1)),
        keep_going: true,
        // Each shard process times its own stage.
        rustc_shim: false,
        run_id: Some(run_id.clone()),
        ..options.clone()
    };
    let targets = PerformanceTargets::from_config(&inputs.config.targets);
    let mut progress = options.progress.map(|mode| ProgressReporter::new(mode, &targets));
    let on_event = &mut |ev: &Event| {
        if let Some(p) = &mut progress {
            p.handle(ev);
        }
        on_event(ev);
    };
    let command = format!("{} shards on this machine", local.len());
    let ran = run_plan_once(&inputs, &run_options, &plan, &command, on_event)?;
    drop(progress);
    let mut dirs = vec![artifacts.dir().to_owned()];
    let mut lost = Vec::new();
    for s in &local {
        if s.out.join("run.json").is_file() {
            dirs.push(s.out.clone());
        } else {
            let log = state_dir.logs(&run_id).join(format!("shard-{}.log", s.index));
            lost.push(format!("shard {} wrote no run record (its output: {log})", s.index));
        }
    }
    let mut outcome = merge_shards(&dirs, options)?;
    for line in &lost {
        eprintln!("error: {line}");
    }
    eprintln!("shard logs: {}", state_dir.logs(&run_id));
    if ran.outcome == RunOutcome::Interrupted || crate::process::received_signal().is_some() {
        outcome.exit_code = exit::INTERRUPTED;
    }
    Ok(outcome)
}

/// Removes a scratch directory when the command ends, however it ends.
struct RemoveOnDrop(Utf8PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `--explore`: the plan's build stage (or `cargo test --no-run` where it has none) from
/// scratch under every profile-setting variant, in scratch target directories under the
/// state directory. Only after a successful run: a build that fails fails alike in every
/// variant, and an interrupted run wants to stop.
fn explore_settings(
    inputs: &Inputs,
    plan: &Plan,
    state_dir: &StateDir,
    record: &mut RunRecord,
    progress: &mut Option<ProgressReporter>,
) -> Result<(), OptimizeError> {
    use crate::explore::{self, ExploreOptions};
    use crate::report::explore::Exploration;
    if record.outcome != RunOutcome::Succeeded {
        record.notes.push("--explore was skipped: it runs only after a successful run".into());
        return Ok(());
    }
    let scratch = state_dir.explore_scratch();
    let opts = match plan.stages.iter().find(|s| s.kind == StageKind::Build) {
        Some(build) => ExploreOptions::for_command(build.command.clone(), scratch),
        None => ExploreOptions::new(inputs.workspace.manifest_path.clone(), scratch),
    };
    if let Some(p) = progress.as_mut() {
        p.note(&format!(
            "explore: {} variants of `{}`, each a cold build in {}",
            opts.variants.len(),
            opts.command.display(),
            opts.scratch_dir
        ));
    }
    let results = explore::explore(&opts, &mut |r| {
        if let Some(p) = progress.as_mut() {
            p.note(&explore::render_line(r));
        }
    })?;
    record.explore = Some(Exploration::from_results(&opts.command, opts.rounds, &results));
    Ok(())
}

/// `cargo xtask check`: `cargo check --all-targets` with the configured features (after
/// `fetch`, so it runs offline like the full pipeline), nothing that needs a full build.
pub fn run_fast_validation(
    options: &OptimizeOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<OptimizeOutcome, OptimizeError> {
    let waited = Waited::start();
    let mut inputs = Inputs::load(options.manifest_path.as_deref())?;
    start_signal_handling(options);
    let config = &mut inputs.config;
    config.disable = ["build", "test", "doctest", "bench-build"].map(String::from).to_vec();
    config.enable.clear();
    config.stages.clear();
    config.services.clear();
    let plan = inputs.plan(options.cargo.clone(), false)?;
    let run_id = options.run_id.clone().unwrap_or_else(crate::orchestrator::new_run_id);
    let command = command_line("check", options);
    let targets = PerformanceTargets::from_config(&inputs.config.targets);
    let mut progress = options.progress.map(|mode| {
        ProgressReporter::new(mode, &targets).with_gate(options.gate).since(waited.start)
    });
    let on_event = &mut |ev: &Event| {
        if let Some(p) = &mut progress {
            p.handle(ev);
        }
        on_event(ev);
    };
    let mut record = run_plan(&inputs, options, &plan, &run_id, &command, targets, on_event)?;
    record.kind = crate::record::RunKind::Check;
    waited.apply(&mut record);
    report_and_decide(record, &inputs, options)
}

/// The time the user waits for a command, from its very start: loading the workspace,
/// planning, fingerprints and the cache lock count, not only the stages (a run served
/// entirely from the cache took 0.0 s of stages and 0.2 s of the user's time).
struct Waited {
    start: std::time::Instant,
    started_at: std::time::SystemTime,
}

impl Waited {
    fn start() -> Waited {
        Waited { start: std::time::Instant::now(), started_at: std::time::SystemTime::now() }
    }

    /// Sets the record's start and total to the command's, and judges that total.
    fn apply(&self, record: &mut RunRecord) {
        record.started_at = humantime::format_rfc3339_seconds(self.started_at).to_string();
        record.total = record.total.max(self.start.elapsed());
        record.verdict = record.targets.verdict(record.total, &record.stages);
    }
}

/// Writes every report of a finished run (also a failed or interrupted one) and decides
/// the exit code. The record gets the workspace facts its recommendations need, so that
/// the saved run.json renders the same reports.
fn report_and_decide(
    mut record: RunRecord,
    inputs: &Inputs,
    options: &OptimizeOptions,
) -> Result<OptimizeOutcome, OptimizeError> {
    record.workspace_facts = inputs.facts.clone();
    record.verdict.gate = options.gate.map(|g| record.verdict.check(g));
    // A signal after the stages ended (recording cache successes, planning the reports)
    // still makes this an interrupted run: the user asked it to stop.
    if record.outcome != RunOutcome::Interrupted
        && let Some(sig) = interrupt_signal(options)
    {
        record.outcome = RunOutcome::Interrupted;
        record.notes.push(format!("interrupted by signal {sig} after the stages had ended"));
    }
    let reports = crate::report::write_reports(
        &record,
        &ReportOptions {
            state_dir: inputs.workspace.state_dir(&inputs.config),
            markdown: options.report.clone(),
            json: options.json.clone(),
            prometheus: options.prometheus.clone(),
            step_summary: github_step_summary(),
        },
    )?;
    let exit_code = exit_code(&record, options.gate);
    Ok(OptimizeOutcome { record, reports, exit_code })
}

/// The step summary file GitHub Actions gives a job step, if any: the markdown report
/// is appended to it, so the job's page shows the run.
fn github_step_summary() -> Option<std::path::PathBuf> {
    std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()).map(Into::into)
}

/// The exit code a run earns: an interrupt beats a failure, which beats a missed gate.
pub fn exit_code(record: &RunRecord, gate: Option<Gate>) -> i32 {
    match record.outcome {
        RunOutcome::Interrupted => exit::INTERRUPTED,
        RunOutcome::StageFailed => exit::STAGE_FAILED,
        RunOutcome::Succeeded => match gate {
            Some(g) if !record.verdict.passes(g) => exit::TARGET_MISSED,
            _ => exit::OK,
        },
    }
}

/// The plan that [`run_optimized_pipeline`] runs with `options` (`cargo xtask plan`
/// prints the same): narrowed by `--since`, nextest retrying flaky tests, the user's
/// nextest fail-fast kept; and the cargo selection it was made with.
pub fn pipeline_plan(
    inputs: &Inputs,
    options: &OptimizeOptions,
) -> Result<(Plan, CargoArgs), OptimizeError> {
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let (mut plan, cargo) = affected_plan(inputs, options, &state_dir)?;
    apply_test_settings(inputs, &mut plan, options.retries, &state_dir)?;
    Ok((plan, cargo))
}

/// The plan, narrowed by `--since` to the affected packages (with a note saying what
/// changed, or why everything is affected), and the cargo selection it was made with.
fn affected_plan(
    inputs: &Inputs,
    options: &OptimizeOptions,
    state_dir: &StateDir,
) -> Result<(Plan, CargoArgs), OptimizeError> {
    let Some(git_ref) = &options.since else {
        return Ok((plan_for(inputs, options.cargo.clone(), options)?, options.cargo.clone()));
    };
    let extra = crate::cache::maintain::extra_target_dirs(state_dir);
    let affected = crate::affected::since(&inputs.workspace, git_ref, &extra)?;
    let (mut plan, cargo) = match affected.narrow(&options.cargo) {
        Some(cargo) => (plan_for(inputs, cargo.clone(), options)?, cargo),
        None => {
            // Nothing to build or test: an empty plan, which the note explains.
            let mut plan = plan_for(inputs, options.cargo.clone(), options)?;
            plan.drop_all(DropReason::NotAffected { since: git_ref.clone() });
            (plan, options.cargo.clone())
        }
    };
    plan.notes.push(affected.note());
    plan.notes.extend(affected.notes.iter().cloned());
    Ok((plan, cargo))
}

/// The planner on this run's inputs and flags; `--shards` makes the test stage an
/// archive, which is a planner input, never an edit of the planned command.
fn plan_for(
    inputs: &Inputs,
    cargo: CargoArgs,
    options: &OptimizeOptions,
) -> Result<Plan, PlanError> {
    let mut plan_options = inputs.plan_options(cargo, options.strict);
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    plan_options.test_archive = options.shards.as_ref().map(|s| s.artifacts(&state_dir).archive());
    if options.rustc_shim {
        plan_options.rustdoc_shim =
            std::env::current_exe().ok().and_then(|p| Utf8PathBuf::from_path_buf(p).ok());
    }
    crate::plan::plan(&inputs.workspace, &inputs.config, &plan_options)
}

/// Runs `plan` through the stage cache: stages whose inputs an earlier success proved
/// are reported as cached (never run), the test stage runs only the packages that must
/// rerun, and every success is recorded for the next run. The cache lock is held for
/// the whole run, so a second invocation on the same workspace waits.
fn run_with_cache(
    inputs: &Inputs,
    options: &OptimizeOptions,
    (plan, run_id, command): (Plan, &str, &str),
    targets: PerformanceTargets,
    junit: &mut RunJunit,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunRecord, OptimizeError> {
    use crate::cache::{Decision, StageCache};
    let on_event = &mut |ev: &Event| {
        junit.observe(ev);
        on_event(ev)
    };
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let opened = StageCache::open(&state_dir, |lock| {
        eprintln!(
            "waiting for another pipeline-opt run on this workspace to finish (it holds {lock})"
        )
    });
    let mut cache = match opened {
        // Interrupted while waiting: the orchestrator sees the pending signal first thing
        // and starts nothing, so the run ends with an interrupted record of its plan.
        Err(crate::cache::CacheError::Interrupted { .. }) => {
            let record = run_plan(inputs, options, &plan, run_id, command, targets, on_event)?;
            junit.collect(&record);
            return Ok(record);
        }
        opened => opened?,
    };
    let ws = &inputs.workspace;
    let tc = &inputs.toolchain;
    let mut cached = cache.adjust_plan(plan, ws, tc, &inputs.config, run_id)?;
    let forced = options.no_cache || options.verify_cache;
    if forced {
        cached.run_everything();
    }
    let mut skip: BTreeMap<String, String> = BTreeMap::new();
    if !forced {
        for s in &cached.plan.stages {
            if let Some(from) = cached.cached_from(&s.id) {
                skip.insert(s.id.clone(), from.to_string());
            }
        }
    }
    let mut record = run_plan_skipping(
        inputs,
        options,
        &cached.plan,
        &skip,
        run_id,
        command,
        targets,
        on_event,
    )?;
    junit.collect(&record);
    for xml in cache.replayed_junit(&cached) {
        junit.replay(&xml);
    }
    let mut not_recorded = Vec::new();
    for m in &record.stages {
        if m.status == StageStatus::Succeeded {
            let kind = cached.plan.stage(&m.id).map_or(StageKind::Custom, |s| s.kind);
            let junit = junit.for_cache(&m.id, kind, ws);
            // A record that cannot be written costs a rerun next time; it must not
            // turn this run's result (a failed stage's exit 100) into an error.
            match cache.record_success(&cached, &m.id, run_id, ws, tc, &junit) {
                Ok(notes) => not_recorded.extend(notes),
                Err(e) => not_recorded.push(format!("stage `{}` not recorded: {e}", m.id)),
            }
        }
    }
    record.notes.extend(not_recorded.into_iter().map(|n| format!("cache: {n}")));
    if options.verify_cache {
        // A mismatch is a failed stage, so the run already exits 100. The success that
        // no longer holds is forgotten, so later runs do not serve it either.
        for (stage, package, note) in cache_mismatches(&cached, &record, ws) {
            if let Err(e) = cache.store.forget(&stage, package.as_deref()) {
                record.notes.push(format!("cache: {e}"));
            }
            record.notes.push(note);
        }
    }
    for (id, d) in &cached.decisions {
        let line = match d {
            Decision::Cached { .. } if !skip.contains_key(id) => {
                format!("ran anyway (no cache); {}", d.summary())
            }
            _ => d.summary(),
        };
        record.cache.insert(id.clone(), line);
    }
    for (stage, decided) in &cached.packages {
        if cached.decisions.get(stage).is_some_and(|d| !d.is_cached()) {
            for (p, d) in decided {
                record.cache.insert(format!("{stage} {p}"), d.summary());
            }
        }
    }
    // A state file set aside or ignored is said where it happens, not only in the record
    // (and under `--explain`): the user may want to look at what was in it.
    for w in &cached.warnings {
        eprintln!("warning: {w}");
    }
    record.notes.extend(cached.warnings.iter().map(|w| format!("cache: {w}")));
    // Still under the lock: taking it again after letting go could mean waiting for a
    // whole later run (and an interrupt there would lose this run's record).
    if let Some(budget) = inputs.config.cache.budget {
        let freed =
            crate::cache::maintain::enforce_budget_locked(&cache.store, &state_dir, budget)?;
        if !freed.removed.is_empty() {
            record.notes.push(format!(
                "cache budget: removed {} item(s) to stay under {}",
                freed.removed.len(),
                crate::cache::store::human_bytes(budget)
            ));
        }
    }
    drop(cache);
    Ok(record)
}

/// `--verify-cache`: the stages (and packages' tests and doctests) the cache would have
/// served as succeeded that failed when run: (stage, package, one note starting with
/// [`VERIFY_CACHE_NOTE`]).
fn cache_mismatches(
    cached: &crate::cache::CachedPlan,
    record: &RunRecord,
    ws: &Workspace,
) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    let fix = "an input is missing from its fingerprint: declare it with `cache.inputs` or `cache.env` (docs/caching.md)";
    for m in record.stages.iter().filter(|m| m.status != StageStatus::Succeeded) {
        if let Some(decided) = cached.packages.get(&m.id) {
            let what = if cached.plan.stage(&m.id).is_some_and(|s| s.kind == StageKind::Doctest) {
                "doctests"
            } else {
                "tests"
            };
            let failed_cached: Vec<(&String, &crate::cache::Decision)> = decided
                .iter()
                .filter(|(p, d)| {
                    d.is_cached()
                        && m.failed_tests.iter().any(|t| is_of_package(test_package(t), p, ws))
                })
                .collect();
            for (p, d) in &failed_cached {
                let from = d.summary();
                let note = format!(
                    "{VERIFY_CACHE_NOTE} the {what} of `{p}` failed on the inputs the cache holds a success for ({from}); {fix}"
                );
                out.push((m.id.clone(), Some(p.to_string()), note));
            }
            if !failed_cached.is_empty() {
                continue;
            }
        }
        if let Some(from) = cached.cached_from(&m.id) {
            let note = format!(
                "{VERIFY_CACHE_NOTE} stage `{}` failed on the inputs the cache holds a success for (run {from}); {fix}",
                m.id
            );
            out.push((m.id.clone(), None, note));
        }
    }
    out
}

/// How `--verify-cache` notes begin, so a front-end can show them as errors.
pub const VERIFY_CACHE_NOTE: &str = "verify-cache: result differs from the cache:";

/// Whether `first` (a test's first name segment: a package, or for doctests the
/// library's crate name) is `package`'s.
fn is_of_package(first: &str, package: &str, ws: &Workspace) -> bool {
    first == package
        || ws.package(package).and_then(|i| ws.packages[i].lib_crate_name()).as_deref()
            == Some(first)
}

/// The package of a failed test as the report names it: `pkg::binary name` (nextest)
/// or `pkg name`.
fn test_package(test: &str) -> &str {
    let binary = test.split(' ').next().unwrap_or(test);
    binary.split("::").next().unwrap_or(binary)
}

fn run_plan(
    inputs: &Inputs,
    options: &OptimizeOptions,
    plan: &Plan,
    run_id: &str,
    command: &str,
    targets: PerformanceTargets,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunRecord, OptimizeError> {
    run_plan_skipping(inputs, options, plan, &BTreeMap::new(), run_id, command, targets, on_event)
}

/// The plan's `services` stage shows what a person would type (`cargo xtask pool up`);
/// the run executes it as this binary in services mode
/// ([`crate::pool::services_up_if_requested`]), owned by this process, so it works on
/// workspaces without an xtask. The pool's supervisor inherits the run's marker, so the
/// end of the run stops it like any process the run started.
fn services_as_this_binary(
    plan: &mut Plan,
    manifest: &Utf8Path,
    config: &crate::config::Config,
) -> Result<(), OptimizeError> {
    if !plan.stages.iter().any(|s| s.kind == StageKind::Services) {
        return Ok(());
    }
    // Refused before any stage starts, not as a failed `services` stage after the build
    // has begun.
    crate::pool::check_clients(config.services.iter().map(|(name, s)| (name.as_str(), s.kind)))?;
    // The services stage's output goes to its log: the run's own output says it too.
    // A backend asked for wrongly fails that stage with one line.
    if let Ok(choice) = crate::pool::requested_backend() {
        for warning in &choice.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let exe = std::env::current_exe().map_err(|source| OptimizeError::CurrentExe { source })?;
    plan.run_services_as(
        &exe.to_string_lossy(),
        [
            (crate::pool::SERVICES_UP_ENV, manifest.to_string()),
            (crate::pool::SERVICES_OWNER_ENV, std::process::id().to_string()),
        ],
    );
    Ok(())
}

/// Runs `plan` as it is (no stage cache, no reports, no history): what `flamegraph`
/// needs to run one test under the same environment, shim and jobserver as `optimize`,
/// so that nothing compiles again.
pub(crate) fn run_plan_once(
    inputs: &Inputs,
    options: &OptimizeOptions,
    plan: &Plan,
    command: &str,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunRecord, OptimizeError> {
    let run_id = options.run_id.clone().unwrap_or_else(crate::orchestrator::new_run_id);
    let targets = PerformanceTargets::from_config(&inputs.config.targets);
    start_signal_handling(options);
    run_plan_skipping(inputs, options, plan, &BTreeMap::new(), &run_id, command, targets, on_event)
}

/// Runs `plan` without the stages in `cached` (stage id → the run it is cached from),
/// which are reported as cached and count as succeeded for their dependents.
#[allow(clippy::too_many_arguments)]
fn run_plan_skipping(
    inputs: &Inputs,
    options: &OptimizeOptions,
    plan: &Plan,
    cached: &BTreeMap<String, String>,
    run_id: &str,
    command: &str,
    targets: PerformanceTargets,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunRecord, OptimizeError> {
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let mut orch_options = orchestrator_options(options, &state_dir, run_id)?;
    // cargo takes the run's jobserver in place of its own `-j`: the user's jobs bound it.
    orch_options.build_jobs =
        crate::test_settings::user_build_jobs(&inputs.workspace.root, orch_options.cpus)
            .map(|(jobs, _)| jobs);
    orch_options.test_settings = test_settings(inputs, plan)?;
    let settings = orch_options.test_settings.settings.clone();
    let cores = orch_options.cpus;
    // Started before the first stage and outside the run's marker and jobserver; stopped
    // when it drops, after its statistics are read.
    let compile_cache = match &inputs.config.compile_cache {
        Some(url) if !plan.stages.is_empty() => Some(CompileCache::start(url)?),
        _ => None,
    };
    if let Some(cache) = &compile_cache {
        orch_options.compile_cache = Some(crate::orchestrator::CompileCacheWrapper {
            wrapper: cache.sccache.clone(),
            env: cache.env(),
        });
    }
    let orch = ParallelOrchestrator::new(orch_options);
    let mut profiler = PipelineProfiler::new();
    let mut to_run = plan.clone();
    crate::cache::maintain::claim_plan_dirs(plan, &state_dir, &inputs.workspace.target_dir)?;
    services_as_this_binary(&mut to_run, &inputs.workspace.manifest_path, &inputs.config)?;
    to_run.skip_cached(cached);
    for s in plan.stages.iter().filter(|s| cached.contains_key(&s.id)) {
        let status = StageStatus::Cached { from_run: cached[&s.id].clone() };
        let ev = Event::StageFinished(s.not_run(status));
        profiler.observe(&ev);
        on_event(&ev);
    }
    let summary = if to_run.stages.is_empty() && !plan.stages.is_empty() {
        // Everything was served from the cache: nothing to start, wait for or reap. An
        // interrupt that came during start-up or fingerprinting still ends it as one.
        let signal = interrupt_signal(options);
        let summary = crate::orchestrator::RunSummary {
            outcome: if signal.is_some() { RunOutcome::Interrupted } else { RunOutcome::Succeeded },
            total: Duration::ZERO,
            signal,
            stages: Vec::new(),
            killed_survivors: 0,
            started_at: std::time::SystemTime::now(),
        };
        let ev = Event::RunFinished { outcome: summary.outcome, total: summary.total };
        profiler.observe(&ev);
        on_event(&ev);
        summary
    } else {
        orch.run(&to_run, &mut |ev| {
            profiler.observe(ev);
            on_event(ev);
        })?
    };
    let mut record = profiler.into_record(RunContext {
        run_id: run_id.to_string(),
        started_at: summary.started_at,
        workspace_root: inputs.workspace.root.clone(),
        command: command.to_string(),
        plan: plan.clone(),
        cores,
        targets,
    });
    record.test_settings = settings;
    if let Some(cache) = compile_cache {
        match cache.stats() {
            Ok(stats) => record.compile_cache = Some(stats),
            Err(err) => {
                record.notes.push(format!("the compile cache's statistics are missing: {err}"))
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    record.notes.push(
        "not on Linux: orphans of the stages are not adopted, processes outside the stages' groups are not swept at the end, and no CPU samples are taken (README: Platforms)".into(),
    );
    if let Some(sig) = summary.signal {
        record.notes.push(format!("interrupted by signal {sig}; running stages were stopped"));
    }
    if summary.killed_survivors > 0 {
        record.notes.push(format!(
            "{} process(es) still carried the run's marker at the end and were stopped",
            summary.killed_survivors
        ));
    }
    Ok(record)
}

/// With `handle_signals`, installs the handlers for this run (a no-op when the command
/// installed them first thing, see
/// [`crate::process::install_signal_handlers_for_command`]), which also forgets a
/// signal left over from an earlier run in the same process: the all-cached path and
/// [`report_and_decide`] read it.
fn start_signal_handling(options: &OptimizeOptions) {
    if options.handle_signals {
        crate::process::install_signal_handlers();
    }
}

/// The signal (or a cancelled token, as SIGINT) that asked this run to stop, outside the
/// orchestrator, which watches for them itself while it runs.
fn interrupt_signal(options: &OptimizeOptions) -> Option<i32> {
    let sig = if options.handle_signals { crate::process::received_signal() } else { None };
    sig.or_else(|| options.cancel.is_cancelled().then_some(crate::process::SIGINT))
}

fn orchestrator_options(
    options: &OptimizeOptions,
    state_dir: &StateDir,
    run_id: &str,
) -> Result<OrchestratorOptions, OptimizeError> {
    let mut o = OrchestratorOptions::new(state_dir.clone(), run_id.to_string());
    if let Some(j) = options.jobs {
        o.jobs = j.max(1);
    }
    if let Some(c) = options.cpus {
        o.cpus = c.max(1);
    }
    o.keep_going = options.keep_going;
    // Which ready stage starts first follows the durations of earlier runs; a history
    // that cannot be read only loses that hint here (writing the report names it).
    let history = state_dir.report(crate::report::HISTORY_FILE);
    if let Ok(h) = crate::report::history::read(&history) {
        o.expected = h.expected_walls();
        let (aside, lines): (Vec<_>, Vec<_>) =
            h.warnings.iter().partition(|w| w.starts_with("set aside"));
        for w in aside {
            eprintln!("warning: {w}");
        }
        // Lines torn by a crash or edited by hand: one line for all of them.
        if let Some(first) = lines.first() {
            eprintln!(
                "warning: skipped {} unreadable line(s) of the run history {history} ({first}); they are dropped when this run is added",
                lines.len()
            );
        }
    }
    o.handle_signals = options.handle_signals;
    o.subreaper = options.subreaper;
    o.cancel = options.cancel.clone();
    if let Some(g) = options.grace {
        o.grace = g;
    }
    if options.rustc_shim {
        let shim = crate::rustc_shim::install_rustc_shim(state_dir)
            .map_err(|source| OptimizeError::Shim { dir: state_dir.bin(), source })?;
        o.rustc_shim = Some(shim);
    }
    Ok(o)
}

/// The test settings of `plan`'s test stages: which runners it starts decides which
/// settings matter.
fn test_settings(
    inputs: &Inputs,
    plan: &Plan,
) -> Result<crate::test_settings::TestSettings, OptimizeError> {
    Ok(crate::test_settings::TestSettings::resolve(
        &inputs.workspace.root,
        plan.runs(TestRunnerCommand::Nextest),
        plan.runs(TestRunnerCommand::CargoTest),
    )?)
}

/// The test settings the planner takes from the user's nextest config: `retries` flaky
/// retries unless the user set nextest's own, and their fail-fast.
fn apply_test_settings(
    inputs: &Inputs,
    plan: &mut Plan,
    retries: u32,
    state_dir: &StateDir,
) -> Result<(), OptimizeError> {
    let settings = test_settings(inputs, plan)?;
    let retries = if settings.nextest_retries_set { 0 } else { retries };
    if plan.tests_with_nextest() {
        plan.configure_nextest(&NextestToolConfig::in_state_dir(state_dir, retries));
    }
    if settings.nextest_fail_fast_set {
        plan.keep_nextest_fail_fast();
    }
    Ok(())
}

/// Writes the nextest tool config that the plan's test stage names, if any: planning
/// (also for `cargo xtask plan`) only names it.
fn write_nextest_tool_config(plan: &Plan) -> Result<(), OptimizeError> {
    let Some(tool_config) = plan.nextest_tool_config() else { return Ok(()) };
    let path = &tool_config.config;
    let Some(state_dir) = path.parent().map(StateDir::new) else { return Ok(()) };
    let text = tool_config.config_text();
    if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        // Renamed into place: a concurrent run's nextest never reads half a file.
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&state_dir)?;
            let tmp = state_dir.nextest_tool_config_tmp();
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, path)
        };
        // Something else in its place (a directory): set it aside and write it again.
        if let Err(first) = write() {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
                && let Ok(aside) = crate::cache::store::set_aside(path)
            {
                eprintln!(
                    "warning: set aside {path}, which was in the way of nextest's tool config, as {aside} ({first})"
                );
            }
            write()
                .map_err(|source| OptimizeError::ToolConfig { path: path.to_owned(), source })?;
        }
    }
    Ok(())
}

/// The plan again, building from nothing under `dir`.
fn fresh_plan(
    inputs: &Inputs,
    options: &OptimizeOptions,
    dir: &Utf8Path,
) -> Result<Plan, OptimizeError> {
    let mut inputs = inputs.clone();
    inputs.config.cache.dir = Some(dir.join("state"));
    let mut plan_options = inputs.plan_options(options.cargo.clone(), options.strict);
    plan_options.target_dir = Some(dir.join("target"));
    Ok(crate::plan::plan(&inputs.workspace, &inputs.config, &plan_options)?)
}

fn run_naive(
    inputs: &Inputs,
    options: &OptimizeOptions,
    ours: &Plan,
    run_id: &str,
    fresh_root: &Utf8Path,
    optimized_total: Duration,
    on_event: &mut dyn FnMut(&Event),
) -> Result<NaiveComparison, OptimizeError> {
    let target_dir = fresh_root.join("naive").join("target");
    let plan = crate::plan::naive(&inputs.workspace, &inputs.config, &options.cargo, &target_dir);
    let mut naive_options = options.clone();
    naive_options.rustc_shim = false;
    naive_options.keep_going = false;
    let naive_id = format!("{run_id}-naive");
    let record = run_plan(
        inputs,
        &naive_options,
        &plan,
        &naive_id,
        "naive sequence",
        PerformanceTargets::default(),
        on_event,
    )?;
    let ours_proves: Vec<Proof> = ours.stages.iter().flat_map(|s| s.proves.clone()).collect();
    // The naive doctests prove nothing where there is no library, nor its
    // `bench --no-run` where every bench target needs nightly (it cannot succeed on
    // this toolchain); the plan says so in `dropped`. Without bench targets at all,
    // `bench --no-run` still compiles the libraries' unit tests in the bench profile.
    let not_applicable = |p: &Proof| {
        (*p == Proof::DoctestsPass && ours.dropped_for("doctest", &DropReason::NoDoctests))
            || (*p == Proof::BenchNoRun
                && ours.dropped_for("bench-build", &DropReason::BenchesNeedNightly))
    };
    let naive_proves: Vec<Proof> = plan.stages.iter().flat_map(|s| s.proves.clone()).collect();
    let only_naive_proves = naive_proves
        .iter()
        .filter(|p| !ours_proves.contains(p) && !not_applicable(p))
        .map(Proof::to_string)
        .collect();
    let only_optimized_proves = ours_proves
        .iter()
        .filter(|p| !naive_proves.contains(p) && **p != Proof::TestBinariesCompile)
        .map(Proof::to_string)
        .collect();
    let naive_total = record.total;
    let ratio = if naive_total.is_zero() {
        f64::NAN
    } else {
        optimized_total.as_secs_f64() / naive_total.as_secs_f64()
    };
    Ok(NaiveComparison {
        naive_total,
        optimized_total,
        ratio,
        naive_outcome: record.outcome,
        naive_stages: record.stages,
        only_naive_proves,
        only_optimized_proves,
        method: format!(
            "optimized side first, then the naive sequence, each from its own fresh target directory under {fresh_root} (deleted afterwards); the cargo registry and the OS page cache are shared, which favours the second (naive) side"
        ),
    })
}

fn command_line(name: &str, o: &OptimizeOptions) -> String {
    let mut c = format!("cargo xtask {name}");
    if let Some(m) = &o.manifest_path {
        c.push_str(&format!(" --manifest-path {m}"));
    }
    if o.against_naive {
        c.push_str(" --against-naive");
    }
    if o.strict {
        c.push_str(" --strict");
    }
    if o.keep_going {
        c.push_str(" --keep-going");
    }
    c
}

/// Whether any stage of the record is in a state that names a failure.
pub fn failed_stages(record: &RunRecord) -> Vec<&str> {
    record
        .stages
        .iter()
        .filter(|s| matches!(s.status, StageStatus::Failed | StageStatus::TimedOut))
        .map(|s| s.id.as_str())
        .collect()
}
