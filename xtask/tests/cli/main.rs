//! The one integration-test binary of the xtask: the real `cargo xtask` binary run on
//! generated fixture workspaces, checked for output, exit codes and clean errors.

mod bad_input;
mod bench_compare;
mod cache;
mod campaign;
mod compile_cache;
mod concurrency;
mod corruption;
mod faults;
mod flamegraph;
mod optimize;
mod outcomes;
mod plan;
mod report;
mod services;
mod test_settings;

use std::process::{Command, Output};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::record::RunRecord;

/// The xtask binary with `args`, without the cargo variables of this test run.
pub fn xtask_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the xtask binary with `args`, without the cargo variables of this test run.
pub fn xtask(args: &[&str]) -> Output {
    xtask_command(args).output().expect("xtask runs")
}

/// A temporary directory and its path (the directory lives as long as the guard).
pub fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    (dir, path)
}

/// The run record at `path`.
pub fn record(path: &Utf8Path) -> RunRecord {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} does not parse: {e}\n{text}"))
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
