//! The small lease runner, as `pipeline-opt-lease-runner` is built (runner only,
//! `no_main`), in the bench profile: the runner benchmark measures it beside the
//! pool-supervisor binary, which links the supervisor too.
// Only outside tests: `cargo test --all-targets` builds this binary's (empty) test
// harness too, which brings its own `main` and must answer `--list`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    pipeline_opt::pool::lease_runner_if_requested();
    eprintln!("lease-runner: started by the runner benchmark, not by hand");
    2
}
