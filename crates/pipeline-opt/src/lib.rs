//! pipeline-opt plans a Cargo workspace's CI pipeline from its own metadata, runs it as a
//! graph of stages, profiles every stage and crate, and checks the result against
//! performance targets. [`cli::main`] is the whole command line, run by the
//! `cargo-pipeline-opt` binary and by any xtask built on this library.

pub mod affected;
pub mod bench;
pub mod cache;
pub mod cargo_config;
#[cfg(feature = "cli")]
pub mod cli;
pub mod compile_cache;
pub mod config;
pub mod cpu_sampler;
pub mod doctest_shim;
pub mod exit;
pub mod explore;
pub mod facts;
pub mod fixture;
pub mod flamegraph;
pub mod inputs;
pub mod optimize;
pub mod orchestrator;
pub mod plan;
pub mod pool;
pub mod process;
pub mod profile;
pub mod record;
pub mod report;
pub mod rustc_shim;
pub mod scale;
pub mod shard;
pub mod state;
pub mod target_runner;
pub mod targets;
pub mod test_settings;
pub mod toolchain;
pub mod workflow;
pub mod workspace;

pub use cache::DependencyCache;
pub use optimize::{OptimizeOptions, OptimizeOutcome, run_fast_validation, run_optimized_pipeline};
pub use orchestrator::{OrchestratorOptions, ParallelOrchestrator};
pub use pool::ContainerPool;
pub use profile::PipelineProfiler;
pub use record::StageMetrics;
pub use targets::PerformanceTargets;

/// Call first thing in the `main` of any binary that runs pipelines (the xtask does):
/// the engine re-executes the running binary as cargo's `RUSTC_WRAPPER` (per-crate
/// timings), as `RUSTDOC` for a doctest stage the cache narrowed, as the service pool's
/// supervisor, as the `services` stage, and as the target runner that gives each test
/// process its leases. In each of those modes this
/// never returns; otherwise it returns at once.
pub fn run_helper_modes_if_requested() {
    pool::lease_runner_if_requested();
    doctest_shim::run_rustdoc_shim_if_requested();
    rustc_shim::run_rustc_shim_if_requested();
    pool::supervise_if_requested();
    pool::services_up_if_requested();
}
