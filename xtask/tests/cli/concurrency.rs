//! Issue #14's concurrency group, kept as a test: two and three `optimize` runs started
//! at once on one workspace, `cache clean` started while a run is inside a stage, and
//! `optimize` beside `check`. Real xtask processes on one generated fixture, warmed
//! once. Each case checks: no panic, every exit code right for the source, exactly one
//! history line per run (each parses), every record parses, the cache consistent
//! afterwards (the next run is cached or reruns, never a wrong green) and no user file
//! touched.
//!
//! The edit-during-run case is `cache::an_edit_during_the_run_is_not_recorded` (it).
//! Cases: 3 by default (two runs at once, clean during a run, beside check), all 8 with
//! `PIPELINE_OPT_SLOW_TESTS` (CI sets it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::report::HISTORY_FILE;

/// Passes while `value()` is below 1000, after a second (so runs overlap); fails at once.
const TEST_SRC: &str = r#"
#[test]
fn value_is_small() {
    assert!(a::value() < 1000, "value {}", a::value());
    std::thread::sleep(std::time::Duration::from_millis(1000));
}
"#;

const WAITING: &str = "waiting for another pipeline-opt run";

struct Fixture {
    _dir: tempfile::TempDir,
    ws: Utf8PathBuf,
    /// Outside the workspace: the records each run is asked for (`--json`).
    out: Utf8PathBuf,
    manifest: Utf8PathBuf,
    state: Utf8PathBuf,
    /// Bumped on every edit, so each case's first run has something to build and test.
    edits: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ws = Utf8Path::from_path(dir.path()).unwrap().join("ws");
        let fixture = FixtureWorkspace::new(vec![
            FixtureCrate::new("a").lib("pub fn value() -> u64 { 0 }\n").test("t", TEST_SRC),
        ])
        .file("notes/keep.txt", "the user's own file\n")
        // A budget far above the fixture's size: every run checks it, nothing goes.
        .config("disable = [\"doctest\", \"bench-build\"]\n[cache]\nbudget = \"100GiB\"");
        let manifest = fixture.write(&ws).unwrap();
        let state = ws.join("target/pipeline-opt");
        let out = ws.parent().unwrap().join("out");
        std::fs::create_dir_all(&out).unwrap();
        Fixture { _dir: dir, ws, out, manifest, state, edits: 0 }
    }

    /// A fresh source: `value()` passes the test when `good`, fails it otherwise.
    fn edit(&mut self, good: bool) {
        self.edits += 1;
        let value = if good { self.edits } else { 1000 + self.edits };
        std::fs::write(
            self.ws.join("crates/a/src/lib.rs"),
            format!("pub fn value() -> u64 {{ {value} }}\n"),
        )
        .unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args).args(["--manifest-path", self.manifest.as_str()]);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    fn optimize(&self, json: &Utf8Path) -> Command {
        self.command(&["optimize", "--json", json.as_str()])
    }

    fn history(&self, file: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = self.state.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .map(|l| {
                serde_json::from_str(l).map_err(|e| format!("{path}: torn or bad line {l:?}: {e}"))
            })
            .collect()
    }

    /// Every file outside `target/` with its contents.
    fn user_files(&self) -> BTreeMap<Utf8PathBuf, Vec<u8>> {
        fn walk(dir: &Utf8Path, skip: &Utf8Path, out: &mut BTreeMap<Utf8PathBuf, Vec<u8>>) {
            for e in dir.read_dir_utf8().unwrap().flatten() {
                let p = e.path().to_path_buf();
                if p == skip {
                    continue;
                } else if e.file_type().unwrap().is_dir() {
                    walk(&p, skip, out);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.ws, &self.ws.join("target"), &mut out);
        out
    }
}

struct Done {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn finish(child: Child) -> Done {
    let out = child.wait_with_output().unwrap();
    Done {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn no_panic(who: &str, d: &Done) -> Result<(), String> {
    if d.stderr.contains("panicked") || d.stdout.contains("panicked") {
        return Err(format!("{who} panicked: {}{}", d.stdout, d.stderr));
    }
    Ok(())
}

/// The record at `json`: its outcome and each stage's state.
fn record(json: &Utf8Path) -> Result<(String, BTreeMap<String, String>), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{json}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{json} does not parse: {e}"))?;
    let outcome = v["outcome"].as_str().unwrap_or("?").to_string();
    let stages = v["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let id = s["id"].as_str().unwrap_or("?").to_string();
            (id, s["status"]["state"].as_str().unwrap_or("?").to_string())
        })
        .collect();
    Ok((outcome, stages))
}

/// A run after the case: `good` source exits 0 (cached or not), a bad one exits 100
/// with its test stage failed (never served green from the cache). Returns whether
/// every stage was cached.
fn next_run_is_right(f: &Fixture, good: bool) -> Result<bool, String> {
    let json = f.out.join("next.json");
    let d = finish(f.optimize(&json).spawn().unwrap());
    no_panic("the next run", &d)?;
    let (outcome, stages) = record(&json)?;
    let want = if good { 0 } else { 100 };
    if d.code != Some(want) {
        return Err(format!("the next run exited {:?}, not {want}: {}", d.code, d.stderr));
    }
    if !good && (outcome == "succeeded" || stages.get("test").map(String::as_str) != Some("failed"))
    {
        return Err(format!("the next run on a broken source: {outcome}, {stages:?}"));
    }
    Ok(stages.values().all(|s| s == "cached"))
}

/// `n` optimize runs started at once.
fn runs_at_once(f: &mut Fixture, n: usize, good: bool) -> Result<(), String> {
    f.edit(good);
    let before = f.history(HISTORY_FILE)?.len();
    let jsons: Vec<Utf8PathBuf> = (0..n).map(|i| f.out.join(format!("run{i}.json"))).collect();
    let children: Vec<Child> = jsons.iter().map(|j| f.optimize(j).spawn().unwrap()).collect();
    let done: Vec<Done> = children.into_iter().map(finish).collect();
    let want = if good { 0 } else { 100 };
    let mut waited = 0;
    for (i, d) in done.iter().enumerate() {
        no_panic(&format!("run {i}"), d)?;
        if d.code != Some(want) {
            return Err(format!("run {i} exited {:?}, not {want}: {}", d.code, d.stderr));
        }
        waited += d.stderr.matches(WAITING).count();
        let (outcome, _) = record(&jsons[i])?;
        let right = if good { outcome == "succeeded" } else { outcome == "stage-failed" };
        if !right {
            return Err(format!("run {i}'s record says {outcome}"));
        }
    }
    // One holds the lock; each of the others says once that it waits.
    if waited != n - 1 {
        return Err(format!("{waited} runs said they waited, not {}", n - 1));
    }
    let after = f.history(HISTORY_FILE)?;
    if after.len() != before + n {
        return Err(format!("history: {} lines after {before}, not {}", after.len(), before + n));
    }
    let all_cached = next_run_is_right(f, good)?;
    if good && !all_cached {
        return Err("the run after them was not all cached".into());
    }
    Ok(())
}

/// `cache clean` started once the run is inside a stage.
fn clean_during_run(f: &mut Fixture, good: bool) -> Result<(), String> {
    f.edit(good);
    let files = f.user_files();
    let json = f.out.join("run.json");
    // Output piped: the run shows plain progress lines (`[  0.4 s] test: started`).
    let mut run = f.optimize(&json).spawn().unwrap();
    let (inside, readers) = until_a_stage_starts(&mut run);
    let clean = f.command(&["cache", "clean"]).spawn().unwrap();
    let status = run.wait().unwrap();
    let mut out = readers.into_iter().map(|r| r.join().unwrap());
    let (stderr, stdout) = (out.next().unwrap(), out.next().unwrap());
    let run = Done { code: status.code(), stdout, stderr };
    let clean = finish(clean);
    if !inside {
        return Err(format!("never saw a stage start: {}{}", run.stdout, run.stderr));
    }
    no_panic("the run", &run)?;
    no_panic("clean", &clean)?;
    let want = if good { 0 } else { 100 };
    if run.code != Some(want) {
        return Err(format!("the run exited {:?}, not {want}: {}", run.code, run.stderr));
    }
    let (outcome, _) = record(&json)?;
    if (outcome == "succeeded") != good {
        return Err(format!("the run's record says {outcome}"));
    }
    if clean.code != Some(0) {
        return Err(format!("clean exited {:?}: {}", clean.code, clean.stderr));
    }
    // The run holds the cache lock through its stages: clean waits for it, and says so
    // in one line.
    let said: Vec<&str> = clean.stderr.lines().collect();
    if said.len() != 1 || !said[0].contains(WAITING) {
        return Err(format!("clean's stderr is not one waiting line: {}", clean.stderr));
    }
    if !clean.stdout.contains("removed") && !clean.stdout.contains("freed") {
        return Err(format!("clean reported nothing: {}", clean.stdout));
    }
    if f.user_files() != files {
        return Err("a user file changed or went away".into());
    }
    // Clean came after the run's records: the next run proves everything again.
    if next_run_is_right(f, good)? {
        return Err("the run after clean was served from the cache".into());
    }
    Ok(())
}

/// Reads `run`'s output as it comes until a stage has started; the readers give back
/// its stderr and stdout.
fn until_a_stage_starts(run: &mut Child) -> (bool, Vec<std::thread::JoinHandle<String>>) {
    let (tx, rx) = mpsc::channel();
    let mut streams: Vec<Box<dyn std::io::Read + Send>> =
        vec![Box::new(run.stderr.take().unwrap()), Box::new(run.stdout.take().unwrap())];
    let readers: Vec<_> = streams
        .drain(..)
        .map(|s| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    text.push_str(&line);
                    text.push('\n');
                }
                text
            })
        })
        .collect();
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut inside = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("test: started") || line.contains("build: started") => {
                inside = true;
                break;
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    (inside, readers)
}

/// A run whose stages end while a later run waits for the lock: with a cache budget it
/// checks the budget before it lets go of the lock, so it does not wait for the later
/// run (`--no-cache`, a second of tests) to end.
fn run_ends_before_a_later_one(f: &mut Fixture) -> Result<(), String> {
    f.edit(true);
    let before = f.history(HISTORY_FILE)?.len();
    let (first_json, later_json) = (f.out.join("first.json"), f.out.join("later.json"));
    let mut first = f.optimize(&first_json).spawn().unwrap();
    let (inside, readers) = until_a_stage_starts(&mut first);
    let mut later = f.command(&["optimize", "--no-cache", "--json", later_json.as_str()]);
    let mut later = later.spawn().unwrap();
    let status = first.wait().unwrap();
    let later_still_running = later.try_wait().unwrap().is_none();
    let mut out = readers.into_iter().map(|r| r.join().unwrap());
    let (stderr, stdout) = (out.next().unwrap(), out.next().unwrap());
    let first = Done { code: status.code(), stdout, stderr };
    let later = finish(later);
    if !inside {
        return Err(format!("never saw a stage start: {}{}", first.stdout, first.stderr));
    }
    no_panic("the first run", &first)?;
    no_panic("the later run", &later)?;
    if first.code != Some(0) || later.code != Some(0) {
        return Err(format!(
            "exits {:?} and {:?}: {}\n{}",
            first.code, later.code, first.stderr, later.stderr
        ));
    }
    if !later.stderr.contains(WAITING) {
        return Err(format!("the later run did not wait: {}", later.stderr));
    }
    if !later_still_running {
        return Err("the first run waited for the later run to end before it exited".into());
    }
    for j in [&first_json, &later_json] {
        let (outcome, _) = record(j)?;
        if outcome != "succeeded" {
            return Err(format!("{j}: {outcome}"));
        }
    }
    let after = f.history(HISTORY_FILE)?.len();
    if after != before + 2 {
        return Err(format!("history: {after} lines after {before}, not {}", before + 2));
    }
    next_run_is_right(f, true).map(|_| ())
}

/// `optimize` and `check` at once: each writes its own files and history only.
fn optimize_beside_check(f: &mut Fixture) -> Result<(), String> {
    f.edit(true);
    let before = f.history(HISTORY_FILE)?.len();
    let check_history = format!("check-{HISTORY_FILE}");
    let check_before = f.history(&check_history)?.len();
    let opt = f.command(&["optimize"]).spawn().unwrap();
    let check = f.command(&["check"]).spawn().unwrap();
    let (opt, check) = (finish(opt), finish(check));
    no_panic("optimize", &opt)?;
    no_panic("check", &check)?;
    if opt.code != Some(0) || check.code != Some(0) {
        return Err(format!(
            "optimize exited {:?}, check {:?}: {}\n{}",
            opt.code, check.code, opt.stderr, check.stderr
        ));
    }
    let h = f.history(HISTORY_FILE)?;
    let ch = f.history(&check_history)?;
    if h.len() != before + 1 || ch.len() != check_before + 1 {
        return Err(format!(
            "history {} after {before}, check history {} after {check_before}",
            h.len(),
            ch.len()
        ));
    }
    let command = |v: &serde_json::Value| v["command"].as_str().unwrap_or("").to_string();
    let (last, check_last) = (command(h.last().unwrap()), command(ch.last().unwrap()));
    if !last.contains("optimize") || !check_last.contains("check") {
        return Err(format!("history has `{last}`, check history `{check_last}`"));
    }
    for (file, kind) in [("run.json", "optimize"), ("check-run.json", "check")] {
        let text =
            std::fs::read_to_string(f.state.join(file)).map_err(|e| format!("{file}: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{file} does not parse: {e}"))?;
        if !command(&v).contains(kind) || v["outcome"] != "succeeded" {
            return Err(format!("{file}: command `{}`, outcome {}", command(&v), v["outcome"]));
        }
    }
    Ok(())
}

#[test]
fn runs_at_once_and_clean_during_a_run_keep_history_and_cache_whole() {
    let slow = std::env::var_os("PIPELINE_OPT_SLOW_TESTS").is_some();
    let started = Instant::now();
    let mut f = Fixture::new();
    // Warm once: the first run compiles everything.
    let warm = finish(f.optimize(&f.out.join("run.json")).spawn().unwrap());
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);

    type Case = (&'static str, bool, fn(&mut Fixture) -> Result<(), String>);
    // (name, in the default subset, case)
    let all: [Case; 8] = [
        ("two runs at once", true, |f| runs_at_once(f, 2, true)),
        ("three runs at once", false, |f| runs_at_once(f, 3, true)),
        ("two runs at once, tests failing", false, |f| runs_at_once(f, 2, false)),
        ("three runs at once, tests failing", false, |f| runs_at_once(f, 3, false)),
        ("cache clean during a run", true, |f| clean_during_run(f, true)),
        ("cache clean during a failing run", false, |f| clean_during_run(f, false)),
        ("optimize beside check", true, optimize_beside_check),
        ("a run ends while a later one holds the lock", false, run_ends_before_a_later_one),
    ];
    let cases: Vec<Case> = all.into_iter().filter(|c| slow || c.1).collect();
    if !slow {
        eprintln!("note: {} of 8 cases; PIPELINE_OPT_SLOW_TESTS=1 runs all", cases.len());
    }
    let mut failures = Vec::new();
    for &(name, _, case) in &cases {
        let t = Instant::now();
        let result = case(&mut f);
        eprintln!("case `{name}` ({:.1} s): {result:?}", t.elapsed().as_secs_f64());
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    eprintln!(
        "concurrency campaign: {} cases tried, {} passed ({:.1} s)",
        cases.len(),
        cases.len() - failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
