//! Scheduler overhead: a synthetic DAG of 200 stages that each sleep (not CPU-bound),
//! run by the real `ParallelOrchestrator`, against the best possible schedule of that
//! DAG at the chosen concurrency. With at least as many job slots as the widest layer,
//! the best schedule is the critical path exactly; the ratio printed is ours / best.
//! Measured twice: as a first run (no stage durations known) and as a later one, given
//! the durations of an earlier run as `cargo xtask optimize` gives those of its history.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8PathBuf;
use criterion::Criterion;
use pipeline_opt::orchestrator::{OrchestratorOptions, ParallelOrchestrator};
use pipeline_opt::plan::{LockUse, Plan, Stage, StageCommand, StageKind};

const LAYERS: usize = 20;
const WIDTH: usize = 10;

/// 20 layers of 10 stages; each stage depends on two of the layer below and sleeps
/// 50–95 ms (deterministic).
fn dag(dir: &camino::Utf8Path) -> (Plan, Vec<Duration>) {
    let mut stages = Vec::new();
    let mut durations = Vec::new();
    for l in 0..LAYERS {
        for w in 0..WIDTH {
            let i = l * WIDTH + w;
            let ms = 50 + (i * 37 % 10) * 5;
            let depends_on = if l == 0 {
                vec![]
            } else {
                vec![
                    format!("s{}", (l - 1) * WIDTH + w),
                    format!("s{}", (l - 1) * WIDTH + (w + 3) % WIDTH),
                ]
            };
            stages.push(Stage {
                id: format!("s{i}"),
                kind: StageKind::Custom,
                command: StageCommand::argv(
                    "sleep",
                    vec![format!("{}", ms as f64 / 1000.0)],
                    dir.to_owned(),
                ),
                depends_on,
                reason: "synthetic".into(),
                proves: vec![],
                build_dir: None,
                lock: LockUse::Exclusive,
                cpu_heavy: false,
                timeout: None,
            });
            durations.push(Duration::from_millis(ms as u64));
        }
    }
    (Plan { workspace_root: dir.to_owned(), stages, dropped: vec![], notes: vec![] }, durations)
}

/// The longest path through the DAG: the best makespan with unlimited slots, hence
/// also with `jobs >= WIDTH` slots (no layer has more ready stages than that).
fn critical_path(plan: &Plan, durations: &[Duration]) -> Duration {
    let mut finish: Vec<Duration> = Vec::with_capacity(plan.stages.len());
    for (i, s) in plan.stages.iter().enumerate() {
        let ready = s
            .depends_on
            .iter()
            .map(|d| finish[plan.stages.iter().position(|x| &x.id == d).unwrap()])
            .max()
            .unwrap_or_default();
        finish.push(ready + durations[i]);
    }
    finish.into_iter().max().unwrap()
}

pub fn scheduler(c: &mut Criterion) {
    if !crate::selected("scheduler") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
    let (plan, durations) = dag(&dir);
    let best = critical_path(&plan, &durations);
    // What one process start costs on this machine right now (`sleep 0`, spawned and
    // waited for): any orchestrator of processes pays it once per stage on the path.
    let spawn_floor = {
        let t = std::time::Instant::now();
        for _ in 0..20 {
            std::process::Command::new("sleep").arg("0").status().unwrap();
        }
        t.elapsed() / 20
    };
    let best_with_spawn = best + spawn_floor * LAYERS as u32;
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(25));
    let mut measure = |name: &str, expected: &dyn Fn() -> BTreeMap<String, Duration>| {
        let mut ratios = Vec::new();
        // Made on the first iteration only: discovery and filtered runs make none.
        let known = std::cell::OnceCell::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let expected = known.get_or_init(expected);
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let summary = run(&dir, &plan, expected);
                    ratios.push(summary.total.as_secs_f64() / best.as_secs_f64());
                    total += summary.total;
                }
                total
            })
        });
        ratios
    };
    // A first run of a workspace: no durations known, ready stages start by levels.
    let cold = measure("sleep_dag_200_stages_jobs_10", &BTreeMap::new);
    // Later runs: `cargo xtask optimize` gives the orchestrator the stage durations of
    // the run history; here, those of one earlier run of the same DAG.
    let remembered =
        || run(&dir, &plan, &BTreeMap::new()).stages.into_iter().map(|s| (s.id, s.wall)).collect();
    let warm = measure("sleep_dag_200_stages_jobs_10_with_history", &remembered);
    group.finish();
    // `--list` (nextest's discovery) and filtered runs measure nothing.
    for (label, mut ratios) in [("no history", cold), ("durations from an earlier run", warm)] {
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = ratios[ratios.len() / 2];
        println!(
            "scheduler ({label}): best possible schedule {:.3}s; ours / best: median {:.3}, min {:.3}, max {:.3} over {} runs (goal: <= 1.05)",
            best.as_secs_f64(),
            median,
            ratios[0],
            ratios[ratios.len() - 1],
            ratios.len()
        );
        println!(
            "scheduler ({label}): one process start costs {:.1} ms here; best schedule plus one start per stage on the critical path {:.3}s; ours / that: median {:.3}",
            spawn_floor.as_secs_f64() * 1000.0,
            best_with_spawn.as_secs_f64(),
            median * best.as_secs_f64() / best_with_spawn.as_secs_f64()
        );
    }
}

fn run(
    dir: &camino::Utf8Path,
    plan: &Plan,
    expected: &BTreeMap<String, Duration>,
) -> pipeline_opt::orchestrator::RunSummary {
    let mut o = OrchestratorOptions::new(dir.to_owned(), pipeline_opt::orchestrator::new_run_id());
    o.jobs = WIDTH;
    o.expected = expected.clone();
    let summary = ParallelOrchestrator::new(o).run(plan, &mut |_| {}).unwrap();
    assert_eq!(summary.outcome, pipeline_opt::record::RunOutcome::Succeeded);
    summary
}
