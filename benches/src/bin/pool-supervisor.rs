//! The service-pool supervisor for the benchmarks: a bench binary cannot re-execute
//! itself as the supervisor, so `PoolOptions::supervisor_exe` points here; the lease
//! runner's benchmark starts it as the lease runner.

fn main() {
    pipeline_opt::pool::lease_runner_if_requested();
    pipeline_opt::pool::supervise_if_requested();
    eprintln!("pool-supervisor: started by the pool benchmarks, not by hand");
    std::process::exit(2);
}
