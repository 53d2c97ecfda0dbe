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
