//! The stage cache on real fixture workspaces: each test plans the pipeline, asks the
//! cache which stages to skip, runs the rest with real cargo, records the successes,
//! and checks what a second run skips and why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::cache::{
    CachedPlan, Decision, DependencyCache, Explanation, FetchError, FetchOutcome, StageCache,
};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::inputs::Inputs;
use pipeline_opt::plan::CargoArgs;
use pipeline_opt::state::StateDir;
use xshell::{Shell, cmd};

/// A fixture workspace in a git repository, with its own target dir.
pub struct Repo {
    _tmp: tempfile::TempDir,
    pub root: Utf8PathBuf,
}

impl Repo {
    pub fn new(ws: FixtureWorkspace) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
        let ws = ws.file(".gitignore", "/target\n");
        ws.write(&root).unwrap();
        let repo = Repo { _tmp: tmp, root };
        // Commit the lock file too, as a real repository does.
        let sh = Shell::new().unwrap();
        let manifest = repo.manifest();
        let mut lock =
            cmd!(sh, "cargo generate-lockfile --offline --quiet --manifest-path {manifest}");
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            lock = lock.env_remove(var);
        }
        lock.run().unwrap();
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["add", "-A"]);
        repo.git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"]);
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        let sh = Shell::new().unwrap();
        let sh = sh.with_current_dir(&self.root);
        cmd!(sh, "git {args...}").read().unwrap()
    }

    pub fn commit_all(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg]);
    }

    pub fn manifest(&self) -> Utf8PathBuf {
        self.root.join("Cargo.toml")
    }

    pub fn write(&self, rel: &str, contents: &str) {
        std::fs::write(self.root.join(rel), contents).unwrap();
    }

    pub fn append(&self, rel: &str, extra: &str) {
        let p = self.root.join(rel);
        let mut s = std::fs::read_to_string(&p).unwrap();
        s.push_str(extra);
        std::fs::write(p, s).unwrap();
    }
}

/// One pipeline run through the cache: plan, adjust, run what is not cached (in plan
/// order, which is a topological order), record successes. `env` is set on every stage.
pub fn run_pipeline(repo: &Repo, run_id: &str, env: &[(&str, &str)]) -> CachedPlan {
    let inputs = Inputs::load(Some(&repo.manifest())).unwrap();
    let mut plan = inputs.plan(CargoArgs::default(), false).unwrap();
    for s in &mut plan.stages {
        for (k, v) in env {
            s.command.env.insert(k.to_string(), v.to_string());
        }
    }
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let mut cache = StageCache::open(&state_dir, |_| {}).unwrap();
    let cached = cache
        .adjust_plan(plan, &inputs.workspace, &inputs.toolchain, &inputs.config, run_id)
        .unwrap();
    let sh = Shell::new().unwrap();
    for stage in &cached.plan.stages {
        if cached.cached_from(&stage.id).is_some() {
            continue;
        }
        let out = stage.command.to_cmd(&sh).ignore_status().output().unwrap();
        assert!(
            out.status.success(),
            "stage {} failed: {}\n{}",
            stage.id,
            stage.command.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        cache
            .record_success(
                &cached,
                &stage.id,
                run_id,
                &inputs.workspace,
                &inputs.toolchain,
                &Default::default(),
            )
            .unwrap();
    }
    cached
}

/// Stage id → `cached` or the explanations, for compact assertions.
fn decisions(c: &CachedPlan) -> BTreeMap<String, String> {
    c.decisions
        .iter()
        .map(|(k, d)| {
            let v = match d {
                Decision::Cached { from_run } => format!("cached from {from_run}"),
                Decision::Run { .. } => format!("run: {}", d.summary()),
            };
            (k.clone(), v)
        })
        .collect()
}

fn small() -> FixtureWorkspace {
    FixtureWorkspace::new(vec![
        FixtureCrate::new("base"),
        FixtureCrate::new("mid").dep("base"),
        FixtureCrate::new("top").dep("mid"),
    ])
    // Doctests compile one rustdoc per crate; they add time and nothing to these tests.
    .config("disable = [\"doctest\"]")
}

#[test]
fn rerun_is_all_cached() {
    let repo = Repo::new(small());
    let first = run_pipeline(&repo, "run-1", &[]);
    for (id, d) in &first.decisions {
        assert!(!d.is_cached(), "{id} cannot be cached on the first run");
    }
    assert_eq!(
        first.decision("build"),
        Some(&Decision::Run { explanations: vec![Explanation::NoEarlierSuccess] })
    );
    let second = run_pipeline(&repo, "run-2", &[]);
    let got = decisions(&second);
    for (id, d) in &got {
        assert_eq!(d, "cached from run-1", "stage {id}");
    }
    assert!(got.contains_key("build") && got.contains_key("test") && got.contains_key("fetch"));
    assert!(second.tests_to_run().is_empty());
}

#[test]
fn unstaged_edit_is_not_skipped_and_mtimes_alone_stay_cached() {
    let repo = Repo::new(small());
    run_pipeline(&repo, "run-1", &[]);

    // Only mtimes change: contents decide, so everything stays cached.
    let later = SystemTime::now() + Duration::from_secs(5);
    for c in ["base", "mid", "top"] {
        let f = std::fs::File::options()
            .write(true)
            .open(repo.root.join(format!("crates/{c}/src/lib.rs")))
            .unwrap();
        f.set_modified(later).unwrap();
    }
    let touched = run_pipeline(&repo, "run-2", &[]);
    for (id, d) in decisions(&touched) {
        assert_eq!(d, "cached from run-1", "stage {id} after touching mtimes");
    }

    // An edit that git does not know about (not staged) must run.
    repo.append("crates/mid/src/lib.rs", "\npub fn extra() -> u8 { 2 }\n");
    assert!(repo.git(&["diff", "--cached", "--name-only"]).is_empty());
    let edited = run_pipeline(&repo, "run-3", &[]);
    assert_eq!(
        edited.decision("build"),
        Some(&Decision::Run {
            explanations: vec![Explanation::FileChanged { path: "crates/mid/src/lib.rs".into() }]
        })
    );
    // `base` does not depend on `mid`: its tests stay cached; `mid` and `top` rerun.
    assert_eq!(edited.tests_to_run(), vec!["mid".to_string(), "top".to_string()]);
    assert!(edited.packages["test"]["base"].is_cached());
    let test = edited.plan.stage("test").unwrap();
    if test.command.args()[0] == "nextest" {
        let i = test.command.args().iter().position(|a| a == "-E").expect("a filterset");
        assert_eq!(test.command.args()[i + 1], "package(=mid) | package(=top)");
    }
}

#[test]
fn editing_an_include_str_file_invalidates() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("reader")
            .lib("pub fn data() -> &'static str { include_str!(\"../../../shared/data.txt\") }\n"),
        FixtureCrate::new("other"),
    ])
    .config("disable = [\"doctest\"]")
    .file("shared/data.txt", "one");
    let repo = Repo::new(ws);
    // A file written in the second before a stage starts is not trusted to be the
    // content the stage read (see `augment_after_success`); this one is older.
    let data =
        std::fs::File::options().write(true).open(repo.root.join("shared/data.txt")).unwrap();
    data.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
    run_pipeline(&repo, "run-1", &[]);
    // The file lies outside every package: only the dep-info of run 1 reveals it, and
    // it was recorded with run 1's success, so run 2 is all cached.
    let second = run_pipeline(&repo, "run-2", &[]);
    assert!(second.decision("build").unwrap().is_cached(), "{:?}", decisions(&second));
    repo.write("shared/data.txt", "two");
    let third = run_pipeline(&repo, "run-3", &[]);
    assert_eq!(
        third.decision("build"),
        Some(&Decision::Run {
            explanations: vec![Explanation::FileChanged { path: "shared/data.txt".into() }]
        })
    );
    // Tests may read any file outside the member packages at run time, so by default
    // every package's tests cover it, not only the one whose dep-info names it.
    assert_eq!(third.tests_to_run(), vec!["other".to_string(), "reader".to_string()]);
}

#[test]
fn changing_rustflags_invalidates() {
    let repo = Repo::new(small());
    run_pipeline(&repo, "run-1", &[]);
    let changed = run_pipeline(&repo, "run-2", &[("RUSTFLAGS", "-Cdebug-assertions=off")]);
    let build = changed.decision("build").unwrap();
    assert_eq!(build.summary(), "RUSTFLAGS changed");
    assert_eq!(changed.tests_to_run().len(), 3);
    // Bookkeeping variables are not inputs.
    let same = run_pipeline(
        &repo,
        "run-3",
        &[("RUSTFLAGS", "-Cdebug-assertions=off"), ("CARGO_MAKEFLAGS", "-j3")],
    );
    assert!(same.decision("build").unwrap().is_cached(), "{:?}", decisions(&same));
}

#[test]
fn changing_cargo_lock_refetches() {
    let repo = Repo::new(small());
    let inputs = Inputs::load(Some(&repo.manifest())).unwrap();
    let state = inputs.workspace.state_dir(&inputs.config);
    let deps = DependencyCache::open(&state);
    assert!(deps.needs_fetch(&inputs.workspace, &inputs.toolchain));
    let outcome = deps.ensure_fetched(&inputs.workspace, &inputs.toolchain, &BTreeMap::new());
    assert_eq!(outcome.unwrap(), FetchOutcome::Fetched);
    assert!(!deps.needs_fetch(&inputs.workspace, &inputs.toolchain));
    let again = deps.ensure_fetched(&inputs.workspace, &inputs.toolchain, &BTreeMap::new());
    assert_eq!(again.unwrap(), FetchOutcome::AlreadyFetched);

    run_pipeline(&repo, "run-1", &[]);
    assert!(run_pipeline(&repo, "run-2", &[]).decision("fetch").unwrap().is_cached());
    // A new dependency changes the lock file (cargo rewrites hand edits, so change it
    // the way a user would).
    let m = std::fs::read_to_string(repo.root.join("crates/top/Cargo.toml")).unwrap();
    repo.write(
        "crates/top/Cargo.toml",
        &m.replacen("[dependencies]\n", "[dependencies]\nbase = { path = \"../base\" }\n", 1),
    );
    let before = std::fs::read_to_string(repo.root.join("Cargo.lock")).unwrap();
    let after = run_pipeline(&repo, "run-3", &[]);
    assert_ne!(before, std::fs::read_to_string(repo.root.join("Cargo.lock")).unwrap());
    assert!(!after.decision("fetch").unwrap().is_cached());
    // Cargo.lock is a root input of every stage.
    let Some(Decision::Run { explanations }) = after.decision("build") else { panic!() };
    assert!(explanations.contains(&Explanation::FileChanged { path: "Cargo.lock".into() }));
}

#[test]
fn a_missing_dependency_offline_is_one_clear_error() {
    let repo = Repo::new(FixtureWorkspace::new(vec![FixtureCrate::new("needs-itoa")]));
    // A dependency that is not downloaded, with the registry unreachable.
    let m = std::fs::read_to_string(repo.root.join("crates/needs-itoa/Cargo.toml")).unwrap();
    repo.write(
        "crates/needs-itoa/Cargo.toml",
        &m.replacen("[dependencies]\n", "[dependencies]\nitoa = \"=0.4.1\"\n", 1),
    );
    // Resolving (not downloading) uses the registry's index, which is reachable here.
    let inputs = Inputs::load(Some(&repo.manifest())).unwrap();
    let state = inputs.workspace.state_dir(&inputs.config);
    // An empty cargo home: nothing is downloaded, and nothing this test does can
    // download into the real one.
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    let unreachable: BTreeMap<String, String> = [
        ("CARGO_HOME", home),
        ("https_proxy", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("http_proxy", "http://127.0.0.1:9"),
        ("CARGO_HTTP_PROXY", "http://127.0.0.1:9"),
        ("CARGO_NET_RETRY", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let err = DependencyCache::open(&state)
        .ensure_fetched(&inputs.workspace, &inputs.toolchain, &unreachable)
        .unwrap_err();
    assert!(matches!(err, FetchError::Missing { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("dependency `itoa"), "{msg}");
    assert!(msg.contains("registry cannot be reached"), "{msg}");
}

#[test]
fn a_corrupted_cache_file_is_a_miss_with_a_warning() {
    let repo = Repo::new(small());
    run_pipeline(&repo, "run-1", &[]);
    let cache_dir = repo.root.join("target/pipeline-opt/cache");
    let build = cache_dir.join("stages/build.json");
    let text = std::fs::read_to_string(&build).unwrap();
    std::fs::write(&build, &text[..text.len() / 2]).unwrap();
    std::fs::write(cache_dir.join("stat-cache.json"), "{ not json").unwrap();
    std::fs::write(cache_dir.join("tests/test.mid.json"), "").unwrap();
    let second = run_pipeline(&repo, "run-2", &[]);
    assert!(matches!(
        second.decision("build"),
        Some(Decision::Run { explanations }) if matches!(explanations[..], [Explanation::UnreadableEntry { .. }])
    ));
    assert_eq!(second.tests_to_run(), vec!["mid".to_string()]);
    assert!(
        second.warnings.iter().any(|w| w.contains("stages/build.json")),
        "{:?}",
        second.warnings
    );
    assert!(second.warnings.iter().any(|w| w.contains("stat-cache.json")), "{:?}", second.warnings);
    // The rerun repaired the entries.
    let third = run_pipeline(&repo, "run-3", &[]);
    assert!(third.decisions.values().all(Decision::is_cached), "{:?}", decisions(&third));
}

#[test]
fn two_invocations_at_once_wait_for_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(Utf8Path::from_path(tmp.path()).unwrap());
    let first = StageCache::open(&state, |_| panic!("nobody holds the lock yet")).unwrap();
    let waited = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let handle = {
        let state = state.clone();
        let waited = waited.clone();
        std::thread::spawn(move || {
            let second = StageCache::open(&state, |lock| {
                assert!(lock.ends_with("cache/lock"));
                waited.store(true, Ordering::SeqCst);
                tx.send(()).unwrap();
            })
            .unwrap();
            second.store.record_stage("s", "run-2", &Default::default()).unwrap();
        })
    };
    rx.recv_timeout(Duration::from_secs(30)).expect("the second invocation reports that it waits");
    first.store.record_stage("s", "run-1", &Default::default()).unwrap();
    drop(first);
    handle.join().unwrap();
    assert!(waited.load(Ordering::SeqCst));
    let mut again = StageCache::open(&state, |_| {}).unwrap();
    // Both wrote; the later write is the newest record (equal fingerprints keep one).
    assert_eq!(again.store.stage_records("s").unwrap()[0].run_id, "run-2");
}

#[test]
fn one_leaf_change_reruns_only_the_leaf_and_its_dependents() {
    // 50 crates when CI runs everything; a smaller graph of the same shape otherwise.
    let n = if std::env::var_os("PIPELINE_OPT_SLOW_TESTS").is_some() { 50 } else { 12 };
    if n < 50 {
        eprintln!("note: using a {n}-crate fixture; PIPELINE_OPT_SLOW_TESTS=1 uses 50");
    }
    let repo = Repo::new(FixtureWorkspace::wide(n).config("disable = [\"doctest\"]"));
    run_pipeline(&repo, "run-1", &[]);
    repo.append("crates/leaf3/src/lib.rs", "\npub fn more() -> u64 { 3 }\n");
    let leaf = run_pipeline(&repo, "run-2", &[]);
    assert_eq!(leaf.tests_to_run(), vec!["app".to_string(), "leaf3".to_string()]);
    let cached: BTreeSet<&String> =
        leaf.of_stage("test").filter(|(_, d)| d.is_cached()).map(|(p, _)| p).collect();
    assert_eq!(cached.len(), n - 2);

    repo.append("crates/core/src/lib.rs", "\npub fn more() -> u64 { 4 }\n");
    let root = run_pipeline(&repo, "run-3", &[]);
    assert_eq!(root.tests_to_run().len(), n, "a change to `core` reaches every package");
}

#[test]
fn status_clean_and_budget() {
    use pipeline_opt::cache::maintain;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(Utf8Path::from_path(tmp.path()).unwrap());
    {
        let mut cache = StageCache::open(&state, |_| {}).unwrap();
        cache.store.record_stage("build", "run-1", &Default::default()).unwrap();
        cache.store.record_test("test", "core", "run-1", &Default::default()).unwrap();
        cache.store.record_hits("run-1", 0, 3).unwrap();
        cache.store.record_hits("run-2", 3, 1).unwrap();
    }
    maintain::claim_dir(&state.join("bench-target"), true).unwrap();
    std::fs::create_dir_all(state.join("bench-target/debug")).unwrap();
    std::fs::write(state.join("bench-target/debug/big"), vec![0u8; 200_000]).unwrap();

    let status = maintain::status(&state, Some(100_000));
    assert_eq!(status.entries, 2);
    assert_eq!(status.hit_rate, Some(3.0 / 7.0));
    assert_eq!(status.target_dirs.len(), 1);
    assert!(status.over_budget());
    let text = status.render_text();
    assert!(text.contains("hit rate:  43% (3 of 7 stages cached over the last 2 runs)"), "{text}");
    assert!(text.contains("over the budget of 97.7 KiB"), "{text}");

    // Nothing is a day old yet.
    let none = maintain::clean(&state, Some(Duration::from_secs(86_400)), |_| {}).unwrap();
    assert!(none.removed.is_empty());
    // The budget removes the rebuildable target directory first, and stops there.
    let freed = maintain::enforce_budget(&state, 100_000, |_| {}).unwrap();
    assert_eq!(freed.removed, [state.join("bench-target")]);
    assert_eq!(maintain::status(&state, None).entries, 2);
    let all = maintain::clean(&state, None, |_| {}).unwrap();
    assert!(all.removed.len() >= 3, "{:?}", all.removed);
    let after = maintain::status(&state, None);
    assert_eq!((after.entries, after.hit_rate), (0, None));
}

#[test]
fn the_cache_budget_is_read_from_config_with_clear_errors() {
    use pipeline_opt::config::Config;
    let ok =
        serde_json::json!({"pipeline-opt": {"cache": {"budget": "5GiB", "env": ["DATABASE_URL"]}}});
    let config = Config::from_workspace_metadata(&ok).unwrap();
    assert_eq!(config.cache.budget, Some(5 * 1024 * 1024 * 1024));
    assert_eq!(config.cache.env, ["DATABASE_URL"]);
    let bad = serde_json::json!({"pipeline-opt": {"cache": {"budget": "lots"}}});
    let err = Config::from_workspace_metadata(&bad).unwrap_err().to_string();
    assert!(err.starts_with("invalid `workspace.metadata.pipeline-opt.cache.budget`"), "{err}");
    assert!(err.contains("write it like \"5GiB\""), "{err}");
    let unknown = serde_json::json!({"pipeline-opt": {"cache": {"size": "1GB"}}});
    let err = Config::from_workspace_metadata(&unknown).unwrap_err().to_string();
    assert!(err.contains("unknown field `size`"), "{err}");
}

#[test]
fn optimize_serves_a_rerun_from_the_cache_and_since_narrows_it() {
    use pipeline_opt::optimize::{OptimizeOptions, run_optimized_pipeline};
    use pipeline_opt::record::StageStatus;
    let repo = Repo::new(FixtureWorkspace::diamond().config("disable = [\"doctest\"]"));
    let options =
        OptimizeOptions { manifest_path: Some(repo.manifest()), ..OptimizeOptions::default() };
    let first = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(first.exit_code, 0);
    assert_eq!(first.record.cache["build"], "no earlier success");

    let second = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(second.exit_code, 0);
    for s in &second.record.stages {
        let StageStatus::Cached { from_run } = &s.status else {
            panic!("stage {} was not cached: {:?}", s.id, s.status)
        };
        assert_eq!(from_run, &first.record.run_id);
    }
    let report = std::fs::read_to_string(&second.reports.markdown).unwrap();
    assert!(report.contains("## Cache"), "{report}");

    // An unstaged edit to `left` since HEAD: only left and top are built and tested.
    repo.append("crates/left/src/lib.rs", "\npub fn more() {}\n");
    let since = OptimizeOptions { since: Some("HEAD".into()), ..options.clone() };
    let third = run_optimized_pipeline(&since, &mut |_| {}).unwrap();
    assert_eq!(third.exit_code, 0);
    assert!(
        third
            .record
            .notes
            .contains(&"--since HEAD: left changed; with their dependents: left, top".to_string()),
        "{:?}",
        third.record.notes
    );
    let build = third.record.stages.iter().find(|s| s.id == "build").unwrap();
    assert_eq!(build.status, StageStatus::Succeeded);
    assert!(build.command.contains("--package left --package top"), "{}", build.command);
    assert!(!build.command.contains("--workspace"));

    // The full run's records survive the narrowed run: with `left` restored, a full
    // run is served from the first run again.
    let lib = repo.root.join("crates/left/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, text.replace("\npub fn more() {}\n", "")).unwrap();
    let fourth = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert!(
        fourth.record.stages.iter().all(|s| matches!(s.status, StageStatus::Cached { .. })),
        "{:?}",
        fourth.record.cache
    );
}

/// #14 defect 1: break a crate, plan the run, fix the crate while the run goes on
/// (after fetch, before build: the hook is this test, between two stages), let the run
/// pass, break the crate again: the next run must not serve the broken crate's tests
/// from the cache. Before the fix the success was recorded under the fingerprint taken
/// at planning time, that of the broken crate, and the test stage was cached.
#[test]
fn an_edit_during_the_run_is_not_recorded() {
    const BROKEN: &str = "pub fn answer() -> u32 {\n    2\n}\n";
    const FIXED: &str = "pub fn answer() -> u32 {\n    1\n}\n";
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("flip")
            .lib(BROKEN)
            .test("t", "#[test]\nfn answer_is_one() {\n    assert_eq!(flip::answer(), 1);\n}\n"),
    ])
    .config("disable = [\"doctest\", \"bench-build\"]");
    let repo = Repo::new(ws);
    let inputs = Inputs::load(Some(&repo.manifest())).unwrap();
    let plan = inputs.plan(CargoArgs::default(), false).unwrap();
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let mut cache = StageCache::open(&state_dir, |_| {}).unwrap();
    let cached = cache
        .adjust_plan(plan, &inputs.workspace, &inputs.toolchain, &inputs.config, "run-1")
        .unwrap();
    let sh = Shell::new().unwrap();
    let mut notes = Vec::new();
    for stage in &cached.plan.stages {
        if stage.id == "build" {
            repo.write("crates/flip/src/lib.rs", FIXED);
        }
        let out = stage.command.to_cmd(&sh).ignore_status().output().unwrap();
        assert!(out.status.success(), "{}: {}", stage.id, String::from_utf8_lossy(&out.stderr));
        notes.extend(
            cache
                .record_success(
                    &cached,
                    &stage.id,
                    "run-1",
                    &inputs.workspace,
                    &inputs.toolchain,
                    &Default::default(),
                )
                .unwrap(),
        );
    }
    assert!(
        notes.iter().any(|n| n.contains("the tests of `flip` not recorded")
            && n.contains("crates/flip/src/lib.rs")),
        "{notes:?}"
    );
    drop(cache);

    repo.write("crates/flip/src/lib.rs", BROKEN);
    let inputs = Inputs::load(Some(&repo.manifest())).unwrap();
    let plan = inputs.plan(CargoArgs::default(), false).unwrap();
    let mut cache = StageCache::open(&state_dir, |_| {}).unwrap();
    let next = cache
        .adjust_plan(plan, &inputs.workspace, &inputs.toolchain, &inputs.config, "run-2")
        .unwrap();
    assert!(!next.decision("test").unwrap().is_cached(), "{:?}", decisions(&next));
    assert!(!next.decision("build").unwrap().is_cached(), "{:?}", decisions(&next));
    assert_eq!(next.tests_to_run(), vec!["flip".to_string()]);
}

/// #19 (one-leaf change): with a package at the workspace root, the sources of its own
/// targets (`src/`) are its code, not a workspace-level file every package's tests might
/// read: editing them reruns the root package's tests, not those of a member that does
/// not depend on it. A data file at the root still reruns everything. Before the change
/// `leaf` reran as well ("src/lib.rs changed").
#[test]
fn the_root_packages_sources_rerun_only_its_own_tests() {
    let ws = FixtureWorkspace {
        package_config: Some("disable = [\"doctest\", \"bench-build\"]".into()),
        ..FixtureWorkspace::new(vec![FixtureCrate::new("leaf")])
    };
    let repo = Repo::new(ws);
    run_pipeline(&repo, "run-1", &[]);
    repo.append("src/lib.rs", "\npub fn more() {}\n");
    let second = run_pipeline(&repo, "run-2", &[]);
    assert_eq!(second.tests_to_run(), vec!["root".to_string()], "{:?}", second.packages);
    repo.write("notes.txt", "read by a test, maybe\n");
    let third = run_pipeline(&repo, "run-3", &[]);
    assert_eq!(third.tests_to_run(), vec!["leaf".to_string(), "root".to_string()]);
}
