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

/// A workspace whose plan is two custom stages that take `secs` each, no cargo stage:
/// runs in well under a second, and the stage cache serves both on a second run.
fn custom_stages_only(secs: u32) -> FixtureWorkspace {
    FixtureWorkspace::new(vec![FixtureCrate::new("a")]).config(format!(
        "disable = [\"fetch\", \"build\", \"test\", \"doctest\", \"bench-build\"]\n\
         [stages.first]\ncommand = [\"sleep\", \"{secs}\"]\nuses-build-dir = false\n\
         [stages.second]\ncommand = [\"sleep\", \"{secs}\"]\ndepends-on = [\"first\"]\nuses-build-dir = false\n",
    ))
}

fn optimize_cmd(manifest: &Utf8Path, json: &Utf8Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]);
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// The command lines of `pid`'s children.
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after the last `)`.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}

/// Waits (up to 60 s) until `ready` holds, polling every 5 ms.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Signals `child`, waits, and returns its exit code and stderr.
fn signal_and_wait(child: &mut std::process::Child, sig: i32) -> (Option<i32>, String) {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, sig) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

fn outcome(json: &Utf8Path) -> String {
    let text = std::fs::read_to_string(json).unwrap_or_else(|e| panic!("no record at {json}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["outcome"].as_str().unwrap().to_string()
}

/// #14.2: SIGINT while `cargo metadata` runs (start-up, before any stage): exit 130 and
/// a record marked interrupted. The handlers used to be installed by the orchestrator
/// only, so the signal killed the process without a report.
#[test]
fn sigint_during_start_up_is_an_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(dir.path()).unwrap();
    let manifest = custom_stages_only(0).write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let mut child = optimize_cmd(&manifest, &json).spawn().unwrap();
    let pid = child.id();
    wait_for("cargo metadata", || children(pid).iter().any(|c| c.contains("metadata")));
    let (code, stderr) = signal_and_wait(&mut child, libc::SIGINT);
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(outcome(&json), "interrupted");
}

/// #14.2: SIGTERM while waiting for another run's lock: the wait ends, exit 130 and a
/// record marked interrupted (the wait was a blocking flock that a signal only killed).
#[test]
fn sigterm_while_waiting_for_the_lock_is_an_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(dir.path()).unwrap();
    let manifest = custom_stages_only(0).write(&root.join("ws")).unwrap();
    let cache = root.join("ws/target/pipeline-opt/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let lock = std::fs::File::create(cache.join("lock")).unwrap();
    lock.lock().unwrap();
    let json = root.join("run.json");
    let mut child = optimize_cmd(&manifest, &json).spawn().unwrap();
    // The run says it waits on stderr; read it until then, keep the rest for later.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("waiting for another pipeline-opt run") {
        let n = std::io::BufRead::read_line(&mut stderr, &mut seen).unwrap();
        assert!(n > 0, "the run never waited for the lock: {seen}");
    }
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_eq!(outcome(&json), "interrupted");
    drop(lock);
}

/// #14.2: SIGINT during a run whose stages are all cached (no orchestrator runs): exit
/// 130 and a record marked interrupted; the next run is served from the cache and passes.
#[test]
fn sigint_during_an_all_cached_run_is_an_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(dir.path()).unwrap();
    // A plan of `check` alone, which the stage cache serves on the second run.
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")])
        .config("disable = [\"fetch\", \"build\", \"test\", \"doctest\", \"bench-build\"]");
    let manifest = ws.write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let first = optimize_cmd(&manifest, &json).output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let mut child = optimize_cmd(&manifest, &json).spawn().unwrap();
    let pid = child.id();
    wait_for("cargo metadata", || children(pid).iter().any(|c| c.contains("metadata")));
    let (code, stderr) = signal_and_wait(&mut child, libc::SIGINT);
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(outcome(&json), "interrupted");
    let next = optimize_cmd(&manifest, &json).output().unwrap();
    assert_eq!(next.status.code(), Some(0), "{}", String::from_utf8_lossy(&next.stderr));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(record["outcome"], "succeeded");
    let stages = record["stages"].as_array().unwrap();
    assert!(
        !stages.is_empty() && stages.iter().all(|s| s["status"]["state"] == "cached"),
        "every stage served from the cache: {stages:?}"
    );
}
