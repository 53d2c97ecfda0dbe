//! `ParallelOrchestrator`: runs a plan's stage DAG under a concurrency limit, orders the
//! stages that share a build directory, splits the cores among CPU-heavy stages, and
//! cancels the whole process tree (grandchildren included) on Ctrl-C, SIGTERM, a failure
//! or a timeout. It only emits [`Event`]s; profiling and reporting consume them.
//!
//! Linux first: process groups, `PR_SET_CHILD_SUBREAPER`, `/proc`, and a watchdog
//! process per run ([`watchdog`]) for when the orchestrator itself is killed.

mod watchdog;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};

use crate::plan::{LockUse, Plan, Stage};
use crate::process::{self, Reaped, SIGINT, SIGKILL, SIGTERM};
use crate::record::{Event, RunOutcome, StageMetrics, StageStatus, strip_ansi};
use crate::state::StateDir;

/// How many lines of output a stage keeps in memory for reports.
const TAIL_LINES: usize = 40;
/// How long a finished stage's output pipe may stay open (held by a process the stage
/// left running) before the stage is reported anyway.
const DRAIN_WAIT: Duration = Duration::from_millis(300);
/// How often the rustc shim logs of running stages are read for the live view.
const RUSTC_LOG_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct OrchestratorOptions {
    /// Most stages running at once (default: twice the cores).
    pub jobs: usize,
    /// Cores shared among CPU-heavy stages (see [`ParallelOrchestrator`]).
    pub cpus: usize,
    /// The jobs the user gave cargo (`CARGO_BUILD_JOBS`, `build.jobs`): the run's
    /// jobserver, which cargo takes in place of its own, hands out no more tokens, and
    /// the tool sets no `CARGO_BUILD_JOBS` of its own. `None`: one token per core.
    pub build_jobs: Option<usize>,
    /// Run every stage that can still run after a failure.
    pub keep_going: bool,
    /// Logs go to `<state_dir>/logs/<run_id>/<stage>.log`.
    pub state_dir: StateDir,
    pub run_id: String,
    /// Between the polite signal and SIGKILL.
    pub grace: Duration,
    /// Install SIGINT/SIGTERM handlers for the run (the xtask does; an embedding
    /// program with its own handling uses [`CancelToken`] instead).
    pub handle_signals: bool,
    /// Become a child subreaper, so that processes whose parent died are reparented to
    /// us instead of init and can still be found and reaped (process-wide: only for a
    /// program that owns its process, like the xtask).
    pub subreaper: bool,
    /// A `RUSTC_WRAPPER` that records each rustc invocation
    /// ([`crate::rustc_shim::run_rustc_shim_if_requested`]); cargo stages get it.
    pub rustc_shim: Option<Utf8PathBuf>,
    /// The shared compile cache: the wrapper rustc runs under (sccache), chained by the
    /// shim so that `RUSTC_WRAPPER` stays what cargo's fingerprints saw, and the
    /// variables that point it at the run's server; cargo stages get both.
    pub compile_cache: Option<CompileCacheWrapper>,
    pub cancel: CancelToken,
    /// How long stages are expected to take, by stage id (the run history gives these
    /// to `cargo xtask optimize`). Of the stages ready at once, the one heading the
    /// longest expected chain to the end of the run starts first; without expectations
    /// the one with the most levels of dependants below it does.
    pub expected: BTreeMap<String, Duration>,
    /// The test threads the user fixed (environment, nextest config), which the cores'
    /// shares never override. Default: the environment only.
    pub test_settings: crate::test_settings::TestSettings,
}

/// What a cargo stage needs to compile through the shared compile cache.
#[derive(Debug, Clone)]
pub struct CompileCacheWrapper {
    pub wrapper: Utf8PathBuf,
    pub env: Vec<(String, String)>,
}

impl OrchestratorOptions {
    pub fn new(state_dir: impl Into<StateDir>, run_id: String) -> OrchestratorOptions {
        let cores = available_cores();
        OrchestratorOptions {
            // Cores are budgeted separately (the shares of CPU-heavy stages), so the
            // stage limit only bounds processes and memory: twice the cores lets a
            // doctest start beside a nextest run whose compile is over while a bench
            // check still runs.
            jobs: cores * 2,
            cpus: cores,
            keep_going: false,
            state_dir: state_dir.into(),
            run_id,
            grace: Duration::from_secs(5),
            handle_signals: false,
            subreaper: false,
            rustc_shim: None,
            compile_cache: None,
            cancel: CancelToken::default(),
            expected: BTreeMap::new(),
            test_settings: crate::test_settings::TestSettings::from_env(),
            build_jobs: None,
        }
    }

    /// Whether the user fixed `var` for the stages, so the tool must not set it.
    fn user_sets(&self, var: &str) -> bool {
        match var {
            "NEXTEST_TEST_THREADS" => self.test_settings.nextest_threads_set,
            "RUST_TEST_THREADS" => self.test_settings.libtest_threads_set,
            "CARGO_BUILD_JOBS" => self.build_jobs.is_some(),
            _ => false,
        }
    }
}

pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A fresh run id: UTC time plus our pid, readable and unique on one machine.
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{compact}-{}-{:04x}", std::process::id(), nanos & 0xffff)
}

/// Lets another thread stop a run as if Ctrl-C had been pressed.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "could not create the log directory {path}: {source}; check that the state directory is writable"
    )]
    LogDir {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stage `{stage}` depends on `{dep}`, which is not in the plan")]
    UnknownDependency { stage: String, dep: String },
}

/// How a run ended, as the orchestrator saw it. Per-stage numbers travel in events.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub outcome: RunOutcome,
    pub total: Duration,
    /// The signal that interrupted the run, if any.
    pub signal: Option<i32>,
    pub stages: Vec<StageMetrics>,
    /// Processes that still carried the run's marker at the end and were killed.
    pub killed_survivors: usize,
    pub started_at: SystemTime,
}

/// Runs a [`Plan`]: `ParallelOrchestrator::new(options).run(&plan, &mut |ev| ...)`.
///
/// Scheduling: a stage starts once all its dependencies succeeded, at most `jobs` at a
/// time, ready stages with the longest chain of dependants first. A stage with a build
/// directory does not start while another running stage holds that directory's lock
/// (an `Exclusive` stage for its whole run; a `Brief` one, nextest, until it prints
/// `Starting`, i.e. after its `cargo test --no-run` released the lock): they are
/// ordered instead of blocking on cargo's file lock.
///
/// Cores: each CPU-heavy stage takes a share of `cpus` when it starts and passes it as
/// `CARGO_BUILD_JOBS`, `NEXTEST_TEST_THREADS` and `RUST_TEST_THREADS` (the test threads
/// only where the user left them unset: [`OrchestratorOptions::test_settings`]); a heavy stage
/// waits while no core is free. The free cores go to the ready heavy stages of the
/// highest priority, split evenly: `build` (which gates the tests) gets every core
/// rather than half of them beside `bench-build`, which runs when cores free up. A static split rather than one shared jobserver:
/// nextest and libtest ignore the jobserver for test threads, every cargo holds an
/// implicit token of its own, and a fixed `-j` per stage gives a cap we can assert
/// (the sum of the shares never exceeds `cpus`). The cost: a stage keeps its share
/// when a sibling finishes early.
#[derive(Debug)]
pub struct ParallelOrchestrator {
    options: OrchestratorOptions,
}

enum Msg {
    Line { idx: usize, line: String },
    ReaderDone { idx: usize },
    Exited { idx: usize, reaped: Reaped },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    TimedOut,
    Cancelled,
}

struct Running {
    pid: i32,
    started: Instant,
    share: usize,
    deadline: Option<Instant>,
    /// Holds its build directory's lock (a `Brief` stage drops it once it says `Starting`).
    holds_lock: bool,
    stop: Option<(Why, Instant)>,
    killed: bool,
    exited: Option<(Reaped, Instant)>,
    reader_done: bool,
    tail: VecDeque<String>,
    tests: TestOutcomes,
    /// The stage's rustc shim log, read as it grows (cargo stages given the shim).
    rustc_log: Option<crate::rustc_shim::RustcLogTail>,
    /// Holds the run's jobserver token that stands for this cargo process's own
    /// implicit one; given back when the process exits.
    token: bool,
}

enum State {
    Pending,
    Running(Box<Running>),
    Done,
}

impl ParallelOrchestrator {
    pub fn new(options: OrchestratorOptions) -> ParallelOrchestrator {
        ParallelOrchestrator { options }
    }

    pub fn options(&self) -> &OrchestratorOptions {
        &self.options
    }

    /// The directory that holds this run's stage logs.
    pub fn log_dir(&self) -> Utf8PathBuf {
        self.options.state_dir.logs(&self.options.run_id)
    }

    /// Runs every stage of `plan` that can run, emitting events to `on_event`; returns
    /// when every stage finished, was skipped or was cancelled, and no process carrying
    /// the run's marker is left.
    pub fn run(
        &self,
        plan: &Plan,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<RunSummary, RunError> {
        let opts = &self.options;
        let index: BTreeMap<&str, usize> =
            plan.stages.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        for s in &plan.stages {
            for d in &s.depends_on {
                if !index.contains_key(d.as_str()) {
                    return Err(RunError::UnknownDependency {
                        stage: s.id.clone(),
                        dep: d.clone(),
                    });
                }
            }
        }
        let log_dir = self.log_dir();
        std::fs::create_dir_all(&log_dir)
            .map_err(|source| RunError::LogDir { path: log_dir.clone(), source })?;
        on_event(&Event::RunStarted {
            run_id: opts.run_id.clone(),
            cores: available_cores(),
            stages: plan.stages.iter().map(|s| s.id.clone()).collect(),
        });
        // Build directories exist before any stage starts. A cargo that finds its target
        // directory missing creates it atomically (a temporary directory renamed into
        // place), and a second cargo creating a directory nested in it at that moment
        // fails with "failed to create directory" (seen with `bench-build`'s directory
        // under `target/` and `build` starting within milliseconds of each other).
        for dir in plan.stages.iter().filter_map(|s| s.build_dir.as_ref()) {
            let _ = std::fs::create_dir_all(dir);
        }
        if opts.handle_signals {
            process::install_signal_handlers();
        }
        if opts.subreaper {
            process::become_subreaper();
        }
        let n = plan.stages.len();
        // Each stage's dependencies by position, looked up once rather than by name on
        // every turn of the loop.
        let deps: Vec<Vec<usize>> = plan
            .stages
            .iter()
            .map(|s| s.depends_on.iter().map(|d| index[d.as_str()]).collect())
            .collect();
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                dependants[j].push(i);
            }
        }
        // Levels of dependants below each stage, itself included.
        let priority = longest_chains(&dependants, &vec![1usize; n]);
        // Expected time from each stage's start to the end of the run.
        let own: Vec<Duration> = plan
            .stages
            .iter()
            .map(|s| opts.expected.get(&s.id).copied().unwrap_or_default())
            .collect();
        let expected_chain = longest_chains(&dependants, &own);
        let sh = xshell::Shell::new().ok();
        // One jobserver for every cargo stage of the run, with a token per core: a cargo
        // process takes a token to start (its implicit one) and further tokens for
        // parallel rustc jobs, so cores that one stage leaves idle (a doctest that has
        // finished, a build's serial tail) go to another stage's jobs at once instead
        // of waiting for it to end, and the run never has more compiles than cores.
        let tokens = opts.build_jobs.map_or(opts.cpus, |j| j.min(opts.cpus));
        let jobserver = RunJobserver::create(&self.log_dir(), tokens.max(1)).ok();
        // Stops the stages if we are killed before we can (best effort: a run without
        // one still cleans up on every exit it gets to handle).
        let leftovers: Vec<&std::path::Path> =
            jobserver.iter().flat_map(|j| j.paths()).map(|p| p.as_std_path()).collect();
        let watchdog = watchdog::Watchdog::start(n, opts.grace, &leftovers, &opts.run_id).ok();
        let start = Instant::now();
        let started_at = SystemTime::now();
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut states: Vec<State> = (0..n).map(|_| State::Pending).collect();
        let mut results: Vec<Option<StageMetrics>> = vec![None; n];
        let mut failed_first: Option<String> = None;
        let mut interrupted: Option<i32> = None;
        let mut cpu = crate::cpu_sampler::CpuSampler::new();
        let mut next_sample = start + crate::cpu_sampler::CPU_SAMPLE_INTERVAL;
        let mut next_rustc_poll = start;
        let runs = process::run_markers(&opts.run_id);

        loop {
            // 0. CPU utilisation, on the loop's own clock: it wakes at least every 50 ms.
            if let Some(sampler) = &mut cpu
                && Instant::now() >= next_sample
            {
                if let Some(sample) = sampler.sample(start.elapsed()) {
                    on_event(&Event::CpuSampled(sample));
                }
                next_sample = Instant::now() + crate::cpu_sampler::CPU_SAMPLE_INTERVAL;
            }
            // 0b. As a subreaper, reap the orphans the stages' processes left behind.
            if opts.subreaper {
                let mut ours: Vec<i32> = states
                    .iter()
                    .filter_map(|s| match s {
                        State::Running(r) => Some(r.pid),
                        _ => None,
                    })
                    .collect();
                ours.extend(watchdog.as_ref().map(|w| w.pid()));
                process::reap_adopted(&ours);
            }

            // 1. Interrupts.
            let sig = if opts.handle_signals { process::received_signal() } else { None };
            if interrupted.is_none() && (sig.is_some() || opts.cancel.is_cancelled()) {
                let sig = sig.unwrap_or(SIGINT);
                interrupted = Some(sig);
                for st in states.iter_mut() {
                    if let State::Running(r) = st
                        && r.stop.is_none()
                    {
                        r.stop = Some((Why::Cancelled, Instant::now()));
                        signal_stage(r.pid, &opts.run_id, None, sig);
                    }
                }
            }
            if opts.handle_signals && process::signal_count() > 1 {
                // A second Ctrl-C: no more patience.
                for (i, st) in states.iter_mut().enumerate() {
                    if let State::Running(r) = st
                        && !r.killed
                    {
                        r.killed = true;
                        signal_stage(r.pid, &opts.run_id, Some(&plan.stages[i].id), SIGKILL);
                    }
                }
            }

            // 2. Skip what can no longer run.
            for i in 0..n {
                if !matches!(states[i], State::Pending) {
                    continue;
                }
                let reason = if interrupted.is_some() {
                    Some("not started: the run was interrupted".to_string())
                } else if let (Some(f), false) = (&failed_first, opts.keep_going) {
                    Some(format!(
                        "not started: stage `{f}` failed (fail-fast; --keep-going runs what can still run)"
                    ))
                } else {
                    deps[i].iter().find_map(|&j| match &results[j] {
                        Some(m) if !succeeded(&m.status) => {
                            Some(format!("dependency `{}` did not succeed", plan.stages[j].id))
                        }
                        _ => None,
                    })
                };
                if let Some(reason) = reason {
                    let m = skipped_metrics(&plan.stages[i], reason);
                    on_event(&Event::StageFinished(m.clone()));
                    results[i] = Some(m);
                    states[i] = State::Done;
                }
            }

            // 3. Start what is ready, most dependants first.
            if interrupted.is_none() && (failed_first.is_none() || opts.keep_going) {
                let mut ready: Vec<usize> = (0..n)
                    .filter(|&i| matches!(states[i], State::Pending))
                    .filter(|&i| deps[i].iter().all(|&j| dependency_met(j, &results, &states)))
                    .collect();
                ready.sort_by_key(|&i| {
                    (std::cmp::Reverse(expected_chain[i]), std::cmp::Reverse(priority[i]), i)
                });
                let mut running = states.iter().filter(|s| matches!(s, State::Running(_))).count();
                let mut batch: Vec<(usize, Duration, bool)> = Vec::new();
                for i in ready {
                    if running >= opts.jobs.max(1) {
                        break;
                    }
                    let stage = &plan.stages[i];
                    if let Some(dir) = &stage.build_dir {
                        let locked = states.iter().enumerate().any(|(j, s)| match s {
                            State::Running(r) => {
                                r.holds_lock && plan.stages[j].build_dir.as_ref() == Some(dir)
                            }
                            _ => false,
                        });
                        if locked {
                            continue;
                        }
                    }
                    let share = if stage.cpu_heavy {
                        let taken: usize = states
                            .iter()
                            .filter_map(|s| match s {
                                State::Running(r) => Some(r.share),
                                _ => None,
                            })
                            .sum();
                        let free = opts.cpus.max(1).saturating_sub(taken);
                        if free == 0 {
                            continue;
                        }
                        // Leave a core for each other heavy stage of the same priority
                        // that is ready now; lower priorities wait for free cores.
                        let heavy_waiting = (0..n)
                            .filter(|&j| j != i && matches!(states[j], State::Pending))
                            .filter(|&j| plan.stages[j].cpu_heavy && priority[j] == priority[i])
                            .filter(|&j| {
                                deps[j].iter().all(|&k| dependency_met(k, &results, &states))
                                    && !lock_conflict(plan, &states, j, i)
                            })
                            .count();
                        (free / (heavy_waiting + 1).min(free)).max(1)
                    } else {
                        0
                    };
                    let uses_jobserver = stage.cpu_heavy && stage.command.is_cargo();
                    let token = match (&jobserver, uses_jobserver) {
                        (Some(js), true) => {
                            let held =
                                states.iter().any(|s| matches!(s, State::Running(r) if r.token));
                            if !js.try_acquire() {
                                // Every core is compiling: start when a token comes
                                // back. With no stage of ours holding one, tokens went
                                // with a killed process: start rather than wait forever.
                                if held {
                                    continue;
                                }
                                false
                            } else {
                                true
                            }
                        }
                        _ => false,
                    };
                    let at = start.elapsed();
                    on_event(&Event::StageStarted { id: stage.id.clone(), at });
                    // Counted as running from here, so that the next decisions of this
                    // turn see its share, token and lock; the pid comes with the spawn.
                    running += 1;
                    batch.push((i, at, uses_jobserver));
                    states[i] = State::Running(Box::new(Running {
                        pid: 0,
                        started: Instant::now(),
                        share,
                        deadline: None,
                        holds_lock: stage.build_dir.is_some(),
                        stop: None,
                        killed: false,
                        exited: None,
                        reader_done: false,
                        tail: VecDeque::new(),
                        tests: TestOutcomes::in_dir(&stage.command.cwd),
                        rustc_log: self.uses_shim(stage).then(|| {
                            crate::rustc_shim::RustcLogTail::new(
                                rustc_log_path(&log_dir, &stage.id),
                                &stage.id,
                                started_at,
                            )
                        }),
                        token,
                    }));
                }
                // Stages that became ready together start together: a spawn waits for
                // the child's exec, and one after another the last of them would wait
                // for all the others' (one thread each beyond the first).
                let spawn_one = |&(i, _, uses_jobserver): &(usize, Duration, bool),
                                 sh: Option<xshell::Shell>| {
                    let stage = &plan.stages[i];
                    let share = match &states[i] {
                        State::Running(r) => r.share,
                        _ => 0,
                    };
                    let log_path = log_dir.join(format!("{}.log", stage.id));
                    self.spawn(
                        stage,
                        i,
                        share,
                        &runs,
                        &log_path,
                        sh.as_ref(),
                        jobserver.as_ref().filter(|_| uses_jobserver),
                        &tx,
                    )
                };
                let spawned: Vec<std::io::Result<i32>> = match batch.as_slice() {
                    [] => Vec::new(),
                    [one] => vec![spawn_one(one, sh.clone())],
                    [first, rest @ ..] => std::thread::scope(|scope| {
                        let others: Vec<_> = rest
                            .iter()
                            .map(|b| {
                                let sh = sh.clone();
                                scope.spawn(move || spawn_one(b, sh))
                            })
                            .collect();
                        let mut all = vec![spawn_one(first, sh.clone())];
                        all.extend(others.into_iter().map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(std::io::Error::other("the spawning thread panicked"))
                            })
                        }));
                        all
                    }),
                };
                for ((i, at, _), result) in batch.drain(..).zip(spawned) {
                    let stage = &plan.stages[i];
                    match result {
                        Ok(pid) => {
                            if let Some(w) = &watchdog {
                                w.started(pid);
                            }
                            if let State::Running(r) = &mut states[i] {
                                r.pid = pid;
                                r.started = Instant::now();
                                r.deadline = stage.timeout.and_then(|t| r.started.checked_add(t));
                            }
                        }
                        Err(e) => {
                            let State::Running(r) = std::mem::replace(&mut states[i], State::Done)
                            else {
                                unreachable!("started this turn")
                            };
                            if r.token
                                && let Some(js) = &jobserver
                            {
                                js.release();
                            }
                            let mut m = skipped_metrics(stage, String::new());
                            m.status = StageStatus::Failed;
                            m.start = at;
                            let why = format!("could not start `{}`: {e}", stage.command.display());
                            // The log the run names says why, as a stage's own output would.
                            let log = log_dir.join(format!("{}.log", stage.id));
                            let _ = std::fs::write(&log, format!("pipeline-opt: {why}\n"));
                            m.tail = vec![why];
                            m.log_path = Some(log);
                            if failed_first.is_none() {
                                failed_first = Some(stage.id.clone());
                            }
                            on_event(&Event::StageFinished(m.clone()));
                            results[i] = Some(m);
                        }
                    }
                }
            }

            if states.iter().all(|s| matches!(s, State::Done)) {
                break;
            }

            // 4. Wait for something to happen.
            let now = Instant::now();
            let mut wake = now + Duration::from_millis(50);
            for st in &states {
                if let State::Running(r) = st {
                    if let Some(d) = r.deadline {
                        wake = wake.min(d);
                    }
                    if let Some((_, at)) = r.stop {
                        wake = wake.min(at + opts.grace);
                    }
                    if let Some((_, at)) = r.exited {
                        wake = wake.min(at + DRAIN_WAIT);
                    }
                }
            }
            let mut msgs = Vec::new();
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(m) => msgs.push(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            }
            msgs.extend(rx.try_iter());
            for msg in msgs {
                match msg {
                    Msg::Line { idx, line } => {
                        if let State::Running(r) = &mut states[idx] {
                            if plan.stages[idx].lock == LockUse::Brief
                                && line.trim_start().starts_with("Starting ")
                            {
                                // nextest's build is over: the lock is free, and so are
                                // the cores its compile took (the tests themselves run
                                // with NEXTEST_TEST_THREADS and are rarely CPU-bound).
                                r.holds_lock = false;
                                r.share = 0;
                                if std::mem::take(&mut r.token)
                                    && let Some(js) = &jobserver
                                {
                                    js.release();
                                }
                            }
                            if let Some((name, duration, passed)) = r.tests.observe(&line) {
                                on_event(&Event::TestFinished(crate::record::TestTiming {
                                    stage: plan.stages[idx].id.clone(),
                                    name,
                                    duration,
                                    passed,
                                }));
                            }
                            if r.tail.len() == TAIL_LINES {
                                r.tail.pop_front();
                            }
                            r.tail.push_back(line.clone());
                        }
                        on_event(&Event::StageOutput { id: plan.stages[idx].id.clone(), line });
                    }
                    Msg::ReaderDone { idx } => {
                        if let State::Running(r) = &mut states[idx] {
                            r.reader_done = true;
                        }
                    }
                    Msg::Exited { idx, reaped } => {
                        if let State::Running(r) = &mut states[idx] {
                            r.exited = Some((reaped, Instant::now()));
                            r.holds_lock = false;
                            if std::mem::take(&mut r.token)
                                && let Some(js) = &jobserver
                            {
                                js.release();
                            }
                        }
                    }
                }
            }

            // 5. Timeouts, grace periods, finished stages.
            let now = Instant::now();
            // Compile units as they finish, for the live view: a tenth of a second is
            // current enough, and spares the loop a file read per stage per message.
            let poll_rustc_logs = now >= next_rustc_poll;
            if poll_rustc_logs {
                next_rustc_poll = now + RUSTC_LOG_POLL;
            }
            for i in 0..n {
                let State::Running(r) = &mut states[i] else { continue };
                let stage = &plan.stages[i];
                if poll_rustc_logs && let Some(log) = &mut r.rustc_log {
                    for ev in log.read_events() {
                        on_event(&ev);
                    }
                }
                if r.exited.is_none() {
                    if r.stop.is_none() && r.deadline.is_some_and(|d| now >= d) {
                        r.stop = Some((Why::TimedOut, now));
                        on_event(&Event::StageOutput {
                            id: stage.id.clone(),
                            line: format!(
                                "pipeline-opt: stage `{}` hit its timeout of {}; stopping it",
                                stage.id,
                                humantime::format_duration(stage.timeout.unwrap_or_default())
                            ),
                        });
                        signal_stage(r.pid, &opts.run_id, Some(&stage.id), SIGTERM);
                    }
                    if let Some((_, at)) = r.stop
                        && !r.killed
                        && now >= at + opts.grace
                    {
                        r.killed = true;
                        signal_stage(r.pid, &opts.run_id, Some(&stage.id), SIGKILL);
                    }
                    continue;
                }
                let (reaped, exited_at) = r.exited.unwrap();
                if !r.reader_done && now < exited_at + DRAIN_WAIT {
                    continue;
                }
                let State::Running(mut r) = std::mem::replace(&mut states[i], State::Done) else {
                    unreachable!()
                };
                if let Some(w) = &watchdog {
                    w.ended(r.pid);
                }
                let m = finish_metrics(stage, &r, &reaped, start, &log_dir);
                if !succeeded(&m.status) && failed_first.is_none() && interrupted.is_none() {
                    failed_first = Some(stage.id.clone());
                    if !opts.keep_going {
                        // Fail fast: stop the rest of the tree too.
                        for st in states.iter_mut() {
                            if let State::Running(o) = st
                                && o.stop.is_none()
                                && o.exited.is_none()
                            {
                                o.stop = Some((Why::Cancelled, Instant::now()));
                                signal_stage(o.pid, &opts.run_id, None, SIGTERM);
                            }
                        }
                    }
                }
                for ev in r.rustc_log.as_mut().map(|l| l.read_events()).unwrap_or_default() {
                    on_event(&ev);
                }
                on_event(&Event::StageFinished(m.clone()));
                results[i] = Some(m);
            }
        }

        // Nothing carrying our marker may outlive the run.
        let killed_survivors =
            process::kill_marked(&opts.run_id, None, opts.grace.min(Duration::from_secs(2)));
        let total = start.elapsed();
        let stages: Vec<StageMetrics> =
            results.into_iter().map(|m| m.expect("every stage done")).collect();
        let outcome = if interrupted.is_some() {
            RunOutcome::Interrupted
        } else if stages.iter().all(|s| succeeded(&s.status)) {
            RunOutcome::Succeeded
        } else {
            RunOutcome::StageFailed
        };
        on_event(&Event::RunFinished { outcome, total });
        Ok(RunSummary { outcome, total, signal: interrupted, stages, killed_survivors, started_at })
    }

    /// Cargo stages run under the rustc shim when the run has one.
    fn uses_shim(&self, stage: &Stage) -> bool {
        self.options.rustc_shim.is_some() && stage.command.is_cargo()
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        stage: &Stage,
        idx: usize,
        share: usize,
        runs: &str,
        log_path: &Utf8Path,
        sh: Option<&xshell::Shell>,
        jobserver: Option<&RunJobserver>,
        tx: &mpsc::Sender<Msg>,
    ) -> std::io::Result<i32> {
        let opts = &self.options;
        let sh = match sh {
            Some(sh) => sh.clone(),
            None => xshell::Shell::new().map_err(std::io::Error::other)?,
        };
        let mut cmd = stage.command.to_command(&sh);
        cmd.env(process::RUN_ID_VAR, &opts.run_id)
            .env(process::RUNS_VAR, runs)
            .env(process::STAGE_VAR, &stage.id);
        if let Some(js) = jobserver {
            // Cargo takes the jobserver it inherits, which sets its parallelism.
            let flags = js.makeflags();
            cmd.env("CARGO_MAKEFLAGS", &flags).env("MAKEFLAGS", &flags).env_remove("MFLAGS");
        }
        if share > 0 {
            let share = share.to_string();
            let vars: &[&str] = if jobserver.is_some() {
                &["NEXTEST_TEST_THREADS", "RUST_TEST_THREADS"]
            } else {
                &["CARGO_BUILD_JOBS", "NEXTEST_TEST_THREADS", "RUST_TEST_THREADS"]
            };
            for var in vars.iter().copied() {
                if !stage.command.env.contains_key(var) && !opts.user_sets(var) {
                    cmd.env(var, &share);
                }
            }
        }
        if stage.lock == LockUse::Brief
            && !stage.command.env.contains_key("NEXTEST_TEST_THREADS")
            && !opts.user_sets("NEXTEST_TEST_THREADS")
        {
            // The share covers nextest's check that the build is fresh; once the tests
            // start, the run gives that share to other stages (see `Starting` below).
            // Test threads fixed at the share of that moment would keep a long suite at
            // one thread for its whole length, so they get every core, as nextest's own
            // default does.
            cmd.env("NEXTEST_TEST_THREADS", opts.cpus.max(1).to_string());
        }
        let cache = opts.compile_cache.as_ref().filter(|_| stage.command.is_cargo());
        if let Some(cache) = cache {
            cmd.envs(cache.env.iter().map(|(k, v)| (k, v)));
            if !self.uses_shim(stage) {
                cmd.env("RUSTC_WRAPPER", &cache.wrapper);
            }
        }
        if let Some(shim) = opts.rustc_shim.as_ref().filter(|_| self.uses_shim(stage)) {
            let existing = stage
                .command
                .env
                .get("RUSTC_WRAPPER")
                .cloned()
                .or_else(|| std::env::var("RUSTC_WRAPPER").ok())
                // An outer run's shim is not the user's wrapper: chaining it would record
                // into the outer run and, chained by itself, never end.
                .filter(|w| !w.is_empty() && !w.ends_with("pipeline-opt-rustc-shim"));
            // The compile cache's sccache takes the chain (`CompileCache::start` refused
            // a different wrapper of the user's).
            let existing = cache.map(|c| c.wrapper.to_string()).or(existing);
            if let Some(existing) = existing {
                cmd.env(crate::rustc_shim::SHIM_CHAIN_VAR, existing);
            }
            cmd.env("RUSTC_WRAPPER", shim)
                .env(crate::rustc_shim::SHIM_LOG_VAR, rustc_log_path(&self.log_dir(), &stage.id))
                .env(crate::rustc_shim::SHIM_OWNER_VAR, std::process::id().to_string());
            // Tells the stage's units from those of a test's own cargo run.
            if let Some(dir) = &stage.build_dir {
                cmd.env(crate::rustc_shim::SHIM_TARGET_DIR_VAR, dir);
            }
        }
        let (read, write) = process::pipe()?;
        let write2 = write.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(write)).stderr(Stdio::from(write2));
        // Its own process group, so that signals reach the whole stage and Ctrl-C in
        // the terminal reaches only us (we forward it deliberately).
        cmd.process_group(0);
        // No `pre_exec` hook: without one `std` starts the stage with `posix_spawn`,
        // which does not copy our page tables as fork does. The run's watchdog, not
        // `PR_SET_PDEATHSIG`, stops the stage if we die.
        let child = cmd.spawn()?;
        drop(cmd); // closes our copies of the pipe's write end
        let pid = child.id() as i32;
        // We reap with wait4 to get the rusage of the stage's tree; `Child` is never
        // waited on, and dropping it neither kills nor waits.
        drop(child);

        let tx_out = tx.clone();
        let log_path = log_path.to_owned();
        std::thread::spawn(move || {
            // Created here rather than before the spawn: off the scheduling loop, while
            // the pipe holds what the stage writes meanwhile. Unbuffered: one write per
            // line, so the log on disk is current while the stage runs (and complete if
            // we are killed).
            let mut log = match File::create(&log_path) {
                Ok(f) => Some(f),
                Err(e) => {
                    let line =
                        format!("pipeline-opt: cannot write the stage's log {log_path}: {e}");
                    let _ = tx_out.send(Msg::Line { idx, line });
                    None
                }
            };
            let mut reader = BufReader::new(File::from(read));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(log) = &mut log {
                            let _ = log.write_all(&buf);
                        }
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        if tx_out.send(Msg::Line { idx, line }).is_err() {
                            // The run is over; keep the log complete anyway.
                            continue;
                        }
                    }
                }
            }
            if let Some(log) = &mut log {
                let _ = log.flush();
            }
            let _ = tx_out.send(Msg::ReaderDone { idx });
        });
        let tx_wait = tx.clone();
        std::thread::spawn(move || {
            let reaped = process::wait_with_rusage(pid).unwrap_or(Reaped::UNKNOWN);
            let _ = tx_wait.send(Msg::Exited { idx, reaped });
        });
        Ok(pid)
    }
}

/// The run's GNU make jobserver, as a named FIFO (`--jobserver-auth=fifo:PATH`) so
/// that we can take tokens without blocking: the flag that makes our reads
/// non-blocking belongs to our own open file, not to the children's, which an
/// anonymous pipe would share with them.
pub(crate) struct RunJobserver {
    path: Utf8PathBuf,
    fifo: File,
    /// The FIFO's private directory, removed with it.
    _dir: tempfile::TempDir,
}

impl RunJobserver {
    /// A FIFO with `tokens` tokens in a fresh private directory under the first of
    /// [`fifo_bases`] that takes one.
    fn create(log_dir: &Utf8Path, tokens: usize) -> std::io::Result<RunJobserver> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut dir = Err(std::io::Error::other(
            "no directory without whitespace in its path for the jobserver FIFO",
        ));
        for base in fifo_bases(log_dir) {
            dir = tempfile::Builder::new().prefix("pipeline-opt-jobserver-").tempdir_in(base);
            if dir.is_ok() {
                break;
            }
        }
        let dir = dir?;
        let path = Utf8PathBuf::from_path_buf(dir.path().join("jobserver.fifo"))
            .map_err(|_| std::io::Error::other("the temp directory is not UTF-8"))?;
        let c_path = std::ffi::CString::new(path.as_str()).map_err(std::io::Error::other)?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Read and write, so that opening never waits for a peer.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)?;
        fifo.write_all(&vec![b'|'; tokens])?;
        Ok(RunJobserver { path, fifo, _dir: dir })
    }

    /// The FIFO and its directory, for the watchdog to remove if we die.
    pub(crate) fn paths(&self) -> [&Utf8Path; 2] {
        [&self.path, self.path.parent().expect("the FIFO is in a directory")]
    }

    fn makeflags(&self) -> String {
        format!("-j --jobserver-auth=fifo:{}", self.path)
    }

    /// Takes a token if one is free.
    fn try_acquire(&self) -> bool {
        use std::io::Read;
        let mut byte = [0u8];
        loop {
            match (&self.fifo).read(&mut byte) {
                Ok(1) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => return false,
            }
        }
    }

    fn release(&self) {
        let _ = (&self.fifo).write_all(b"|");
    }
}

/// Where the jobserver FIFO goes. Its path travels in `CARGO_MAKEFLAGS`, which cargo and
/// rustc split at whitespace without any quoting, so it must not contain a space (a
/// workspace under `/home/me/My Projects` would otherwise lose the jobserver: every
/// cargo stage warns and falls back to a `-j` of its own). `/dev/shm` first: a FIFO
/// there never touches a disk; the run's log directory last (where a container has
/// neither a writable `/dev/shm` nor a temp directory).
fn fifo_bases(log_dir: &Utf8Path) -> impl Iterator<Item = std::path::PathBuf> {
    let _ = std::fs::create_dir_all(log_dir);
    [
        std::path::PathBuf::from("/dev/shm"),
        std::env::temp_dir(),
        std::path::PathBuf::from("/tmp"),
        log_dir.as_std_path().to_path_buf(),
    ]
    .into_iter()
    .filter(|p| p.to_str().is_some_and(|s| !s.contains(char::is_whitespace)) && p.is_dir())
}

fn rustc_log_path(log_dir: &Utf8Path, stage: &str) -> Utf8PathBuf {
    log_dir.join(format!("{stage}.rustc.jsonl"))
}

fn lock_conflict(plan: &Plan, states: &[State], j: usize, other: usize) -> bool {
    let Some(dir) = &plan.stages[j].build_dir else { return false };
    if plan.stages[other].build_dir.as_ref() == Some(dir) {
        return true;
    }
    states.iter().enumerate().any(|(k, s)| match s {
        State::Running(r) => r.holds_lock && plan.stages[k].build_dir.as_ref() == Some(dir),
        _ => false,
    })
}

/// A dependency is met once its process has exited with status 0 and was not stopped:
/// that is success already, so dependants start without waiting for the last of its
/// output to drain (one thread wake-up less per stage on the critical path).
fn dependency_met(j: usize, results: &[Option<StageMetrics>], states: &[State]) -> bool {
    if let Some(m) = &results[j] {
        return succeeded(&m.status);
    }
    match &states[j] {
        State::Running(r) => {
            r.stop.is_none() && r.exited.is_some_and(|(reaped, _)| reaped.exit_code() == Some(0))
        }
        _ => false,
    }
}

trait SaturatingAdd {
    fn saturating_plus(self, other: Self) -> Self;
}

impl SaturatingAdd for usize {
    fn saturating_plus(self, other: usize) -> usize {
        self.saturating_add(other)
    }
}

impl SaturatingAdd for Duration {
    fn saturating_plus(self, other: Duration) -> Duration {
        self.saturating_add(other)
    }
}

fn succeeded(s: &StageStatus) -> bool {
    matches!(s, StageStatus::Succeeded | StageStatus::Cached { .. })
}

/// For each stage, the longest sum of `own` along a chain of dependants from it to the
/// end of the run, itself included. Sums saturate: the expected times come from the
/// history file on disk, which may hold any value.
fn longest_chains<T>(dependants: &[Vec<usize>], own: &[T]) -> Vec<T>
where
    T: Copy + Ord + Default + SaturatingAdd,
{
    fn visit<T>(i: usize, dependants: &[Vec<usize>], own: &[T], chain: &mut [Option<T>]) -> T
    where
        T: Copy + Ord + Default + SaturatingAdd,
    {
        if let Some(c) = chain[i] {
            return c;
        }
        let below = dependants[i]
            .iter()
            .map(|&j| visit(j, dependants, own, chain))
            .max()
            .unwrap_or_default();
        let c = own[i].saturating_plus(below);
        chain[i] = Some(c);
        c
    }
    let mut chain = vec![None; own.len()];
    (0..own.len()).map(|i| visit(i, dependants, own, &mut chain)).collect()
}

fn skipped_metrics(stage: &Stage, reason: String) -> StageMetrics {
    stage.not_run(StageStatus::Skipped { reason })
}

fn finish_metrics(
    stage: &Stage,
    r: &Running,
    reaped: &Reaped,
    run_start: Instant,
    log_dir: &Utf8Path,
) -> StageMetrics {
    let exit_code = reaped.shell_code();
    let wall = r.exited.map(|(_, at)| at).unwrap_or_else(Instant::now) - r.started;
    let st = match r.stop {
        Some((Why::TimedOut, _)) => StageStatus::TimedOut,
        Some((Why::Cancelled, _)) if exit_code != Some(0) => StageStatus::Cancelled,
        _ if exit_code == Some(0) => StageStatus::Succeeded,
        _ => StageStatus::Failed,
    };
    let (failed_tests, flaky_tests) = r.tests.results();
    StageMetrics {
        id: stage.id.clone(),
        command: stage.command.display(),
        status: st,
        start: r.started - run_start,
        wall,
        cpu_user: reaped.cpu_user,
        cpu_system: reaped.cpu_system,
        peak_rss_kib: reaped.peak_rss_kib,
        exit_code,
        log_path: Some(log_dir.join(format!("{}.log", stage.id))),
        tail: r.tail.iter().cloned().collect(),
        failed_tests,
        flaky_tests,
        proves: stage.proves_text(),
        kind: stage.command.kind(),
        profile: stage.command.cargo_profile(),
    }
}

/// Sends `sig` to the stage's process group and, for SIGKILL, to every process that
/// carries the run's marker (and the stage's, when given): nextest puts each test in a
/// process group of its own, and a test may leave daemons behind.
fn signal_stage(pgid: i32, run_id: &str, stage: Option<&str>, sig: i32) {
    process::signal_group(pgid, sig);
    if sig == SIGKILL {
        process::signal_marked(run_id, stage, SIGKILL);
    }
}

/// Failed and flaky tests from nextest's or libtest's human output. When nextest runs,
/// only its status lines count: the libtest lines it echoes from a failing test's
/// captured output would name the test a second time. Every test is named with its
/// binary, nextest's way (`pkg::it name`), since two binaries may hold tests of the same
/// name; `cargo test` names the binary in its `Running` lines.
#[derive(Debug, Default, Clone)]
pub struct TestOutcomes {
    nextest: Outcomes,
    libtest: Outcomes,
    /// The binary whose libtest lines follow (from `cargo test`'s last `Running` line).
    libtest_binary: Option<String>,
    /// Where the stage runs: `cargo test` prints artifact paths relative to it.
    dir: Option<Utf8PathBuf>,
}

#[derive(Debug, Default, Clone)]
struct Outcomes {
    failed: BTreeSet<String>,
    passed: BTreeSet<String>,
    flaky: BTreeSet<String>,
}

impl TestOutcomes {
    /// Outcomes of a stage running in `dir`.
    pub fn in_dir(dir: &Utf8Path) -> TestOutcomes {
        TestOutcomes { dir: Some(dir.to_owned()), ..TestOutcomes::default() }
    }

    /// Takes in one line of a test stage's output; a nextest status line that ends a
    /// test (or one try of it) also gives back its name, duration and whether it passed.
    /// The summary's repeats (`(───)` instead of a counter) give back nothing.
    pub fn observe(&mut self, line: &str) -> Option<(String, Duration, bool)> {
        let plain = strip_ansi(line);
        let l = plain.trim();
        // cargo test: `Running tests/it.rs (target/debug/deps/it-0123abcd)`,
        // `Doc-tests fix`.
        if let Some(rest) = l.strip_prefix("Running ") {
            self.libtest_binary = Some(libtest_binary_id(rest, self.dir.as_deref()));
            return None;
        }
        if let Some(lib) = l.strip_prefix("Doc-tests ") {
            self.libtest_binary = Some(format!("{lib}::doctest"));
            return None;
        }
        // libtest: `test tests::bad ... FAILED`
        if let Some(rest) = l.strip_prefix("test ") {
            let named = |name: &str| match &self.libtest_binary {
                Some(binary) => format!("{binary} {name}"),
                None => name.to_string(),
            };
            if let Some(name) = rest.strip_suffix(" ... FAILED") {
                let name = named(name);
                self.libtest.failed.insert(name);
            } else if let Some(name) = rest.strip_suffix(" ... ok") {
                let name = named(name);
                self.libtest.passed.insert(name);
            }
            return None;
        }
        // nextest: `FAIL [   0.004s] (1/3) crate::bin tests::bad`, `TRY 2 PASS [...] ...`,
        // `FLAKY 2/3 [...] ...`, and in the summary `FAIL [...] (───) crate::bin name`.
        let l = match l.strip_prefix("TRY ") {
            Some(rest) => rest.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or(rest),
            None => l,
        };
        let (word, rest) = l.split_once(' ')?;
        let rest = rest.trim_start();
        let rest = if word == "FLAKY" {
            // `FLAKY 2/3 [ 0.003s] name`
            rest.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or(rest)
        } else {
            rest
        };
        if !rest.starts_with('[') {
            return None;
        }
        let (time, after) = rest.split_once("] ")?;
        let duration = time
            .trim_start_matches('[')
            .trim()
            .strip_suffix('s')
            .and_then(|t| t.parse::<f64>().ok())
            .and_then(|t| Duration::try_from_secs_f64(t).ok());
        let after = after.trim();
        let name = match after.strip_prefix('(') {
            Some(r) => r.split_once(") ").map(|(_, n)| n.trim()).unwrap_or(""),
            None => after,
        };
        if name.is_empty() || name.contains(' ') && name.split(' ').count() > 2 {
            return None;
        }
        let set = match word {
            "PASS" | "LEAK" => &mut self.nextest.passed,
            "FAIL" | "TIMEOUT" | "SIGSEGV" | "SIGABRT" | "SIGKILL" | "SIGTERM" | "ABORT"
            | "LEAK-FAIL" => &mut self.nextest.failed,
            "FLAKY" => &mut self.nextest.flaky,
            _ => return None,
        };
        set.insert(name.to_string());
        let summary = after.starts_with("(─");
        match (duration, summary, word) {
            (Some(d), false, "FLAKY") => Some((name.to_string(), d, true)),
            (Some(d), false, _) => Some((name.to_string(), d, matches!(word, "PASS" | "LEAK"))),
            _ => None,
        }
    }

    /// (failed, flaky): under nextest, a test that failed a try but passed a later one
    /// is flaky. libtest never retries, so there nothing is flaky and a failure is one.
    pub fn results(&self) -> (Vec<String>, Vec<String>) {
        if self.nextest.failed.is_empty()
            && self.nextest.passed.is_empty()
            && self.nextest.flaky.is_empty()
        {
            return (self.libtest.failed.iter().cloned().collect(), Vec::new());
        }
        let o = &self.nextest;
        let mut flaky = o.flaky.clone();
        flaky.extend(o.failed.intersection(&o.passed).cloned());
        let failed = o.failed.iter().filter(|t| !flaky.contains(*t)).cloned().collect();
        (failed, flaky.into_iter().collect())
    }
}

/// nextest's binary id (`pkg` for a library's unit tests, `pkg::bin/name`, `pkg::it`
/// for an integration test) of the binary in a `cargo test` `Running` line, such as
/// `unittests src/lib.rs (target/debug/deps/pkg-0123abcd)` or
/// `tests/it.rs (target/debug/deps/it-0123abcd)`. The package comes from the binary's
/// dep-info file (`<binary>.d`, relative paths from `dir`); without one, the binary's
/// name without its hash stands in.
pub fn libtest_binary_id(running: &str, dir: Option<&Utf8Path>) -> String {
    let Some((what, path)) = running.rsplit_once(" (") else { return running.to_string() };
    let path = Utf8Path::new(path.trim_end_matches(')'));
    let file = path.file_name().unwrap_or(path.as_str());
    let file = file.strip_suffix(".exe").unwrap_or(file);
    let stem = match file.rsplit_once('-') {
        Some((name, hash)) if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name
        }
        _ => file,
    };
    let (unit, src) = match what.strip_prefix("unittests ") {
        Some(src) => (true, src),
        None => (false, what),
    };
    let artifact = match dir {
        Some(d) if path.is_relative() => d.join(path),
        _ => path.to_owned(),
    };
    let package = package_of(&artifact, src, dir);
    let Some(package) = package else { return stem.to_string() };
    let bin = src == "src/main.rs" || src.starts_with("src/bin/");
    match (unit, bin) {
        (true, false) => package,
        (true, true) => format!("{package}::bin/{stem}"),
        (false, _) => format!("{package}::{stem}"),
    }
}

/// The package whose `src` (a path relative to the package root) `artifact` was built
/// from: the dep-info file beside it names `src` (relative to the workspace root, `dir`,
/// for members; absolute otherwise), whose package root holds the `Cargo.toml` with
/// the name.
fn package_of(artifact: &Utf8Path, src: &str, dir: Option<&Utf8Path>) -> Option<String> {
    let dep_info = std::fs::read_to_string(format!("{artifact}.d")).ok()?;
    let first = dep_info.lines().next()?;
    let (_, deps) = first.split_once(": ")?;
    let source = deps.split(' ').find(|d| *d == src || d.ends_with(&format!("/{src}")))?;
    let root = Utf8Path::new(source.strip_suffix(src)?);
    let root = match dir {
        Some(d) if root.is_relative() => d.join(root),
        _ => root.to_owned(),
    };
    let manifest: toml::Table =
        std::fs::read_to_string(root.join("Cargo.toml")).ok()?.parse().ok()?;
    Some(manifest.get("package")?.get("name")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::TestOutcomes;

    #[test]
    fn parses_nextest_and_libtest_outcomes() {
        let mut t = TestOutcomes::default();
        let mut timed = Vec::new();
        for l in [
            "        PASS [   0.003s] (1/4) fix tests::ok",
            "  TRY 1 FAIL [   0.003s] (2/4) fix tests::flaky",
            "  TRY 2 PASS [   0.003s] (2/4) fix tests::flaky",
            "        FAIL [   0.004s] (3/4) fix tests::bad",
            "     TIMEOUT [   1.000s] fix tests::hangs",
            "        FAIL [   0.004s] (───) fix tests::bad",
            "       FLAKY 2/3 [   0.003s] (───) fix tests::flaky",
            "test tests::bad ... FAILED",
            "\u{1b}[31;1m        FAIL\u{1b}[0m [   0.001s] (4/4) fix tests::colored",
        ] {
            if let Some((name, d, passed)) = t.observe(l) {
                timed.push(format!("{name} {}ms {passed}", d.as_millis()));
            }
        }
        // Every try with its time; the summary's repeats are not tests of their own.
        assert_eq!(
            timed,
            [
                "fix tests::ok 3ms true",
                "fix tests::flaky 3ms false",
                "fix tests::flaky 3ms true",
                "fix tests::bad 4ms false",
                "fix tests::hangs 1000ms false",
                "fix tests::colored 1ms false",
            ]
        );
        let (failed, flaky) = t.results();
        assert_eq!(failed, vec!["fix tests::bad", "fix tests::colored", "fix tests::hangs"]);
        assert_eq!(flaky, vec!["fix tests::flaky"]);

        let mut t = TestOutcomes::default();
        for l in [
            "     Running unittests src/lib.rs (target/debug/deps/one-0123abcd)",
            "test other::broken ... FAILED",
            "test other::fine ... ok",
            "     Running unittests src/lib.rs (target/debug/deps/two-4567ef01)",
            "test other::broken ... ok",
        ] {
            // libtest on stable prints no durations.
            assert_eq!(t.observe(l), None);
        }
        // A same-named test passing in another binary does not make a failure flaky.
        assert_eq!(t.results(), (vec!["one other::broken".to_string()], vec![]));
    }
}
