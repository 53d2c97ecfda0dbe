//! The lease runner alone (`cargo xtask` and `cargo pipeline-opt` are one too). Cargo
//! starts every test process through it, so its own start is on every test's path: a
//! binary that links nothing but the runner maps, relocates and faults in a fraction of
//! what the whole command line does, and the plan uses it when it sits beside the
//! running binary and answers the same protocol (docs/services.md, "What the runner
//! adds to a test's start").
//!
//! `no_main`: the standard library's start-up (the main thread's stack-overflow
//! handler, which reads `/proc/self/maps`; SIGPIPE set to ignored) buys nothing in a
//! process that execs the test within a millisecond. `std::env::args` still works: the
//! standard library reads the arguments on Linux before `main` runs.
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
    eprintln!(
        "pipeline-opt-lease-runner: gives each test process its leases; the plan sets it as cargo's target runner, it is not run by hand"
    );
    2
}
