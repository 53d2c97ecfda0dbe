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

/// #14.6: custom stage names become file names (the stage's log) and label values, so
/// names outside a small charset are refused when the config loads, in one line that
/// names the key and the charset, even where the name holds a newline.
#[test]
fn stage_names_outside_the_charset_are_refused() {
    let long = "a".repeat(65);
    let names = ["../../x", "a/b", "a\\\"b\\nc", "", "-lead", "sp ace", "é", long.as_str()];
    for name in names {
        let config = format!("[stages.\"{name}\"]\ncommand = [\"true\"]\nuses-build-dir = false");
        let (_dir, manifest) = fixture(&FixtureWorkspace::chain(1).config(&config));
        let out = xtask(&["plan", "--manifest-path", &manifest]);
        assert_clean_error(&out, 1, "workspace.metadata.pipeline-opt.stages");
        assert_clean_error(&out, 1, "a-z A-Z 0-9 - _");
    }
}

/// #14.6: `optimize` with a stage named `../../x` writes nothing outside its state
/// directory (it wrote `x.log` there before names were checked).
#[test]
fn a_stage_name_with_dot_dot_writes_no_log_outside_the_state_dir() {
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")]).config(
        "disable = [\"fetch\", \"build\", \"test\", \"doctest\", \"bench-build\"]\n\
         [stages.\"../../x\"]\ncommand = [\"true\"]\nuses-build-dir = false",
    );
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(dir.path()).unwrap();
    let manifest = ws.write(&root.join("ws")).unwrap();
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str()]);
    assert_clean_error(&out, 1, "stage name \"../../x\" is not allowed");
    let mut stray = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = camino::Utf8PathBuf::from_path_buf(e.path()).unwrap();
            if path.starts_with(root.join("ws/target/pipeline-opt")) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(path);
            } else if path.file_name() == Some("x.log") {
                stray.push(path);
            }
        }
    }
    assert!(stray.is_empty(), "logs written outside the state directory: {stray:?}");
}
