//! Criterion benchmarks of the library's lifecycle: loading a workspace model,
//! planning, scheduling, fingerprinting, rendering reports.

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "scheduler.rs"]
mod scheduler;

fn planning(c: &mut Criterion) {
    let _ = c;
}

criterion_group!(benches, planning, scheduler::scheduler);
criterion_main!(benches);
