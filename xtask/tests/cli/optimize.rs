//! The `cargo xtask` binary end to end on generated fixture workspaces: exit codes,
//! the JSON record, and Ctrl-C leaving no process of the run behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::process::marked_processes;

use super::{record, temp, xtask_command as xtask};
use pipeline_opt::record::{LateReason, RunOutcome};

/// A passing run held to an impossible total: exit 101, and the JSON record parses.
#[test]
fn cli_gate_impossible_target_exits_101_with_json() {
    let (_t, dir) = temp();
    let mut top = FixtureCrate::new("top")
        .dep("base")
        .test("spec", "fn main() {}\n")
        .test("unit", "#[test] fn fine() {}\n")
        .bench("perf", "fn main() {}\n");
    top.manifest_extra = "[[test]]\nname = \"spec\"\nharness = false\n".into();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("base"), top])
        .config("disable = [\"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let out = xtask(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--gate",
        "1ms",
        "--json",
        json.as_str(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    assert!(
        stderr.contains("pipeline-optimization-report.md"),
        "the report path is printed: {stderr}"
    );
    let r = record(&json);
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    assert_eq!(r.schema_version, pipeline_opt::record::SCHEMA_VERSION);
    // The rustc shim timed the crates of the build.
    assert!(r.crates.iter().any(|c| c.package == "top" && c.stage == "build"), "{:#?}", r.crates);
    // rustc sees a harness-less test or bench as a plain binary; the shim tells them
    // apart by the manifest, so the timings name the kind the user declared.
    let kind_of = |target: &str| {
        let unit = r.crates.iter().find(|c| c.stage == "build" && c.target == target);
        unit.map(|c| c.kind.as_str()).unwrap_or_else(|| panic!("{target}: {:#?}", r.crates))
    };
    assert_eq!(kind_of("spec"), "test");
    assert_eq!(kind_of("unit"), "test");
    assert_eq!(kind_of("perf"), "bench");
    assert!(r.critical_path.iter().any(|c| c.kind == "stage"));
}

/// A failing test: exit 100, the report is still written and names the test.
#[test]
fn cli_failing_test_exits_100_and_names_it() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("fix")
            .test("t", "#[test] fn fine() {}\n#[test] fn broken() { assert_eq!(1, 2) }"),
    ])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let report = dir.join("report.md");
    let out = xtask(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(100), "{stderr}");
    let r = record(&json);
    let test = r.stages.iter().find(|s| s.id == "test").unwrap();
    assert_eq!(test.failed_tests, vec!["fix::t broken"]);
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("fix::t broken"), "{md}");
}

/// Starts `optimize` on a workspace whose one test hangs, and waits until that test
/// runs. Returns the xtask process and the run's id (from the test's marker). The test
/// first starts a child in a process group of its own (as a test that starts a daemon
/// does), which no signal to the stages' groups reaches.
fn optimize_until_test_hangs(dir: &Utf8Path) -> (std::process::Child, String) {
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("hang").test(
        "h",
        "use std::os::unix::process::CommandExt;\n\
         #[test] fn hangs() {\n\
             std::process::Command::new(\"sleep\").arg(\"600\").process_group(0).spawn().unwrap();\n\
             loop { std::thread::sleep(std::time::Duration::from_secs(1)); }\n\
         }\n",
    )])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let child = xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the hung test itself runs, found by its marker and name.
    let child_pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    let run_id = loop {
        assert!(Instant::now() < deadline, "the test binary never started");
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if !String::from_utf8_lossy(&cmd).contains("hangs") {
                return None;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env = String::from_utf8_lossy(&env).into_owned();
            let marker = env.split('\0').find_map(|v| v.strip_prefix("PIPELINE_OPT_RUN_ID="))?;
            // Run ids are `<time>-<pid>-<n>`: only our child's run counts.
            (marker.split('-').nth(1) == Some(&*child_pid)).then(|| marker.to_string())
        });
        if let Some(id) = found {
            break id;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!marked_processes(&run_id, None).is_empty());
    (child, run_id)
}

/// SIGINT halfway: exit 130, the report says interrupted, and no process carrying the
/// run's marker survives (the hung test runs in a process group of its own).
#[test]
fn cli_ctrl_c_stops_the_whole_tree() {
    let (_t, dir) = temp();
    let (mut child, run_id) = optimize_until_test_hangs(&dir);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let left = marked_processes(&run_id, None);
    assert!(left.is_empty(), "processes of run {run_id} survived: {left:?}");
    let r = record(&dir.join("run.json"));
    assert_eq!(r.outcome, RunOutcome::Interrupted);
}

/// SIGKILL halfway gives the xtask no chance to clean up: the run's watchdog process
/// stops the stages (cargo, nextest and, through nextest, the hung test in its own
/// process group) within the grace period.
#[test]
fn cli_sigkill_of_the_orchestrator_leaves_no_process() {
    let (_t, dir) = temp();
    let (mut child, run_id) = optimize_until_test_hangs(&dir);
    let fifo = jobserver_fifo(&run_id);
    assert!(fifo.exists(), "the run's jobserver FIFO {fifo:?} exists while it runs");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // The default grace period is 5 s; nextest gives its tests its own after SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = marked_processes(&run_id, None);
    while (!left.is_empty() || fifo.parent().unwrap().exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = marked_processes(&run_id, None);
    }
    assert!(left.is_empty(), "processes of run {run_id} outlived the killed xtask: {left:?}");
    assert!(!fifo.parent().unwrap().exists(), "the killed run left its jobserver FIFO {fifo:?}");
}

/// The jobserver FIFO of run `run_id`, from a marked process's `CARGO_MAKEFLAGS`.
fn jobserver_fifo(run_id: &str) -> std::path::PathBuf {
    marked_processes(run_id, None)
        .into_iter()
        .find_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env = String::from_utf8_lossy(&env).into_owned();
            let flags = env.split('\0').find_map(|v| v.strip_prefix("CARGO_MAKEFLAGS="))?;
            let path = flags.split_once("--jobserver-auth=fifo:")?.1;
            Some(std::path::PathBuf::from(path.split_whitespace().next()?))
        })
        .expect("a stage of the run carries CARGO_MAKEFLAGS with the jobserver FIFO")
}

/// `check` is the fast signal: only `cargo check` runs, its record and report land
/// where asked, and a type error fails it with exit 100 naming the stage.
#[test]
fn cli_check_writes_reports_where_asked_and_fails_on_a_type_error() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")]);
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let (json, report) = (dir.join("check.json"), dir.join("check.md"));
    let run = || {
        xtask(&[
            "check",
            "--manifest-path",
            manifest.as_str(),
            "--json",
            json.as_str(),
            "--report",
            report.as_str(),
        ])
        .output()
        .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = record(&json);
    let ids: Vec<&str> = r.stages.iter().map(|s| s.id.as_str()).collect();
    assert!(ids.contains(&"check") && !ids.contains(&"build") && !ids.contains(&"test"), "{ids:?}");
    assert!(std::fs::read_to_string(&report).unwrap().contains("check"));

    std::fs::write(dir.join("ws/crates/a/src/lib.rs"), "pub fn f() -> u32 { \"no\" }\n").unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(100), "{stderr}");
    let r = record(&json);
    assert_eq!(r.outcome, RunOutcome::StageFailed);
    let check = r.stages.iter().find(|s| s.id == "check").unwrap();
    assert!(check.tail.iter().any(|l| l.contains("mismatched types")), "{:?}", check.tail);
}

/// `optimize` draws a live view when stdout is a terminal (a pseudo-terminal from
/// util-linux `script` here): bars redrawn with escape codes, each stage with its state
/// and the build's compile units. Through a pipe, or with `NO_COLOR`, the same run prints
/// plain lines without a single escape code.
#[test]
fn cli_optimize_progress_live_on_a_terminal_plain_otherwise() {
    let script_ok =
        Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    if !script_ok {
        assert!(
            std::env::var("CI").is_err(),
            "`script` (util-linux, apt-get install bsdutils) is needed for the terminal test"
        );
        eprintln!("skipping: `script` is not installed (apt-get install bsdutils)");
        return;
    }
    let (_t, dir) = temp();
    let ws = || {
        FixtureWorkspace::new(vec![FixtureCrate::new("base"), FixtureCrate::new("top").dep("base")])
            .config("disable = [\"bench-build\", \"doctest\"]")
    };
    let run = |name: &str, pty: bool, env: &[(&str, &str)], flags: &str| {
        // Each run gets a workspace of its own: a second run would be served from the
        // stage cache and compile nothing.
        let manifest = ws().write(&dir.join(name)).unwrap();
        let exe = env!("CARGO_BIN_EXE_xtask");
        let mut cmd = if pty {
            let mut c = Command::new("script");
            let line = format!("{exe} optimize --manifest-path {manifest} {flags}");
            c.args(["-qefc", line.trim_end(), "/dev/null"]);
            c
        } else {
            let mut c = Command::new(exe);
            c.args(["optimize", "--manifest-path", manifest.as_str()]);
            c
        };
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        cmd.env_remove("CI").env_remove("NO_COLOR").env_remove("CARGO_TERM_COLOR");
        cmd.env("TERM", "xterm-256color").envs(env.iter().copied());
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };

    let live = run("live", true, &[], "");
    assert!(live.contains("\x1b["), "the live view redraws with escape codes: {live:?}");
    for stage in ["fetch", "build", "test"] {
        assert!(live.contains(stage), "stage {stage} is shown: {live:?}");
    }
    assert!(live.contains("units compiled"), "compile progress inside build: {live:?}");
    assert!(live.contains("required 60.0 s"), "the total is shown against its target: {live:?}");
    assert!(live.contains("✔"), "finished stages are marked: {live:?}");

    let piped = run("piped", false, &[], "");
    assert!(!piped.contains('\x1b'), "no escape codes through a pipe: {piped:?}");
    assert!(piped.contains("] build: started"), "{piped}");
    assert!(piped.contains("] build: succeeded in "), "{piped}");
    assert!(piped.contains("build: compiled top (lib `top`)"), "{piped}");
    assert!(piped.contains("run succeeded in "), "{piped}");

    let no_color = run("no-color", true, &[("NO_COLOR", "1")], "");
    assert!(!no_color.contains("\x1b["), "NO_COLOR means plain lines: {no_color:?}");
    assert!(no_color.contains("] test: succeeded in "), "{no_color}");

    // As for cargo: CARGO_TERM_COLOR=never means plain lines on a terminal, and the
    // `--color` flag outranks the environment.
    let never = run("term-never", true, &[("CARGO_TERM_COLOR", "never")], "");
    assert!(!never.contains("\x1b[") && never.contains("] test: succeeded in "), "{never:?}");
    let always = run("flag-always", true, &[("NO_COLOR", "1")], "--color always");
    assert!(always.contains("\x1b[") && always.contains("✔"), "{always:?}");
}

/// `optimize --explore` runs the build stage from scratch under every default variant
/// with real cargo, and the JSON record, the markdown report and the terminal carry the
/// measured times.
#[test]
fn cli_optimize_explore_measures_every_variant() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("base"),
        FixtureCrate::new("top").dep("base"),
    ])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let report = dir.join("report.md");
    let out = xtask(&[
        "optimize",
        "--explore",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ])
    .env_remove("CI")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let r = record(&json);
    let e = r.explore.expect("the record has the exploration");
    assert!(e.command.starts_with("cargo build ") && e.command.contains("--all-targets"), "{e:?}");
    let names: Vec<&str> = e.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "debug = \"line-tables-only\"",
            "debug = false",
            "incremental = false",
            "codegen-units = 16"
        ]
    );
    for v in &e.variants {
        assert_eq!((v.rounds_ok, &v.error), (1, &None), "{v:?}");
        // A cold build of two crates: rustc ran for every variant.
        assert!(v.cpu.unwrap() > Duration::from_millis(50), "{v:?}");
        assert!(v.wall.unwrap() > Duration::ZERO, "{v:?}");
        assert!(stdout.contains(&format!("explore: {}: ", v.name)), "{stdout}");
    }
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("## Explored settings"), "{md}");
    assert!(md.contains("| debug = false | "), "{md}");
    assert!(stderr.contains("| codegen-units = 16 | "), "the terminal shows the table: {stderr}");
    assert!(!dir.join("ws/target/pipeline-opt/explore").exists(), "scratch removed");
}

/// A test that runs cargo on a workspace of its own (as trybuild, escargot or fixture
/// tests do) inherits the rustc shim with the rest of its environment. Its units are
/// counted as "compiled by tests" and never named: not in the record's units, not in
/// the report's tables or advice (it is built twice with different features, which
/// would otherwise be `compiled-twice` advice about a crate the workspace lacks).
#[test]
fn cli_units_compiled_by_a_tests_own_cargo_are_not_the_workspaces() {
    let (_t, dir) = temp();
    let nested_test = r#"
use std::path::Path;
use std::process::Command;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn builds_a_workspace_of_its_own() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nested-ws");
    write(&root.join("Cargo.toml"), "[workspace]\nmembers = [\"phantom_leaf\"]\nresolver = \"2\"\n");
    write(
        &root.join("phantom_leaf/Cargo.toml"),
        "[package]\nname = \"phantom_leaf\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[features]\nextra = []\n",
    );
    write(&root.join("phantom_leaf/src/lib.rs"), "pub fn leaf() -> u32 { 1 }\n");
    for features in [&[][..], &["--features", "extra"][..]] {
        let status = Command::new("cargo")
            .args(["build", "--offline", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .args(features)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
"#;
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("host").test("nested", nested_test)])
        .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let (json, report) = (dir.join("run.json"), dir.join("report.md"));
    let out = xtask(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ])
    .env_remove("CI")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let r = record(&json);
    // The workspace's own units are still timed.
    assert!(r.crates.iter().any(|c| c.package == "host"), "{:#?}", r.crates);
    assert!(!r.crates.iter().any(|c| c.package.contains("phantom")), "{:#?}", r.crates);
    let by_tests = r.compiled_by_tests.iter().find(|n| n.stage == "test");
    assert!(by_tests.is_some_and(|n| n.units >= 2), "{:#?}", r.compiled_by_tests);
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(!md.contains("phantom"), "the report names a crate the workspace lacks:\n{md}");
    assert!(md.contains("Compiled by tests: "), "{md}");
    // The stages after the build compiled nothing of the workspace's.
    assert!(r.compiled_after_build.is_empty(), "{:#?}", r.compiled_after_build);
    assert!(
        stdout.contains("units compiled by tests"),
        "the terminal summary counts them: {stdout}"
    );
}

/// A unit the test stage compiles again after the build stage is named, with why: other
/// compiler flags (`RUSTFLAGS` set on the test stage only), then the same arguments with
/// a variable that a build script watches set on the test stage only.
#[test]
fn cli_a_unit_compiled_again_after_the_build_stage_is_named_with_why() {
    let (_t, dir) = temp();
    let base = FixtureCrate::new("base")
        .file("build.rs", "fn main() { println!(\"cargo:rerun-if-env-changed=LATE_PROBE\"); }\n");
    let ws = FixtureWorkspace::new(vec![base, FixtureCrate::new("top").dep("base")]);
    let run = |env_test: &str| {
        let manifest = ws
            .clone()
            .config(format!(
                "disable = [\"bench-build\", \"doctest\"]\nenv = {{ test = {{ {env_test} }} }}"
            ))
            .write(&dir.join("ws"))
            .unwrap();
        let (json, report) = (dir.join("run.json"), dir.join("report.md"));
        let out = xtask(&[
            "optimize",
            "--no-cache",
            "--manifest-path",
            manifest.as_str(),
            "--json",
            json.as_str(),
            "--report",
            report.as_str(),
        ])
        .env_remove("CI")
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (record(&json), std::fs::read_to_string(&report).unwrap())
    };

    let (r, md) = run("RUSTFLAGS = \"--cfg late_probe\"");
    let base_lib = r.compiled_after_build.iter().find(|u| u.package == "base" && u.kind == "lib");
    assert_eq!(
        base_lib.map(|u| (&u.stage, &u.why)),
        Some((
            &"test".to_string(),
            &LateReason::OtherFlags {
                only_in_build: vec![],
                only_here: vec!["--cfg late_probe".into()]
            }
        )),
        "{:#?}",
        r.compiled_after_build
    );
    assert!(md.contains("## Compiled after the build stage"), "{md}");
    assert!(md.contains("(compiled-after-build)"), "{md}");

    let (r, md) = run("LATE_PROBE = \"1\"");
    let base_lib = r.compiled_after_build.iter().find(|u| u.package == "base" && u.kind == "lib");
    assert_eq!(
        base_lib.map(|u| &u.why),
        Some(&LateReason::InputChanged),
        "{:#?}",
        r.compiled_after_build
    );
    assert!(md.contains("an input changed between the stages"), "{md}");
}

/// Writes a path package `name` at `version` under `dir`, with `deps` appended to its
/// manifest.
fn vendored(dir: &Utf8Path, name: &str, version: &str, deps: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n{deps}"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    // `dup`'s versions take long enough to build that aligning them is worth advice.
    let source =
        if name == "dup" { pipeline_opt::fixture::slow_lib_source(200) } else { String::new() };
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
}

/// The `cargo …` commands a markdown report's recommendations suggest, as argv.
fn suggested_commands(md: &str) -> Vec<Vec<String>> {
    let recs = md.split("## Recommendations").nth(1).unwrap_or_default();
    let recs = recs.split("\n## ").next().unwrap_or_default();
    recs.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("cargo "))
        .map(|span| span.split_whitespace().map(String::from).collect())
        .collect()
}

/// Duplicate versions are advised on only where they cost something in this run and the
/// workspace can act, and every command of the report's advice runs as pasted. Three
/// duplicates of path packages, resolved by real cargo: `dup`, asked for by the member
/// at 0.1.0 and by a dependency at 0.2.0 (advice); `pair`, both versions inside one
/// dependency (out of reach); `wo`, whose 0.1.0 is a Windows-only dependency and never
/// built here.
#[test]
fn cli_duplicate_version_advice_is_built_actionable_and_runs() {
    let (_t, dir) = temp();
    let vendor = dir.join("vendor");
    for (name, version) in [
        ("dup", "0.1.0"),
        ("dup", "0.2.0"),
        ("pair", "0.1.0"),
        ("pair", "0.2.0"),
        ("wo", "0.1.0"),
        ("wo", "0.2.0"),
    ] {
        vendored(&vendor.join(format!("{name}-{version}")), name, version, "");
    }
    vendored(
        &vendor.join("helper"),
        "helper",
        "0.1.0",
        "[dependencies]\ndup = { path = \"../dup-0.2.0\" }\n\
         pair_one = { package = \"pair\", path = \"../pair-0.1.0\" }\n\
         pair_two = { package = \"pair\", path = \"../pair-0.2.0\" }\n",
    );
    let mut app = FixtureCrate::new("app").test("t", "#[test] fn fine() {}\n");
    app.manifest_extra = "[dependencies.dup]\npath = \"../../../vendor/dup-0.1.0\"\n\n\
         [dependencies.helper]\npath = \"../../../vendor/helper\"\n\n\
         [dependencies.wo]\npath = \"../../../vendor/wo-0.2.0\"\n\n\
         [target.'cfg(windows)'.dependencies.wo_old]\npackage = \"wo\"\npath = \"../../../vendor/wo-0.1.0\"\n"
        .into();
    let ws = FixtureWorkspace::new(vec![app]).config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let root = manifest.parent().unwrap();
    let report = dir.join("report.md");
    let out =
        xtask(&["optimize", "--manifest-path", manifest.as_str(), "--report", report.as_str()])
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(&report).unwrap();
    let recs = md.split("## Recommendations").nth(1).unwrap();
    assert_eq!(recs.matches("(duplicate-versions)").count(), 1, "{recs}");
    assert!(recs.contains("`cargo tree -i dup@0.1.0` and `cargo tree -i dup@0.2.0`"), "{recs}");
    for absent in ["`pair", "pair@", "`wo", "wo@"] {
        assert!(!recs.contains(absent), "no advice on `{absent}`: {recs}");
    }
    let commands = suggested_commands(&md);
    assert!(commands.len() >= 2, "{recs}");
    for argv in commands {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(root);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "`{}` failed as pasted: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The files named `name` under `dir`, at any depth.
fn files_named(dir: &Utf8Path, name: &str) -> Vec<Utf8PathBuf> {
    let mut found = Vec::new();
    for entry in dir.read_dir_utf8().into_iter().flatten().flatten() {
        let path = entry.path().to_path_buf();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if entry.file_name() == name {
            found.push(path);
        }
    }
    found
}

/// #13: two tests that together take most of the test stage, neither half of it alone
/// (as 49 s and 46 s of a 109 s stage; a nextest test group runs the sleepers one at a
/// time), are named by the slowest-tests table of the markdown and HTML reports and by
/// a recommendation whose command runs; the terminal, run.json and both reports count
/// the tests passed, failed and skipped (one test left out by the workspace's nextest
/// default filter).
#[test]
fn cli_slowest_tests_are_named_counted_and_advised_on() {
    let (_t, dir) = temp();
    let sleep = |ms: u64| format!("std::thread::sleep(std::time::Duration::from_millis({ms}));");
    let tests = format!(
        "#[test] fn quick_one() {{}}\n\
         #[test] fn quick_two() {{}}\n\
         #[test] fn not_today() {{}}\n\
         #[test] fn sleeps_longest() {{ {} }}\n\
         #[test] fn sleeps_long() {{ {} }}\n\
         #[test] fn sleeps_briefly() {{ {} }}\n",
        sleep(4_000),
        sleep(3_600),
        sleep(1_500)
    );
    let nextest_config = "[test-groups]\nserial = { max-threads = 1 }\n\n\
        [profile.default]\ndefault-filter = \"not test(=not_today)\"\n\n\
        [[profile.default.overrides]]\nfilter = \"test(/^sleeps_/)\"\ntest-group = \"serial\"\n";
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("lag").test("t", tests)])
        .config("disable = [\"bench-build\", \"doctest\"]")
        .file(".config/nextest.toml", nextest_config);
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let root = manifest.parent().unwrap();
    let (json, report) = (dir.join("run.json"), dir.join("report.md"));
    let out = xtask(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ])
    .env_remove("CI")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));

    // The fixture's library has a unit test of its own: six pass, one is filtered out.
    let r = record(&json);
    let counts = r.test_counts.iter().find(|c| c.stage == "test");
    assert_eq!(
        counts.map(|c| (c.passed, c.failed, c.skipped)),
        Some((6, 0, 1)),
        "{:#?}",
        r.test_counts
    );
    // The shape of #13: neither sleeper takes half the stage alone.
    let wall = r.stages.iter().find(|s| s.id == "test").unwrap().wall;
    for t in r.tests.iter().filter(|t| t.name.contains("sleeps_long")) {
        assert!(t.duration * 2 < wall, "{t:?} of {wall:?}");
    }
    let counted = "tests: 6 passed, 0 failed, 1 skipped";
    let stage_line = stdout.lines().find(|l| l.contains("] test: succeeded"));
    assert!(stage_line.is_some_and(|l| l.contains(counted)), "{stdout}");
    let run_line = stdout.lines().find(|l| l.starts_with("run succeeded"));
    assert!(run_line.is_some_and(|l| l.contains(counted)), "{stdout}");

    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("| `test` | 6 | 0 | 1 |"), "{md}");
    let slowest = md.split("### Slowest tests").nth(1).unwrap_or_else(|| panic!("{md}"));
    let rows: Vec<&str> = slowest.lines().filter(|l| l.starts_with("| `")).take(2).collect();
    assert!(rows[0].starts_with("| `lag::t` | `sleeps_longest` | `test` | "), "{slowest}");
    assert!(rows[1].starts_with("| `lag::t` | `sleeps_long` | `test` | "), "{slowest}");
    let recs = md.split("## Recommendations").nth(1).unwrap();
    assert!(
        recs.contains(
            "split `sleeps_longest` in `lag::t` and `sleeps_long` in `lag::t` into smaller tests"
        ),
        "{recs}"
    );
    let html = files_named(&root.join("target"), "report.html");
    assert_eq!(html.len(), 1, "{html:?}");
    let html = std::fs::read_to_string(&html[0]).unwrap();
    assert!(html.contains("<td>test</td><td>6</td><td>0</td><td>1</td>"), "{html}");
    assert!(html.contains("<td>lag::t</td><td>sleeps_longest</td><td>test</td>"), "{html}");

    let commands = suggested_commands(&md);
    assert!(commands.iter().any(|c| c.join(" ").contains("--exact sleeps_longest")), "{recs}");
    // The flame graph of the slowest test, offered as this run was started: `cargo xtask`
    // (the binary the alias runs) with the run's --manifest-path.
    let flame = commands.iter().position(|c| c[..3] == ["cargo", "xtask", "flamegraph"]);
    let flame = commands[flame.unwrap_or_else(|| panic!("{recs}"))].clone();
    assert_eq!(flame[3..5], ["lag::t", "sleeps_longest"], "{recs}");
    for argv in commands {
        let mut cmd = if argv[..2] == ["cargo", "xtask"] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
            c.args(&argv[2..]);
            c
        } else {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        cmd.current_dir(root);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A test that sleeps may leave perf nothing on the CPU to sample: a clean error
        // saying so is the command working as pasted.
        let no_cpu = argv[2] == "flamegraph" && stderr.contains("perf sampled no CPU time");
        assert!(out.status.success() || no_cpu, "{argv:?}: {stderr}");
    }
}

/// A test that stops a process group of its own and waits for it to be gone passes
/// under plain nextest, where init reaps the group's orphaned member. Under `optimize`
/// the orchestrator is the subreaper that adopts it: unless it reaps adopted zombies,
/// the group never goes and the test fails where nextest passes.
#[test]
fn cli_orphans_the_tests_leave_are_reaped_as_init_would() {
    let (_t, dir) = temp();
    let test = r#"
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

fn group_alive(pgid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn the_group_goes_at_sigterm() {
    // The shell leaves at SIGTERM; its sleep, orphaned, dies of it too.
    let mut sh = std::process::Command::new("sh")
        .args(["-c", "sleep 300 & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = sh.id();
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status().unwrap();
    sh.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) {
        assert!(Instant::now() < deadline, "group {pgid} still there 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
"#;
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a").test("group", test)])
        .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str()]).output().unwrap();
    let all =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
}

/// `-v` shows every stage's output on stderr, `-q` leaves the terminal quiet (no
/// progress, no report paths), and `--message-format json` prints the run's events as
/// JSON lines on stdout and nothing else there: each line has `version` 1, reads back
/// as a `pipeline_opt::record::Event`, and they agree with the run record (the stages
/// and their statuses, the tests, the outcome), the last line naming the reports and
/// the exit code. A value outside a closed set is a usage error.
#[test]
fn cli_verbose_quiet_and_json_messages_show_the_run() {
    use pipeline_opt::record::Event;
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("a").test("t", "#[test] fn one() {}\n#[test] fn two() {}\n"),
    ])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let base = ["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend(extra);
        let out = xtask(&args).env_remove("GITHUB_ACTIONS").output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status.code(), stdout, stderr)
    };

    let (code, _, stderr) = run(&["-v", "--color=never"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("[test] ") && l.contains("PASS")), "{stderr}");

    // Served from the cache, quietly.
    let (code, stdout, stderr) = run(&["-q"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "", "{stderr}");
    assert!(!stderr.contains("report:"), "{stderr}");

    let (code, stdout, stderr) = run(&["--message-format", "json", "--no-cache"]);
    assert_eq!(code, Some(0), "{stderr}");
    let r = record(&json);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["version"] == 1), "{stdout}");
    let (last, events) = lines.split_last().unwrap();
    assert_eq!(last["event"], "reports", "{last}");
    assert_eq!((last["exit_code"].as_i64(), last["json"].as_str()), (Some(0), Some(json.as_str())));
    let events: Vec<Event> = events
        .iter()
        .map(|l| serde_json::from_value(l.clone()).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(matches!(&events[0], Event::RunStarted { run_id, .. } if *run_id == r.run_id));
    let mut finished: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::StageFinished(m) => Some((m.id.clone(), m.status.clone())),
            _ => None,
        })
        .collect();
    let mut recorded: Vec<_> = r.stages.iter().map(|m| (m.id.clone(), m.status.clone())).collect();
    finished.sort_by(|a, b| a.0.cmp(&b.0));
    recorded.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(finished, recorded);
    let tests = events.iter().filter(|e| matches!(e, Event::TestFinished(_))).count();
    assert_eq!((tests, r.tests.len()), (3, 3), "{stdout}");
    let outcome = events.iter().find_map(|e| match e {
        Event::RunFinished { outcome, .. } => Some(*outcome),
        _ => None,
    });
    assert_eq!(outcome, Some(r.outcome));

    let out = xtask(&["optimize", "--manifest-path", manifest.as_str(), "--color", "blue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use `auto`, `always` or `never`"));
    let out = xtask(&["check", "--manifest-path", manifest.as_str(), "--message-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = xtask(&["check", "--manifest-path", manifest.as_str(), "-v", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass one of them"));
}

/// A stage whose program cannot be started: its progress line says why, and the log it
/// names exists and says the same (before, the line named a log that was never written).
#[test]
fn cli_a_stage_that_cannot_start_says_why_on_its_line_and_in_its_log() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")]).config(
        "disable = [\"fetch\", \"build\", \"test\", \"doctest\", \"bench-build\"]\n\
         [stages.ghost]\ncommand = [\"/nonexistent/ghost-program\"]\nuses-build-dir = false\n",
    );
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let out =
        xtask(&["optimize", "--manifest-path", manifest.as_str(), "--no-cache"]).output().unwrap();
    let output =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(100), "{output}");
    let line =
        output.lines().find(|l| l.contains("ghost: failed")).unwrap_or_else(|| panic!("{output}"));
    assert!(line.contains("could not start `/nonexistent/ghost-program`"), "{line}");
    let log = line.rsplit(", log ").next().unwrap();
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{log}: {e}"));
    assert!(text.contains("could not start `/nonexistent/ghost-program`"), "{text}");
}
