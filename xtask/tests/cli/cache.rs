//! The stage cache through the real `cargo xtask optimize`: what a fingerprint covers
//! (never a false green) on fixture workspaces in real git repositories.

use std::process::Output;

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use crate::temp;
use crate::xtask;

pub(crate) fn git(root: &Utf8Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes `ws` under `dir` as a committed git repository; returns the manifest path.
pub(crate) fn repo(ws: FixtureWorkspace, dir: &Utf8Path) -> Utf8PathBuf {
    let manifest = ws.file(".gitignore", "/target\n").write(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "init"]);
    manifest
}

fn optimize(manifest: &Utf8Path, extra: &[&str]) -> Output {
    let mut args = vec!["optimize", "--manifest-path", manifest.as_str(), "--explain"];
    args.extend(extra);
    xtask(&args)
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

/// A test reads a workspace-level file at run time (no dep-info names it) and is
/// limited by `.config/nextest.toml`: changing either reruns the test, which then
/// fails, and `--explain` names the file. Before the fix both said `test: cached`.
#[test]
fn cli_test_inputs_outside_the_package_are_fingerprinted() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("reader").test(
        "data",
        "#[test]\nfn reads_testdata() {\n    let text = std::fs::read_to_string(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../../testdata/x.txt\")).unwrap();\n    assert_eq!(text.trim(), \"good\");\n}\n\
         #[test]\nfn takes_a_while() {\n    std::thread::sleep(std::time::Duration::from_millis(1500));\n}\n",
    )])
    .file("testdata/x.txt", "good\n")
    .file(".config/nextest.toml", "[profile.default]\nslow-timeout = \"60s\"\n")
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = repo(ws, &dir);
    assert_exit(&optimize(&manifest, &[]), 0);

    std::fs::write(dir.join("testdata/x.txt"), "bad\n").unwrap();
    let stderr = assert_exit(&optimize(&manifest, &[]), 100);
    assert!(stderr.contains("explain: test: testdata/x.txt changed"), "{stderr}");

    std::fs::write(dir.join("testdata/x.txt"), "good\n").unwrap();
    let stderr = assert_exit(&optimize(&manifest, &[]), 0);
    assert!(stderr.contains("explain: test: cached from run"), "{stderr}");

    // A test that needs 1.5 s, killed after 0.5 s: the edit alone makes it fail.
    std::fs::write(
        dir.join(".config/nextest.toml"),
        "[profile.default]\nslow-timeout = { period = \"500ms\", terminate-after = 1 }\n",
    )
    .unwrap();
    let stderr = assert_exit(&optimize(&manifest, &[]), 100);
    assert!(stderr.contains("explain: test: .config/nextest.toml changed"), "{stderr}");
}

/// `cache.exclude` narrows the fingerprint (an excluded file the test reads is the
/// user's own false green), `--verify-cache` finds exactly that, `--no-cache` runs the
/// test anyway, and `cache.inputs` adds a git-ignored file the default leaves out.
#[test]
fn cli_cache_inputs_exclude_no_cache_and_verify_cache() {
    let (_t, dir) = temp();
    let read = |path: &str| {
        format!(
            "std::fs::read_to_string(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../../{path}\")).unwrap().trim().to_string()"
        )
    };
    let test = format!(
        "#[test]\nfn excluded_data() {{\n    assert_eq!({}, \"good\");\n}}\n#[test]\nfn declared_data() {{\n    assert_eq!({}, \"good\");\n}}\n",
        read("testdata/x.txt"),
        read("ignored/y.txt"),
    );
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("reader").test("data", test)])
        .file("testdata/x.txt", "good\n")
        .file("ignored/y.txt", "good\n")
        .config("disable = [\"bench-build\", \"doctest\"]\n[cache]\nexclude = [\"testdata\"]\ninputs = [\"ignored/*.txt\"]");
    let manifest = repo(ws.file(".git/info/exclude", "/ignored\n"), &dir);
    // git ignores it, so only `cache.inputs` makes it an input.
    git(&dir, &["check-ignore", "-q", "ignored/y.txt"]);
    assert_exit(&optimize(&manifest, &[]), 0);

    std::fs::write(dir.join("testdata/x.txt"), "bad\n").unwrap();
    let stderr = assert_exit(&optimize(&manifest, &[]), 0);
    assert!(stderr.contains("explain: test: cached from run"), "excluded: {stderr}");

    let stderr = assert_exit(&optimize(&manifest, &["--verify-cache"]), 100);
    assert!(
        stderr.contains(
            "error: verify-cache: result differs from the cache: the tests of `reader` failed"
        ),
        "{stderr}"
    );
    // The success that no longer holds is forgotten: a plain run runs the test.
    let stderr = assert_exit(&optimize(&manifest, &[]), 100);
    assert!(stderr.contains("explain: test: no earlier success"), "{stderr}");
    let stderr = assert_exit(&optimize(&manifest, &["--no-cache"]), 100);
    assert!(stderr.contains("explain: build: ran anyway (no cache)"), "{stderr}");
    assert!(!stderr.contains("verify-cache"), "{stderr}");

    std::fs::write(dir.join("testdata/x.txt"), "good\n").unwrap();
    assert_exit(&optimize(&manifest, &[]), 0);
    std::fs::write(dir.join("ignored/y.txt"), "bad\n").unwrap();
    let stderr = assert_exit(&optimize(&manifest, &[]), 100);
    assert!(stderr.contains("explain: test: ignored/y.txt changed"), "{stderr}");
}

/// A glob the cache settings cannot take is one line naming the key.
#[test]
fn cli_a_bad_cache_glob_names_the_key() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("one")])
        .config("[cache]\nexclude = [\"docs/**\", \"../elsewhere\"]");
    let manifest = ws.write(&dir).unwrap();
    let out = xtask(&["plan", "--manifest-path", manifest.as_str()]);
    crate::assert_clean_error(
        &out,
        1,
        "invalid `workspace.metadata.pipeline-opt.cache.exclude[1]` in Cargo.toml: `../elsewhere` leaves the workspace root",
    );
}

/// #14 defect 5: with `cache.dir = "."`, `cache clean` deleted every directory named
/// `*-target` in the workspace root, the user's own among them. It now refuses a state
/// directory at the root unless forced, and even then removes only the build
/// directories pipeline-opt created (they carry its marker), whatever their names.
#[test]
fn cli_cache_clean_never_removes_a_users_directory() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("one")])
        .file("my-target/notes.txt", "mine\n")
        .config(
            "enable = [\"clippy\"]\ndisable = [\"bench-build\", \"doctest\"]\n[cache]\ndir = \".\"",
        );
    let manifest = ws.write(&dir).unwrap();
    assert_exit(&optimize(&manifest, &[]), 0);
    let owned = dir.join("clippy-target");
    assert!(owned.join(pipeline_opt::cache::maintain::OWNED_MARKER).is_file(), "{owned}");

    let out = xtask(&["cache", "clean", "--manifest-path", manifest.as_str()]);
    crate::assert_clean_error(&out, 1, "it is the workspace root");
    crate::assert_clean_error(&out, 1, "cargo xtask cache clean --force");
    assert!(dir.join("my-target/notes.txt").is_file());
    assert!(owned.is_dir(), "nothing removed when refused");

    let out = xtask(&["cache", "clean", "--force", "--manifest-path", manifest.as_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_to_string(dir.join("my-target/notes.txt")).unwrap(), "mine\n");
    assert!(!owned.exists(), "the tool's own build directory is removed: {stdout}");
    assert!(!stdout.contains("my-target"), "{stdout}");
}

/// #14 defect 8: a history that is not UTF-8, a stat cache replaced by a directory and
/// garbled hit counts stopped every run with exit 1, hiding a failing stage's exit
/// 100. Each is now set aside (renamed, never deleted) with a warning, and the run goes
/// on to its own result.
#[test]
fn cli_unreadable_state_is_set_aside_and_the_run_goes_on() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("fails").test("t", "#[test]\nfn broken() {\n    assert_eq!(1, 2);\n}\n"),
    ])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir).unwrap();
    assert_exit(&optimize(&manifest, &[]), 100);
    let state = dir.join("target/pipeline-opt");
    let history = state.join(pipeline_opt::report::HISTORY_FILE);
    let stat_cache = state.join("cache/stat-cache.json");
    let hits = state.join("cache/hits.json");
    for f in [&history, &stat_cache, &hits] {
        assert!(f.is_file(), "the first run wrote {f}");
    }
    std::fs::write(&history, b"\xff\xfe not utf-8\n").unwrap();
    std::fs::remove_file(&stat_cache).unwrap();
    std::fs::create_dir_all(stat_cache.join("oops")).unwrap();
    std::fs::write(&hits, "{{{ garbled").unwrap();

    let out = optimize(&manifest, &[]);
    let stderr = assert_exit(&out, 100);
    assert!(stderr.contains("warning: set aside the unreadable run history"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for (f, kind) in [(&history, "history"), (&stat_cache, "stat cache"), (&hits, "hit counts")] {
        let name = f.file_name().unwrap();
        let aside: Vec<String> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{name}.corrupt-")))
            .collect();
        assert_eq!(aside.len(), 1, "the {kind} is set aside once: {aside:?}");
        assert!(f.is_file(), "a fresh {kind} was written at {f}");
    }
    let kept = std::fs::read_dir(&state).unwrap().flatten().find(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{}.corrupt-", pipeline_opt::report::HISTORY_FILE))
    });
    assert_eq!(
        std::fs::read(kept.unwrap().path()).unwrap(),
        b"\xff\xfe not utf-8\n",
        "never deleted"
    );
    let history_text = std::fs::read_to_string(&history).unwrap();
    assert_eq!(history_text.lines().count(), 1, "a new history with this run: {history_text}");

    // A directory where the history's lock belongs: nothing can hold a lock on it, so it
    // is set aside with a warning naming the lock, and the run adds its line; the broken
    // test still gives exit 100, not an exit 1 about the lock.
    let lock = Utf8PathBuf::from(format!("{history}.lock"));
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let stderr = assert_exit(&optimize(&manifest, &[]), 100);
    assert!(
        stderr.lines().any(|l| l.starts_with("warning: set aside") && l.contains(lock.as_str())),
        "{stderr}"
    );
    assert!(lock.is_file(), "a new lock file");
    let history_text = std::fs::read_to_string(&history).unwrap();
    assert_eq!(history_text.lines().count(), 2, "this run's line too: {history_text}");
}

/// The user's nextest profile (or thread count) decides whether tests that share a
/// port pass: switching it reruns the tests instead of serving them from the cache.
#[test]
fn cli_the_users_test_settings_are_test_inputs() {
    let (_t, dir) = temp();
    let ws =
        FixtureWorkspace::new(vec![FixtureCrate::new("one").test("t", "#[test]\nfn fine() {}\n")])
            .file(".config/nextest.toml", "[profile.ci]\nretries = 1\n")
            .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = repo(ws, &dir);
    let run = |profile: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(["optimize", "--manifest-path", manifest.as_str(), "--explain"]);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        cmd.env_remove("NEXTEST_PROFILE");
        if let Some(p) = profile {
            cmd.env("NEXTEST_PROFILE", p);
        }
        cmd.output().unwrap()
    };
    assert_exit(&run(None), 0);
    let stderr = assert_exit(&run(None), 0);
    assert!(stderr.contains("explain: test: cached from run"), "{stderr}");
    let stderr = assert_exit(&run(Some("ci")), 0);
    // The profile's own `retries` also replaces the tool's `--retries`, so the command
    // may be named as changed too; the profile must be.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("explain: test: ") && l.contains("NEXTEST_PROFILE changed")),
        "{stderr}"
    );
    assert!(
        stderr.contains("explain: build: cached from run"),
        "builds are not affected: {stderr}"
    );
}

/// #19 item 3: doctests are narrowed like tests. After an edit to `left` only the
/// doctests of `left` and `top` (its dependent) run again; `base` and `right` are served
/// from the first run through the rustdoc shim, with the selection unchanged, so the
/// stage compiles nothing; the JUnit report still has every doctest once. A doctest
/// broken in a changed package fails the run.
#[test]
fn cli_doctests_are_narrowed_like_tests() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::diamond().config("disable = [\"bench-build\", \"test\"]");
    let manifest = repo(ws, &dir);
    // Outside the repository: a file written there would be a new input of every run.
    let (_out, out) = temp();
    let json = out.join("run.json");
    // The user's own rustdoc, which must still run every doctest that runs.
    let calls = out.join("rustdoc-calls");
    let wrapper = out.join("my-rustdoc");
    std::fs::write(&wrapper, format!("#!/bin/sh\necho \"$*\" >> {calls}\nexec rustdoc \"$@\"\n"))
        .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let run = |extra: &[&str]| {
        let _ = std::fs::remove_file(&calls);
        let mut args = vec!["optimize", "--manifest-path", manifest.as_str(), "--json"];
        args.push(json.as_str());
        args.extend(extra);
        crate::xtask_command(&args).env("RUSTDOC", &wrapper).output().unwrap()
    };
    let tested = || {
        let calls = std::fs::read_to_string(&calls).unwrap_or_default();
        let mut crates: Vec<String> = calls
            .lines()
            .filter(|l| l.contains("--test"))
            .filter_map(|l| l.split("--crate-name ").nth(1)?.split(' ').next().map(String::from))
            .collect();
        crates.sort();
        crates
    };
    assert_exit(&run(&[]), 0);
    let first = crate::record(&json);
    assert_eq!(tested(), ["base", "left", "right", "top"]);
    // Each crate's doctests are timed from rustdoc's own report, beside its edition.
    let timed: Vec<(&str, usize)> =
        first.doctests.iter().map(|d| (d.crate_name.as_str(), d.tests)).collect();
    assert_eq!(timed, [("base", 1), ("left", 1), ("right", 1), ("top", 1)]);
    assert_eq!(first.workspace_facts.lib_editions.len(), 4, "{:?}", first.workspace_facts);

    let left = dir.join("crates/left/src/lib.rs");
    let text = std::fs::read_to_string(&left).unwrap();
    std::fs::write(
        &left,
        format!("{text}\n/// Two.\n///\n/// ```\n/// assert_eq!(left::two(), 2);\n/// ```\npub fn two() -> u32 {{\n    2\n}}\n"),
    )
    .unwrap();
    assert_exit(&run(&[]), 0);
    let second = crate::record(&json);
    let cached = format!("cached from run {}", first.run_id);
    for p in ["base", "right"] {
        assert_eq!(second.cache[&format!("doctest {p}")], cached, "{:?}", second.cache);
    }
    for p in ["left", "top"] {
        assert_ne!(second.cache[&format!("doctest {p}")], cached, "{:?}", second.cache);
    }
    let doctest = second.stages.iter().find(|s| s.id == "doctest").unwrap();
    let log = std::fs::read_to_string(doctest.log_path.as_ref().unwrap()).unwrap();
    for p in ["base", "right"] {
        assert!(log.contains(&format!("the doctests of `{p}` passed on these inputs")), "{log}");
    }
    for p in ["left", "top"] {
        assert!(!log.contains(&format!("the doctests of `{p}` passed")), "{log}");
    }
    assert!(log.contains("left/src/lib.rs - two"), "left's doctests ran: {log}");
    assert!(!log.contains("Compiling"), "the narrowed stage compiles nothing: {log}");
    assert_eq!(tested(), ["left", "top"], "the user's rustdoc ran the rest");
    let junit = std::fs::read_to_string(dir.join("target/pipeline-opt/junit.xml")).unwrap();
    for suite in ["base::doctest", "left::doctest", "right::doctest", "top::doctest"] {
        assert_eq!(
            junit.matches(&format!("<testsuite name=\"{suite}\"")).count(),
            1,
            "{suite}: {junit}"
        );
    }
    assert_eq!(junit.matches("<testcase").count(), 5, "{junit}");

    // A doctest broken in a changed package fails the run; the proven ones stay proven.
    let top = dir.join("crates/top/src/lib.rs");
    let text = std::fs::read_to_string(&top).unwrap();
    std::fs::write(&top, text.replace("top::value() >= 1", "top::value() == 0")).unwrap();
    assert_exit(&run(&[]), 100);
    let third = crate::record(&json);
    let doctest = third.stages.iter().find(|s| s.id == "doctest").unwrap();
    assert!(doctest.failed_tests.iter().any(|t| t.starts_with("top")), "{doctest:?}");
    assert_eq!(third.cache["doctest left"], format!("cached from run {}", second.run_id));
}
