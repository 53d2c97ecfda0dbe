//! The orchestrator on plain-data plans (sleeps, shells) and on real cargo runs over
//! generated fixture workspaces: ordering, locks, the core cap, environment hygiene,
//! cancellation without orphans, timeouts, failures and flaky tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::inputs::Inputs;
use pipeline_opt::orchestrator::{CancelToken, OrchestratorOptions, ParallelOrchestrator};
use pipeline_opt::plan::{CargoArgs, LockUse, Plan, Stage, StageCommand, StageKind};
use pipeline_opt::process::marked_processes;
use pipeline_opt::record::{Event, RunOutcome, StageMetrics, StageStatus};

fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    (dir, path)
}

/// The planned test stage as a verbatim command for one package, with `extra` flags.
fn select_package(s: &mut Stage, extra: &[&str]) {
    let mut args = s.command.args();
    args.retain(|a| a != "--workspace");
    args.extend(extra.iter().map(|a| a.to_string()));
    let env = std::mem::take(&mut s.command.env);
    s.command = StageCommand::argv("cargo", args, s.command.cwd.clone());
    s.command.env = env;
}

fn stage(id: &str, argv: &[&str], deps: &[&str], cwd: &Utf8Path) -> Stage {
    Stage {
        id: id.into(),
        kind: StageKind::Custom,
        command: StageCommand::argv(
            argv[0],
            argv[1..].iter().map(|s| s.to_string()).collect(),
            cwd.to_owned(),
        ),
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        reason: "test".into(),
        proves: vec![],
        build_dir: None,
        lock: LockUse::Exclusive,
        cpu_heavy: false,
        timeout: None,
    }
}

fn plan(root: &Utf8Path, stages: Vec<Stage>) -> Plan {
    Plan { workspace_root: root.to_owned(), stages, dropped: vec![], notes: vec![] }
}

fn options(state: &Utf8Path) -> OrchestratorOptions {
    let mut o =
        OrchestratorOptions::new(state.to_owned(), pipeline_opt::orchestrator::new_run_id());
    o.grace = Duration::from_millis(500);
    o
}

fn run(o: OrchestratorOptions, p: &Plan) -> (pipeline_opt::orchestrator::RunSummary, Vec<Event>) {
    let mut events = Vec::new();
    let summary = ParallelOrchestrator::new(o).run(p, &mut |e| events.push(e.clone())).unwrap();
    (summary, events)
}

fn metrics<'a>(s: &'a [StageMetrics], id: &str) -> &'a StageMetrics {
    s.iter().find(|m| m.id == id).unwrap_or_else(|| panic!("no stage {id}"))
}

fn overlaps(a: &StageMetrics, b: &StageMetrics) -> bool {
    a.start < b.start + b.wall && b.start < a.start + a.wall
}

#[test]
fn orchestrator_orders_by_dependencies_locks_and_job_limit() {
    let (_t, dir) = temp();
    let mut shared_a = stage("a", &["sleep", "0.3"], &[], &dir);
    shared_a.build_dir = Some(dir.join("target"));
    let mut shared_b = stage("b", &["sleep", "0.3"], &[], &dir);
    shared_b.build_dir = Some(dir.join("target"));
    let p = plan(
        &dir,
        vec![
            shared_a,
            shared_b,
            stage("c", &["sleep", "0.3"], &[], &dir),
            stage("d", &["sleep", "0.3"], &[], &dir),
            stage("after", &["true"], &["a", "b", "c"], &dir),
        ],
    );
    let mut o = options(&dir);
    o.jobs = 2;
    let (summary, events) = run(o, &p);
    assert_eq!(summary.outcome, RunOutcome::Succeeded);
    let s = &summary.stages;
    assert!(!overlaps(metrics(s, "a"), metrics(s, "b")), "a and b share a build dir: {s:#?}");
    for m in s.iter().filter(|m| m.id != "after") {
        assert!(metrics(s, "after").start >= m.start + m.wall || m.id == "d");
    }
    // Never more than two stages at once.
    let mut running = 0i32;
    let mut max = 0;
    for e in &events {
        match e {
            Event::StageStarted { .. } => running += 1,
            Event::StageFinished(_) => running -= 1,
            _ => {}
        }
        max = max.max(running);
    }
    assert_eq!(max, 2);
    let log = std::fs::read_to_string(metrics(s, "a").log_path.as_ref().unwrap());
    assert!(log.is_ok(), "each stage keeps a log on disk");
}

/// The run opens with its id, the machine's cores and its stages, so the live view
/// needs nothing but the events (it used to ask the machine for the cores itself).
#[test]
fn orchestrator_opens_the_run_with_run_started() {
    let (_t, dir) = temp();
    let p = plan(
        &dir,
        vec![stage("first", &["true"], &[], &dir), stage("second", &["true"], &["first"], &dir)],
    );
    let o = options(&dir);
    let run_id = o.run_id.clone();
    let (summary, events) = run(o, &p);
    assert_eq!(summary.outcome, RunOutcome::Succeeded);
    let Some(Event::RunStarted { run_id: id, cores, stages }) = events.first() else {
        panic!("the first event is not RunStarted: {events:#?}")
    };
    assert_eq!(id, &run_id);
    assert_eq!(*cores, std::thread::available_parallelism().map_or(1, |n| n.get()));
    assert_eq!(stages, &["first", "second"]);
    let started = events.iter().filter(|e| matches!(e, Event::RunStarted { .. })).count();
    assert_eq!(started, 1, "{events:#?}");
}

/// Of the stages ready at once, the one heading the longest expected chain starts first
/// when durations are known (from the run history), the one with the most levels of
/// dependants below it otherwise.
#[test]
fn orchestrator_starts_the_longest_expected_chain_first() {
    let (_t, dir) = temp();
    let p = plan(
        &dir,
        vec![
            stage("short", &["true"], &[], &dir),
            stage("long", &["true"], &[], &dir),
            stage("after-long", &["true"], &["long"], &dir),
        ],
    );
    let starts = |expected: &[(&str, u64)]| {
        let mut o = options(&dir);
        o.jobs = 1;
        o.expected =
            expected.iter().map(|(id, s)| (id.to_string(), Duration::from_secs(*s))).collect();
        let (summary, events) = run(o, &p);
        assert_eq!(summary.outcome, RunOutcome::Succeeded);
        events
            .iter()
            .filter_map(|e| match e {
                Event::StageStarted { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Levels: `long` has a dependant, so it goes first.
    assert_eq!(starts(&[]), ["long", "short", "after-long"]);
    // Expected: `short` alone (9 s) outweighs `long` and its dependant (1 s + 1 s).
    assert_eq!(
        starts(&[("short", 9), ("long", 1), ("after-long", 1)]),
        ["short", "long", "after-long"]
    );
}

#[test]
fn orchestrator_strips_this_workspaces_cargo_variables() {
    // Cargo runs this test with CARGO_MANIFEST_DIR and CARGO_PKG_NAME set for *our*
    // crate; a child cargo on another workspace must not see them.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some(), "run this test through cargo");
    let (_t, dir) = temp();
    let out = dir.join("env.out");
    let p = plan(&dir, vec![stage("env", &["sh", "-c", &format!("env > {out}")], &[], &dir)]);
    let o = options(&dir);
    let run_id = o.run_id.clone();
    let (summary, _) = run(o, &p);
    assert_eq!(summary.outcome, RunOutcome::Succeeded);
    let env = std::fs::read_to_string(&out).unwrap();
    for var in ["CARGO_MANIFEST_DIR=", "CARGO_PKG_NAME=", "RUSTUP_TOOLCHAIN=", "CARGO="] {
        assert!(!env.lines().any(|l| l.starts_with(var)), "{var} leaked into the stage");
    }
    assert!(env.contains(&format!("PIPELINE_OPT_RUN_ID={run_id}")));
    assert!(env.contains("PIPELINE_OPT_STAGE=env"));
}

#[test]
fn orchestrator_cancel_leaves_no_process_behind() {
    let (_t, dir) = temp();
    // A child, a grandchild in the same group, and one in a session of its own (as
    // nextest does for each test), all ignoring SIGTERM.
    let script = "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 300\" & sleep 300 & wait";
    let p = plan(
        &dir,
        vec![
            stage("tree", &["sh", "-c", script], &[], &dir),
            stage("later", &["true"], &["tree"], &dir),
        ],
    );
    let mut o = options(&dir);
    let cancel = CancelToken::default();
    o.cancel = cancel.clone();
    let run_id = o.run_id.clone();
    let c2 = cancel.clone();
    let id2 = run_id.clone();
    std::thread::spawn(move || {
        // Cancel once the whole tree is up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while marked_processes(&id2, None).len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        c2.cancel();
    });
    let (summary, _) = run(o, &p);
    assert_eq!(summary.outcome, RunOutcome::Interrupted);
    assert_eq!(metrics(&summary.stages, "tree").status, StageStatus::Cancelled);
    assert!(matches!(metrics(&summary.stages, "later").status, StageStatus::Skipped { .. }));
    let left = marked_processes(&run_id, None);
    assert!(left.is_empty(), "processes survived the run: {left:?}");
}

#[test]
fn orchestrator_fail_fast_and_keep_going() {
    let (_t, dir) = temp();
    let stages = || {
        vec![
            stage("bad", &["sh", "-c", "echo broken; exit 3"], &[], &dir),
            stage("slow", &["sleep", "0.5"], &[], &dir),
            stage("after-slow", &["true"], &["slow"], &dir),
            stage("after-bad", &["true"], &["bad"], &dir),
        ]
    };
    let (summary, _) = run(options(&dir), &plan(&dir, stages()));
    assert_eq!(summary.outcome, RunOutcome::StageFailed);
    let bad = metrics(&summary.stages, "bad");
    assert_eq!((bad.status.clone(), bad.exit_code), (StageStatus::Failed, Some(3)));
    assert_eq!(bad.tail, vec!["broken"]);
    assert_eq!(metrics(&summary.stages, "slow").status, StageStatus::Cancelled);
    assert!(matches!(metrics(&summary.stages, "after-slow").status, StageStatus::Skipped { .. }));

    let mut o = options(&dir);
    o.keep_going = true;
    let (summary, _) = run(o, &plan(&dir, stages()));
    assert_eq!(summary.outcome, RunOutcome::StageFailed);
    assert_eq!(metrics(&summary.stages, "after-slow").status, StageStatus::Succeeded);
    assert_eq!(
        metrics(&summary.stages, "after-bad").status,
        StageStatus::Skipped { reason: "dependency `bad` did not succeed".into() }
    );
}

/// Real cargo: build and bench-build overlap in their own build directories, and the
/// number of rustc processes of the run never exceeds the cores we gave it.
#[test]
fn orchestrator_caps_concurrent_rustc_at_the_core_budget() {
    let (_t, dir) = temp();
    let mut crates = vec![FixtureCrate::new("core")];
    for i in 0..4 {
        crates.push(
            FixtureCrate::new(format!("leaf{i}"))
                .dep("core")
                .bench("b", "fn main() {}")
                .test("t", "#[test] fn ok() {}"),
        );
    }
    let ws = FixtureWorkspace::new(crates).config("disable = [\"doctest\", \"test\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let inputs = Inputs::load(Some(&manifest)).unwrap();
    let p = inputs.plan(CargoArgs::default(), true).unwrap();
    assert!(p.stage("bench-build").is_some() && p.stage("build").is_some());
    let mut o = options(&dir);
    o.cpus = 2;
    let run_id = o.run_id.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (stop, max, seen, run_id) = (stop.clone(), max.clone(), seen.clone(), run_id.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let compiles: Vec<(i32, i32)> = marked_processes(&run_id, None)
                    .into_iter()
                    .filter_map(|pid| {
                        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                        let cmdline = String::from_utf8_lossy(&cmdline);
                        // Compiles only: not cargo's `rustc -vV` and `--crate-name ___`
                        // probes, which every cargo runs at startup.
                        let compile = comm.trim() == "rustc"
                            && cmdline.contains("--crate-name")
                            && !cmdline.contains("___");
                        compile.then(|| (pid, parent_pid(pid)))
                    })
                    .collect();
                // A rustc forking its linker shows up twice until the exec: count the
                // parent only.
                let n = compiles
                    .iter()
                    .filter(|(_, ppid)| !compiles.iter().any(|(p, _)| p == ppid))
                    .count();
                max.fetch_max(n, Ordering::SeqCst);
                seen.fetch_add(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (summary, _) = run(o, &p);
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{:#?}", summary.stages);
    assert!(seen.load(Ordering::SeqCst) > 0, "the poller never saw a rustc");
    let max = max.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} rustc processes ran at once on a budget of 2 cores");
    assert!(
        overlaps(metrics(&summary.stages, "build"), metrics(&summary.stages, "bench-build")),
        "build and bench-build use different build directories and should overlap"
    );
}

/// Real cargo and nextest: a test that hangs hits the stage timeout and is killed with
/// its whole tree; a failing test is named; a flaky one is retried and reported.
#[test]
fn orchestrator_timeout_failures_and_flaky_tests() {
    let (_t, dir) = temp();
    let flag = dir.join("flaky-once");
    let tests = format!(
        "#[test] fn good() {{}}\n\
         #[test] fn bad() {{ panic!(\"always\") }}\n\
         #[test] fn flaky() {{ if std::fs::metadata(\"{flag}\").is_err() {{ std::fs::write(\"{flag}\", \"\").unwrap(); panic!(\"first try\") }} }}\n"
    );
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("fix").test("t", tests),
        FixtureCrate::new("hang").test("h", "#[test] fn hangs() { loop { std::thread::sleep(std::time::Duration::from_secs(1)); } }"),
    ])
    .config("disable = [\"doctest\", \"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let inputs = Inputs::load(Some(&manifest)).unwrap();
    assert!(inputs.nextest, "cargo-nextest must be installed for this test");
    let mut p = inputs.plan(CargoArgs::default(), false).unwrap();
    let mut fix_only = p.clone();
    // `fix` alone: failing and flaky tests.
    for s in &mut fix_only.stages {
        if s.id == "test" {
            select_package(s, &["-p", "fix", "--retries", "2"]);
        }
    }
    let (summary, _) = run(options(&dir), &fix_only);
    let test = metrics(&summary.stages, "test");
    assert_eq!(test.status, StageStatus::Failed, "{:#?}", test.tail);
    assert_eq!(test.failed_tests, vec!["fix::t bad"]);
    assert_eq!(test.flaky_tests, vec!["fix::t flaky"]);

    // `hang`: the stage timeout stops it and nothing of it survives.
    for s in &mut p.stages {
        if s.id == "test" {
            select_package(s, &["-p", "hang"]);
            s.timeout = Some(Duration::from_secs(3));
        }
    }
    let o = options(&dir);
    let run_id = o.run_id.clone();
    let (summary, _) = run(o, &p);
    let test = metrics(&summary.stages, "test");
    assert_eq!(test.status, StageStatus::TimedOut);
    assert!(test.wall < Duration::from_secs(10), "{:?}", test.wall);
    assert_eq!(summary.outcome, RunOutcome::StageFailed);
    assert!(marked_processes(&run_id, None).is_empty());
}

fn parent_pid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) state ppid ...`; comm may contain spaces, so split after the `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}
