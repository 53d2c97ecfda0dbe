//! The one integration-test binary of the xtask: the real `cargo xtask` binary run on
//! generated fixture workspaces, checked for output, exit codes and clean errors.

mod bad_input;
mod bench_compare;
mod cache;
mod campaign;
mod concurrency;
mod corruption;
mod faults;
mod optimize;
mod outcomes;
mod plan;
mod services;
mod test_settings;

use std::process::{Command, Output};

/// Runs the xtask binary with `args`, without the cargo variables of this test run.
pub fn xtask(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    cmd.output().expect("xtask runs")
}

/// Asserts a failure with `code` and a single-line `error:` message containing `needle`.
#[track_caller]
pub fn assert_clean_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    if code != 2 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}
