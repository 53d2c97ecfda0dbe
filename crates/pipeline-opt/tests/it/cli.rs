//! The command line as users meet it: the `cargo-pipeline-opt` binary run by real cargo
//! as `cargo pipeline-opt …` (PATH pointing at the built binary) on fixture workspaces,
//! and the argument forms rewritten before xflags parses them.

use std::ffi::OsString;
use std::process::{Command, Output};

use camino::Utf8Path;
use pipeline_opt::cli::normalise_args;
use pipeline_opt::fixture::FixtureWorkspace;

use crate::support::Fixture;

/// `cargo ARGS` in `dir`, without the cargo variables of this test run.
fn cargo(dir: &Utf8Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(dir);
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    cmd
}

/// `cargo pipeline-opt ARGS` in `dir`, found by cargo on PATH as an external subcommand.
fn cargo_pipeline_opt(dir: &Utf8Path, args: &[&str]) -> Output {
    cargo_pipeline_opt_command(dir, args).output().expect("cargo runs")
}

/// [`cargo_pipeline_opt`] before it runs, for a caller to add variables.
fn cargo_pipeline_opt_command(dir: &Utf8Path, args: &[&str]) -> Command {
    let bin = Utf8Path::new(env!("CARGO_BIN_EXE_cargo-pipeline-opt"));
    let path = std::env::join_paths(
        std::iter::once(bin.parent().unwrap().as_std_path().to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut cmd = cargo(dir, &[&["pipeline-opt"], args].concat());
    cmd.env("PATH", path);
    cmd
}

#[track_caller]
fn success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[track_caller]
fn check_normalised(args: &[&str], expect: &[&str]) {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let expect: Vec<OsString> = expect.iter().map(OsString::from).collect();
    assert_eq!(normalise_args(args), expect);
}

#[test]
fn cli_normalises_glued_values() {
    check_normalised(&["plan", "--format=json"], &["plan", "--format", "json"]);
    check_normalised(&["optimize", "-pcore", "-p=app"], &["optimize", "-p", "core", "-p", "app"]);
    check_normalised(&["check", "-Fa,b", "-j4"], &["check", "-F", "a,b", "-j", "4"]);
    check_normalised(&["optimize", "--features=a=b"], &["optimize", "--features", "a=b"]);
    // Already in xflags' form, a lone short flag, and anything after `--`: unchanged.
    check_normalised(&["plan", "--format", "json", "-p"], &["plan", "--format", "json", "-p"]);
    check_normalised(&["x", "--", "--a=b", "-pc"], &["x", "--", "--a=b", "-pc"]);
    check_normalised(&["-h", "--strict"], &["-h", "--strict"]);
}

#[test]
fn cli_cargo_subcommand_prints_its_version() {
    let dir = Utf8Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = success(&cargo_pipeline_opt(dir, &["--version"]));
    assert_eq!(out, format!("pipeline-opt {}\n", env!("CARGO_PKG_VERSION")));
    let out = success(&cargo_pipeline_opt(dir, &["plan", "--version"]));
    assert_eq!(out, format!("pipeline-opt {}\n", env!("CARGO_PKG_VERSION")));
}

/// Run from a member's directory without `--manifest-path`, the subcommand plans the
/// enclosing workspace, as cargo would find it; `--format=json` and `-pNAME` parse.
#[test]
fn cli_cargo_subcommand_plans_the_workspace_of_its_directory() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    let out = success(&cargo_pipeline_opt(
        &fx.root.join("crates/c1"),
        &["plan", "--format=json", "-pc1"],
    ));
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["workspace_root"], fx.root.as_str(), "{out}");
    let build = plan["stages"].as_array().unwrap().iter().find(|s| s["id"] == "build").unwrap();
    let args: Vec<&str> =
        build["command"]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--package", "c1"] || w == ["-p", "c1"]), "{args:?}");
    assert!(!args.contains(&"--workspace"), "{args:?}");
}

/// A bad value of a closed set is a usage error through the subcommand too.
#[test]
fn cli_cargo_subcommand_rejects_an_unknown_format_as_usage() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let out = cargo_pipeline_opt(&fx.root, &["plan", "--format=yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("use `text` or `json`"), "{stderr}");
}

/// The main job, from the fixture's directory: it runs the pipeline and writes the
/// report under that workspace's target directory.
#[test]
fn cli_cargo_subcommand_optimizes_the_workspace_of_its_directory() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    let out = cargo_pipeline_opt(&fx.root, &["optimize"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = fx.root.join("target/pipeline-opt/pipeline-optimization-report.md");
    assert!(stderr.contains(&format!("report: {report}")), "{stderr}");
    assert!(report.is_file(), "{stderr}");
}

/// The crate's own directory, as `init-xtask --path` takes it.
fn this_crate() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// `init-xtask` on a workspace with a cargo config of the user's: the xtask crate, the
/// alias merged into the config, `xtask` among the members, the user's lines kept; a
/// second run changes nothing; then (in CI, with PIPELINE_OPT_SLOW_TESTS) `cargo xtask
/// plan` builds that xtask against this crate and plans the workspace.
#[test]
fn cli_init_xtask_sets_up_a_workspace_once() {
    let ws = FixtureWorkspace::chain(1)
        .file(".cargo/config.toml", "# the user's own\n[build]\nincremental = true\n");
    let fx = Fixture::write(&ws);
    let out = success(&cargo_pipeline_opt(&fx.root, &["init-xtask", "--path", this_crate()]));
    assert!(out.contains("wrote xtask/src/main.rs"), "{out}");
    let manifest = std::fs::read_to_string(&fx.manifest).unwrap();
    assert!(manifest.contains(r#"members = ["crates/c0", "xtask"]"#), "{manifest}");
    assert!(manifest.contains("resolver = \"2\""), "{manifest}");
    let config = std::fs::read_to_string(fx.root.join(".cargo/config.toml")).unwrap();
    assert!(config.starts_with("# the user's own\n[build]\nincremental = true\n"), "{config}");
    assert!(config.contains("xtask = \"run --quiet --package xtask --\""), "{config}");
    let main_rs = std::fs::read_to_string(fx.root.join("xtask/src/main.rs")).unwrap();
    assert!(main_rs.contains("pipeline_opt::cli::main()"), "{main_rs}");

    let files = ["Cargo.toml", ".cargo/config.toml", "xtask/Cargo.toml", "xtask/src/main.rs"];
    let before: Vec<String> =
        files.iter().map(|f| std::fs::read_to_string(fx.root.join(f)).unwrap()).collect();
    let again = success(&cargo_pipeline_opt(&fx.root, &["init-xtask", "--path", this_crate()]));
    assert!(again.starts_with("nothing to change"), "{again}");
    let after: Vec<String> =
        files.iter().map(|f| std::fs::read_to_string(fx.root.join(f)).unwrap()).collect();
    assert_eq!(before, after);

    if std::env::var_os("PIPELINE_OPT_SLOW_TESTS").is_none() {
        eprintln!(
            "note: `cargo xtask plan` in the set-up workspace runs with PIPELINE_OPT_SLOW_TESTS=1"
        );
        return;
    }
    // This workspace's lock file, so the xtask builds offline from the registry cache
    // with the versions this crate is tested with; a target directory kept between runs.
    std::fs::copy(Utf8Path::new(this_crate()).join("../../Cargo.lock"), fx.root.join("Cargo.lock"))
        .unwrap();
    let target = Utf8Path::new(env!("CARGO_TARGET_TMPDIR")).join("init-xtask-target");
    let mut cmd = cargo(&fx.root, &["xtask", "plan", "--format=json"]);
    cmd.env("CARGO_NET_OFFLINE", "true").env("CARGO_TARGET_DIR", &target);
    let plan = success(&cmd.output().unwrap());
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["workspace_root"], fx.root.as_str());
}

/// A file of the user's that differs is never overwritten, and nothing else is written
/// either: the error names the file, in one line.
#[test]
fn cli_init_xtask_refuses_to_overwrite_a_differing_file() {
    let ws = FixtureWorkspace::chain(1).file("xtask/src/main.rs", "fn main() {}\n");
    let fx = Fixture::write(&ws);
    let manifest = std::fs::read_to_string(&fx.manifest).unwrap();
    let out = cargo_pipeline_opt(&fx.root, &["init-xtask", "--path", this_crate()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("xtask/src/main.rs"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(fx.root.join("xtask/src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    assert_eq!(std::fs::read_to_string(&fx.manifest).unwrap(), manifest);
    assert!(!fx.root.join("xtask/Cargo.toml").exists());
    assert!(!fx.root.join(".cargo/config.toml").exists());
}

/// A directory with `manifest` as its Cargo.toml and a library `solo` in `pkg/` (the
/// root itself when `pkg` is empty).
fn temp_workspace(manifest: &str, pkg: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(dir.path()).unwrap();
    std::fs::create_dir_all(root.join(pkg).join("src")).unwrap();
    std::fs::write(root.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(root.join(pkg).join("src/lib.rs"), "").unwrap();
    if !pkg.is_empty() {
        let solo = "[package]\nname = \"solo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";
        std::fs::write(root.join(pkg).join("Cargo.toml"), solo).unwrap();
    }
    dir
}

/// A single-package root becomes a workspace of itself and the xtask, which cargo reads.
#[test]
fn cli_init_xtask_makes_a_single_package_a_workspace() {
    let dir =
        temp_workspace("[package]\nname = \"solo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n", "");
    let root = Utf8Path::from_path(dir.path()).unwrap();
    success(&cargo_pipeline_opt(root, &["init-xtask", "--path", this_crate()]));
    let out = cargo(root, &["metadata", "--no-deps", "--format-version=1", "--offline"])
        .output()
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_str(&success(&out)).unwrap();
    let mut names: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["solo", "xtask"]);
}

/// A members list written one per line gets `xtask` on a line of its own, the rest of
/// the manifest as it was.
#[test]
fn cli_init_xtask_keeps_the_layout_of_the_members_list() {
    let manifest =
        "# the user's\n[workspace]\nmembers = [\n  \"solo\",  # first\n]\nresolver = \"2\"\n";
    let dir = temp_workspace(manifest, "solo");
    let root = Utf8Path::from_path(dir.path()).unwrap();
    success(&cargo_pipeline_opt(root, &["init-xtask", "--path", this_crate()]));
    assert_eq!(
        std::fs::read_to_string(root.join("Cargo.toml")).unwrap(),
        "# the user's\n[workspace]\nmembers = [\n  \"solo\",  # first\n  \"xtask\",\n]\nresolver = \"2\"\n"
    );
}

/// `ci-workflow` in `dir` (a workspace), its YAML.
fn ci_workflow(dir: &Utf8Path, args: &[&str]) -> String {
    let mut cmd = cargo_pipeline_opt_command(dir, &[&["ci-workflow"], args].concat());
    // A workspace whose xtask depends on this crate resolves offline from the copied
    // lock file.
    cmd.env("CARGO_NET_OFFLINE", "true");
    success(&cmd.output().unwrap())
}

/// A workspace without an xtask gets `cargo pipeline-opt`, installed from the git URL
/// given (package and binary as this crate names them); after `init-xtask` the same
/// workspace gets `cargo xtask` and no install step.
#[test]
fn cli_ci_workflow_runs_what_the_workspace_has() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let url = "https://example.com/pipeline-opt.git";
    let plain = ci_workflow(&fx.root, &["--install-from", url]);
    assert!(plain.contains("run: cargo pipeline-opt optimize"), "{plain}");
    assert!(!plain.contains("cargo xtask"), "{plain}");
    assert!(plain.contains(&format!("PIPELINE_OPT_GIT: \"{url}\"")), "{plain}");
    let bin = Utf8Path::new(env!("CARGO_BIN_EXE_cargo-pipeline-opt")).file_name().unwrap();
    let install = format!("{} --bin {bin}", env!("CARGO_PKG_NAME"));
    assert!(plain.contains(&install), "{plain}");

    success(&cargo_pipeline_opt(&fx.root, &["init-xtask", "--path", this_crate()]));
    std::fs::copy(Utf8Path::new(this_crate()).join("../../Cargo.lock"), fx.root.join("Cargo.lock"))
        .unwrap();
    let xtask = ci_workflow(&fx.root, &[]);
    assert!(xtask.contains("run: cargo xtask optimize --locked --prometheus"), "{xtask}");
    assert!(!xtask.contains("cargo pipeline-opt") && !xtask.contains("cargo install"), "{xtask}");
}

/// The gate is opt-in and typed, services follow the workspace's config or the flag,
/// and a value outside a closed set is a usage error.
#[test]
fn cli_ci_workflow_options() {
    let fx = Fixture::write(
        &FixtureWorkspace::chain(1).config("services.db = { kind = \"postgres\" }\n"),
    );
    let default = ci_workflow(&fx.root, &[]);
    assert!(
        default.contains("run: cargo pipeline-opt optimize --locked --prometheus"),
        "{default}"
    );
    assert!(default.contains("No --gate") && default.contains("required 60 s"), "{default}");
    assert!(default.contains("--no-install-recommends postgresql\n"), "{default}");
    let gated = ci_workflow(&fx.root, &["--gate=50s", "--services", "none"]);
    assert!(gated.contains("optimize --locked --gate 50s --prometheus"), "{gated}");
    assert!(!gated.contains("apt-get"), "{gated}");
    let all = ci_workflow(&fx.root, &["--gate", "stretch", "--services", "all"]);
    assert!(all.contains("--gate stretch") && all.contains("postgresql redis-server"), "{all}");
    for bad in [&["--gate", "soon"][..], &["--services", "some"]] {
        let out = cargo_pipeline_opt(&fx.root, &[&["ci-workflow"], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The workflows of both kinds of workspace, with the options that add steps.
fn sample_workflows() -> Vec<String> {
    let fx =
        Fixture::write(&FixtureWorkspace::chain(1).config("services.db = { kind = \"redis\" }\n"));
    vec![
        ci_workflow(&fx.root, &[]),
        ci_workflow(&fx.root, &["--gate", "required", "--services", "all", "--install-from", "u"]),
        // This repository's own, which has an xtask that embeds pipeline-opt.
        ci_workflow(Utf8Path::new(this_crate()), &["--gate", "1m30s"]),
        nested_workflow(),
        // The sharded shape: build, shard matrix, merge.
        ci_workflow(&fx.root, &["--shards", "3", "--services", "all", "--install-from", "u"]),
        ci_workflow(Utf8Path::new(this_crate()), &["--shards", "2", "--gate", "required"]),
        nested_sharded_workflow(),
        // The shared compile cache, in both shapes.
        ci_workflow(&fx.root, &["--compile-cache", "--install-from", "u"]),
        ci_workflow(Utf8Path::new(this_crate()), &["--shards", "2", "--compile-cache"]),
    ]
}

/// [`nested_workflow`] with shard jobs.
fn nested_sharded_workflow() -> String {
    let dir = tempfile::tempdir().unwrap();
    let repo = Utf8Path::from_path(dir.path()).unwrap();
    std::fs::create_dir(repo.join(".git")).unwrap();
    FixtureWorkspace::chain(1).write(&repo.join("ws")).unwrap();
    ci_workflow(&repo.join("ws/crates/c0"), &["--shards", "2"])
}

/// `--shards 3`: a build job that archives the tests and uploads them, three matrix
/// jobs that do not cancel each other and upload under names of their own, and a merge
/// job that runs whatever happened to them, merges every shard's directory and keeps
/// the history under a per-run key restored by prefix; the one-job shape is gone.
#[test]
fn cli_ci_workflow_sharded_shape() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let wf = ci_workflow(&fx.root, &["--shards", "3", "--install-from", "u"]);
    let jobs: Vec<&str> = wf
        .lines()
        .skip_while(|l| *l != "jobs:")
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
        .collect();
    assert_eq!(jobs, ["  build:", "  shard:", "  merge:"], "{wf}");
    // Each job's text: from its name line to the next line indented by two spaces.
    let job = |name: &str| {
        let head = format!("  {name}:");
        let mut lines = wf.lines().skip_while(|l| *l != head);
        let first = lines.next().expect("the job").to_string();
        let body: Vec<&str> =
            lines.take_while(|l| !l.starts_with("  ") || l.starts_with("   ")).collect();
        format!("{first}\n{}\n", body.join("\n"))
    };
    let (build, shard, merge) = (job("build"), job("shard"), job("merge"));
    assert!(
        build.contains("optimize --locked --shards 3 --shards-dir target/pipeline-opt/shards"),
        "{build}"
    );
    assert!(build.contains("name: pipeline-shards\n"), "{build}");
    assert!(build.contains("uses: actions/cache/restore@v4"), "the build only restores: {build}");
    assert!(shard.contains("needs: build") && shard.contains("fail-fast: false"), "{shard}");
    assert!(shard.contains("shard: [1, 2, 3]"), "{shard}");
    assert!(shard.contains("--shard ${{ matrix.shard }}"), "{shard}");
    assert!(shard.contains("name: pipeline-shard-${{ matrix.shard }}"), "unique names: {shard}");
    assert!(shard.contains("save-if: false"), "{shard}");
    assert!(merge.contains("needs: [build, shard]") && merge.contains("if: always()"), "{merge}");
    assert!(merge.contains("pattern: pipeline-shard*"), "{merge}");
    assert!(
        merge.contains(
            "shard merge target/pipeline-opt/shards-in/pipeline-shards target/pipeline-opt/shards-in/pipeline-shard-1 target/pipeline-opt/shards-in/pipeline-shard-2 target/pipeline-opt/shards-in/pipeline-shard-3 --prometheus"
        ),
        "{merge}"
    );
    assert!(merge.contains("uses: actions/cache@v4"), "{merge}");
    assert!(
        merge.contains("key: pipeline-opt-history-${{ runner.os }}-${{ github.run_id }}-${{ github.run_attempt }}")
            && merge.contains("restore-keys: pipeline-opt-history-${{ runner.os }}-"),
        "{merge}"
    );
    assert!(merge.contains("junit.xml"), "{merge}");
    assert!(!wf.contains("  pipeline:"), "{wf}");
    // One shard is the one-job shape.
    let one = ci_workflow(&fx.root, &["--shards", "1", "--install-from", "u"]);
    assert!(one.contains("  pipeline:") && !one.contains("  merge:"), "{one}");
    for bad in ["0", "many"] {
        let out = cargo_pipeline_opt(&fx.root, &["ci-workflow", "--shards", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("use a number of jobs (1 or more) or `auto`"), "{stderr}");
    }
}

/// `--compile-cache`: the job that compiles (the one job, or the sharded shape's build
/// job) installs sccache, exports the GitHub Actions cache's URL and token to its steps
/// and runs `optimize --compile-cache gha` with incremental compilation off; the shard
/// and merge jobs compile nothing and get none of it; without the flag there is none.
#[test]
fn cli_ci_workflow_compile_cache_in_the_job_that_compiles() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let steps = [
        "uses: mozilla-actions/sccache-action@",
        "uses: actions/github-script@",
        "for (const name of ['ACTIONS_RESULTS_URL', 'ACTIONS_CACHE_URL', 'ACTIONS_CACHE_SERVICE_V2', 'ACTIONS_RUNTIME_TOKEN']) {",
        "if (process.env[name]) core.exportVariable(name, process.env[name]);",
    ];
    let one = ci_workflow(&fx.root, &["--compile-cache", "--install-from", "u"]);
    for step in steps {
        assert_eq!(one.matches(step).count(), 1, "{step}: {one}");
    }
    assert!(
        one.contains("run: cargo pipeline-opt optimize --locked --compile-cache gha --prometheus"),
        "{one}"
    );
    assert!(one.contains("  CARGO_INCREMENTAL: \"0\"\n"), "{one}");
    // The exports come before the step that starts sccache's server.
    let exported = one.find("core.exportVariable").unwrap();
    assert!(exported < one.find("optimize --locked --compile-cache gha").unwrap(), "{one}");

    let sharded =
        ci_workflow(&fx.root, &["--shards", "2", "--compile-cache", "--install-from", "u"]);
    let job = |name: &str| -> String {
        let head = format!("  {name}:");
        let mut lines = sharded.lines().skip_while(|l| *l != head);
        let first = lines.next().expect("the job").to_string();
        let body: Vec<&str> =
            lines.take_while(|l| !l.starts_with("  ") || l.starts_with("   ")).collect();
        format!("{first}\n{}\n", body.join("\n"))
    };
    let build = job("build");
    for step in steps {
        assert_eq!(build.matches(step).count(), 1, "{step}: {build}");
    }
    assert!(build.contains("optimize --locked --compile-cache gha --shards 2"), "{build}");
    for other in [job("shard"), job("merge")] {
        assert!(!other.contains("sccache") && !other.contains("--compile-cache"), "{other}");
    }

    let plain = ci_workflow(&fx.root, &["--install-from", "u"]);
    assert!(!plain.contains("sccache") && !plain.contains("--compile-cache"), "{plain}");
}

/// `--shards auto` on a workspace whose history holds its tests' durations (from a real
/// run): milliseconds of tests do not pay for a job's overhead, so it picks 1 and says
/// why in the workflow; without a measured overhead or `--job-overhead` it is a
/// one-line error naming both ways.
#[test]
fn cli_ci_workflow_shards_auto_picks_one_when_sharding_does_not_pay() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    let out = cargo_pipeline_opt(&fx.root, &["ci-workflow", "--shards", "auto"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--job-overhead") && stderr.contains("--local"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    success(&cargo_pipeline_opt(&fx.root, &["optimize"]));
    let wf = ci_workflow(&fx.root, &["--shards", "auto", "--job-overhead", "30s"]);
    assert!(wf.contains("  # --shards auto: 1 job: the tests take"), "{wf}");
    assert!(wf.contains("  pipeline:") && !wf.contains("  merge:"), "{wf}");
}

/// The workflow of a workspace in a repository's subdirectory `ws`: its commands run
/// there, and the paths the actions take are the repository's.
fn nested_workflow() -> String {
    let dir = tempfile::tempdir().unwrap();
    let repo = Utf8Path::from_path(dir.path()).unwrap();
    std::fs::create_dir(repo.join(".git")).unwrap();
    FixtureWorkspace::chain(1).write(&repo.join("ws")).unwrap();
    ci_workflow(&repo.join("ws/crates/c0"), &[])
}

#[test]
fn cli_ci_workflow_of_a_workspace_below_the_repository_root() {
    let wf = nested_workflow();
    assert!(wf.contains("defaults:\n      run:\n        working-directory: ws\n"), "{wf}");
    assert!(wf.contains("workspaces: ws -> target"), "{wf}");
    assert!(wf.contains("            ws/target/pipeline-opt/history.jsonl\n"), "{wf}");
    assert!(wf.contains("--prometheus target/pipeline-opt/pipeline.prom"), "{wf}");
}

/// Every `cargo xtask …` or `cargo pipeline-opt …` line the workflows run parses with
/// the real command line: the binary given those arguments and `--help` exits 0, as it
/// exits 2 on an unknown flag or a bad value before the `--help`.
#[test]
fn cli_ci_workflow_commands_parse() {
    let bin = env!("CARGO_BIN_EXE_cargo-pipeline-opt");
    let mut checked = 0;
    for wf in sample_workflows() {
        for line in wf.lines() {
            let Some(run) = line.trim_start().strip_prefix("run: ") else { continue };
            let Some(args) = run
                .strip_prefix("cargo xtask ")
                .or_else(|| run.strip_prefix("cargo pipeline-opt "))
            else {
                continue;
            };
            // A matrix job's shard number is GitHub's to fill in.
            let args = args.replace("${{ matrix.shard }}", "1");
            let args: Vec<&str> = args.split_whitespace().chain(["--help"]).collect();
            // `optimize --gate` takes any text and judges it when the run starts.
            if let Some(i) = args.iter().position(|a| *a == "--gate") {
                args[i + 1].parse::<pipeline_opt::targets::Gate>().unwrap();
            }
            // So does `--compile-cache`, with the backend's name.
            if let Some(i) = args.iter().position(|a| *a == "--compile-cache") {
                pipeline_opt::compile_cache::Backend::parse(args[i + 1]).unwrap();
            }
            let out = Command::new(bin).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "`{run}` does not parse: {stderr}");
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} commands found");
    let out = Command::new(bin).args(["optimize", "--jobs", "many", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad value before --help is still an error");
}

/// The workflows validate against GitHub's workflow schema, as vendored by
/// check-jsonschema (works offline). `cargo xtask ci` installs the tool; under `CI=true`
/// a missing tool fails the test, elsewhere it is skipped with a note.
#[test]
fn cli_ci_workflow_validates_against_the_github_schema() {
    let runs = |program: &str, args: &[&str]| {
        Command::new(program).args(args).arg("--version").output().is_ok_and(|o| o.status.success())
    };
    let tool: Vec<&str> = if runs("check-jsonschema", &[]) {
        vec!["check-jsonschema"]
    } else if runs("python3", &["-m", "check_jsonschema"]) {
        vec!["python3", "-m", "check_jsonschema"]
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "check-jsonschema is missing under CI=true: `cargo xtask ci` installs it (pip install check-jsonschema)"
        );
    } else {
        eprintln!(
            "skipped: check-jsonschema is not installed (`python3 -m pip install --user check-jsonschema`)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, wf) in sample_workflows().iter().enumerate() {
        let path = dir.path().join(format!("pipeline-{i}.yml"));
        std::fs::write(&path, wf).unwrap();
        files.push(path);
    }
    let out = Command::new(tool[0])
        .args(&tool[1..])
        .args(["--builtin-schema", "vendor.github-workflows"])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The plan starts test processes through the small `pipeline-opt-lease-runner` when it
/// sits beside the running binary and answers this build's protocol, and through the
/// running binary itself otherwise (a stale runner is never given arguments).
#[test]
fn cli_the_small_lease_runner_beside_the_binary_is_used_when_it_answers_the_protocol() {
    let ws = Fixture::write(
        &FixtureWorkspace::chain(1)
            .config("[services.db]\nkind = \"postgres\"\nenv = { DATABASE_URL = \"{url}\" }\n"),
    );
    // Hard links in a directory of their own: the binary finds itself there.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bin = dir.path().join("cargo-pipeline-opt");
    std::fs::hard_link(env!("CARGO_BIN_EXE_cargo-pipeline-opt"), &bin).unwrap();
    let runner = dir.path().join(pipeline_opt::plan::LEASE_RUNNER_BIN);
    let runner_of_plan = || {
        let out = Command::new(&bin)
            .args(["pipeline-opt", "plan", "--manifest-path", ws.manifest.as_str()])
            .output()
            .unwrap();
        let text = success(&out);
        let line = text.lines().find(|l| l.contains("runner=")).unwrap_or_else(|| panic!("{text}"));
        line.split("runner=[\"").nth(1).unwrap().split('"').next().unwrap().to_string()
    };
    assert_eq!(runner_of_plan(), bin.to_str().unwrap(), "no runner beside it");
    std::fs::hard_link(env!("CARGO_BIN_EXE_pipeline-opt-lease-runner"), &runner).unwrap();
    assert_eq!(runner_of_plan(), runner.to_str().unwrap(), "the small runner beside it");
    std::fs::remove_file(&runner).unwrap();
    std::fs::write(&runner, "#!/bin/sh\necho pipeline-opt-lease-runner 0.0.0 protocol 0\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(runner_of_plan(), bin.to_str().unwrap(), "a runner of another protocol");
}
