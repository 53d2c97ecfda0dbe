//! The user's test settings win: a nextest config's `test-threads`, `NEXTEST_PROFILE`,
//! `RUST_TEST_THREADS` reach the test runners unchanged, and the record says which
//! value came from where.

use std::process::Command;

use camino::Utf8Path;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::record::RunRecord;
use pipeline_opt::test_settings::SettingSource;

use super::temp;

/// Three tests that fail when any two run at once: each holds a lock file (a shared
/// port or database, in a real workspace) for half a second.
fn serial_tests() -> FixtureCrate {
    let test = |n: u32| {
        format!(
            "#[test] fn holds_the_lock_{n}() {{\n\
             let lock = std::path::Path::new(env!(\"CARGO_TARGET_TMPDIR\")).join(\"serial.lock\");\n\
             std::fs::OpenOptions::new().write(true).create_new(true).open(&lock)\n\
             .expect(\"another test holds the lock: these tests must run one at a time\");\n\
             std::thread::sleep(std::time::Duration::from_millis(500));\n\
             std::fs::remove_file(&lock).unwrap();\n}}\n"
        )
    };
    FixtureCrate::new("serial").test("lock", (1..=3).map(test).collect::<String>())
}

fn xtask(args: &[&str]) -> Command {
    // This test runs under nextest, whose NEXTEST_* variables describe this test, not
    // a user's settings (the common helper removes them); the variables each case sets
    // stand for the user's.
    let mut c = super::xtask_command(args);
    c.env_remove("RUST_TEST_THREADS");
    c
}

fn run(c: &mut Command, json: &Utf8Path) -> RunRecord {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn setting<'a>(r: &'a RunRecord, name: &str) -> &'a pipeline_opt::test_settings::TestSetting {
    r.test_settings
        .iter()
        .find(|s| s.setting == name)
        .unwrap_or_else(|| panic!("{name} in {:#?}", r.test_settings))
}

/// `test-threads = 1` in `.config/nextest.toml` passes under `cargo nextest run` and
/// must under `optimize` (the tool set NEXTEST_TEST_THREADS over it); `NEXTEST_PROFILE=ci`
/// reaches nextest (it was stripped), so the profile's JUnit file is written (and read
/// into the run's own) and its `retries` is not overridden by the tool's `--retries`.
#[test]
fn cli_nextest_config_and_profile_win_over_the_tools_threads() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![serial_tests()])
        .config("disable = [\"bench-build\", \"doctest\"]")
        .file(
            ".config/nextest.toml",
            "[profile.default]\ntest-threads = 1\n\n[profile.ci]\nretries = 0\n\n[profile.ci.junit]\npath = \"junit.xml\"\n",
        );
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let report = dir.join("report.md");
    let args = [
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ];
    let r = run(&mut xtask(&args), &json);
    let threads = setting(&r, "nextest test threads");
    assert_eq!(threads.source, SettingSource::NextestConfig, "{threads:?}");
    assert_eq!(
        (threads.value.as_str(), threads.origin.as_str()),
        ("1", ".config/nextest.toml [profile.default]")
    );
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(
        md.contains(
            "nextest test threads 1 (nextest config: .config/nextest.toml [profile.default])"
        ),
        "{md}"
    );

    // The profile is an input of the test stage: the run does not come from the cache.
    let r = run(xtask(&args).env("NEXTEST_PROFILE", "ci"), &json);
    let profile = setting(&r, "nextest profile");
    assert_eq!((profile.value.as_str(), profile.source), ("ci", SettingSource::UserEnv));
    // The profile's `retries` wins over the tool's `--retries`.
    let retries = setting(&r, "nextest retries");
    assert_eq!((retries.value.as_str(), retries.source), ("0", SettingSource::NextestConfig));
    let test = r.stages.iter().find(|s| s.id == "test").unwrap();
    assert!(!test.command.contains("--retries"), "{}", test.command);
    // The tool config the run passes sets no retries of its own.
    let (_, config) = test.command.split_once("--tool-config-file pipeline-opt:").unwrap();
    let config = std::fs::read_to_string(config.split(' ').next().unwrap()).unwrap();
    assert!(!config.contains("retries"), "{config}");
    let junit = dir.join("ws/target/nextest/ci/junit.xml");
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("{junit}: {e}"));
    assert!(xml.contains("holds_the_lock_3"), "{xml}");
    let run_junit = dir.join("ws/target/pipeline-opt/junit.xml");
    let xml = std::fs::read_to_string(&run_junit).unwrap_or_else(|e| panic!("{run_junit}: {e}"));
    assert!(xml.contains("holds_the_lock_3"), "{xml}");
}

/// A test that fails its first `fails` tries and passes every later one.
fn fails_first(name: &str, fails: u32) -> String {
    format!(
        "#[test] fn {name}() {{\n\
         let p = std::path::Path::new(env!(\"CARGO_TARGET_TMPDIR\")).join(\"{name}.tries\");\n\
         let n: u32 = std::fs::read_to_string(&p).ok().and_then(|s| s.parse().ok()).unwrap_or(0);\n\
         std::fs::write(&p, (n + 1).to_string()).unwrap();\n\
         assert!(n >= {fails}, \"try {{}} of {name} fails\", n + 1);\n}}\n"
    )
}

/// A per-test override's `retries` (`retries = 3` for a test that passes on its fourth
/// try) wins over the tool's retries, as under `cargo nextest run`, which passes it; the
/// tool's `--retries 2` overrode it (nextest ranks the command line above overrides).
/// The tests it does not cover still get the tool's retries.
#[test]
fn cli_per_test_override_retries_win_over_the_tools() {
    let (_t, dir) = temp();
    let tests = fails_first("needs_four_tries", 3) + &fails_first("needs_two_tries", 1);
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("retried").test("tries", tests)])
        .config("disable = [\"bench-build\", \"doctest\"]")
        .file(
            ".config/nextest.toml",
            "[[profile.default.overrides]]\nfilter = \"test(needs_four_tries)\"\nretries = 3\n",
        );
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let r = run(
        &mut xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]),
        &json,
    );
    let test = r.stages.iter().find(|s| s.id == "test").unwrap();
    let mut flaky = test.flaky_tests.clone();
    flaky.sort();
    assert_eq!(
        flaky,
        ["retried::tries needs_four_tries", "retried::tries needs_two_tries"],
        "{}",
        test.command
    );
    let retries = setting(&r, "nextest retries");
    assert_eq!(retries.source, SettingSource::ToolDefault, "{retries:?}");
}

/// With `test-runner = "cargo"`, the user's `RUST_TEST_THREADS=1` reaches libtest.
#[test]
fn cli_user_rust_test_threads_wins_with_the_cargo_runner() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![serial_tests()])
        .config("test-runner = \"cargo\"\ndisable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let r = run(
        xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()])
            .env("RUST_TEST_THREADS", "1"),
        &json,
    );
    let threads = setting(&r, "libtest threads");
    assert_eq!(
        (threads.value.as_str(), threads.source, threads.origin.as_str()),
        ("1", SettingSource::UserEnv, "RUST_TEST_THREADS")
    );
}

/// `RUST_TEST_THREADS = "1"` in `.cargo/config.toml`'s `[env]` passes under `cargo test`
/// and must under `optimize`: cargo's `[env]` gives way to a variable already set, and
/// the tool set RUST_TEST_THREADS (its share of the cores) over it.
#[test]
fn cli_cargo_config_env_test_threads_win_with_the_cargo_runner() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![serial_tests()])
        .config("test-runner = \"cargo\"\ndisable = [\"bench-build\", \"doctest\"]")
        .file(".cargo/config.toml", "[env]\nRUST_TEST_THREADS = \"1\"\n");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let r = run(
        &mut xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]),
        &json,
    );
    let threads = setting(&r, "libtest threads");
    assert_eq!(threads.source, SettingSource::CargoConfig, "{threads:?}");
    assert_eq!(
        (threads.value.as_str(), threads.origin.as_str()),
        ("1", ".cargo/config.toml [env]")
    );
}

/// `fail-fast = true` in the selected nextest profile stops the run at the first failure,
/// as under `cargo nextest run`; the tool's `--no-fail-fast` overrode it.
#[test]
fn cli_nextest_profile_fail_fast_wins_over_the_tools_no_fail_fast() {
    let (_t, dir) = temp();
    let failing =
        "#[test] fn fails_a() { panic!(\"a\") }\n#[test] fn fails_b() { panic!(\"b\") }\n";
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("ff").test("two", failing)])
        .config("disable = [\"bench-build\", \"doctest\"]")
        .file(
            ".config/nextest.toml",
            "[profile.default]\ntest-threads = 1\nfail-fast = true\nretries = 0\n",
        );
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let args = ["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()];
    let out = xtask(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(100), "{}", String::from_utf8_lossy(&out.stderr));
    let r: RunRecord = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let test = r.stages.iter().find(|s| s.id == "test").unwrap();
    assert!(!test.command.contains("--no-fail-fast"), "{}", test.command);
    assert_eq!(test.failed_tests.len(), 1, "the run stops at the first failure: {test:#?}");
    let fail_fast = setting(&r, "nextest fail-fast");
    assert_eq!(
        (fail_fast.value.as_str(), fail_fast.source),
        ("true", SettingSource::NextestConfig)
    );
}

/// Most compiles at once in `stage`, from the record's unit timings.
fn most_at_once(r: &RunRecord, stage: &str) -> usize {
    let mut edges: Vec<(std::time::Duration, i32)> = r
        .crates
        .iter()
        .filter(|c| c.stage == stage)
        .flat_map(|c| [(c.start, 1), (c.end, -1)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// cargo takes the run's jobserver in place of its own `-j`, so a user's
/// `CARGO_BUILD_JOBS=1` (or `[build] jobs = 1` in a cargo config), set to keep a small
/// CI machine's memory, was quietly raised to one compile per core. It now bounds the
/// jobserver: one compile at a time, whichever way the user set it.
#[test]
fn cli_the_users_build_jobs_bound_the_runs_compiles() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::wide(5).config("disable = [\"bench-build\", \"doctest\"]");
    for (case, config) in [("env", None), ("config", Some("[build]\njobs = 1\n"))] {
        let manifest = ws.write(&dir.join(case)).unwrap();
        if let Some(text) = config {
            std::fs::create_dir_all(dir.join(case).join(".cargo")).unwrap();
            std::fs::write(dir.join(case).join(".cargo/config.toml"), text).unwrap();
        }
        let json = dir.join(format!("{case}.json"));
        let mut c =
            xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]);
        c.env_remove("CARGO_BUILD_JOBS");
        if config.is_none() {
            c.env("CARGO_BUILD_JOBS", "1");
        }
        let r = run(&mut c, &json);
        assert!(r.crates.iter().filter(|u| u.stage == "build").count() >= 5, "{case}");
        assert_eq!(most_at_once(&r, "build"), 1, "{case}: {:#?}", r.crates);
    }
}
