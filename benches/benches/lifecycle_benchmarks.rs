//! Criterion benchmarks of the library's lifecycle: loading a workspace model,
//! planning, scheduling, fingerprinting, rendering reports. Each area has its own file
//! in this directory, included below, so that they evolve independently.

use criterion::{criterion_group, criterion_main};

#[path = "bench_compare.rs"]
mod bench_compare;
#[path = "planning.rs"]
mod planning;
#[path = "pool/leases.rs"]
mod pool_leases;
#[path = "pool/runner.rs"]
mod pool_runner;
#[path = "scheduler.rs"]
mod scheduler;
#[path = "shard.rs"]
mod shard;

#[path = "fingerprint.rs"]
mod fingerprint;

criterion_group!(
    benches,
    planning::workspace_model_and_plan,
    scheduler::scheduler,
    pool_leases::pool_leases,
    pool_runner::lease_runner,
    fingerprint::fingerprint_10k_files,
    bench_compare::statistics,
    shard::plan_10k_tests
);
criterion_main!(benches);

/// Whether criterion's arguments select benchmarks of `group`: no name filter, or a
/// filter naming the group or one of its benchmarks. Each group's set-up (a 1000-crate
/// workspace and `cargo metadata`, 10,000 files, PostgreSQL servers) runs before
/// criterion filters its benchmarks, and nextest runs every benchmark id in a process of
/// its own (`--exact group/name`), so each id paid every group's set-up.
pub(crate) fn selected(group: &str) -> bool {
    const TAKES_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
        "--logfile",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !TAKES_VALUE.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a)
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            let f = f.split('/').next().unwrap_or(f);
            f.contains(group) || group.contains(f)
        })
}

/// Whether criterion measures (`cargo bench`) rather than runs each benchmark once as a
/// test (`cargo test --benches`, nextest).
pub(crate) fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}
