//! What the lease runner adds to a test's start (#17.1): a program started through the
//! runner (lease, variables, holder, exec) against the same program started directly,
//! interleaved, with real servers. Redis leases back to back (its slots come back at
//! once); PostgreSQL leases 50 ms apart, as in `pool/leases.rs`, so the refill's clone
//! time is not what is measured. Percentiles need every sample, so this group times by
//! hand and prints its own table; it runs under `cargo bench` (not in test mode) with no
//! filter or a `runner` filter. It measures the small `lease-runner` (what
//! `pipeline-opt-lease-runner` is) and the `pool-supervisor` binary (which links the
//! supervisor too, as the whole command line does) in one run;
//! `PIPELINE_OPT_BENCH_RUNNER=PATH` adds another binary (e.g. the dev-profile
//! `target/debug/xtask` users run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use pipeline_opt::config::{ServiceConfig, ServiceKind};
use pipeline_opt::pool::{self, ContainerPool, PoolOptions};

const RUNS: usize = 500;
const PACED_RUNS: usize = 200;
/// The test the runner starts: it does nothing, so all that differs is the runner.
const TEST: &str = "/bin/true";

fn should_run() -> bool {
    crate::bench_mode() && crate::selected("runner")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn time(c: &mut Command) -> Duration {
    let start = Instant::now();
    let status = c.status().unwrap();
    let took = start.elapsed();
    assert!(status.success(), "{c:?}: {status}");
    took
}

pub fn lease_runner(_c: &mut Criterion) {
    if !should_run() {
        return;
    }
    for program in ["initdb", "redis-server"] {
        if pool::find_program(program).is_none() {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{program} is missing; `cargo xtask ci` installs it"
            );
            eprintln!("pool/runner NOT RUN: {program} is missing");
            return;
        }
    }
    // Every runner is measured in the same run, interleaved with the direct start, so
    // the ratios between them hold whatever the machine's load.
    let mut runners: Vec<(String, PathBuf)> = vec![
        ("lease-runner".into(), PathBuf::from(env!("CARGO_BIN_EXE_lease-runner"))),
        ("pool-supervisor".into(), PathBuf::from(env!("CARGO_BIN_EXE_pool-supervisor"))),
    ];
    if let Some(extra) = std::env::var_os("PIPELINE_OPT_BENCH_RUNNER") {
        let extra = PathBuf::from(extra);
        runners.push((extra.display().to_string(), extra));
    }
    let dir = tempfile::tempdir().unwrap();
    let pool = ContainerPool::at(&dir.path().join("pool"));
    let options = PoolOptions {
        supervisor_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_pool-supervisor"))),
        owner: Some(std::process::id()),
        template_cache: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pool-template")),
        ..PoolOptions::default()
    };
    let services = BTreeMap::from([
        (
            "postgres".to_string(),
            ServiceConfig { size: 4, ..ServiceConfig::new(ServiceKind::Postgres) },
        ),
        ("redis".to_string(), ServiceConfig { size: 4, ..ServiceConfig::new(ServiceKind::Redis) }),
    ]);
    pool.up(dir.path(), &services, &options).unwrap();
    let through_runner = |runner: &Path, service: &str, var: &str, template: &str| {
        let mut c = Command::new(runner);
        c.args([pipeline_opt::plan::LEASE_RUNNER_ARG, "--lease", service])
            .args(["--env", &format!("{var}={template}"), "--", TEST])
            .env(pool::POOL_ENV, pool.dir())
            .stdout(Stdio::null());
        c
    };
    let mut direct_cmd = Command::new(TEST);
    let mut rows = Vec::new();
    for (service, var, template, runs, pause) in [
        ("redis", "REDIS_URL", "{url}", RUNS, Duration::ZERO),
        (
            "postgres",
            "DATABASE_URL",
            "postgres://{user}:{password}@{host}:{port}/{db}",
            PACED_RUNS,
            Duration::from_millis(50),
        ),
    ] {
        let mut cmds: Vec<Command> =
            runners.iter().map(|(_, r)| through_runner(r, service, var, template)).collect();
        let mut via: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); runners.len()];
        let mut direct = Vec::with_capacity(runs);
        for _ in 0..runs {
            for (cmd, times) in cmds.iter_mut().zip(via.iter_mut()) {
                std::thread::sleep(pause);
                times.push(time(cmd));
            }
            direct.push(time(&mut direct_cmd));
        }
        via.iter_mut().for_each(|v| v.sort());
        direct.sort();
        rows.push((service, runs, pause, via, direct));
    }
    pool.down().unwrap();
    println!("\npool/runner: {TEST} through each lease runner and directly, interleaved");
    for (name, path) in &runners {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        println!("  {name}: {} ({:.1} MB)", path.display(), size as f64 / 1e6);
    }
    println!("{:<52} {:>11} {:>11} {:>11} {:>16}", "", "p50", "p99", "max", "added p50");
    for (service, runs, pause, via, direct) in &rows {
        let label = if pause.is_zero() {
            format!("{service}, back to back ({runs})")
        } else {
            format!("{service}, {} ms apart ({runs})", pause.as_millis())
        };
        let d50 = percentile(direct, 0.5);
        let mut lines: Vec<(String, &Vec<Duration>, String)> = runners
            .iter()
            .zip(via)
            .map(|((name, _), s)| {
                (format!("{label}: via {name}"), s, ms(percentile(s, 0.5).saturating_sub(d50)))
            })
            .collect();
        lines.push((format!("{label}: direct"), direct, String::new()));
        for (what, s, added) in lines {
            println!(
                "{:<52} {:>11} {:>11} {:>11} {:>16}",
                what,
                ms(percentile(s, 0.5)),
                ms(percentile(s, 0.99)),
                ms(*s.last().unwrap()),
                added
            );
        }
    }
}
