//! Scheduler overhead: a synthetic DAG of 200 stages that each sleep (not CPU-bound),
//! run by the real `ParallelOrchestrator`, against the best possible schedule of that
//! DAG at the chosen concurrency. With at least as many job slots as the widest layer,
//! the best schedule is the critical path exactly; the ratio printed is ours / best.

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
                command: StageCommand {
                    program: "sleep".into(),
                    args: vec![format!("{}", ms as f64 / 1000.0)],
                    env: BTreeMap::new(),
                    cwd: dir.to_owned(),
                },
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
    let mut ratios = Vec::new();
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(25));
    group.bench_function("sleep_dag_200_stages_jobs_10", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut o =
                    OrchestratorOptions::new(dir.clone(), pipeline_opt::orchestrator::new_run_id());
                o.jobs = WIDTH;
                let summary = ParallelOrchestrator::new(o).run(&plan, &mut |_| {}).unwrap();
                assert_eq!(summary.outcome, pipeline_opt::profile::RunOutcome::Succeeded);
                ratios.push(summary.total.as_secs_f64() / best.as_secs_f64());
                total += summary.total;
            }
            total
        })
    });
    group.finish();
    // `--list` (nextest's discovery) and filtered runs measure nothing.
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = ratios[ratios.len() / 2];
    println!(
        "scheduler: best possible schedule {:.3}s; ours / best: median {:.3}, min {:.3}, max {:.3} over {} runs (goal: <= 1.05)",
        best.as_secs_f64(),
        median,
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
    println!(
        "scheduler: one process start costs {:.1} ms here; best schedule plus one start per stage on the critical path {:.3}s; ours / that: median {:.3}",
        spawn_floor.as_secs_f64() * 1000.0,
        best_with_spawn.as_secs_f64(),
        median * best.as_secs_f64() / best_with_spawn.as_secs_f64()
    );
}
