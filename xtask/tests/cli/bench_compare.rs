//! `cargo xtask bench-compare` end to end on tiny git fixtures whose bench targets are
//! `harness = false` binaries printing criterion-style lines (no criterion to compile):
//! the measurement flags reach the comparison, and Ctrl-C exits 130 leaving no bench
//! process behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::xtask_command as xtask;
use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::process::marked_processes;

fn git(dir: &Utf8Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A git repository (branch `main`, one commit) with one bench target `name`.
fn repo(package: &str, name: &str, bench: &str) -> (tempfile::TempDir, Utf8PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(tmp.path()).unwrap().join("repo");
    let manifest = FixtureWorkspace::new(vec![FixtureCrate::new(package).bench(name, bench)])
        .write(&root)
        .unwrap();
    git(&root, &["init", "--quiet", "-b", "main"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "--quiet", "-m", "fixture"]);
    (tmp, manifest)
}

/// `--rounds`, `--warm-up` and `--measurement-time` land in the comparison (its JSON
/// records them, one value per round per side); a bad duration is a clean usage error.
#[test]
fn cli_bench_compare_measurement_flags() {
    let (_t, manifest) = repo(
        "bcflags",
        "steady",
        "fn main() { println!(\"work  time: [1.00 ms 1.00 ms 1.00 ms]\"); }\n",
    );
    let json = manifest.with_file_name("out.json");
    let out = xtask(&[
        "bench-compare",
        "main",
        "--manifest-path",
        manifest.as_str(),
        "--rounds",
        "3",
        "--warm-up",
        "10ms",
        "--measurement-time",
        "1.5s",
        "--json",
        json.as_str(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["rounds"], 3);
    assert_eq!(v["warm_up_secs"], 0.01);
    assert_eq!(v["measurement_secs"], 1.5);
    let work = &v["benchmarks"][0];
    assert_eq!(work["id"], "work");
    assert_eq!(work["verdict"], "unchanged");
    assert_eq!(work["base_rounds"].as_array().unwrap().len(), 3);
    assert_eq!(work["head_rounds"].as_array().unwrap().len(), 3);

    let bad = xtask(&[
        "bench-compare",
        "main",
        "--manifest-path",
        manifest.as_str(),
        "--measurement-time",
        "soon",
    ])
    .output()
    .unwrap();
    crate::assert_clean_error(&bad, 1, "invalid --measurement-time `soon`");
    let bad =
        xtask(&["bench-compare", "main", "--manifest-path", manifest.as_str(), "--warm-up", "0ms"])
            .output()
            .unwrap();
    crate::assert_clean_error(&bad, 1, "invalid --warm-up `0ms`");
}

/// SIGINT while a bench binary of the base side is measuring: exit 130, and no process
/// carrying the comparison's marker (the bench binary runs in a process group of its
/// own, so the signal to our child alone does not reach it) survives.
#[test]
fn cli_bench_compare_ctrl_c_exits_130() {
    let (_t, manifest) = repo(
        "bcctrlc",
        "sleepy",
        "fn main() { loop { std::thread::sleep(std::time::Duration::from_secs(1)); } }\n",
    );
    let mut child = xtask(&["bench-compare", "main", "--manifest-path", manifest.as_str()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the bench binary runs, found by its name and our child's marker.
    let child_pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    let (run_id, bench_pid) = loop {
        assert!(Instant::now() < deadline, "the bench binary never started");
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).into_owned();
            if !cmd.contains("sleepy-") || !cmd.contains("--bench") {
                return None;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env = String::from_utf8_lossy(&env).into_owned();
            let marker = env.split('\0').find_map(|v| v.strip_prefix("PIPELINE_OPT_RUN_ID="))?;
            // Run ids are `<time>-<pid>-<n>`: only our child's run counts.
            (marker.split('-').nth(1) == Some(&*child_pid)).then(|| (marker.to_string(), pid))
        });
        if let Some(found) = found {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(marked_processes(&run_id, None), vec![bench_pid]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by signal 2"), "{stderr}");
    let left = marked_processes(&run_id, None);
    assert!(left.is_empty(), "processes of run {run_id} survived: {left:?}");
    assert!(
        !Utf8PathBuf::from(format!("/proc/{bench_pid}")).exists(),
        "the bench process survived"
    );
}
