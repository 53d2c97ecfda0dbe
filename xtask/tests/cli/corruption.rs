//! Issue #14's corruption campaign, kept as a test: after one real `optimize` run, every
//! state file the tool keeps under `target/pipeline-opt/` (found by listing the state
//! directory, outputs such as logs and reports aside) is truncated, garbled, emptied,
//! replaced by a directory, by a dangling symlink, by a symlink to `/dev/null`, or
//! given huge numbers. For each (file, corruption) case, on a fresh copy of the state:
//!
//! - with the sources as they were: exit 0, no panic, and when the file could not be
//!   read as it is, a `warning:` line that names it;
//! - with a crate's test broken: exit 100, never 0 (a wrong cache hit), never a panic.
//!
//! A lock file replaced by a directory is set aside like any other state file: nothing
//! can hold a lock on a directory, since opening it for writing fails.
//!
//! Cases: a seeded subset of 16 by default (`PIPELINE_OPT_CORRUPTION_SEED`, default 14),
//! every case with `PIPELINE_OPT_CORRUPTION_ALL=1`. Slow (real cargo): runs only with
//! `PIPELINE_OPT_SLOW_TESTS`.

use std::process::Output;

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use crate::xtask;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Corruption {
    TruncatedToHalf,
    Garbage,
    Empty,
    Directory,
    DanglingSymlink,
    DevNullSymlink,
    HugeU64,
    HugeFloat,
}

const CORRUPTIONS: [Corruption; 8] = [
    Corruption::TruncatedToHalf,
    Corruption::Garbage,
    Corruption::Empty,
    Corruption::Directory,
    Corruption::DanglingSymlink,
    Corruption::DevNullSymlink,
    Corruption::HugeU64,
    Corruption::HugeFloat,
];

/// Every number in a JSON value replaced by `huge`.
fn hugify(v: &mut serde_json::Value, huge: &serde_json::Value) {
    match v {
        serde_json::Value::Number(_) => *v = huge.clone(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| hugify(x, huge)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| hugify(x, huge)),
        _ => {}
    }
}

/// The file's content with every number huge, line by line for JSON lines; `None` when
/// it holds no JSON number (a lock file, an empty file).
fn huge_content(original: &[u8], huge: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(original).ok()?;
    let huge: serde_json::Value = serde_json::from_str(huge).unwrap();
    let mut out = String::new();
    let mut any = false;
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).ok()?;
        let before = v.clone();
        hugify(&mut v, &huge);
        any |= v != before;
        // serde_json writes 1e308 as `1e308`, u64::MAX exactly.
        out.push_str(&serde_json::to_string(&v).unwrap());
        out.push('\n');
    }
    any.then(|| out.into_bytes())
}

/// Applies `c` to `path`; `None` when it does not apply to this file. Returns whether
/// the file, as left, can no longer be read as what it was (so a warning is due).
fn corrupt(path: &Utf8Path, c: Corruption) -> Option<bool> {
    let original = std::fs::read(path).unwrap();
    // Records the tool reads back; the rest (locks, a tool config it writes again when
    // it differs) owe a warning only when they cannot be replaced.
    let json = matches!(path.extension(), Some("json" | "jsonl"));
    let write = |bytes: &[u8]| std::fs::write(path, bytes).unwrap();
    let unreadable = match c {
        Corruption::TruncatedToHalf => {
            if original.len() < 2 {
                return None;
            }
            write(&original[..original.len() / 2]);
            json
        }
        Corruption::Garbage => {
            write(b"\xff\xfe\x00{{{ not json \xc3\x28\n");
            // A lock's content is never read.
            json
        }
        Corruption::Empty => {
            if original.is_empty() {
                return None;
            }
            write(b"");
            // An empty history is a history with no runs yet.
            json && !path.as_str().ends_with(".jsonl")
        }
        Corruption::Directory => {
            std::fs::remove_file(path).unwrap();
            std::fs::create_dir_all(path.join("in-the-way")).unwrap();
            true
        }
        Corruption::DanglingSymlink => {
            std::fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink("/nonexistent/pipeline-opt-state", path).unwrap();
            json
        }
        Corruption::DevNullSymlink => {
            std::fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink("/dev/null", path).unwrap();
            json && !path.as_str().ends_with(".jsonl")
        }
        Corruption::HugeU64 | Corruption::HugeFloat => {
            let huge = if c == Corruption::HugeU64 { "18446744073709551615" } else { "1e308" };
            write(&huge_content(&original, huge)?);
            // Huge values may be valid: the tool may use them (saturating) or not.
            false
        }
    };
    Some(unreadable)
}

fn git(root: &Utf8Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn copy_dir(from: &Utf8Path, to: &Utf8Path) {
    let _ = std::fs::remove_dir_all(to);
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
}

/// State files: everything under the state directory but the run's outputs (logs,
/// reports, the rustc shim) and files set aside.
fn state_files(state: &Utf8Path) -> Vec<Utf8PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![state.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = Utf8PathBuf::from_path_buf(e.path()).unwrap();
            let rel = p.strip_prefix(state).unwrap().as_str().to_owned();
            if rel == "logs" || rel == "bin" || rel.contains(".corrupt-") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if !matches!(p.extension(), Some("md" | "html" | "xml" | "prom" | "log"))
                && rel != "run.json"
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// xorshift64*, as in the interrupt campaign.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn optimize(manifest: &Utf8Path) -> Output {
    xtask(&["optimize", "--manifest-path", manifest.as_str()])
}

/// What is wrong with one run of a case, if anything.
fn judge(out: &Output, want: i32, file: &Utf8Path, warn: bool) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if stderr.contains("panicked") || code == Some(101) {
        return Err(format!("panic (exit {code:?}): {stderr}"));
    }
    if code != Some(want) {
        let wrong_hit = if code == Some(0) { " (a wrong cache hit)" } else { "" };
        return Err(format!("exit {code:?}, want {want}{wrong_hit}: {stderr}"));
    }
    if warn && !stderr.lines().any(|l| l.starts_with("warning: ") && l.contains(file.as_str())) {
        return Err(format!("no `warning:` line naming {file}: {stderr}"));
    }
    Ok(())
}

#[test]
fn every_state_file_corrupted_gives_no_panic_no_wrong_hit_and_a_warning() {
    if std::env::var_os("PIPELINE_OPT_SLOW_TESTS").is_none() {
        eprintln!("corruption campaign: skipped (set PIPELINE_OPT_SLOW_TESTS=1)");
        return;
    }
    let all = std::env::var_os("PIPELINE_OPT_CORRUPTION_ALL").is_some_and(|v| v == "1");
    let seed = std::env::var("PIPELINE_OPT_CORRUPTION_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(14);
    let started = std::time::Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let ws = Utf8Path::from_path(dir.path()).unwrap().join("ws");
    let good_test = "#[test]\nfn holds() {\n    assert_eq!(a::value(), 1);\n}\n";
    let fixture = FixtureWorkspace::new(vec![
        FixtureCrate::new("a").test("ta", good_test),
        FixtureCrate::new("b").dev_dep("a").test("tb", "#[test]\nfn fine() {}\n"),
    ])
    .config("disable = [\"doctest\", \"bench-build\"]")
    .file(".gitignore", "/target\n");
    let manifest = fixture.write(&ws).unwrap();
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "init"]);
    let first = optimize(&manifest);
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    // A second run caches everything and adds to each state file; after the stat
    // cache's racy window (2 s), so that it keeps the sources' stat data too.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let second = optimize(&manifest);
    assert_eq!(second.status.code(), Some(0), "{}", String::from_utf8_lossy(&second.stderr));

    let state = ws.join("target/pipeline-opt");
    let pristine = Utf8Path::from_path(dir.path()).unwrap().join("pristine");
    copy_dir(&state, &pristine);
    let files = state_files(&state);
    let rel = |f: &Utf8Path| f.strip_prefix(&state).unwrap().to_owned();
    let names: Vec<String> = files.iter().map(|f| rel(f).to_string()).collect();
    eprintln!("state files: {names:?}");
    for expected in ["history.jsonl", "cache/stat-cache.json", "cache/hits.json", "cache/deps.json"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} is among {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("cache/stages/")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("cache/tests/")), "{names:?}");

    let mut cases: Vec<(Utf8PathBuf, Corruption)> = Vec::new();
    for f in &files {
        for c in CORRUPTIONS {
            // Whether the corruption applies: tried on a scratch copy of the file.
            let probe = Utf8Path::from_path(dir.path()).unwrap().join("probe");
            let _ = std::fs::remove_dir_all(&probe);
            std::fs::create_dir_all(&probe).unwrap();
            let p = probe.join(f.file_name().unwrap());
            std::fs::copy(f, &p).unwrap();
            if corrupt(&p, c).is_some() {
                cases.push((rel(f), c));
            }
        }
    }
    for f in files.iter().filter(|f| f.extension() == Some("json")) {
        let n = cases.iter().filter(|(g, _)| state.join(g) == *f).count();
        assert_eq!(n, CORRUPTIONS.len(), "every corruption applies to the record {f}");
    }
    let total = cases.len();
    if !all {
        let mut rng = Rng(seed.max(1));
        let mut picked = Vec::new();
        while picked.len() < 16 && !cases.is_empty() {
            picked.push(cases.remove(rng.below(cases.len() as u64) as usize));
        }
        cases = picked;
    }

    let restore = |f: &Utf8Path, c: Corruption| -> bool {
        copy_dir(&pristine, &state);
        corrupt(&state.join(f), c).unwrap()
    };
    let mut failures = Vec::new();
    // A case fails once however many of its two runs fail.
    let mut failed = std::collections::BTreeSet::new();
    // With the sources as they were: exit 0, a warning when the file was unusable.
    for (f, c) in &cases {
        let warn = restore(f, *c);
        let result = judge(&optimize(&manifest), 0, &state.join(f), warn);
        eprintln!("{f} {c:?}, sources intact: {result:?}");
        if let Err(e) = result {
            failed.insert((f.clone(), format!("{c:?}")));
            failures.push(format!("{f} {c:?}, sources intact: {e}"));
        }
    }
    // With `a`'s test broken: exit 100 whatever the state says.
    std::fs::write(
        ws.join("crates/a/tests/ta.rs"),
        "#[test]\nfn holds() {\n    assert_eq!(a::value(), 2);\n}\n",
    )
    .unwrap();
    for (f, c) in &cases {
        restore(f, *c);
        let result = judge(&optimize(&manifest), 100, &state.join(f), false);
        eprintln!("{f} {c:?}, a test broken: {result:?}");
        if let Err(e) = result {
            failed.insert((f.clone(), format!("{c:?}")));
            failures.push(format!("{f} {c:?}, a test broken: {e}"));
        }
    }
    eprintln!(
        "corruption campaign: {} cases tried, {} passed ({} files x {} corruptions: {total} cases{}) in {:.1} s",
        cases.len(),
        cases.len() - failed.len(),
        files.len(),
        CORRUPTIONS.len(),
        if all { String::new() } else { format!(", seed {seed}") },
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
