//! The stage DAG. The planner is a pure function from (workspace, config, options) to a
//! [`Plan`]: it never runs a command. It removes redundant work (a successful
//! `build --all-targets` already proves `check --all-targets`, and its test binaries
//! serve the test run), keeps one feature set across stages so that Cargo never
//! recompiles a dependency, runs everything after `fetch` offline, and leaves targets
//! the toolchain cannot build out of explicit target lists, with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::config::{BUILTIN_STAGES, BenchProof, Config, ConfigError, Incremental, TestRunner};
pub use crate::record::DroppedStage;
use crate::toolchain::Toolchain;
use crate::workspace::{TargetKind, Workspace};

/// Built-in stages that run only when `enable` names them.
pub const OPTIONAL_STAGES: &[&str] = &["clippy", "fmt", "doc"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub workspace_root: Utf8PathBuf,
    pub stages: Vec<Stage>,
    /// Stages of the usual CI sequence that this plan does not run, and why.
    pub dropped: Vec<DroppedStage>,
    /// Targets left out of explicit target lists, and other things a user should know.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    Fetch,
    Build,
    Check,
    Test,
    /// Test targets with `harness = false`, run with `cargo test` beside nextest.
    CustomTests,
    Doctest,
    BenchBuild,
    Clippy,
    Fmt,
    Doc,
    Services,
    Custom,
}

/// How a stage uses its build directory's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockUse {
    /// Holds the lock for its whole run: never overlap with another user of the dir.
    Exclusive,
    /// Takes the lock only while cargo confirms its artifacts are fresh (nextest after
    /// a build of the same units): may overlap once that moment has passed.
    Brief,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    pub id: String,
    pub kind: StageKind,
    pub command: StageCommand,
    pub depends_on: Vec<String>,
    /// Why the stage exists.
    pub reason: String,
    /// What a success proves, e.g. `check --all-targets (dev)`.
    pub proves: Vec<String>,
    /// The build directory whose lock the stage takes, if any.
    pub build_dir: Option<Utf8PathBuf>,
    pub lock: LockUse,
    /// Compiles or otherwise keeps every core busy; the orchestrator splits `-j` among
    /// concurrent CPU-heavy stages.
    pub cpu_heavy: bool,
    #[serde(with = "crate::record::opt_secs")]
    pub timeout: Option<Duration>,
}

/// A program and its arguments, turned into an `xshell::Cmd` only when it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Utf8PathBuf,
}

impl StageCommand {
    fn cargo(cwd: &Utf8Path, args: Vec<String>) -> StageCommand {
        StageCommand { program: "cargo".into(), args, env: BTreeMap::new(), cwd: cwd.to_owned() }
    }

    /// The command ready to run, built with `cmd!` (no shell). xshell 0.3's `Cmd` can
    /// only add variables, never remove inherited ones, so run it through
    /// [`StageCommand::to_command`], which strips what `cargo xtask` set for this
    /// workspace.
    pub fn to_cmd(&self, sh: &Shell) -> xshell::Cmd {
        let program = &self.program;
        let args = &self.args;
        let sh = sh.with_current_dir(&self.cwd);
        cmd!(sh, "{program} {args...}").envs(&self.env)
    }

    /// The command as a `std::process::Command`, ready to spawn concurrently, without
    /// the variables that `cargo xtask` set for this workspace
    /// ([`crate::toolchain::inherited_cargo_vars`]) unless the stage sets them itself.
    pub fn to_command(&self, sh: &Shell) -> std::process::Command {
        let mut c = self.to_cmd(sh).to_command();
        for var in crate::toolchain::inherited_cargo_vars() {
            if !self.env.contains_key(&var) {
                c.env_remove(var);
            }
        }
        c
    }

    /// The command as a person would type it.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.env {
            out.push_str(&format!("{k}={} ", quote(v)));
        }
        out.push_str(&quote(&self.program));
        for a in &self.args {
            out.push(' ');
            out.push_str(&quote(a));
        }
        out
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What the caller knows about the machine and what the user passed on the command line.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub toolchain: Option<Toolchain>,
    /// Whether `cargo nextest` is installed.
    pub nextest: bool,
    pub cargo: CargoArgs,
    /// Build exactly what the naive sequence builds (a full bench build).
    pub strict: bool,
    /// Whether the run is a CI job (`CI` is set to something other than `false`/`0`).
    pub ci: bool,
    /// Whether the user set `CARGO_INCREMENTAL` themselves, which `incremental = "auto"`
    /// then leaves alone.
    pub cargo_incremental_set: bool,
    /// Where the `test` profile is set apart from `dev` (see
    /// [`Workspace::test_profile_overrides`]); empty when they are the same.
    pub test_profile_overrides: Vec<String>,
}

/// Flags passed through to every cargo stage so that all of them use one feature set.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CargoArgs {
    pub locked: bool,
    pub frozen: bool,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    /// `-p` selections; empty means the whole workspace.
    pub packages: Vec<String>,
}

impl CargoArgs {
    fn selection(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.packages.is_empty() {
            a.push("--workspace".to_string());
        }
        for p in &self.packages {
            a.extend(["--package".to_string(), p.clone()]);
        }
        if self.locked {
            a.push("--locked".into());
        }
        if self.frozen {
            a.push("--frozen".into());
        }
        if !self.features.is_empty() {
            a.extend(["--features".to_string(), self.features.join(",")]);
        }
        if self.all_features {
            a.push("--all-features".into());
        }
        if self.no_default_features {
            a.push("--no-default-features".into());
        }
        if let Some(t) = &self.target {
            a.extend(["--target".to_string(), t.clone()]);
        }
        a
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("unknown package `{package}` passed with -p; workspace members are: {members}")]
    UnknownPackage { package: String, members: String },
    #[error(
        "package `{package}` needs rustc {needs} (its `rust-version`) but the active toolchain is {active}; install a newer toolchain (`rustup update`) or pin one in rust-toolchain.toml"
    )]
    ToolchainTooOld { package: String, needs: String, active: String },
}

/// Builds the stage DAG for `workspace`.
pub fn plan(
    workspace: &Workspace,
    config: &Config,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    for p in &options.cargo.packages {
        if workspace.package(p).is_none() {
            let members =
                workspace.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(PlanError::UnknownPackage { package: p.clone(), members });
        }
    }
    check_stage_names(config)?;
    if let Some(tc) = &options.toolchain {
        check_rust_version(workspace, &options.cargo.packages, tc)?;
    }

    let root = &workspace.root;
    let manifest = workspace.manifest_path.to_string();
    let mut notes = Vec::new();
    let mut dropped = Vec::new();
    let disabled = |id: &str| config.disable.iter().any(|d| d == id);
    let selection = options.cargo.selection();
    let offline = if options.cargo.frozen { Vec::new() } else { vec!["--offline".to_string()] };
    let profile = options.cargo.profile.clone();
    let dev_dir = workspace.target_dir.clone();
    let bench_dir = workspace.state_dir(config).join("bench-target");

    let selected: Vec<&crate::workspace::Package> = workspace
        .packages
        .iter()
        .filter(|p| options.cargo.packages.is_empty() || options.cargo.packages.contains(&p.name))
        .collect();
    let unbuildable: BTreeSet<(String, String)> = match &options.toolchain {
        Some(tc) => workspace
            .unbuildable_targets(tc)
            .into_iter()
            .filter(|(p, _)| selected.iter().any(|s| s.name == p.name))
            .map(|(p, t)| {
                notes.push(format!(
                    "left out {} target `{}` of package `{}`: it uses #![feature({})], which the {} compiler does not accept",
                    kind_name(t.kind),
                    t.name,
                    p.name,
                    t.nightly_features.join(", "),
                    tc.release
                ));
                (p.name.clone(), t.name.clone())
            })
            .collect(),
        None => BTreeSet::new(),
    };
    // Cargo's target flags select by kind and name across all selected packages, so a
    // name that is unbuildable anywhere is left out everywhere. A kind with nothing
    // unbuildable keeps its plural flag (`--tests` also builds the lib and bins in test
    // mode, which a list of names would not).
    let unbuildable_kinds: BTreeSet<(TargetKind, &str)> = selected
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (p, t)))
        .filter(|(p, t)| unbuildable.contains(&(p.name.clone(), t.name.clone())))
        .map(|(_, t)| (t.kind, t.name.as_str()))
        .collect();
    // Targets with their own `main` (`harness = false`) among the tests: cargo-nextest
    // lists tests with libtest's `--list`, which such a main need not understand (url's
    // `url_wpt` prints its results instead, and nextest stops with "creating test list
    // failed"). They run with `cargo test` in a stage of their own.
    let custom_harness: BTreeSet<(TargetKind, &str)> = selected
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (p, t)))
        .filter(|(p, t)| {
            !t.harness
                && t.test
                && matches!(t.kind, TargetKind::Lib | TargetKind::Bin | TargetKind::Test)
                && !unbuildable.contains(&(p.name.clone(), t.name.clone()))
        })
        .map(|(_, t)| (t.kind, t.name.as_str()))
        .collect();
    let target_list_without = |kinds: &[TargetKind],
                               all_flag: &[&str],
                               left_out: &BTreeSet<(TargetKind, &str)>|
     -> Vec<String> {
        if unbuildable.is_empty() && left_out.is_empty() {
            return all_flag.iter().map(|s| s.to_string()).collect();
        }
        let mut args = Vec::new();
        for &kind in kinds {
            let names: BTreeSet<&str> = selected
                .iter()
                .flat_map(|p| p.targets.iter())
                .filter(|t| t.kind == kind)
                .map(|t| t.name.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            let blocked = |n: &&str| {
                unbuildable_kinds.contains(&(kind, *n)) || left_out.contains(&(kind, *n))
            };
            if !names.iter().any(blocked) {
                args.push(plural_flag(kind).to_string());
                continue;
            }
            if kind == TargetKind::Lib {
                continue;
            }
            let flag = kind.selector_flag().expect("build scripts are not selected");
            for n in names.into_iter().filter(|n| !blocked(n)) {
                args.extend([flag.to_string(), n.to_string()]);
            }
        }
        args
    };
    let no_exclusions = BTreeSet::new();
    let target_list = |kinds: &[TargetKind], all_flag: &[&str]| {
        target_list_without(kinds, all_flag, &no_exclusions)
    };
    if unbuildable_kinds.iter().any(|(k, _)| *k == TargetKind::Test) {
        notes.push("integration tests are listed by name, so the test stage compiles the unit-test harnesses itself".into());
    }
    let build_kinds = [
        TargetKind::Lib,
        TargetKind::Bin,
        TargetKind::Test,
        TargetKind::Bench,
        TargetKind::Example,
    ];
    let has_benches = selected.iter().any(|p| {
        p.targets.iter().any(|t| {
            t.kind == TargetKind::Bench && !unbuildable.contains(&(p.name.clone(), t.name.clone()))
        })
    });
    let bench_proof = match (options.strict, config.bench_proof) {
        (true, _) => BenchProof::Build,
        // Without a build stage nothing compiles the benches in the dev profile.
        (false, BenchProof::Dev) if disabled("build") => BenchProof::Check,
        (false, p) => p,
    };
    // With bench-proof = "check", the bench-build stage type-checks the benches in the
    // bench profile; compiling and linking them a second time in the dev profile would
    // prove little more (only `cfg(debug_assertions)` code) for a full link per bench.
    let benches_in_build =
        !(has_benches && !disabled("bench-build") && bench_proof == BenchProof::Check);
    let (dev_build_kinds, dev_build_all): (Vec<TargetKind>, Vec<&str>) = if benches_in_build {
        (build_kinds.to_vec(), vec!["--all-targets"])
    } else {
        let has_lib = selected.iter().any(|p| p.targets.iter().any(|t| t.kind == TargetKind::Lib));
        let mut all = Vec::new();
        if has_lib {
            // `--lib` is an error when no selected package has one; the plural flags are not.
            all.push("--lib");
        }
        all.extend(["--bins", "--tests", "--examples"]);
        (vec![TargetKind::Lib, TargetKind::Bin, TargetKind::Test, TargetKind::Example], all)
    };
    // `cargo test` and nextest build everything in the test profile. When it differs
    // from dev, a dev build would leave them to compile every crate again; building in
    // the test profile lets them reuse the build. Only --strict keeps cargo build's dev.
    let build_in_test_profile =
        profile.is_none() && !options.strict && !options.test_profile_overrides.is_empty();
    if build_in_test_profile {
        notes.push(format!(
            "the test profile differs from dev ({}): the build stage compiles in the test profile, which the test and doctest stages use, so they reuse its artifacts; `cargo build` in the dev profile is not run (--strict runs it)",
            options.test_profile_overrides.join(", ")
        ));
    }
    let build_profile = if build_in_test_profile { "test profile" } else { "dev" };
    let dev_check_proof = if benches_in_build {
        format!("check --all-targets ({build_profile})")
    } else {
        format!(
            "check --all-targets ({build_profile}) except the benches, which bench-build type-checks in the bench profile"
        )
    };

    let mut stages = Vec::new();
    let with_profile = |mut args: Vec<String>, default_profile: Option<&str>| {
        if let Some(p) = profile.as_deref().or(default_profile) {
            args.extend(["--profile".to_string(), p.to_string()]);
        }
        args
    };
    let cargo_args = |parts: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        a.extend(["--manifest-path".to_string(), manifest.clone()]);
        a
    };

    // fetch
    let fetch_enabled = !disabled("fetch") && !options.cargo.frozen;
    if fetch_enabled {
        let mut args = cargo_args(&["fetch"]);
        if options.cargo.locked {
            args.push("--locked".into());
        }
        if let Some(t) = &options.cargo.target {
            args.extend(["--target".to_string(), t.clone()]);
        }
        stages.push(Stage {
            id: "fetch".into(),
            kind: StageKind::Fetch,
            command: StageCommand::cargo(root, args),
            depends_on: vec![],
            reason: "downloads every dependency once so that all later stages run --offline".into(),
            proves: vec!["dependencies resolve and download".into()],
            build_dir: None,
            lock: LockUse::Exclusive,
            cpu_heavy: false,
            timeout: config.stage_timeout,
        });
    } else if options.cargo.frozen {
        dropped.push(DroppedStage {
            id: "fetch".into(),
            reason: "--frozen: cargo may not touch the network".into(),
        });
    } else {
        dropped.push(disabled_stage("fetch"));
    }
    let after_fetch = |deps: &[&str]| -> Vec<String> {
        let mut d: Vec<String> = deps.iter().map(|s| s.to_string()).collect();
        if fetch_enabled {
            d.insert(0, "fetch".into());
        }
        d
    };

    // build: all targets once; this also proves `check --all-targets` and compiles the
    // test binaries that the test stage runs.
    let build_enabled = !disabled("build");
    if build_enabled {
        let mut args = cargo_args(&["build"]);
        args.extend(offline.clone());
        args.extend(selection.clone());
        args.extend(target_list(&dev_build_kinds, &dev_build_all));
        stages.push(Stage {
            id: "build".into(),
            kind: StageKind::Build,
            command: StageCommand::cargo(
                root,
                with_profile(args, build_in_test_profile.then_some("test")),
            ),
            depends_on: after_fetch(&[]),
            reason: if benches_in_build {
                "compiles every target once; the test stages reuse its artifacts".into()
            } else {
                "compiles every target but the benches (bench-build checks those) once; the test stages reuse its artifacts".into()
            },
            proves: [
                format!("build ({build_profile})"),
                dev_check_proof,
            ]
            .into_iter()
            .chain((has_benches && bench_proof == BenchProof::Dev).then(|| format!("benches compile and link ({build_profile}{})", if build_in_test_profile { "" } else { " profile" })))
            .chain(["test binaries compile".to_string()])
            .collect(),
            build_dir: Some(dev_dir.clone()),
            lock: LockUse::Exclusive,
            cpu_heavy: true,
            timeout: config.stage_timeout,
        });
        dropped.push(DroppedStage {
            id: "check".into(),
            reason: if benches_in_build {
                "redundant: a successful `build --all-targets` already proves `check --all-targets`"
                    .into()
            } else {
                "redundant: the build stage compiles every target but the benches, and bench-build type-checks those"
                    .into()
            },
        });
    } else {
        dropped.push(disabled_stage("build"));
        if !disabled("check") {
            let mut args = cargo_args(&["check"]);
            args.extend(offline.clone());
            args.extend(selection.clone());
            args.extend(target_list(&build_kinds, &["--all-targets"]));
            stages.push(Stage {
                id: "check".into(),
                kind: StageKind::Check,
                command: StageCommand::cargo(root, with_profile(args, None)),
                depends_on: after_fetch(&[]),
                reason: "the build stage is disabled, so check all targets instead".into(),
                proves: vec!["check --all-targets (dev)".into()],
                build_dir: Some(dev_dir.clone()),
                lock: LockUse::Exclusive,
                cpu_heavy: true,
                timeout: config.stage_timeout,
            });
        }
    }
    let after_build = |deps: &mut Vec<String>| {
        if build_enabled {
            deps.push("build".into());
        } else if fetch_enabled {
            deps.push("fetch".into());
        }
    };

    // test
    let test_kinds = [TargetKind::Lib, TargetKind::Bin, TargetKind::Test];
    let nextest_list = target_list_without(&test_kinds, &[], &custom_harness);
    let nextest = options.nextest && config.test_runner == TestRunner::Nextest;
    let custom_tests =
        nextest && !custom_harness.is_empty() && !disabled("test") && !disabled("custom-tests");
    if nextest && !custom_harness.is_empty() && disabled("custom-tests") {
        dropped.push(disabled_stage("custom-tests"));
    }
    if custom_tests && nextest_list.is_empty() {
        dropped.push(DroppedStage {
            id: "test".into(),
            reason:
                "every test target has its own harness; custom-tests runs them with `cargo test`"
                    .into(),
        });
    } else if !disabled("test") {
        let mut depends_on = Vec::new();
        after_build(&mut depends_on);
        let (args, lock, reason) = if nextest {
            let mut args = vec![
                "nextest".to_string(),
                "run".into(),
                "--manifest-path".into(),
                manifest.clone(),
            ];
            args.extend(offline.clone());
            args.extend(selection.clone());
            args.extend(nextest_list.clone());
            args.push("--no-fail-fast".into());
            // nextest's own `--profile` names a nextest profile; cargo's is `--cargo-profile`.
            if let Some(p) = &profile {
                args.extend(["--cargo-profile".to_string(), p.clone()]);
            }
            (
                args,
                if build_enabled { LockUse::Brief } else { LockUse::Exclusive },
                "runs the tests with cargo-nextest, reusing the build stage's test binaries"
                    .to_string(),
            )
        } else {
            let why = if options.nextest {
                notes.push("test-runner = \"cargo\": tests run with `cargo test`, each binary's tests as threads of one process, one binary at a time; flaky tests are not retried".into());
                "test-runner = \"cargo\""
            } else {
                notes.push("cargo-nextest is not installed: tests run with `cargo test`, one binary at a time (install it with `cargo install cargo-nextest --locked`)".into());
                "cargo-nextest is not installed"
            };
            let mut args = cargo_args(&["test"]);
            args.extend(offline.clone());
            args.extend(selection.clone());
            let list = target_list(&test_kinds, &[]);
            // Naming any target kind turns doctests off, which the doctest stage runs.
            if list.is_empty() {
                args.extend(["--lib".to_string(), "--bins".into(), "--tests".into()]);
            } else {
                args.extend(list);
            }
            args.push("--no-fail-fast".into());
            (
                with_profile(args, None),
                LockUse::Exclusive,
                format!("runs the tests with `cargo test` ({why})"),
            )
        };
        stages.push(Stage {
            id: "test".into(),
            kind: StageKind::Test,
            command: StageCommand::cargo(root, args),
            depends_on: with_services(depends_on, config),
            reason,
            proves: vec!["unit and integration tests pass".into()],
            build_dir: Some(dev_dir.clone()),
            lock,
            cpu_heavy: true,
            timeout: config.stage_timeout,
        });
    } else {
        dropped.push(disabled_stage("test"));
    }
    if custom_tests {
        let mut depends_on = Vec::new();
        after_build(&mut depends_on);
        let mut args = cargo_args(&["test"]);
        args.extend(offline.clone());
        args.extend(selection.clone());
        for (kind, name) in &custom_harness {
            match kind {
                TargetKind::Lib => args.push("--lib".into()),
                _ => args.extend([
                    kind.selector_flag().expect("test kinds have a flag").to_string(),
                    name.to_string(),
                ]),
            }
        }
        args.push("--no-fail-fast".into());
        let names: Vec<&str> = custom_harness.iter().map(|(_, n)| *n).collect();
        stages.push(Stage {
            id: "custom-tests".into(),
            kind: StageKind::CustomTests,
            command: StageCommand::cargo(root, with_profile(args, None)),
            depends_on: with_services(depends_on, config),
            reason: format!(
                "runs the test targets with `harness = false` ({}) with `cargo test`: cargo-nextest needs libtest's `--list`, which their own main need not support",
                names.join(", ")
            ),
            proves: vec!["custom-harness tests pass".into()],
            build_dir: Some(dev_dir.clone()),
            lock: LockUse::Exclusive,
            cpu_heavy: true,
            timeout: config.stage_timeout,
        });
    }

    // doctest: nextest does not run doctests, so they get their own stage.
    let has_doctests = selected.iter().any(|p| {
        p.targets.iter().any(|t| {
            t.kind == TargetKind::Lib
                && t.doctest
                && !unbuildable.contains(&(p.name.clone(), t.name.clone()))
        })
    });
    if disabled("doctest") {
        dropped.push(disabled_stage("doctest"));
    } else if !has_doctests {
        dropped.push(DroppedStage {
            id: "doctest".into(),
            reason: "no library target has doctests enabled".into(),
        });
    } else {
        let mut depends_on = Vec::new();
        after_build(&mut depends_on);
        let mut args = cargo_args(&["test"]);
        args.extend(offline.clone());
        args.extend(selection.clone());
        args.push("--doc".into());
        args.push("--no-fail-fast".into());
        stages.push(Stage {
            id: "doctest".into(),
            kind: StageKind::Doctest,
            command: StageCommand::cargo(root, with_profile(args, None)),
            depends_on: with_services(depends_on, config),
            reason: "runs documentation tests, which nextest does not run".into(),
            proves: vec!["doctests pass".into()],
            build_dir: Some(dev_dir.clone()),
            lock: LockUse::Exclusive,
            cpu_heavy: true,
            timeout: config.stage_timeout,
        });
    }

    // bench-build: the bench profile shares no artifacts with dev, so it gets its own
    // build directory and overlaps the dev stages instead of waiting for their lock.
    let all_benches_unbuildable = !has_benches
        && selected.iter().any(|p| p.targets.iter().any(|t| t.kind == TargetKind::Bench));
    // Without bench targets `cargo bench --no-run` still compiles the libraries' and
    // binaries' unit tests in the bench profile (they are `bench = true` by default):
    // the strict plan does the same, the others leave it out and say so.
    if disabled("bench-build") {
        dropped.push(disabled_stage("bench-build"));
    } else if !has_benches && (all_benches_unbuildable || bench_proof != BenchProof::Build) {
        let reason = if all_benches_unbuildable {
            "every bench target needs a nightly compiler (see notes)"
        } else {
            "the workspace has no bench targets; `cargo bench --no-run` would still compile the libraries' and binaries' unit tests in the bench profile, which --strict (bench-proof = \"build\") does"
        };
        dropped.push(DroppedStage { id: "bench-build".into(), reason: reason.into() });
    } else if bench_proof == BenchProof::Dev {
        dropped.push(DroppedStage {
            id: "bench-build".into(),
            reason: format!("bench-proof = \"dev\" (the default): the build stage compiles and links the benches in the {}; bench-proof = \"check\" also type-checks them in the bench profile, \"build\" or --strict builds them as `cargo bench --no-run` does", if build_in_test_profile { "test profile" } else { "dev profile" }),
        });
    } else {
        let proof = bench_proof;
        let bench_list = target_list(&[TargetKind::Bench], &["--benches"]);
        let (args, reason, proves) = match proof {
            BenchProof::Dev => unreachable!("handled above"),
            BenchProof::Build => {
                let mut args = cargo_args(&["bench", "--no-run"]);
                args.extend(offline.clone());
                args.extend(selection.clone());
                args.extend(bench_list);
                (
                    args,
                    "compiles the benchmarks in the bench profile, as `cargo bench --no-run` does",
                    "bench --no-run (bench profile)",
                )
            }
            BenchProof::Check => {
                let mut args = cargo_args(&["check"]);
                args.extend(offline.clone());
                args.extend(selection.clone());
                args.extend(bench_list);
                args.extend(["--profile".to_string(), "bench".into()]);
                (
                    args,
                    "type-checks the benchmarks in the bench profile (bench-proof = \"check\"; `--strict` or bench-proof = \"build\" compiles them fully)",
                    "check --benches (bench profile), not a full optimised build",
                )
            }
        };
        let mut command = StageCommand::cargo(root, args);
        command.env.insert("CARGO_TARGET_DIR".into(), bench_dir.to_string());
        stages.push(Stage {
            id: "bench-build".into(),
            kind: StageKind::BenchBuild,
            command,
            depends_on: after_fetch(&[]),
            reason: reason.into(),
            proves: vec![proves.into()],
            build_dir: Some(bench_dir.clone()),
            lock: LockUse::Exclusive,
            cpu_heavy: true,
            timeout: config.stage_timeout,
        });
    }

    // Optional built-in stages.
    for id in &config.enable {
        let (kind, args, reason, proves, dir) = match id.as_str() {
            "clippy" => {
                let mut a = cargo_args(&["clippy"]);
                a.extend(offline.clone());
                a.extend(selection.clone());
                a.extend(target_list(&build_kinds, &["--all-targets"]));
                (
                    StageKind::Clippy,
                    a,
                    "lints every target with clippy (enabled in config)",
                    "clippy --all-targets",
                    Some(workspace.state_dir(config).join("clippy-target")),
                )
            }
            "fmt" => {
                let a = vec![
                    "fmt".to_string(),
                    "--all".into(),
                    "--check".into(),
                    "--manifest-path".into(),
                    manifest.clone(),
                ];
                (
                    StageKind::Fmt,
                    a,
                    "checks formatting (enabled in config)",
                    "cargo fmt --check",
                    None,
                )
            }
            "doc" => {
                let mut a = cargo_args(&["doc", "--no-deps"]);
                a.extend(offline.clone());
                a.extend(selection.clone());
                (
                    StageKind::Doc,
                    a,
                    "builds the documentation (enabled in config)",
                    "cargo doc --no-deps",
                    Some(workspace.state_dir(config).join("doc-target")),
                )
            }
            _ => unreachable!("check_stage_names accepts only optional stage names"),
        };
        let mut command = StageCommand::cargo(root, args);
        if let Some(d) = &dir {
            command.env.insert("CARGO_TARGET_DIR".into(), d.to_string());
        }
        stages.push(Stage {
            id: id.clone(),
            kind,
            command,
            depends_on: if kind == StageKind::Fmt { vec![] } else { after_fetch(&[]) },
            reason: reason.into(),
            proves: vec![proves.into()],
            lock: LockUse::Exclusive,
            cpu_heavy: kind != StageKind::Fmt,
            build_dir: dir,
            timeout: config.stage_timeout,
        });
    }

    // services: starts with the first stage and runs beside compilation, so the pool is
    // warm when the tests need it. The orchestrator runs this stage in-process through
    // `pool::services_up` (the library cannot re-execute the user's xtask, and it needs
    // the handle to stop the pool at the end); the command is what a person types to
    // do the same by hand.
    if !config.services.is_empty() && !disabled("services") {
        stages.push(Stage {
            id: "services".into(),
            kind: StageKind::Services,
            command: StageCommand {
                program: "cargo".into(),
                args: ["xtask", "pool", "up", "--manifest-path", &manifest]
                    .map(String::from)
                    .to_vec(),
                env: BTreeMap::new(),
                cwd: root.clone(),
            },
            depends_on: vec![],
            reason: format!(
                "starts the service pool ({}) while the code compiles; the test stages lease from it",
                config.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            proves: vec!["services start and answer".into()],
            build_dir: None,
            lock: LockUse::Brief,
            cpu_heavy: false,
            timeout: config.stage_timeout,
        });
    } else if disabled("services") && !config.services.is_empty() {
        dropped.push(disabled_stage("services"));
    }

    // Custom stages from config.
    for (name, custom) in &config.stages {
        let uses_build_dir = custom.uses_build_dir.unwrap_or(custom.command[0] == "cargo");
        stages.push(Stage {
            id: name.clone(),
            kind: StageKind::Custom,
            command: StageCommand {
                program: custom.command[0].clone(),
                args: custom.command[1..].to_vec(),
                env: BTreeMap::new(),
                cwd: root.clone(),
            },
            depends_on: custom.depends_on.clone(),
            reason: format!("custom stage `{name}` from [{}.stages]", crate::config::TABLE),
            proves: vec![format!("custom: {}", custom.command.join(" "))],
            build_dir: uses_build_dir.then(|| dev_dir.clone()),
            lock: LockUse::Exclusive,
            cpu_heavy: uses_build_dir,
            timeout: custom.timeout.or(config.stage_timeout),
        });
    }

    // A custom stage may depend on a built-in stage that this plan dropped: it then
    // depends on whatever that stage depended on, so the order still holds.
    let present: BTreeSet<String> = stages.iter().map(|s| s.id.clone()).collect();
    for s in &mut stages {
        s.depends_on.retain(|d| present.contains(d) || !BUILTIN_STAGES.contains(&d.as_str()));
        if s.kind == StageKind::Custom && s.depends_on.iter().any(|d| !present.contains(d)) {
            let missing = s.depends_on.iter().find(|d| !present.contains(*d)).unwrap().clone();
            return Err(ConfigError::UnknownStage {
                key: format!("{}.stages.{}.depends-on", crate::config::TABLE, s.id),
                stage: missing,
                known: present.iter().cloned().collect::<Vec<_>>().join(", "),
            }
            .into());
        }
    }
    // Stages that wait for the services learn where the pool is.
    let pool_dir = crate::pool::pool_dir(&workspace.state_dir(config));
    for s in &mut stages {
        if s.depends_on.iter().any(|d| d == "services") {
            s.command.env.insert(crate::pool::POOL_ENV.into(), pool_dir.to_string());
        }
    }
    if let Some(cycle) = find_cycle(&stages) {
        return Err(ConfigError::Cycle { cycle }.into());
    }

    // Every cargo stage gets the same setting: stages that share a build directory with
    // different incremental settings would rebuild each other's artifacts.
    let incremental_off = match config.incremental {
        Incremental::Off => true,
        Incremental::On => false,
        Incremental::Auto => options.ci && !options.cargo_incremental_set,
    };
    if incremental_off {
        for s in stages.iter_mut().filter(|s| s.command.program == "cargo") {
            s.command.env.insert("CARGO_INCREMENTAL".into(), "0".into());
        }
        notes.push(match config.incremental {
            Incremental::Off => "incremental compilation is off (incremental = \"off\")".into(),
            _ => format!(
                "incremental compilation is off because CI is set: a CI job builds from cold and discards the incremental data it would write (incremental = \"on\" in [{}] keeps it)",
                crate::config::TABLE
            ),
        });
    }

    Ok(Plan { workspace_root: root.clone(), stages, dropped, notes })
}

/// Test stages wait for the services stage when the config declares services.
fn with_services(mut deps: Vec<String>, config: &Config) -> Vec<String> {
    if !config.services.is_empty() {
        deps.push("services".into());
    }
    deps
}

fn disabled_stage(id: &str) -> DroppedStage {
    DroppedStage {
        id: id.into(),
        reason: format!("disabled in [{}] `disable`", crate::config::TABLE),
    }
}

fn plural_flag(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Lib => "--lib",
        TargetKind::Bin => "--bins",
        TargetKind::Test => "--tests",
        TargetKind::Bench => "--benches",
        TargetKind::Example => "--examples",
        TargetKind::BuildScript => unreachable!("build scripts are never selected"),
    }
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Lib => "lib",
        TargetKind::Bin => "bin",
        TargetKind::Test => "test",
        TargetKind::Bench => "bench",
        TargetKind::Example => "example",
        TargetKind::BuildScript => "build-script",
    }
}

/// Cargo refuses a package whose `rust-version` is newer than the compiler; saying so
/// before anything runs saves a fetch and names the fix.
fn check_rust_version(
    workspace: &Workspace,
    selected: &[String],
    toolchain: &Toolchain,
) -> Result<(), PlanError> {
    let Some(active) = version_triple(&toolchain.release) else { return Ok(()) };
    for p in &workspace.packages {
        if !selected.is_empty() && !selected.contains(&p.name) {
            continue;
        }
        let Some(needs) = p.rust_version.as_deref() else { continue };
        if version_triple(needs).is_some_and(|n| n > active) {
            return Err(PlanError::ToolchainTooOld {
                package: p.name.clone(),
                needs: needs.to_string(),
                active: toolchain.release.clone(),
            });
        }
    }
    Ok(())
}

/// `1.95.0-nightly` -> (1, 95, 0); a nightly of 1.95 counts as 1.95.
fn version_triple(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|x| x.parse::<u64>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0), parts.next().flatten().unwrap_or(0)))
}

fn check_stage_names(config: &Config) -> Result<(), ConfigError> {
    let known = || {
        let mut k: Vec<String> = BUILTIN_STAGES.iter().map(|s| s.to_string()).collect();
        k.extend(config.stages.keys().cloned());
        k.join(", ")
    };
    for d in &config.disable {
        if !BUILTIN_STAGES.contains(&d.as_str()) && !config.stages.contains_key(d) {
            return Err(ConfigError::UnknownStage {
                key: format!("{}.disable", crate::config::TABLE),
                stage: d.clone(),
                known: known(),
            });
        }
    }
    for e in &config.enable {
        if !OPTIONAL_STAGES.contains(&e.as_str()) {
            return Err(ConfigError::UnknownStage {
                key: format!("{}.enable", crate::config::TABLE),
                stage: e.clone(),
                known: OPTIONAL_STAGES.join(", "),
            });
        }
    }
    for stage in config.targets.stages.keys() {
        if !BUILTIN_STAGES.contains(&stage.as_str()) && !config.stages.contains_key(stage) {
            return Err(ConfigError::UnknownStage {
                key: format!("{}.targets.stages", crate::config::TABLE),
                stage: stage.clone(),
                known: known(),
            });
        }
    }
    Ok(())
}

/// A dependency cycle among stages, as `a -> b -> a`.
fn find_cycle(stages: &[Stage]) -> Option<String> {
    let index: BTreeMap<&str, usize> =
        stages.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; stages.len()];
    fn visit(
        i: usize,
        stages: &[Stage],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<String> {
        state[i] = 1;
        path.push(i);
        for d in &stages[i].depends_on {
            let Some(&j) = index.get(d.as_str()) else {
                continue;
            };
            if state[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap();
                let mut names: Vec<&str> =
                    path[start..].iter().map(|&p| stages[p].id.as_str()).collect();
                names.push(&stages[j].id);
                return Some(names.join(" -> "));
            }
            if state[j] == 0
                && let Some(c) = visit(j, stages, index, state, path)
            {
                return Some(c);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    for i in 0..stages.len() {
        if state[i] == 0
            && let Some(c) = visit(i, stages, &index, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

impl Plan {
    pub fn stage(&self, id: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// Human-readable rendering for `cargo xtask plan`.
    pub fn render_text(&self) -> String {
        let mut out = format!("plan for {}\n\n", self.workspace_root);
        for s in &self.stages {
            out.push_str(&format!("stage {}\n", s.id));
            out.push_str(&format!("  command:    {}\n", s.command.display()));
            let deps = if s.depends_on.is_empty() {
                "(none)".to_string()
            } else {
                s.depends_on.join(", ")
            };
            out.push_str(&format!("  depends on: {deps}\n"));
            out.push_str(&format!("  why:        {}\n", s.reason));
            out.push_str(&format!("  proves:     {}\n", s.proves.join("; ")));
            if let Some(dir) = &s.build_dir {
                let lock = match s.lock {
                    LockUse::Exclusive => "holds its lock throughout",
                    LockUse::Brief => "takes its lock only to confirm freshness",
                };
                out.push_str(&format!("  build dir:  {dir} ({lock})\n"));
            }
            if let Some(t) = s.timeout {
                out.push_str(&format!("  timeout:    {}\n", humantime::format_duration(t)));
            }
            out.push('\n');
        }
        if !self.dropped.is_empty() {
            out.push_str("dropped\n");
            for d in &self.dropped {
                out.push_str(&format!("  {}: {}\n", d.id, d.reason));
            }
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str("notes\n");
            for n in &self.notes {
                out.push_str(&format!("  - {n}\n"));
            }
        }
        out
    }
}
