//! Criterion benchmarks of the library's lifecycle: loading a workspace model,
//! planning, scheduling, fingerprinting, rendering reports. Each area has its own file
//! in this directory, included below, so that they evolve independently.

use criterion::{criterion_group, criterion_main};

#[path = "bench_compare.rs"]
mod bench_compare;
#[path = "planning.rs"]
mod planning;

criterion_group!(benches, planning::workspace_model_and_plan, bench_compare::statistics);
criterion_main!(benches);
