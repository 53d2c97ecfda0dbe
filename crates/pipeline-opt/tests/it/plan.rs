//! The planner on generated fixtures: the stage DAG, reasons, dropped stages, notes, and
//! config errors that name the key and the fix.

use expect_test::{Expect, expect};
use pipeline_opt::config::Config;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::plan::{CargoArgs, PlanOptions, plan};
use pipeline_opt::toolchain::Toolchain;

use crate::support::Fixture;

fn stable() -> Toolchain {
    Toolchain::parse("rustc 1.95.0\nrelease: 1.95.0\nhost: x86_64-unknown-linux-gnu\n")
}

fn options(nextest: bool) -> PlanOptions {
    PlanOptions {
        toolchain: Some(stable()),
        nextest,
        cargo: CargoArgs::default(),
        strict: false,
        ..Default::default()
    }
}

#[track_caller]
fn check_plan(ws: &FixtureWorkspace, options: &PlanOptions, expect: Expect) {
    let fx = Fixture::write(ws);
    let w = fx.load();
    let config = Config::from_workspace_metadata(&w.metadata).expect("valid config");
    let p = plan(&w, &config, options).expect("plans");
    expect.assert_eq(&fx.redact(&p.render_text()));
}

/// The error a fixture's config produces, from loading the config or from planning.
#[track_caller]
fn check_config_error(config_toml: &str, expect: Expect) {
    let fx = Fixture::write(&FixtureWorkspace::chain(2).config(config_toml));
    let w = fx.load();
    let err = match Config::from_workspace_metadata(&w.metadata) {
        Err(e) => e.to_string(),
        Ok(config) => {
            plan(&w, &config, &options(true)).expect_err("config is rejected").to_string()
        }
    };
    expect.assert_eq(&err);
}

#[test]
fn default_plan_drops_check_and_runs_tests_with_nextest() {
    let mut ws = FixtureWorkspace::diamond();
    ws.crates[0] = ws.crates[0].clone().bench("throughput", "fn main() {}\n");
    check_plan(
        &ws,
        &options(true),
        expect![[r#"
            plan for $ROOT

            stage fetch
              command:    cargo fetch --manifest-path $ROOT/Cargo.toml
              depends on: (none)
              why:        downloads every dependency once so that all later stages run --offline
              proves:     dependencies resolve and download

            stage build
              command:    cargo build --manifest-path $ROOT/Cargo.toml --offline --workspace --all-targets
              depends on: fetch
              why:        compiles every target once; the test stages reuse its artifacts
              proves:     build (dev); check --all-targets (dev); benches compile and link (dev profile); test binaries compile
              build dir:  $ROOT/target (holds its lock throughout)

            stage test
              command:    cargo nextest run --manifest-path $ROOT/Cargo.toml --offline --workspace --no-fail-fast
              depends on: build
              why:        runs the tests with cargo-nextest, reusing the build stage's test binaries
              proves:     unit and integration tests pass
              build dir:  $ROOT/target (takes its lock only to confirm freshness)

            stage doctest
              command:    cargo test --manifest-path $ROOT/Cargo.toml --offline --workspace --doc --no-fail-fast
              depends on: build
              why:        runs documentation tests, which nextest does not run
              proves:     doctests pass
              build dir:  $ROOT/target (holds its lock throughout)

            dropped
              check: redundant: a successful `build --all-targets` already proves `check --all-targets`
              bench-build: bench-proof = "dev" (the default): the build stage compiles and links the benches in the dev profile; bench-proof = "check" also type-checks them in the bench profile, "build" or --strict builds them as `cargo bench --no-run` does

        "#]],
    );
}

#[test]
fn nightly_only_bench_is_left_out_of_an_explicit_target_list() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("engine")
            .bench("simd", "#![feature(portable_simd)]\nfn main() {}\n")
            .bench("plain", "fn main() {}\n")
            .test("api", "#[test]\nfn ok() {}\n"),
    ]);
    let mut strict = options(true);
    strict.strict = true;
    check_plan(
        &ws,
        &strict,
        expect![[r#"
            plan for $ROOT

            stage fetch
              command:    cargo fetch --manifest-path $ROOT/Cargo.toml
              depends on: (none)
              why:        downloads every dependency once so that all later stages run --offline
              proves:     dependencies resolve and download

            stage build
              command:    cargo build --manifest-path $ROOT/Cargo.toml --offline --workspace --lib --tests --bench plain
              depends on: fetch
              why:        compiles every target once; the test stages reuse its artifacts
              proves:     build (dev); check --all-targets (dev); test binaries compile
              build dir:  $ROOT/target (holds its lock throughout)

            stage test
              command:    cargo nextest run --manifest-path $ROOT/Cargo.toml --offline --workspace --lib --tests --no-fail-fast
              depends on: build
              why:        runs the tests with cargo-nextest, reusing the build stage's test binaries
              proves:     unit and integration tests pass
              build dir:  $ROOT/target (takes its lock only to confirm freshness)

            stage doctest
              command:    cargo test --manifest-path $ROOT/Cargo.toml --offline --workspace --doc --no-fail-fast
              depends on: build
              why:        runs documentation tests, which nextest does not run
              proves:     doctests pass
              build dir:  $ROOT/target (holds its lock throughout)

            stage bench-build
              command:    CARGO_TARGET_DIR=$ROOT/target/pipeline-opt/bench-target cargo bench --no-run --manifest-path $ROOT/Cargo.toml --offline --workspace --bench plain
              depends on: fetch
              why:        compiles the benchmarks in the bench profile, as `cargo bench --no-run` does
              proves:     bench --no-run (bench profile)
              build dir:  $ROOT/target/pipeline-opt/bench-target (holds its lock throughout)

            dropped
              check: redundant: a successful `build --all-targets` already proves `check --all-targets`

            notes
              - left out bench target `simd` of package `engine`: it uses #![feature(portable_simd)], which the 1.95.0 compiler does not accept
        "#]],
    );
}

#[test]
fn without_nextest_tests_run_with_cargo_test_and_a_note_says_how_to_install_it() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    let w = fx.load();
    let p = plan(&w, &Config::default(), &options(false)).unwrap();
    let test = p.stage("test").unwrap();
    assert_eq!(test.command.program(), "cargo");
    assert_eq!(test.command.args()[0], "test");
    // Explicit kinds keep doctests out of this stage: the doctest stage runs them.
    assert!(test.command.args().windows(3).any(|w| w == ["--lib", "--bins", "--tests"]));
    assert!(p.notes.iter().any(|n| n.contains("cargo install cargo-nextest")), "{:?}", p.notes);
}

/// `test-runner = "cargo"` picks `cargo test` where nextest is installed, and says so;
/// a runner the tool does not know is an error naming the key.
#[test]
fn test_runner_cargo_runs_tests_with_cargo_test_even_with_nextest() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2).config("test-runner = \"cargo\""));
    let w = fx.load();
    let config = Config::from_workspace_metadata(&w.metadata).unwrap();
    let p = plan(&w, &config, &options(true)).unwrap();
    let test = p.stage("test").unwrap();
    assert_eq!(test.command.args()[0], "test");
    assert!(test.command.args().windows(3).any(|w| w == ["--lib", "--bins", "--tests"]));
    assert!(test.reason.contains("test-runner"), "{}", test.reason);
    assert!(p.notes.iter().any(|n| n.starts_with("test-runner = \"cargo\"")), "{:?}", p.notes);
    assert!(!p.notes.iter().any(|n| n.contains("not installed")), "{:?}", p.notes);
    let default = plan(&w, &Config::default(), &options(true)).unwrap();
    assert_eq!(default.stage("test").unwrap().command.args()[0], "nextest");
    check_config_error(
        "test-runner = \"pytest\"",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.test-runner` in Cargo.toml: unknown variant `pytest`, expected `nextest` or `cargo`"#
        ]],
    );
}

#[test]
fn config_disables_stages_and_adds_custom_ones() {
    let ws = FixtureWorkspace::chain(2).config(
        r#"
disable = ["doctest", "fetch"]
enable = ["fmt"]
stage-timeout = "5m"
[targets]
required = "50s"
stages = { build = "20s" }
[stages.lint-docs]
command = ["cargo", "doc", "--no-deps"]
depends-on = ["build"]
timeout = "90s"
"#,
    );
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let config = Config::from_workspace_metadata(&w.metadata).unwrap();
    let p = plan(&w, &config, &options(true)).unwrap();
    let ids: Vec<&str> = p.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["build", "test", "fmt", "lint-docs"]);
    let reasons: Vec<(&str, String)> =
        p.dropped.iter().map(|d| (d.id.as_str(), d.reason.to_string())).collect();
    let dropped: Vec<(&str, &str)> = reasons.iter().map(|(id, r)| (*id, r.as_str())).collect();
    assert_eq!(
        dropped,
        [
            ("fetch", "disabled in [workspace.metadata.pipeline-opt] `disable`"),
            (
                "check",
                "redundant: a successful `build --all-targets` already proves `check --all-targets`"
            ),
            ("doctest", "disabled in [workspace.metadata.pipeline-opt] `disable`"),
            (
                "bench-build",
                "the workspace has no bench targets; `cargo bench --no-run` would still compile the libraries' and binaries' unit tests in the bench profile, which --strict (bench-proof = \"build\") does"
            ),
        ]
    );
    let custom = p.stage("lint-docs").unwrap();
    assert_eq!(custom.depends_on, ["build"]);
    assert_eq!(custom.timeout, Some(std::time::Duration::from_secs(90)));
    assert!(custom.build_dir.is_some(), "a cargo command takes the build directory lock");
    assert_eq!(p.stage("build").unwrap().timeout, Some(std::time::Duration::from_secs(300)));
    assert!(p.stage("build").unwrap().depends_on.is_empty(), "fetch is disabled");
    assert_eq!(config.targets.required, Some(std::time::Duration::from_secs(50)));
}

#[test]
fn passed_cargo_flags_reach_every_cargo_stage_alike() {
    let fx = Fixture::write(&FixtureWorkspace::diamond());
    let w = fx.load();
    let mut o = options(true);
    o.cargo = CargoArgs {
        locked: true,
        features: vec!["a".into(), "b".into()],
        packages: vec!["left".into()],
        ..CargoArgs::default()
    };
    let p = plan(&w, &Config::default(), &o).unwrap();
    for s in p.stages.iter().filter(|s| s.id != "fetch") {
        let args = s.command.args().join(" ");
        assert!(args.contains("--package left --locked --features a,b"), "{}: {args}", s.id);
        assert!(!args.contains("--workspace"), "{}: {args}", s.id);
    }
}

#[test]
fn frozen_drops_fetch_and_offline() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let w = fx.load();
    let mut o = options(true);
    o.cargo.frozen = true;
    let p = plan(&w, &Config::default(), &o).unwrap();
    assert!(p.stage("fetch").is_none());
    assert!(p.dropped.iter().any(|d| d.id == "fetch" && d.reason.to_string().contains("--frozen")));
    assert!(p.stages.iter().all(|s| !s.command.args().contains(&"--offline".to_string())));
}

#[test]
fn unknown_package_is_an_error_listing_members() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    let w = fx.load();
    let mut o = options(true);
    o.cargo.packages = vec!["nope".into()];
    let err = plan(&w, &Config::default(), &o).unwrap_err().to_string();
    assert_eq!(err, "unknown package `nope` passed with -p; workspace members are: c0, c1");
}

#[test]
fn bad_duration_names_the_key_and_the_fix() {
    check_config_error(
        "targets = { required = \"4x\" }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.targets.required` in Cargo.toml: `4x` is not a duration (unknown time unit "x", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like "45s" or "2m 30s""#
        ]],
    );
}

#[test]
fn unknown_key_names_the_key() {
    check_config_error(
        "tragets = {}",
        expect![
            "invalid `workspace.metadata.pipeline-opt.tragets` in Cargo.toml: unknown field `tragets`, expected one of `targets`, `disable`, `enable`, `bench-proof`, `test-runner`, `incremental`, `compile-cache`, `stage-timeout`, `stages`, `services`, `cache`, `env`"
        ],
    );
}

#[test]
fn wrong_type_names_the_key() {
    check_config_error(
        "disable = \"doctest\"",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.disable` in Cargo.toml: invalid type: string "doctest", expected a sequence"#
        ]],
    );
}

#[test]
fn unknown_stage_in_disable_lists_known_stages() {
    check_config_error(
        "disable = [\"doctests\"]",
        expect![
            "unknown stage `doctests` in `workspace.metadata.pipeline-opt.disable` in Cargo.toml; known stages: fetch, build, check, test, test-archive, custom-tests, doctest, bench-build, clippy, fmt, doc, services"
        ],
    );
}

#[test]
fn custom_stage_cycle_is_an_error() {
    check_config_error(
        "[stages.a]\ncommand = [\"true\"]\ndepends-on = [\"b\"]\n[stages.b]\ncommand = [\"true\"]\ndepends-on = [\"a\"]\n",
        expect![[
            r#"stages depend on each other in a cycle: a -> b -> a; remove one `depends-on` entry in [workspace.metadata.pipeline-opt.stages]"#
        ]],
    );
}

#[test]
fn custom_stage_depending_on_an_unknown_stage_is_an_error() {
    check_config_error(
        "[stages.a]\ncommand = [\"true\"]\ndepends-on = [\"lint\"]\n",
        expect![
            "unknown stage `lint` in `workspace.metadata.pipeline-opt.stages.a.depends-on` in Cargo.toml; known stages: a, build, doctest, fetch, test"
        ],
    );
}

#[test]
fn empty_custom_command_is_an_error() {
    check_config_error(
        "[stages.a]\ncommand = []\n",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.stages.a.command` in Cargo.toml: the command is empty; give the program and its arguments as a list, e.g. ["cargo", "doc"]"#
        ]],
    );
}

#[test]
fn plan_of_this_project_builds_every_target_once() {
    let manifest = camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let inputs = pipeline_opt::inputs::Inputs::load(Some(&manifest)).unwrap();
    let p = inputs.plan(CargoArgs::default(), false).unwrap();
    let ids: Vec<&str> = p.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["fetch", "build", "test", "doctest"]);
    assert!(p.stage("build").unwrap().command.args().contains(&"--all-targets".to_string()));
    let strict = inputs.plan(CargoArgs::default(), true).unwrap();
    let bench = strict.stage("bench-build").unwrap();
    assert_ne!(
        bench.build_dir,
        strict.stage("build").unwrap().build_dir,
        "bench work overlaps dev"
    );
}

#[test]
fn package_needing_a_newer_compiler_is_an_error_naming_the_fix() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    // rust-version belongs in [package], so edit the written manifest.
    let manifest = fx.root.join("crates/c1/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("publish = false\n", "publish = false\nrust-version = \"1.99\"\n", 1),
    )
    .unwrap();
    let w = fx.load();
    let err = plan(&w, &Config::default(), &options(true)).unwrap_err().to_string();
    assert_eq!(
        err,
        "package `c1` needs rustc 1.99.0 (its `rust-version`) but the active toolchain is 1.95.0; install a newer toolchain (`rustup update`) or pin one in rust-toolchain.toml"
    );
}

#[test]
fn nightly_only_integration_test_is_listed_out_by_name() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("engine")
            .test("nightly_api", "#![feature(test)]\n#[test]\nfn a() {}\n")
            .test("stable_api", "#[test]\nfn b() {}\n"),
    ]);
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let p = plan(&w, &Config::default(), &options(true)).unwrap();
    let build = p.stage("build").unwrap().command.args().join(" ");
    assert!(build.ends_with("--workspace --lib --test stable_api"), "{build}");
    let test = p.stage("test").unwrap().command.args().join(" ");
    assert!(test.contains("--lib --test stable_api --no-fail-fast"), "{test}");
    assert!(p.notes.iter().any(|n| n.contains("`nightly_api`")), "{:?}", p.notes);
    assert!(p.notes.iter().any(|n| n.contains("unit-test harnesses")), "{:?}", p.notes);
}

#[test]
fn a_cargo_profile_reaches_nextest_as_cargo_profile() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let w = fx.load();
    let mut o = options(true);
    o.cargo.profile = Some("ci".into());
    let p = plan(&w, &Config::default(), &o).unwrap();
    let test = p.stage("test").unwrap().command.args().join(" ");
    assert!(test.ends_with("--cargo-profile ci"), "{test}");
    assert!(!test.contains("--profile ci"), "{test}");
    let build = p.stage("build").unwrap().command.args().join(" ");
    assert!(build.ends_with("--profile ci"), "{build}");
}

#[test]
fn each_bench_proof_splits_the_work_between_build_and_bench_build() {
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a").bench("speed", "fn main() {}\n")]);
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let parse = |body: &str| {
        let fx = Fixture::write(&FixtureWorkspace::chain(1).config(body));
        Config::from_workspace_metadata(&fx.load().metadata).unwrap()
    };
    // (build's target selection, bench-build's first two arguments if it runs)
    let shape = |config: &Config, strict: bool| {
        let p = plan(&w, config, &PlanOptions { strict, ..options(true) }).unwrap();
        let build = p.stage("build").unwrap().command.args().join(" ");
        let bench = p.stage("bench-build").map(|s| s.command.args()[..2].join(" "));
        (build, bench)
    };
    let (build, bench) = shape(&Config::default(), false);
    assert!(build.ends_with("--all-targets") && bench.is_none(), "dev: {build} {bench:?}");
    let (build, bench) = shape(&parse("bench-proof = \"check\""), false);
    assert!(build.ends_with("--lib --bins --tests --examples"), "check: {build}");
    assert_eq!(bench.as_deref(), Some("check --manifest-path"));
    for config in [Config::default(), parse("bench-proof = \"check\"")] {
        let (build, bench) = shape(&config, true);
        assert!(build.ends_with("--all-targets"), "strict: {build}");
        assert_eq!(bench.as_deref(), Some("bench --no-run"));
    }
    // Without bench targets `cargo bench --no-run` still compiles the library's unit
    // tests in the bench profile: strict does too, the default names what it leaves out.
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    let w = fx.load();
    let strict = plan(&w, &Config::default(), &PlanOptions { strict: true, ..options(true) });
    let bench = strict.unwrap().stage("bench-build").unwrap().command.args();
    assert_eq!(bench[..2], ["bench", "--no-run"]);
    assert!(bench.contains(&"--benches".to_string()), "{bench:?}");
    let default = plan(&w, &Config::default(), &options(true)).unwrap();
    assert!(default.stage("bench-build").is_none());
    let why = default.dropped.iter().find(|d| d.id == "bench-build").unwrap();
    assert!(why.reason.to_string().contains("would still compile"), "{}", why.reason);
}

#[test]
fn incremental_is_off_on_ci_unless_the_user_or_the_config_says_otherwise() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2).config("enable = [\"fmt\"]"));
    let w = fx.load();
    // Which stages run with CARGO_INCREMENTAL=0, and whether a note says so.
    let off = |config: &Config, ci: bool, user_set: bool| {
        let o = PlanOptions { ci, cargo_incremental_set: user_set, ..options(true) };
        let p = plan(&w, config, &o).unwrap();
        let stages: Vec<String> = p
            .stages
            .iter()
            .filter(|s| s.command.env.get("CARGO_INCREMENTAL").is_some_and(|v| v == "0"))
            .map(|s| s.id.clone())
            .collect();
        let noted = p.notes.iter().any(|n| n.contains("incremental compilation is off"));
        assert_eq!(stages.is_empty(), !noted, "{stages:?} {:?}", p.notes);
        stages
    };
    let auto = Config::from_workspace_metadata(&w.metadata).unwrap();
    assert_eq!(off(&auto, true, false), ["fetch", "build", "test", "doctest", "fmt"]);
    assert!(off(&auto, false, false).is_empty());
    assert!(off(&auto, true, true).is_empty(), "the user's own CARGO_INCREMENTAL wins");
    let parse = |body: &str| {
        let fx = Fixture::write(&FixtureWorkspace::chain(1).config(body));
        Config::from_workspace_metadata(&fx.load().metadata).unwrap()
    };
    assert!(off(&parse("incremental = \"on\""), true, false).is_empty());
    assert!(!off(&parse("incremental = \"off\""), false, false).is_empty());
}

/// `cargo test` and nextest build in the test profile. When the workspace sets it apart
/// from dev, the build stage builds in it too, so the test stages reuse its artifacts;
/// --strict keeps `cargo build`'s dev profile. Where the difference comes from is found
/// in the manifest and in cargo config files, and named in the plan.
#[test]
fn a_test_profile_apart_from_dev_moves_the_build_into_it() {
    let plain = Fixture::write(&FixtureWorkspace::chain(1));
    assert_eq!(plain.load().test_profile_overrides(), Vec::<String>::new());
    let mut ws =
        FixtureWorkspace::chain(1).file(".cargo/config.toml", "[profile.test]\nopt-level = 1\n");
    ws.root_manifest_extra = "[profile.test]\ndebug = 2\n".into();
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let found = w.test_profile_overrides();
    assert_eq!(
        found.iter().map(|f| fx.redact(f)).collect::<Vec<_>>(),
        ["[profile.test] in $ROOT/Cargo.toml", "[profile.test] in $ROOT/.cargo/config.toml"]
    );
    let build = |strict: bool| {
        let o = PlanOptions { strict, test_profile_overrides: found.clone(), ..options(true) };
        let p = plan(&w, &Config::default(), &o).unwrap();
        let note = p.notes.iter().find(|n| n.contains("test profile differs")).cloned();
        (p.stage("build").unwrap().clone(), note)
    };
    let (stage, note) = build(false);
    assert!(
        stage.command.args().ends_with(&["--profile".into(), "test".into()]),
        "{:?}",
        stage.command.args()
    );
    assert!(
        stage.proves.iter().any(|p| p.to_string() == "build (test profile)"),
        "{:?}",
        stage.proves
    );
    assert!(note.is_some_and(|n| n.contains(&found[0]) && n.contains(&found[1])));
    let (stage, note) = build(true);
    assert!(!stage.command.args().contains(&"--profile".to_string()), "{:?}", stage.command.args());
    assert!(stage.proves.iter().any(|p| p.to_string() == "build (dev)"), "{:?}", stage.proves);
    assert!(note.is_none());
}

/// The naive sequence writes its flags where the usual CI commands have them, the
/// user's cargo flags included, and builds in the directory it is given.
#[test]
fn naive_sequence_runs_the_usual_commands_with_the_users_flags() {
    let fx = Fixture::write(&FixtureWorkspace::diamond());
    let w = fx.load();
    let cargo = CargoArgs {
        locked: true,
        features: vec!["a".into()],
        profile: Some("release".into()),
        packages: vec!["left".into()],
        ..CargoArgs::default()
    };
    let p = pipeline_opt::plan::naive(&w, &Config::default(), &cargo, "/scratch/target".into());
    let commands: Vec<String> =
        p.stages.iter().map(|s| format!("{}: {}", s.id, s.command.display())).collect();
    expect![[r#"
        naive-fetch: cargo fetch --manifest-path $ROOT/Cargo.toml --locked
        naive-build: cargo build --manifest-path $ROOT/Cargo.toml --package left --features a --profile release --locked --target-dir /scratch/target
        naive-check: cargo check --all-targets --manifest-path $ROOT/Cargo.toml --package left --features a --profile release --locked --target-dir /scratch/target
        naive-test: cargo test --manifest-path $ROOT/Cargo.toml --package left --features a --profile release --locked --target-dir /scratch/target
        naive-bench: cargo bench --no-run --manifest-path $ROOT/Cargo.toml --package left --features a --locked --target-dir /scratch/target"#]]
    .assert_eq(&fx.redact(&commands.join("\n")));
}

/// What the run record says each stage's command does comes from the planner's
/// structured command, so reporters never read the command text.
#[test]
fn every_planned_command_says_what_kind_of_work_it_does() {
    let fx = Fixture::write(
        &FixtureWorkspace::diamond().config("bench-proof = \"build\"\nenable = [\"fmt\"]"),
    );
    let w = fx.load();
    let config = Config::from_workspace_metadata(&w.metadata).expect("valid config");
    let kinds = |nextest| {
        let p = plan(&w, &config, &options(nextest)).expect("plans");
        p.stages
            .iter()
            .map(|s| format!("{} {:?} {:?}", s.id, s.command.kind(), s.command.cargo_profile()))
            .collect::<Vec<_>>()
    };
    expect![[r#"
        [
            "fetch Fetch None",
            "build Compile Some(\"dev\")",
            "test Nextest Some(\"dev\")",
            "doctest CargoTest Some(\"dev\")",
            "bench-build Compile Some(\"bench\")",
            "fmt Cargo None",
        ]
    "#]]
    .assert_debug_eq(&kinds(true));
    let cargo_test: Vec<String> =
        kinds(false).into_iter().filter(|k| k.starts_with("test ")).collect();
    assert_eq!(cargo_test, ["test CargoTest Some(\"dev\")"]);
}

#[test]
fn an_environment_for_an_unknown_stage_or_an_impossible_variable_is_an_error() {
    check_config_error(
        "env = { biuld = { A = \"1\" } }",
        expect![
            "unknown stage `biuld` in `workspace.metadata.pipeline-opt.env` in Cargo.toml; known stages: fetch, build, check, test, test-archive, custom-tests, doctest, bench-build, clippy, fmt, doc, services"
        ],
    );
    check_config_error(
        "env = { build = { \"A=B\" = \"1\" } }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.env.build` in Cargo.toml: "A=B" is not a variable an environment can hold; use a name without `=` and text without NUL characters"#
        ]],
    );
}

#[test]
fn an_unknown_placeholder_in_a_services_env_names_the_key_and_the_known_ones() {
    check_config_error(
        "[services.db]\nkind = \"postgres\"\nenv = { DATABASE_URL = \"postgres://{user}:{pass}@{host}/{db}\" }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.services.db.env.DATABASE_URL` in Cargo.toml: unknown placeholder `{pass}` for a service of kind "postgres"; use {url}, {user}, {password}, {host}, {port}, {db}"#
        ]],
    );
    check_config_error(
        "[services.cache]\nkind = \"redis\"\nenv = { REDIS_URL = \"redis://{user}@{host}\" }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.services.cache.env.REDIS_URL` in Cargo.toml: unknown placeholder `{user}` for a service of kind "redis"; use {url}, {password}, {host}, {port}, {db}"#
        ]],
    );
    check_config_error(
        "[services.db]\nkind = \"postgres\"\nenv = { DATABASE_URL = \"{url\" }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.services.db.env.DATABASE_URL` in Cargo.toml: a `{` without its `}`; write `{{` for a brace, or use one of {url}, {user}, {password}, {host}, {port}, {db}"#
        ]],
    );
    check_config_error(
        "[services.db]\nkind = \"postgres\"\nenv = { \"DATABASE-URL\" = \"{url}\" }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.services.db.env` in Cargo.toml: "DATABASE-URL" is not a variable name a test can read; use A-Z a-z 0-9 _, not starting with a digit"#
        ]],
    );
}

/// #17.1: the test stages start test binaries through the lease runner, the planner's
/// `--config` outranking the user's runner, which the lease runner runs in turn; the
/// build, which never runs a test binary, gets neither the runner nor the variables.
#[test]
fn services_with_env_give_the_test_stages_a_lease_runner_that_chains_the_users() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("app").test("db", "#[test]\nfn a() {}\n"),
    ])
    .config(
        "disable = [\"doctest\", \"bench-build\"]\n[services.db]\nkind = \"postgres\"\nenv = { DATABASE_URL = \"{url}\", PGPORT = \"{port}\" }\n[services.cache]\nkind = \"redis\"\n",
    );
    let user = pipeline_opt::target_runner::UserRunner {
        argv: vec!["valgrind".into(), "--quiet".into()],
        source: "target.'cfg(unix)'.runner in /home/.cargo/config.toml".into(),
    };
    let o = PlanOptions {
        lease_runner: Some("/bin/xtask".into()),
        user_runner: Some(user),
        ..options(true)
    };
    check_plan(
        &ws,
        &o,
        expect![[r#"
            plan for $ROOT

            stage fetch
              command:    cargo fetch --manifest-path $ROOT/Cargo.toml
              depends on: (none)
              why:        downloads every dependency once so that all later stages run --offline
              proves:     dependencies resolve and download

            stage build
              command:    cargo build --manifest-path $ROOT/Cargo.toml --offline --workspace --all-targets
              depends on: fetch
              why:        compiles every target once; the test stages reuse its artifacts
              proves:     build (dev); check --all-targets (dev); test binaries compile
              build dir:  $ROOT/target (holds its lock throughout)

            stage test
              command:    PIPELINE_OPT_POOL=$ROOT/target/pipeline-opt/pool cargo nextest run --manifest-path $ROOT/Cargo.toml --config 'target.x86_64-unknown-linux-gnu.runner=["/bin/xtask", "--pipeline-opt-lease-runner", "--lease", "db", "--env", "DATABASE_URL={url}", "--env", "PGPORT={port}", "--", "valgrind", "--quiet"]' --offline --workspace --no-fail-fast
              depends on: build, services
              why:        runs the tests with cargo-nextest, reusing the build stage's test binaries
              proves:     unit and integration tests pass
              build dir:  $ROOT/target (takes its lock only to confirm freshness)

            stage services
              command:    cargo xtask pool up --manifest-path $ROOT/Cargo.toml
              depends on: (none)
              why:        starts the service pool (cache, db) while the code compiles; the test stages lease from it
              proves:     services start and answer

            dropped
              check: redundant: a successful `build --all-targets` already proves `check --all-targets`
              doctest: disabled in [workspace.metadata.pipeline-opt] `disable`
              bench-build: disabled in [workspace.metadata.pipeline-opt] `disable`

            notes
              - each test process gets its own lease of `db` through the tool's target runner, which then runs yours (target.'cfg(unix)'.runner in /home/.cargo/config.toml: `valgrind --quiet`)
        "#]],
    );
}

#[test]
fn mode_server_is_for_postgres_with_env() {
    check_config_error(
        "[services.cache]\nkind = \"redis\"\nmode = \"server\"\nenv = { REDIS_URL = \"{url}\" }",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.services.cache.mode` in Cargo.toml: only services of kind "postgres" take `mode`; remove it"#
        ]],
    );
    check_config_error(
        "[services.db]\nkind = \"postgres\"\nmode = \"server\"",
        expect![[
            r#"invalid `workspace.metadata.pipeline-opt.services.db.mode` in Cargo.toml: mode = "server" gives the tests the server through `env`; add `env = { DATABASE_URL = "{url}" }` or remove `mode`"#
        ]],
    );
}

/// `optimize --shards`: the test stage packs the tests into a nextest archive with the
/// build stage's profile and features instead of running them; doctests and the tests
/// with their own harness stay here (nextest runs neither from an archive).
#[test]
fn plan_with_a_test_archive_packs_the_tests_instead_of_running_them() {
    let mut ws = FixtureWorkspace::chain(2);
    ws.crates[0].manifest_extra = "[[test]]\nname = \"custom\"\nharness = false\n".into();
    ws.crates[0] = ws.crates[0].clone().test("custom", "fn main() {}\n");
    let mut opts = options(true);
    opts.cargo.profile = Some("ci".into());
    opts.test_archive = Some("/artifacts/tests.tar.zst".into());
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let config = Config::from_workspace_metadata(&w.metadata).expect("valid config");
    let p = plan(&w, &config, &opts).expect("plans");
    let line = |id: &str| {
        let s = p.stage(id).unwrap_or_else(|| panic!("a stage {id}"));
        fx.redact(&format!("{} {}", s.command.program(), s.command.args().join(" ")))
    };
    expect![[r#"
        cargo build --manifest-path $ROOT/Cargo.toml --offline --workspace --all-targets --profile ci
        cargo nextest archive --manifest-path $ROOT/Cargo.toml --offline --workspace --lib --archive-file /artifacts/tests.tar.zst --cargo-profile ci
        cargo test --manifest-path $ROOT/Cargo.toml --offline --workspace --doc --no-fail-fast --profile ci
        cargo test --manifest-path $ROOT/Cargo.toml --offline --workspace --test custom --no-fail-fast --profile ci"#]].assert_eq(&format!(
        "{}\n{}\n{}\n{}",
        line("build"),
        line("test-archive"),
        line("doctest"),
        line("custom-tests")
    ));
    assert!(p.stage("test").is_none(), "no test runs on the build machine");
}
