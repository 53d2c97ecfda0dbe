//! The shard planner on a 10,000-test inventory in 40 binaries with heavy-tailed
//! durations (`fixture::shard_inventory`): reading the weights from the samples, the
//! longest-first assignment and the filtersets, for N = 2, 4 and 8.

use std::num::NonZeroUsize;

use criterion::Criterion;
use pipeline_opt::fixture::shard_inventory;
use pipeline_opt::shard::{ShardOptions, plan_shards};

pub fn plan_10k_tests(c: &mut Criterion) {
    if !crate::selected("shard_plan_10k_tests") {
        return;
    }
    let (inventory, durations) = shard_inventory(10_000, 40);
    let mut group = c.benchmark_group("shard_plan_10k_tests");
    for n in [2, 4, 8] {
        let opts = ShardOptions::new(NonZeroUsize::new(n).expect("n > 0"));
        let plan = plan_shards(&inventory, &durations, &opts);
        assert_eq!(plan.fallback, None, "planned by durations");
        group.bench_function(format!("n{n}"), |b| {
            b.iter(|| plan_shards(&inventory, &durations, &opts))
        });
    }
    group.finish();
}
