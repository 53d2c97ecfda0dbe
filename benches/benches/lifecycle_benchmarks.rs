//! Criterion benchmarks of the library's lifecycle: loading a workspace model,
//! planning, scheduling, fingerprinting, rendering reports.

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "pool/leases.rs"]
mod pool_leases;

fn planning(c: &mut Criterion) {
    let _ = c;
}

criterion_group!(benches, planning, pool_leases::pool_leases);
criterion_main!(benches);
