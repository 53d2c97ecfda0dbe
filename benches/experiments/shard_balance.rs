//! The scale-out experiment (issue #16): on a fixture whose 200 tests sleep for
//! heavy-tailed durations (`fixture::sleeping_tests_workspace`: Pareto, α = 1.2, about
//! 120 s in all, none over 7.5 s, a sixteenth of it), after one plain `optimize` that
//! records every test's duration:
//!
//! - `optimize --shards N --local` for N = 1, 2, 4, 8, each shard a one-thread machine
//!   (`NEXTEST_TEST_THREADS=1`): the test phase's speedup (the one shard's test phase,
//!   first test start to last test end by nextest's JUnit, over the slowest of N's), the
//!   same for the shards' whole walls (start-up included), the balance (slowest shard's
//!   wall over the mean) and the median prediction error, from the merged record;
//! - at N = 4, the same archive split three ways, each as 4 concurrent `cargo nextest
//!   run --archive-file` processes with one test thread: the plan by durations (its
//!   filtersets), nextest's `--partition slice:K/4` and `--partition hash:K/4`; the
//!   balance of each, side by side.
//!
//! Sleeping tests do not compete for the cores, so N shard processes on one 2-core
//! machine behave as N machines. Raw results go to a JSON file.
//!
//! ```text
//! cargo run -p pipeline-opt-benches --example shard_balance [-- OUT.json]
//! ```
//!
//! The program is also the command line (`optimize`, `shard`): `--local` starts its
//! shard processes as `<this program> shard run …`.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::sleeping_tests_workspace;
use pipeline_opt::record::RunRecord;
use pipeline_opt::shard::ShardPlan;
use serde::Serialize;

const CRATES: usize = 8;
const TESTS_PER_CRATE: usize = 25;
const TOTAL: Duration = Duration::from_secs(120);
const SHARD_COUNTS: [usize; 4] = [1, 2, 4, 8];

#[derive(Serialize)]
struct LocalRun {
    shards: usize,
    /// The build's wall (build, archive, listing, plan), from the merged record.
    build_secs: f64,
    /// Each shard's wall, in shard order.
    shard_walls: Vec<f64>,
    shard_test_times: Vec<f64>,
    shard_predicted: Vec<Option<f64>>,
    /// Each shard's tests from the first one's start to the last one's end, by the
    /// timestamps of nextest's JUnit: the shard without its start-up (loading the
    /// workspace, extracting the archive, listing the tests).
    shard_test_phases: Vec<f64>,
    /// The slowest shard's test phase.
    test_phase_secs: f64,
    /// The slowest shard's wall, start-up included: on one machine the N start-ups share
    /// its cores, on N machines they would not.
    slowest_wall_secs: f64,
    balance: Option<f64>,
    prediction_error: Option<f64>,
    /// The one shard's test phase over this one's.
    speedup: f64,
    /// The one shard's wall over the slowest shard's wall.
    wall_speedup: f64,
}

#[derive(Serialize)]
struct Strategy {
    name: String,
    walls: Vec<f64>,
    balance: f64,
    slowest_secs: f64,
}

#[derive(Serialize)]
struct Experiment {
    version: u32,
    command: String,
    tests: usize,
    total_sleep_secs: f64,
    longest_test_secs: f64,
    cores: usize,
    loadavg_before: String,
    loadavg_after: String,
    local: Vec<LocalRun>,
    /// N = 4, the same archive: by durations, slice, hash.
    strategies_n4: Vec<Strategy>,
}

fn main() -> ExitCode {
    let first = std::env::args().nth(1);
    if matches!(first.as_deref(), Some("optimize" | "shard")) {
        return pipeline_opt::cli::main();
    }
    pipeline_opt::run_helper_modes_if_requested();
    let out = Utf8PathBuf::from(first.unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/shard_balance.json").into()
    }));
    match run(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out: &Utf8Path) -> Result<(), String> {
    let loadavg_before = loadavg();
    let cap = TOTAL / 16;
    let (ws, sleeps) = sleeping_tests_workspace(CRATES, TESTS_PER_CRATE, TOTAL, cap);
    let ws = ws.config("disable = [\"bench-build\", \"doctest\"]");
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = Utf8Path::from_path(tmp.path()).ok_or("the temporary directory is not UTF-8")?;
    let manifest = ws.write(&root.join("ws")).map_err(|e| e.to_string())?;
    let total_sleep: Duration = sleeps.iter().map(|(_, d)| *d).sum();
    let longest = sleeps.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!(
        "fixture: {} tests sleeping {:.1} s in all, the longest {:.2} s (a shard's share at N = 8: {:.1} s)",
        sleeps.len(),
        total_sleep.as_secs_f64(),
        longest.as_secs_f64(),
        total_sleep.as_secs_f64() / 8.0
    );

    // Builds, runs every test once (many threads: they sleep) and records the durations.
    // One test thread, as the shards will have: a test's recorded duration is then what
    // a shard sees (64 sleeping tests at once on 2 loaded cores took twice as long).
    eprintln!("warm-up: optimize, every test once");
    self_cli(
        &["optimize", "--manifest-path", manifest.as_str()],
        &[("NEXTEST_TEST_THREADS", "1")],
    )?;

    let mut local = Vec::new();
    for n in SHARD_COUNTS {
        let dir = root.join(format!("shards-{n}"));
        eprintln!("optimize --shards {n} --local");
        let n_text = n.to_string();
        self_cli(
            &[
                "optimize",
                "--manifest-path",
                manifest.as_str(),
                "--shards",
                &n_text,
                "--shards-dir",
                dir.as_str(),
                "--local",
            ],
            &[("NEXTEST_TEST_THREADS", "1")],
        )?;
        let merged = read_record(&dir.join("merged-run.json"))?;
        let build = read_record(&dir.join("build-run.json"))?;
        let sh = merged.shards.ok_or("the merged record has no shards")?;
        let walls: Vec<f64> = sh.shards.iter().map(|s| s.wall.as_secs_f64()).collect();
        let slowest_wall = walls.iter().copied().fold(0.0, f64::max);
        let phases = sh
            .shards
            .iter()
            .map(|s| test_phase(&dir.join(format!("shard-{}/junit.xml", s.index))))
            .collect::<Result<Vec<f64>, String>>()?;
        let test_phase = phases.iter().copied().fold(0.0, f64::max);
        let (one, one_wall) = local.first().map_or((test_phase, slowest_wall), |r: &LocalRun| {
            (r.test_phase_secs, r.slowest_wall_secs)
        });
        local.push(LocalRun {
            shards: n,
            build_secs: build.total.as_secs_f64(),
            shard_test_phases: phases,
            slowest_wall_secs: slowest_wall,
            wall_speedup: one_wall / slowest_wall,
            shard_walls: walls,
            shard_test_times: sh.shards.iter().map(|s| s.test_time.as_secs_f64()).collect(),
            shard_predicted: sh
                .shards
                .iter()
                .map(|s| s.predicted.map(|p| p.as_secs_f64()))
                .collect(),
            test_phase_secs: test_phase,
            balance: sh.balance,
            prediction_error: sh.prediction_error,
            speedup: one / test_phase,
        });
    }

    // N = 4: one archive, three ways to split it, each run the same way.
    let dir4 = root.join("shards-4");
    let plan: ShardPlan = serde_json::from_str(
        &std::fs::read_to_string(dir4.join("shard-plan.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if plan.fallback.is_some() {
        return Err(format!("the N = 4 plan fell back to slice: {:?}", plan.fallback));
    }
    let archive = dir4.join("tests.tar.zst");
    let ws_root = manifest.parent().ok_or("the manifest has a directory")?;
    let mut strategies = Vec::new();
    let by_durations: Vec<Vec<String>> = plan.shards.iter().map(|s| s.selection.args()).collect();
    let partition = |kind: &str| -> Vec<Vec<String>> {
        (1..=4).map(|k| vec!["--partition".into(), format!("{kind}:{k}/4")]).collect()
    };
    for (name, selections) in
        [("durations", by_durations), ("slice", partition("slice")), ("hash", partition("hash"))]
    {
        eprintln!("N = 4 by {name}: 4 nextest processes from the archive");
        let walls = run_concurrently(&manifest, &archive, ws_root, &selections)?;
        let mean = walls.iter().sum::<f64>() / walls.len() as f64;
        let slowest = walls.iter().copied().fold(0.0, f64::max);
        strategies.push(Strategy {
            name: name.into(),
            walls,
            balance: slowest / mean,
            slowest_secs: slowest,
        });
    }

    let experiment = Experiment {
        version: 1,
        command: "cargo run -p pipeline-opt-benches --example shard_balance".into(),
        tests: sleeps.len(),
        total_sleep_secs: total_sleep.as_secs_f64(),
        longest_test_secs: longest.as_secs_f64(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        loadavg_before,
        loadavg_after: loadavg(),
        local,
        strategies_n4: strategies,
    };
    print_tables(&experiment);
    let json = serde_json::to_string_pretty(&experiment).map_err(|e| e.to_string())?;
    std::fs::write(out, json + "\n").map_err(|e| format!("{out}: {e}"))?;
    eprintln!("raw results: {out}");
    Ok(())
}

fn print_tables(e: &Experiment) {
    println!(
        "| N | build | test phase (slowest shard) | speedup | slowest shard's wall | wall speedup | balance (slowest / mean wall) | median prediction error |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &e.local {
        println!(
            "| {} | {:.1} s | {:.1} s | {:.2} ({:.2}·N) | {:.1} s | {:.2} ({:.2}·N) | {} | {} |",
            r.shards,
            r.build_secs,
            r.test_phase_secs,
            r.speedup,
            r.speedup / r.shards as f64,
            r.slowest_wall_secs,
            r.wall_speedup,
            r.wall_speedup / r.shards as f64,
            r.balance.map(|b| format!("{b:.3}")).unwrap_or_else(|| "-".into()),
            r.prediction_error.map(|p| format!("{:.1} %", p * 100.0)).unwrap_or_else(|| "-".into()),
        );
    }
    println!();
    println!("| N = 4 split by | shard walls | slowest | balance (slowest / mean) |");
    println!("| --- | --- | ---: | ---: |");
    for s in &e.strategies_n4 {
        let walls: Vec<String> = s.walls.iter().map(|w| format!("{w:.1}")).collect();
        println!(
            "| {} | {} s | {:.1} s | {:.3} |",
            s.name,
            walls.join(", "),
            s.slowest_secs,
            s.balance
        );
    }
}

/// This program as the command line, with `envs`; an error unless it exits 0.
fn self_cli(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// One `cargo nextest run` per selection from the archive, all at once, one test thread
/// each; the wall of each, in order.
fn run_concurrently(
    manifest: &Utf8Path,
    archive: &Utf8Path,
    ws_root: &Utf8Path,
    selections: &[Vec<String>],
) -> Result<Vec<f64>, String> {
    let sh = xshell::Shell::new().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut children = Vec::new();
    for args in selections {
        let cmd = xshell::cmd!(
            sh,
            "cargo nextest run --manifest-path {manifest} --archive-file {archive} --workspace-remap {ws_root} --no-tests=pass --no-fail-fast {args...}"
        )
        .env("NEXTEST_TEST_THREADS", "1");
        let mut command = pipeline_opt::toolchain::clean_command(&cmd);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        children.push((command.spawn().map_err(|e| e.to_string())?, None::<f64>));
    }
    while children.iter().any(|(_, wall)| wall.is_none()) {
        for (child, wall) in children.iter_mut().filter(|(_, w)| w.is_none()) {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                if !status.success() {
                    return Err(format!("a nextest shard exited {status}"));
                }
                *wall = Some(start.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(children.into_iter().map(|(_, w)| w.unwrap_or_default()).collect())
}

/// From the first test's start to the last one's end in a shard's JUnit file (nextest
/// writes each test case's start and duration).
fn test_phase(junit: &Utf8Path) -> Result<f64, String> {
    let xml = std::fs::read_to_string(junit).map_err(|e| format!("{junit}: {e}"))?;
    let suites = pipeline_opt::report::junit::parse_suites(&xml)?;
    let mut first: Option<i64> = None;
    let mut last: Option<i64> = None;
    for case in suites.iter().flat_map(|s| &s.test_cases) {
        let (Some(start), Some(time)) = (case.timestamp, case.time) else {
            return Err(format!("{junit}: a test case without a timestamp or time"));
        };
        let start = start.timestamp_micros();
        let end = start + time.as_micros() as i64;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    match (first, last) {
        (Some(f), Some(l)) => Ok((l - f) as f64 / 1e6),
        _ => Ok(0.0),
    }
}

fn read_record(path: &Utf8Path) -> Result<RunRecord, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}
