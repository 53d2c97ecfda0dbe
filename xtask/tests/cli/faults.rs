//! Issue #14, under faults and bad input: values that would overflow a run, a reader
//! that closes stdout early, names that would escape the state directory. Each case is
//! the real binary on a generated fixture, checked for a one-line error or a clean end.

use std::process::{Command, Stdio};

use camino::Utf8Path;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use crate::{assert_clean_error, xtask};

fn fixture(ws: &FixtureWorkspace) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = ws.write(Utf8Path::from_path(dir.path()).unwrap()).unwrap();
    (dir, manifest.to_string())
}

/// #14.4: a timeout that would overflow the orchestrator's clock is refused when the
/// config loads, naming the key and the range, for the global and a custom stage's key.
#[test]
fn huge_durations_are_refused_at_config_load() {
    let cases = [
        ("stage-timeout = \"300000000000y\"", "workspace.metadata.pipeline-opt.stage-timeout"),
        (
            "[stages.slow]\ncommand = [\"true\"]\ntimeout = \"300000000000y\"",
            "workspace.metadata.pipeline-opt.stages.slow.timeout",
        ),
        (
            "[targets]\nrequired = \"300000000000y\"",
            "workspace.metadata.pipeline-opt.targets.required",
        ),
        ("stage-timeout = \"0s\"", "workspace.metadata.pipeline-opt.stage-timeout"),
    ];
    for (config, key) in cases {
        let (_dir, manifest) = fixture(&FixtureWorkspace::chain(1).config(config));
        let out = xtask(&["plan", "--manifest-path", &manifest]);
        assert_clean_error(&out, 1, key);
        assert_clean_error(&out, 1, "between 1ms and 30days");
    }
}

/// #14.4: `plan`, `history`, `pool status`, `cache status` and `ci-workflow` whose
/// reader has gone (`| head`, `| true`) end with exit 0, without a panic.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let (_dir, manifest) = fixture(&FixtureWorkspace::new(vec![FixtureCrate::new("a")]));
    let commands: [&[&str]; 5] = [
        &["plan", "--manifest-path", &manifest],
        &["history", "--manifest-path", &manifest],
        &["pool", "status", "--manifest-path", &manifest],
        &["cache", "status", "--manifest-path", &manifest],
        &["ci-workflow"],
    ];
    for args in commands {
        // A pipe whose read end is closed before the command writes: stdout is EPIPE.
        let mut fds = [0; 2];
        // SAFETY: a plain pipe(2) into a local array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1]))
        };
        drop(read);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args).stdout(Stdio::from(write)).stderr(Stdio::piped());
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
