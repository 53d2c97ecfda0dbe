//! The pool supervisor as a stand-alone binary, for programs that start pools without
//! being able to re-execute themselves (integration tests, benchmarks):
//! `PoolOptions::supervisor_exe` points here. It does nothing unless started as one, or
//! as the lease runner (`PlanOptions::lease_runner`) that gives test processes leases.

fn main() {
    pipeline_opt::pool::lease_runner_if_requested();
    pipeline_opt::pool::supervise_if_requested();
    eprintln!(
        "pipeline-opt-pool: the service-pool supervisor; it is started by `cargo xtask pool up`, not by hand"
    );
    std::process::exit(2);
}
