//! The statistics of `bench-compare` on a 100-benchmark suite: what the comparison adds
//! on top of the measurements themselves (it should be negligible next to them).

use criterion::Criterion;
use pipeline_opt::bench::stats::{assess_suite, paired_test};

pub fn statistics(c: &mut Criterion) {
    if !crate::selected("bench_compare_100_benchmarks") {
        return;
    }
    // 100 benchmarks × 8 rounds of deterministic, slightly noisy values.
    let suite: Vec<(Vec<f64>, Vec<f64>)> = (0..100)
        .map(|b| {
            let base = (0..8).map(|r| 1000.0 + ((b * 7 + r * 13) % 17) as f64).collect();
            let head = (0..8).map(|r| 1010.0 + ((b * 11 + r * 5) % 19) as f64).collect();
            (base, head)
        })
        .collect();
    let mut group = c.benchmark_group("bench_compare_100_benchmarks");
    group.bench_function("paired_tests_and_verdicts", |b| {
        b.iter(|| {
            let tests: Vec<_> = suite.iter().filter_map(|(b, h)| paired_test(b, h)).collect();
            assess_suite(&tests, 0.05, 0.05)
        })
    });
    group.finish();
}
