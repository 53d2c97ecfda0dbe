//! `run_optimized_pipeline` and `run_fast_validation` on generated fixture workspaces:
//! a compile error stops the pipeline with exit 100 and a report that names it; the
//! fast validation runs `check` only.

use camino::Utf8PathBuf;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::record::{RunOutcome, RunRecord, StageStatus};
use pipeline_opt::{OptimizeOptions, exit, run_fast_validation, run_optimized_pipeline};

fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    (dir, path)
}

fn stage<'a>(r: &'a RunRecord, id: &str) -> &'a pipeline_opt::StageMetrics {
    r.stages.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no stage {id}"))
}

#[test]
fn optimize_compile_error_fails_the_build_and_skips_the_rest() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("good"),
        FixtureCrate::new("broken").lib("pub fn value() -> u64 { \"not a number\" }\n"),
    ])
    .config("disable = [\"doctest\", \"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let report = dir.join("report.md");
    let options = OptimizeOptions {
        manifest_path: Some(manifest),
        report: Some(report.clone()),
        ..OptimizeOptions::default()
    };
    let outcome = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::STAGE_FAILED);
    let r = &outcome.record;
    assert_eq!(r.outcome, RunOutcome::StageFailed);
    let build = stage(r, "build");
    assert_eq!(build.status, StageStatus::Failed);
    assert!(build.tail.iter().any(|l| l.contains("mismatched types")), "{:#?}", build.tail);
    assert!(matches!(stage(r, "test").status, StageStatus::Skipped { .. }));
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("## Failures") && md.contains("mismatched types"), "{md}");
    assert!(md.contains(build.log_path.as_ref().unwrap().as_str()));
}

#[test]
fn optimize_fast_validation_runs_check_only() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("a").test("t", "#[test] fn never_runs() { panic!() }"),
    ]);
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
    let outcome = run_fast_validation(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::OK, "{:#?}", outcome.record.stages);
    let ids: Vec<&str> = outcome.record.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["fetch", "check"]);
    assert!(stage(&outcome.record, "check").command.contains("--all-targets"));
}

/// A test target with `harness = false` whose main does not speak libtest's `--list`
/// (as url's `url_wpt` does not) runs with `cargo test` in its own stage instead of
/// stopping cargo-nextest; the libtest targets stay with nextest, and a failing custom
/// harness still fails the run.
#[test]
fn optimize_runs_custom_harness_tests_outside_nextest() {
    let (_t, dir) = temp();
    let custom = |exit_code: i32| {
        let mut c = FixtureCrate::new("a").test("plain", "#[test] fn fine() {}\n").test(
            "wpt",
            format!(
                "fn main() {{ println!(\"all tests passed\"); std::process::exit({exit_code}) }}\n"
            ),
        );
        c.manifest_extra = "[[test]]\nname = \"wpt\"\nharness = false\n".into();
        FixtureWorkspace::new(vec![c]).config("disable = [\"doctest\", \"bench-build\"]")
    };
    let run = |ws: &FixtureWorkspace, sub: &str| {
        let manifest = ws.write(&dir.join(sub)).unwrap();
        let options =
            OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
        run_optimized_pipeline(&options, &mut |_| {}).unwrap()
    };
    let ok = run(&custom(0), "ok");
    assert_eq!(ok.exit_code, exit::OK, "{:#?}", ok.record.stages);
    let nextest =
        pipeline_opt::inputs::Inputs::load(Some(&dir.join("ok/Cargo.toml"))).unwrap().nextest;
    // CI installs cargo-nextest; without it every test runs with `cargo test` anyway.
    assert!(nextest || std::env::var_os("CI").is_none(), "cargo-nextest is missing under CI");
    if nextest {
        let custom_stage = stage(&ok.record, "custom-tests");
        assert_eq!(custom_stage.status, StageStatus::Succeeded);
        assert!(custom_stage.command.contains("--test wpt"), "{}", custom_stage.command);
        let test = stage(&ok.record, "test");
        assert!(
            test.command.contains("--test plain") && !test.command.contains("wpt"),
            "{}",
            test.command
        );
    }
    let failing = run(&custom(3), "failing");
    assert_eq!(failing.exit_code, exit::STAGE_FAILED, "{:#?}", failing.record.stages);
}

/// Where a custom harness makes the planner name the test targets one by one, it names
/// only those `cargo test` itself would run (as servo/rust-url's `url_debug_tests`
/// showed): not an integration test marked `test = false`, nor one whose
/// `required-features` are off, which cargo refuses to build when named ("target
/// requires the features"). Both fail when run, so running either turns the run red;
/// with the feature on, the gated one is in and does.
#[test]
fn optimize_names_only_the_tests_cargo_would_run() {
    let (_t, dir) = temp();
    let mut c = FixtureCrate::new("a")
        .test("plain", "#[test] fn fine() {}\n")
        .test("wpt", "fn main() { println!(\"all tests passed\") }\n")
        .test("off", "#[test] fn not_run_by_cargo_test() { panic!(\"test = false\") }\n")
        .test("gated", "#[test] fn needs_the_feature() { panic!(\"gate is on\") }\n");
    c.manifest_extra = "[[test]]\nname = \"wpt\"\nharness = false\n\n\
                        [[test]]\nname = \"off\"\ntest = false\n\n\
                        [[test]]\nname = \"gated\"\nrequired-features = [\"gate\"]\n\n\
                        [features]\ngate = []\nall = [\"gate\"]\n"
        .into();
    let ws = FixtureWorkspace::new(vec![c]).config("disable = [\"doctest\", \"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let run = |features: &[&str]| {
        let mut options =
            OptimizeOptions { manifest_path: Some(manifest.clone()), ..OptimizeOptions::default() };
        options.cargo.features = features.iter().map(|f| f.to_string()).collect();
        run_optimized_pipeline(&options, &mut |_| {}).unwrap()
    };
    let plain = run(&[]);
    assert_eq!(plain.exit_code, exit::OK, "{:#?}", plain.record.stages);
    let test = stage(&plain.record, "test");
    assert!(
        !test.command.contains("--test off") && !test.command.contains("--test gated"),
        "{}",
        test.command
    );
    // `all` turns `gate` on through the features table: the gated test runs, and fails.
    let gated = run(&["all"]);
    assert_eq!(gated.exit_code, exit::STAGE_FAILED, "{:#?}", gated.record.stages);
    assert!(stage(&gated.record, "test").command.contains("--test gated"));
}

/// `env.<stage>` sets variables on that stage alone: the build script sees the build's
/// (as `SQLX_OFFLINE = "true"` would keep sqlx's macros from needing a database), the
/// tests do not, and neither does anything else.
#[test]
fn optimize_sets_a_stages_own_environment_on_that_stage_only() {
    let (_t, dir) = temp();
    let c = FixtureCrate::new("a")
        .file(
            "build.rs",
            "fn main() { assert_eq!(std::env::var(\"PROBE\").as_deref(), Ok(\"build only\")); }\n",
        )
        .test("t", "#[test] fn no_probe() { assert!(std::env::var(\"PROBE\").is_err()); }\n");
    let ws = FixtureWorkspace::new(vec![c]).config(
        "disable = [\"doctest\", \"bench-build\"]\nenv = { build = { PROBE = \"build only\" } }",
    );
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
    let outcome = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::OK, "{:#?}", outcome.record.stages);
    assert!(stage(&outcome.record, "build").command.contains("PROBE="));
    assert!(!stage(&outcome.record, "test").command.contains("PROBE"));
}

/// `--against-naive` runs both sides for real, each from a fresh build directory that
/// reaches cargo as `--target-dir`, never as CARGO_TARGET_DIR: a test that runs cargo
/// itself (this workspace's own tests do) must not inherit it. Both totals, the ratio
/// and the one coverage difference of the default plan are recorded.
#[test]
fn optimize_against_naive_compares_both_sides_without_leaking_the_target_dir() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("a").bench("speed", "fn main() {}\n").test(
            "env",
            "#[test] fn no_target_dir_from_the_pipeline() {\n    assert_eq!(std::env::var(\"CARGO_TARGET_DIR\").ok(), None);\n}\n",
        ),
    ]);
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions {
        manifest_path: Some(manifest),
        against_naive: true,
        ..OptimizeOptions::default()
    };
    let outcome = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::OK, "{:#?}", outcome.record.stages);
    let n = outcome.record.naive.as_ref().expect("a naive comparison");
    assert_eq!(n.naive_outcome, RunOutcome::Succeeded, "{:#?}", n.naive_stages);
    assert_eq!(n.not_comparable(outcome.record.outcome), None);
    assert!(n.naive_total > std::time::Duration::ZERO && n.ratio.is_finite() && n.ratio > 0.0);
    assert_eq!(n.only_naive_proves, ["bench --no-run (bench profile)"]);
    let ids: Vec<&str> = n.naive_stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["naive-fetch", "naive-build", "naive-check", "naive-test", "naive-bench"]);
    // The fixture's own test checks the variable on both sides; the commands say how.
    for s in outcome
        .record
        .stages
        .iter()
        .chain(&n.naive_stages)
        .filter(|s| s.id != "naive-fetch" && s.id != "fetch")
    {
        assert!(s.command.contains("--target-dir"), "{}", s.command);
        assert!(!s.command.contains("CARGO_TARGET_DIR="), "{}", s.command);
    }
}

/// A workspace whose test profile differs from dev: the build stage compiles in the test
/// profile, so neither the test stage nor the doctest stage compiles a crate again.
#[test]
fn optimize_with_a_test_profile_of_its_own_compiles_each_crate_once() {
    let (_t, dir) = temp();
    let mut ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("base"),
        FixtureCrate::new("top").dep("base").test("t", "#[test] fn fine() {}\n"),
    ])
    .config("disable = [\"bench-build\"]");
    ws.root_manifest_extra = "[profile.test]\ndebug = 0\n".into();
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
    let outcome = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::OK, "{:#?}", outcome.record.stages);
    assert!(stage(&outcome.record, "build").command.contains("--profile test"));
    for id in ["test", "doctest"] {
        let s = stage(&outcome.record, id);
        let log = std::fs::read_to_string(s.log_path.as_ref().unwrap()).unwrap();
        let compiled: Vec<&str> =
            log.lines().filter(|l| l.trim_start().starts_with("Compiling")).collect();
        assert!(compiled.is_empty(), "{id} compiled again: {compiled:?}");
    }
}

/// A workspace under a directory with a space: the jobserver FIFO's path travels
/// unquoted in `CARGO_MAKEFLAGS`, so it must not be under the workspace, or every cargo
/// stage warns that it cannot connect and runs with a `-j` of its own.
#[test]
fn optimize_keeps_the_jobserver_under_a_path_with_a_space() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("a")
            .lib("/// ```\n/// assert_eq!(a::one(), 1);\n/// ```\npub fn one() -> u32 { 1 }\n")
            .test("t", "#[test] fn one() { assert_eq!(a::one(), 1) }\n"),
    ])
    .config("disable = [\"bench-build\"]");
    let manifest = ws.write(&dir.join("my projects/ws")).unwrap();
    let options = OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
    let outcome = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::OK, "{:#?}", outcome.record.stages);
    let mut logs = 0;
    for s in &outcome.record.stages {
        let Some(log) = &s.log_path else { continue };
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("failed to connect to jobserver"), "stage {}: {text}", s.id);
        logs += 1;
    }
    assert!(logs >= 3, "the cargo stages wrote logs: {:#?}", outcome.record.stages);
}

/// The run's JUnit file read back with an XML parser other than the one that wrote it:
/// the root's `tests`, `failures`, `skipped`, whether the root and every suite are timed
/// (a `time` on the suite, as libtest's get, or on each of its cases, as nextest writes
/// them), and each test case as `suite name`.
struct Junit {
    counts: [usize; 3],
    suites_timed: bool,
    cases: Vec<String>,
    xml: String,
}

fn read_junit(path: &camino::Utf8Path) -> Junit {
    let xml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites", "{xml}");
    let count = |a: &str| root.attribute(a).and_then(|v| v.parse().ok()).unwrap();
    let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
    let timed = |n: &roxmltree::Node| n.attribute("time").is_some_and(|t| t.parse::<f64>().is_ok());
    let suites_timed = timed(&root)
        && suites.iter().all(|s| {
            timed(s) || s.children().filter(|n| n.has_tag_name("testcase")).all(|c| timed(&c))
        });
    let mut cases = Vec::new();
    for s in &suites {
        for c in s.children().filter(|n| n.has_tag_name("testcase")) {
            cases.push(format!(
                "{} {}",
                s.attribute("name").unwrap(),
                c.attribute("name").unwrap()
            ));
        }
    }
    cases.sort();
    Junit {
        counts: [count("tests"), count("failures"), count("skipped")],
        suites_timed,
        cases,
        xml,
    }
}

/// The record's test counts summed over its stages: (ran, failed), as JUnit counts them
/// (`tests` less `skipped`, and `failures`).
fn ran_and_failed(r: &RunRecord) -> (usize, usize) {
    let failed: usize = r.test_counts.iter().map(|c| c.failed).sum();
    let passed: usize = r.test_counts.iter().map(|c| c.passed).sum();
    (passed + failed, failed)
}

/// nextest's own JUnit (through the tool config the run writes; the workspace's config
/// is not touched) and the doctests' (from libtest's output) in one file whose counts
/// are the run's; a second run that the cache serves entirely writes the same tests
/// again, replayed from the cache.
#[test]
fn optimize_writes_junit_every_run_and_replays_it_from_the_cache() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("a")
            .lib("/// ```\n/// assert_eq!(a::one(), 1);\n/// ```\npub fn one() -> u64 { 1 }\n")
            .test(
                "it",
                "#[test] fn one() { assert_eq!(a::one(), 1) }\n#[test] #[ignore] fn later() {}\n",
            ),
    ])
    .config("disable = [\"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
    let first = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(first.exit_code, exit::OK, "{:#?}", first.record.stages);
    assert!(
        stage(&first.record, "test").command.contains("nextest run"),
        "cargo xtask ci installs it"
    );
    let path = first.reports.junit.clone().expect("optimize writes a JUnit file");
    assert_eq!(path, dir.join("ws/target/pipeline-opt/junit.xml"));
    let j = read_junit(&path);
    assert_eq!(
        (j.counts[0] - j.counts[2], j.counts[1]),
        ran_and_failed(&first.record),
        "{}",
        j.xml
    );
    assert!(j.suites_timed, "{}", j.xml);
    assert_eq!(j.cases.len(), 2, "{}", j.xml);
    assert!(j.cases.contains(&"a::it one".to_string()), "{:?}", j.cases);
    assert!(
        j.cases.iter().any(|c| c.starts_with("a::doctest crates/a/src/lib.rs - one")),
        "{:?}",
        j.cases
    );
    assert!(!dir.join("ws/.config").exists(), "the workspace's nextest config is not written");

    let second = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert!(
        second.record.stages.iter().all(|s| !matches!(s.status, StageStatus::Succeeded)),
        "fully cached: {:#?}",
        second.record.stages
    );
    let again = read_junit(&path);
    assert_eq!(again.cases, j.cases, "{}", again.xml);
    assert_eq!(again.counts, j.counts, "{}", again.xml);
}

/// Without nextest (`test-runner = "cargo"`), the JUnit comes from libtest's output:
/// a failing test is a failure with its panic message, free of the ANSI codes it
/// printed, and the counts are the run's.
#[test]
fn optimize_writes_junit_from_cargo_test_with_its_failures() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a").test(
        "it",
        "#[test] fn fine() {}\n#[test] #[ignore] fn later() {}\n\
         #[test] fn bad() { panic!(\"\\x1b[31mred\\x1b[0m boom\") }\n",
    )])
    .config("disable = [\"bench-build\", \"doctest\"]\ntest-runner = \"cargo\"");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() };
    let outcome = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, exit::STAGE_FAILED);
    let j = read_junit(outcome.reports.junit.as_ref().unwrap());
    assert_eq!(
        (j.counts[0] - j.counts[2], j.counts[1]),
        ran_and_failed(&outcome.record),
        "{}",
        j.xml
    );
    assert_eq!(j.counts, [4, 1, 1], "{}", j.xml);
    assert!(j.suites_timed, "{}", j.xml);
    assert!(j.xml.contains("red boom") && !j.xml.contains('\u{1b}'), "{}", j.xml);
    let cases = ["a tests::value_is_positive", "a::it bad", "a::it fine", "a::it later"];
    assert_eq!(j.cases, cases, "{}", j.xml);
}
