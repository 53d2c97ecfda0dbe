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

use crate::config::{
    BUILTIN_STAGES, BenchProof, Config, ConfigError, ConfigPlace, Incremental, TestRunner,
};
pub use crate::record::DroppedStage;
use crate::record::{StageMetrics, StageStatus};
use crate::toolchain::Toolchain;
use crate::workspace::{Package, PackageIdx, Target, TargetKind, Workspace};

mod command;
mod naive;

use command::{CargoInvocation, Selection, Subcommand, TargetSelector};
pub use command::{
    LEASE_RUNNER_ARG, LEASE_RUNNER_BIN, LEASE_RUNNER_PROTOCOL, LeasedService, NextestToolConfig,
    OneTest, RustdocShim, StageCommand, TestLeases, TestRunnerCommand,
};
pub use naive::naive;

/// Built-in stages that run only when `enable` names them.
pub const OPTIONAL_STAGES: &[&str] = &["clippy", "fmt", "doc"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub workspace_root: Utf8PathBuf,
    pub stages: Vec<Stage>,
    /// Stages of the usual CI sequence that this plan does not run, and why.
    pub dropped: Vec<Dropped>,
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
    /// `cargo nextest archive`: the tests' binaries packed for shards (`--shards`).
    TestArchive,
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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stage {
    pub id: String,
    pub kind: StageKind,
    pub command: StageCommand,
    pub depends_on: Vec<String>,
    /// Why the stage exists.
    pub reason: String,
    /// What a success proves, e.g. `check --all-targets (dev)`.
    pub proves: Vec<Proof>,
    /// The build directory whose lock the stage takes, if any.
    pub build_dir: Option<Utf8PathBuf>,
    pub lock: LockUse,
    /// Compiles or otherwise keeps every core busy; the orchestrator splits `-j` among
    /// concurrent CPU-heavy stages.
    pub cpu_heavy: bool,
    #[serde(with = "crate::record::opt_secs")]
    pub timeout: Option<Duration>,
}

impl Stage {
    /// The members the stage compiles or tests: its `--package` selections, or all
    /// but those it `--exclude`s.
    pub fn packages(&self, workspace: &Workspace) -> Vec<PackageIdx> {
        let named: Vec<PackageIdx> =
            self.command.selected_packages().iter().filter_map(|p| workspace.package(p)).collect();
        if !named.is_empty() {
            return named;
        }
        let excluded = self.command.excluded_packages();
        (0..workspace.packages.len())
            .filter(|&i| !excluded.contains(&workspace.packages[i].name))
            .collect()
    }

    /// What a success proves, as the run record keeps it.
    pub fn proves_text(&self) -> Vec<String> {
        self.proves.iter().map(Proof::to_string).collect()
    }

    /// The record of this stage when it does not run (cached, skipped): its command as
    /// text and as a kind, what it proves, nothing measured.
    pub fn not_run(&self, status: StageStatus) -> StageMetrics {
        let mut m =
            StageMetrics::not_run(&self.id, self.command.display(), &self.proves_text(), status);
        m.kind = self.command.kind();
        m.profile = self.command.cargo_profile();
        m
    }

    /// Runs only `packages`' tests (the cache proved the others'): one nextest run with
    /// a filterset, or `cargo test` with `--package` flags. The build and the feature set
    /// stay those of the whole selection, so nothing recompiles.
    pub fn narrow_to(&mut self, packages: &[String]) {
        if let Some(c) = self.command.cargo_invocation() {
            c.narrowed_to = Some(packages.to_vec());
        }
    }

    /// Leaves out the doctests of the crates the cache proved (`(crate name, run)`), with
    /// the selection unchanged: cargo runs this binary as `RUSTDOC`, which answers for
    /// them (`doctest_shim`). Returns false, changing nothing, for a stage without the
    /// shim (no binary to run as one).
    pub fn skip_proven_doctests(&mut self, proven: &[(String, String)]) -> bool {
        let Some(shim) = self.command.cargo_invocation().and_then(|c| c.rustdoc_shim.clone())
        else {
            return false;
        };
        let env = &mut self.command.env;
        env.insert("RUSTDOC".into(), shim.program);
        if let Some(user) = shim.user_rustdoc {
            env.insert(crate::doctest_shim::RUSTDOC_VAR.into(), user);
        }
        env.insert(
            crate::doctest_shim::PROVEN_VAR.into(),
            crate::doctest_shim::proven_value(proven),
        );
        true
    }
}

/// A stage of the usual CI sequence that the plan does not run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dropped {
    pub id: String,
    pub reason: DropReason,
}

/// Why a stage is not run. Code decides on the variant; the text is only for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Named in the config's `disable`, in this place.
    Disabled { place: ConfigPlace },
    /// `--frozen` forbids the network, so there is nothing to fetch.
    Frozen,
    /// `check`: the build stage compiles the same targets (`bench_build_checks`: all
    /// but the benches, which bench-build type-checks).
    ProvenByBuild { bench_build_checks: bool },
    /// `test`: every test target has its own harness and runs in custom-tests.
    AllTestsHaveCustomHarness,
    /// `doctest`: no library target has doctests enabled.
    NoDoctests,
    /// `bench-build`: every bench target needs a nightly compiler.
    BenchesNeedNightly,
    /// `bench-build`: the workspace has no bench targets.
    NoBenchTargets,
    /// `bench-build`: the build stage compiles the benches (bench-proof = "dev").
    BenchesInBuild { build_in_test_profile: bool },
    /// `--since`: no package changed since this git ref.
    NotAffected { since: String },
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Disabled { place } => write!(f, "disabled in {} `disable`", place.table("")),
            DropReason::Frozen => f.write_str("--frozen: cargo may not touch the network"),
            DropReason::ProvenByBuild { bench_build_checks: false } => f.write_str(
                "redundant: a successful `build --all-targets` already proves `check --all-targets`",
            ),
            DropReason::ProvenByBuild { bench_build_checks: true } => f.write_str(
                "redundant: the build stage compiles every target but the benches, and bench-build type-checks those",
            ),
            DropReason::AllTestsHaveCustomHarness => f.write_str(
                "every test target has its own harness; custom-tests runs them with `cargo test`",
            ),
            DropReason::NoDoctests => f.write_str("no library target has doctests enabled"),
            DropReason::BenchesNeedNightly => {
                f.write_str("every bench target needs a nightly compiler (see notes)")
            }
            DropReason::NoBenchTargets => f.write_str(
                "the workspace has no bench targets; `cargo bench --no-run` would still compile the libraries' and binaries' unit tests in the bench profile, which --strict (bench-proof = \"build\") does",
            ),
            DropReason::BenchesInBuild { build_in_test_profile } => write!(
                f,
                "bench-proof = \"dev\" (the default): the build stage compiles and links the benches in the {}; bench-proof = \"check\" also type-checks them in the bench profile, \"build\" or --strict builds them as `cargo bench --no-run` does",
                if *build_in_test_profile { "test profile" } else { "dev profile" }
            ),
            DropReason::NotAffected { since } => {
                write!(f, "no package is affected by changes since {since}")
            }
        }
    }
}

/// Saved and printed as its text.
impl Serialize for DropReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a stage's success proves. Code compares variants (`--against-naive`'s
/// coverage); the text is for people and for the run record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    DependenciesResolve,
    Build(BuildProfile),
    /// `except_benches`: bench-build type-checks those in the bench profile.
    CheckAllTargets {
        profile: BuildProfile,
        except_benches: bool,
    },
    BenchesLink(BuildProfile),
    TestBinariesCompile,
    TestsPass,
    CustomHarnessTestsPass,
    DoctestsPass,
    BenchNoRun,
    CheckBenches,
    Clippy,
    Fmt,
    Doc,
    ServicesAnswer,
    /// A custom stage's command, as written in the config.
    Custom(String),
}

/// The profile the build stage compiles in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildProfile {
    Dev,
    /// The `test` profile, set apart from dev: the test stages reuse the build.
    Test,
}

impl std::fmt::Display for BuildProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildProfile::Dev => "dev",
            BuildProfile::Test => "test profile",
        })
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proof::DependenciesResolve => f.write_str("dependencies resolve and download"),
            Proof::Build(p) => write!(f, "build ({p})"),
            Proof::CheckAllTargets { profile, except_benches: false } => {
                write!(f, "check --all-targets ({profile})")
            }
            Proof::CheckAllTargets { profile, except_benches: true } => write!(
                f,
                "check --all-targets ({profile}) except the benches, which bench-build type-checks in the bench profile"
            ),
            Proof::BenchesLink(BuildProfile::Dev) => {
                f.write_str("benches compile and link (dev profile)")
            }
            Proof::BenchesLink(BuildProfile::Test) => {
                f.write_str("benches compile and link (test profile)")
            }
            Proof::TestBinariesCompile => f.write_str("test binaries compile"),
            Proof::TestsPass => f.write_str("unit and integration tests pass"),
            Proof::CustomHarnessTestsPass => f.write_str("custom-harness tests pass"),
            Proof::DoctestsPass => f.write_str("doctests pass"),
            Proof::BenchNoRun => f.write_str("bench --no-run (bench profile)"),
            Proof::CheckBenches => {
                f.write_str("check --benches (bench profile), not a full optimised build")
            }
            Proof::Clippy => f.write_str("clippy --all-targets"),
            Proof::Fmt => f.write_str("cargo fmt --check"),
            Proof::Doc => f.write_str("cargo doc --no-deps"),
            Proof::ServicesAnswer => f.write_str("services start and answer"),
            Proof::Custom(command) => write!(f, "custom: {command}"),
        }
    }
}

/// Saved and printed as its text.
impl Serialize for Proof {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Dropped {
    fn new(id: &str, reason: DropReason) -> Dropped {
        Dropped { id: id.into(), reason }
    }

    /// As a run record keeps it.
    pub fn to_record(&self) -> DroppedStage {
        DroppedStage { id: self.id.clone(), reason: self.reason.to_string() }
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
    /// A scratch build directory instead of the workspace's, named on every cargo
    /// command (`--against-naive` builds each side from nothing).
    pub target_dir: Option<Utf8PathBuf>,
    /// The program the test stages start test binaries through when a service declares
    /// `env` (`pipeline-opt-lease-runner` beside the running binary when it answers the
    /// same protocol, else the running binary, which answers in lease-runner mode);
    /// without one, the installed `cargo-pipeline-opt`.
    pub lease_runner: Option<Utf8PathBuf>,
    /// The target runner the user set for the tests' platform, which the lease runner
    /// runs in turn.
    pub user_runner: Option<crate::target_runner::UserRunner>,
    /// The program cargo can run as `RUSTDOC` to leave out the doctests the cache proved
    /// (the running binary, when it answers helper modes); without one, a doctest stage
    /// is never narrowed.
    pub rustdoc_shim: Option<Utf8PathBuf>,
    /// The rustdoc the user set (`RUSTDOC`, `build.rustdoc`), which the doctest shim
    /// runs in turn.
    pub user_rustdoc: Option<String>,
    /// `optimize --shards`: the tests are not run here but packed with
    /// `cargo nextest archive` into this file, for N shard machines to run.
    pub test_archive: Option<Utf8PathBuf>,
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
    /// `--exclude`: members left out of the whole workspace (with no `-p`, as cargo's
    /// `--workspace --exclude`).
    pub exclude: Vec<String>,
}

impl CargoArgs {
    /// The selection of a command that builds packages.
    fn selection(&self) -> Selection {
        Selection {
            packages: Some(self.packages.clone()),
            exclude: self.exclude.clone(),
            locked: self.locked,
            frozen: self.frozen,
            features: self.features.clone(),
            all_features: self.all_features,
            no_default_features: self.no_default_features,
            target: self.target.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("unknown package `{package}` passed with -p; workspace members are: {members}")]
    UnknownPackage { package: String, members: String },
    #[error("unknown package `{package}` passed with --exclude; workspace members are: {members}")]
    UnknownExclude { package: String, members: String },
    #[error(
        "--exclude applies to the whole workspace, not to -p selections; drop the -p flags or the --exclude"
    )]
    ExcludeWithPackages,
    #[error("--exclude leaves no workspace member to build; exclude fewer packages")]
    NothingSelected,
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
    let members =
        || workspace.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    for p in &options.cargo.packages {
        if workspace.package(p).is_none() {
            return Err(PlanError::UnknownPackage { package: p.clone(), members: members() });
        }
    }
    let cargo = &options.cargo;
    if !cargo.exclude.is_empty() && !cargo.packages.is_empty() {
        return Err(PlanError::ExcludeWithPackages);
    }
    for p in &cargo.exclude {
        if workspace.package(p).is_none() {
            return Err(PlanError::UnknownExclude { package: p.clone(), members: members() });
        }
    }
    let selected: Vec<String> = match cargo.exclude.is_empty() {
        true => cargo.packages.clone(),
        false => workspace
            .packages
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| !cargo.exclude.contains(n))
            .collect(),
    };
    if !cargo.exclude.is_empty() && selected.is_empty() {
        return Err(PlanError::NothingSelected);
    }
    check_stage_names(config)?;
    if let Some(tc) = &options.toolchain {
        check_rust_version(workspace, &selected, tc)?;
    }
    let mut p = Planner::new(workspace, config, options);
    p.fetch_stage();
    p.build_stage();
    p.test_stages();
    p.doctest_stage();
    p.bench_stage();
    p.optional_stages();
    p.services_stage();
    p.custom_stages();
    p.finish()
}

/// What every stage family of one plan shares, and the plan as it grows.
struct Planner<'a> {
    workspace: &'a Workspace,
    config: &'a Config,
    options: &'a PlanOptions,
    manifest: String,
    dev_dir: Utf8PathBuf,
    selected: Vec<&'a Package>,
    /// (package, target) pairs the toolchain cannot build.
    unbuildable: BTreeSet<(String, String)>,
    /// Target names left out of kind-wide flags because some package cannot build them.
    unbuildable_kinds: BTreeSet<(TargetKind, &'a str)>,
    /// Test targets with their own `main`, which nextest cannot list.
    custom_harness: BTreeSet<(TargetKind, &'a str)>,
    has_benches: bool,
    bench_proof: BenchProof,
    benches_in_build: bool,
    build_in_test_profile: bool,
    fetch_enabled: bool,
    build_enabled: bool,
    stages: Vec<Stage>,
    dropped: Vec<Dropped>,
    notes: Vec<String>,
}

const BUILD_KINDS: [TargetKind; 5] =
    [TargetKind::Lib, TargetKind::Bin, TargetKind::Test, TargetKind::Bench, TargetKind::Example];
const TEST_KINDS: [TargetKind; 3] = [TargetKind::Lib, TargetKind::Bin, TargetKind::Test];

impl<'a> Planner<'a> {
    fn new(workspace: &'a Workspace, config: &'a Config, options: &'a PlanOptions) -> Planner<'a> {
        let mut notes = Vec::new();
        let selected: Vec<&Package> = workspace
            .packages
            .iter()
            .filter(|p| {
                options.cargo.packages.is_empty() || options.cargo.packages.contains(&p.name)
            })
            .filter(|p| !options.cargo.exclude.contains(&p.name))
            .collect();
        let unbuildable = unbuildable_targets(workspace, options, &selected, &mut notes);
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
        if unbuildable_kinds.iter().any(|(k, _)| *k == TargetKind::Test) {
            notes.push("integration tests are listed by name, so the test stage compiles the unit-test harnesses itself".into());
        }
        let has_benches = selected.iter().any(|p| {
            p.targets.iter().any(|t| {
                t.kind == TargetKind::Bench
                    && !unbuildable.contains(&(p.name.clone(), t.name.clone()))
            })
        });
        let disabled = |id: &str| config.disable.iter().any(|d| d == id);
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
        // `cargo test` and nextest build everything in the test profile. When it differs
        // from dev, a dev build would leave them to compile every crate again; building in
        // the test profile lets them reuse the build. Only --strict keeps cargo build's dev.
        let build_in_test_profile = options.cargo.profile.is_none()
            && !options.strict
            && !options.test_profile_overrides.is_empty();
        if build_in_test_profile {
            notes.push(format!(
                "the test profile differs from dev ({}): the build stage compiles in the test profile, which the test and doctest stages use, so they reuse its artifacts; `cargo build` in the dev profile is not run (--strict runs it)",
                options.test_profile_overrides.join(", ")
            ));
        }
        Planner {
            workspace,
            config,
            options,
            manifest: workspace.manifest_path.to_string(),
            dev_dir: options.target_dir.clone().unwrap_or_else(|| workspace.target_dir.clone()),
            selected,
            unbuildable,
            unbuildable_kinds,
            custom_harness,
            has_benches,
            bench_proof,
            benches_in_build,
            build_in_test_profile,
            fetch_enabled: !disabled("fetch") && !options.cargo.frozen,
            build_enabled: !disabled("build"),
            stages: Vec::new(),
            dropped: Vec::new(),
            notes,
        }
    }

    fn disabled(&self, id: &str) -> bool {
        self.config.disable.iter().any(|d| d == id)
    }

    fn drop_stage(&mut self, id: &str, reason: DropReason) {
        self.dropped.push(Dropped::new(id, reason));
    }

    /// A stage with the fields most stages share: the config's timeout, an exclusive
    /// lock, and the dev build directory when `cpu_heavy`.
    fn push(&mut self, id: &str, kind: StageKind, command: StageCommand, shape: StageShape) {
        self.stages.push(Stage {
            id: id.into(),
            kind,
            command,
            depends_on: shape.depends_on,
            reason: shape.reason,
            proves: shape.proves,
            build_dir: shape.build_dir,
            lock: shape.lock,
            cpu_heavy: shape.cpu_heavy,
            timeout: self.config.stage_timeout,
        });
    }

    /// `cargo <subcommand> --manifest-path …`.
    fn cargo(&self, subcommand: Subcommand) -> CargoInvocation {
        CargoInvocation::new(subcommand, &self.manifest)
    }

    /// A cargo command that compiles the selected packages: offline after `fetch`, with
    /// the one feature set.
    fn compiling(&self, subcommand: Subcommand) -> CargoInvocation {
        let mut c = self.cargo(subcommand);
        c.offline = !self.options.cargo.frozen;
        c.selection = self.options.cargo.selection();
        c
    }

    fn command(&self, invocation: CargoInvocation) -> StageCommand {
        StageCommand::cargo(&self.workspace.root, invocation)
    }

    /// The user's profile, or `default`.
    fn profile_or(&self, default: Option<&str>) -> Option<String> {
        self.options.cargo.profile.clone().or(default.map(String::from))
    }

    fn after_fetch(&self) -> Vec<String> {
        if self.fetch_enabled { vec!["fetch".into()] } else { Vec::new() }
    }

    /// Test stages wait for the build (or, without one, the fetch) and for the services.
    fn after_build(&self) -> Vec<String> {
        let mut deps = Vec::new();
        if self.build_enabled {
            deps.push("build".into());
        } else if self.fetch_enabled {
            deps.push("fetch".into());
        }
        if !self.config.services.is_empty() {
            deps.push("services".into());
        }
        deps
    }

    /// `kinds` as target flags: `all` when nothing is left out, else a plural flag per
    /// kind with nothing left out and the buildable names of the others.
    fn target_list_without(
        &self,
        kinds: &[TargetKind],
        all: &[TargetSelector],
        left_out: &BTreeSet<(TargetKind, &str)>,
    ) -> Vec<TargetSelector> {
        if self.unbuildable.is_empty() && left_out.is_empty() {
            return all.to_vec();
        }
        let mut targets = Vec::new();
        for &kind in kinds {
            let names: BTreeSet<&str> = self
                .selected
                .iter()
                .flat_map(|p| p.targets.iter().map(move |t| (p, t)))
                .filter(|(p, t)| t.kind == kind && self.picked_by_kind(p, t))
                .map(|(_, t)| t.name.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            let blocked = |n: &&str| {
                self.unbuildable_kinds.contains(&(kind, *n)) || left_out.contains(&(kind, *n))
            };
            if !names.iter().any(blocked) {
                targets.push(TargetSelector::Kind(kind));
                continue;
            }
            if kind == TargetKind::Lib {
                continue;
            }
            targets.extend(
                names
                    .into_iter()
                    .filter(|n| !blocked(n))
                    .map(|n| TargetSelector::Named(kind, n.into())),
            );
        }
        targets
    }

    /// Whether a plural flag (`--tests`, `--bins`, …) would select `t`: cargo skips a
    /// target whose `required-features` are off and an integration test marked
    /// `test = false`, where naming it (`--test NAME`) would build it anyway or fail
    /// ("target requires the features"). A name listed in place of a plural flag must
    /// select no more than the flag. All features on, or an undecidable requirement (a
    /// dependency's feature), keep the target.
    fn picked_by_kind(&self, p: &Package, t: &Target) -> bool {
        if t.kind == TargetKind::Test && !t.test {
            return false;
        }
        let cargo = &self.options.cargo;
        cargo.all_features
            || t.required_features.is_empty()
            || p.enables(&t.required_features, &cargo.features, cargo.no_default_features)
                .unwrap_or(true)
    }

    fn target_list(&self, kinds: &[TargetKind], all: &[TargetSelector]) -> Vec<TargetSelector> {
        self.target_list_without(kinds, all, &BTreeSet::new())
    }

    fn build_profile(&self) -> BuildProfile {
        if self.build_in_test_profile { BuildProfile::Test } else { BuildProfile::Dev }
    }

    /// fetch: downloads once, so that everything after it runs offline.
    fn fetch_stage(&mut self) {
        if self.fetch_enabled {
            let mut c = self.cargo(Subcommand::Fetch);
            c.selection = Selection {
                locked: self.options.cargo.locked,
                target: self.options.cargo.target.clone(),
                ..Selection::default()
            };
            let command = self.command(c);
            self.push(
                "fetch",
                StageKind::Fetch,
                command,
                StageShape {
                    reason:
                        "downloads every dependency once so that all later stages run --offline"
                            .into(),
                    proves: vec![Proof::DependenciesResolve],
                    ..StageShape::default()
                },
            );
        } else if self.options.cargo.frozen {
            self.drop_stage("fetch", DropReason::Frozen);
        } else {
            self.drop_stage("fetch", DropReason::Disabled { place: self.config.place });
        }
    }

    /// build: all targets once; this also proves `check --all-targets` and compiles the
    /// test binaries that the test stage runs. Without it, `check` instead.
    fn build_stage(&mut self) {
        let build_profile = self.build_profile();
        if !self.build_enabled {
            self.drop_stage("build", DropReason::Disabled { place: self.config.place });
            if !self.disabled("check") {
                let mut c = self.compiling(Subcommand::Check);
                c.targets = self.target_list(&BUILD_KINDS, &[TargetSelector::All]);
                c.profile = self.profile_or(None);
                let shape = StageShape {
                    depends_on: self.after_fetch(),
                    reason: "the build stage is disabled, so check all targets instead".into(),
                    proves: vec![Proof::CheckAllTargets {
                        profile: BuildProfile::Dev,
                        except_benches: false,
                    }],
                    ..StageShape::compiling(&self.dev_dir)
                };
                let command = self.command(c);
                self.push("check", StageKind::Check, command, shape);
            }
            return;
        }
        let (kinds, all) = if self.benches_in_build {
            (BUILD_KINDS.to_vec(), vec![TargetSelector::All])
        } else {
            let has_lib =
                self.selected.iter().any(|p| p.targets.iter().any(|t| t.kind == TargetKind::Lib));
            // `--lib` is an error when no selected package has one; the plural flags are not.
            let all = [TargetKind::Lib, TargetKind::Bin, TargetKind::Test, TargetKind::Example]
                .into_iter()
                .filter(|k| *k != TargetKind::Lib || has_lib)
                .map(TargetSelector::Kind)
                .collect();
            (vec![TargetKind::Lib, TargetKind::Bin, TargetKind::Test, TargetKind::Example], all)
        };
        let mut c = self.compiling(Subcommand::Build);
        c.targets = self.target_list_without(&kinds, &all, &BTreeSet::new());
        c.profile = self.profile_or(self.build_in_test_profile.then_some("test"));
        let check_proof = Proof::CheckAllTargets {
            profile: build_profile,
            except_benches: !self.benches_in_build,
        };
        let bench_proof = (self.has_benches && self.bench_proof == BenchProof::Dev)
            .then_some(Proof::BenchesLink(build_profile));
        let shape = StageShape {
            depends_on: self.after_fetch(),
            reason: if self.benches_in_build {
                "compiles every target once; the test stages reuse its artifacts".into()
            } else {
                "compiles every target but the benches (bench-build checks those) once; the test stages reuse its artifacts".into()
            },
            proves: [Proof::Build(build_profile), check_proof]
                .into_iter()
                .chain(bench_proof)
                .chain([Proof::TestBinariesCompile])
                .collect(),
            ..StageShape::compiling(&self.dev_dir)
        };
        let command = self.command(c);
        self.push("build", StageKind::Build, command, shape);
        let bench_build_checks = !self.benches_in_build;
        self.drop_stage("check", DropReason::ProvenByBuild { bench_build_checks });
    }

    /// test: nextest where it is installed and chosen, else `cargo test`; the targets
    /// with their own harness in custom-tests beside nextest.
    fn test_stages(&mut self) {
        let nextest_list = self.target_list_without(&TEST_KINDS, &[], &self.custom_harness);
        let nextest = self.options.nextest && self.config.test_runner == TestRunner::Nextest;
        let has_custom = nextest && !self.custom_harness.is_empty();
        let custom_tests = has_custom && !self.disabled("test") && !self.disabled("custom-tests");
        if has_custom && self.disabled("custom-tests") {
            self.drop_stage("custom-tests", DropReason::Disabled { place: self.config.place });
        }
        if custom_tests && nextest_list.is_empty() {
            self.drop_stage("test", DropReason::AllTestsHaveCustomHarness);
        } else if self.disabled("test") {
            self.drop_stage("test", DropReason::Disabled { place: self.config.place });
        } else if nextest {
            self.nextest_stage(nextest_list);
        } else {
            self.cargo_test_stage();
        }
        if custom_tests {
            self.custom_tests_stage();
        }
    }

    /// The leases every test process gets: one of each service that declares `env`,
    /// through a target runner on the test platform (`--target`, else the host).
    fn test_leases(&mut self) -> Option<TestLeases> {
        let services: Vec<LeasedService> = self
            .config
            .services
            .iter()
            .filter(|(_, s)| !s.env.is_empty())
            .map(|(name, s)| LeasedService {
                name: name.clone(),
                whole_server: s.mode == crate::config::ServiceMode::Server,
                env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            })
            .collect();
        if services.is_empty() {
            return None;
        }
        let triple = self
            .options
            .cargo
            .target
            .clone()
            .or_else(|| self.options.toolchain.as_ref().map(|t| t.host.clone()))?;
        let user_runner = self.options.user_runner.as_ref().map(|r| r.argv.clone());
        let note = match &self.options.user_runner {
            Some(r) => format!(
                "each test process gets {} through the tool's target runner, which then runs yours ({}: `{}`)",
                services.iter().map(LeasedService::describe).collect::<Vec<_>>().join(", "),
                r.source,
                r.argv.join(" ")
            ),
            None => format!(
                "each test process gets {} through the tool's target runner",
                services.iter().map(LeasedService::describe).collect::<Vec<_>>().join(", ")
            ),
        };
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
        let program = match &self.options.lease_runner {
            Some(p) => p.to_string(),
            None => "cargo-pipeline-opt".to_string(),
        };
        Some(TestLeases { program, triple, services, user_runner })
    }

    fn nextest_stage(&mut self, targets: Vec<TargetSelector>) {
        if let Some(archive) = &self.options.test_archive {
            if self.disabled("test-archive") {
                self.drop_stage("test-archive", DropReason::Disabled { place: self.config.place });
                return;
            }
            let mut c = self.compiling(Subcommand::NextestArchive);
            c.targets = targets;
            c.profile = self.options.cargo.profile.clone();
            c.archive_file = Some(archive.clone());
            let shape = StageShape {
                depends_on: self.after_build(),
                reason: "packs the build stage's test binaries into a nextest archive (same profile and features, so nothing compiles again) for the shards to run".into(),
                proves: vec![Proof::TestBinariesCompile],
                lock: if self.build_enabled { LockUse::Brief } else { LockUse::Exclusive },
                ..StageShape::compiling(&self.dev_dir)
            };
            let command = self.command(c);
            self.push("test-archive", StageKind::TestArchive, command, shape);
            return;
        }
        let mut c = self.compiling(Subcommand::NextestRun);
        c.leases = self.test_leases();
        c.targets = targets;
        c.no_fail_fast = true;
        c.profile = self.options.cargo.profile.clone();
        let shape = StageShape {
            depends_on: self.after_build(),
            reason: "runs the tests with cargo-nextest, reusing the build stage's test binaries"
                .into(),
            proves: vec![Proof::TestsPass],
            lock: if self.build_enabled { LockUse::Brief } else { LockUse::Exclusive },
            ..StageShape::compiling(&self.dev_dir)
        };
        let command = self.command(c);
        self.push("test", StageKind::Test, command, shape);
    }

    fn cargo_test_stage(&mut self) {
        let why = if self.options.nextest {
            self.notes.push("test-runner = \"cargo\": tests run with `cargo test`, each binary's tests as threads of one process, one binary at a time; flaky tests are not retried".into());
            "test-runner = \"cargo\""
        } else {
            self.notes.push("cargo-nextest is not installed: tests run with `cargo test`, one binary at a time (install it with `cargo install cargo-nextest --locked`)".into());
            "cargo-nextest is not installed"
        };
        let mut c = self.compiling(Subcommand::Test);
        c.leases = self.test_leases();
        c.targets = self.target_list(&TEST_KINDS, &[]);
        // Naming any target kind turns doctests off, which the doctest stage runs.
        if c.targets.is_empty() {
            c.targets = TEST_KINDS.map(TargetSelector::Kind).to_vec();
        }
        c.no_fail_fast = true;
        c.profile = self.profile_or(None);
        let shape = StageShape {
            depends_on: self.after_build(),
            reason: format!("runs the tests with `cargo test` ({why})"),
            proves: vec![Proof::TestsPass],
            ..StageShape::compiling(&self.dev_dir)
        };
        let command = self.command(c);
        self.push("test", StageKind::Test, command, shape);
    }

    fn custom_tests_stage(&mut self) {
        let mut c = self.compiling(Subcommand::Test);
        c.leases = self.test_leases();
        c.targets = self
            .custom_harness
            .iter()
            .map(|(kind, name)| TargetSelector::Named(*kind, name.to_string()))
            .collect();
        c.no_fail_fast = true;
        c.profile = self.profile_or(None);
        let names: Vec<&str> = self.custom_harness.iter().map(|(_, n)| *n).collect();
        let shape = StageShape {
            depends_on: self.after_build(),
            reason: format!(
                "runs the test targets with `harness = false` ({}) with `cargo test`: cargo-nextest needs libtest's `--list`, which their own main need not support",
                names.join(", ")
            ),
            proves: vec![Proof::CustomHarnessTestsPass],
            ..StageShape::compiling(&self.dev_dir)
        };
        let command = self.command(c);
        self.push("custom-tests", StageKind::CustomTests, command, shape);
    }

    /// doctest: nextest does not run doctests, so they get their own stage.
    fn doctest_stage(&mut self) {
        let has_doctests = self.selected.iter().any(|p| {
            p.targets.iter().any(|t| {
                t.kind == TargetKind::Lib
                    && t.doctest
                    && !self.unbuildable.contains(&(p.name.clone(), t.name.clone()))
            })
        });
        if self.disabled("doctest") {
            self.drop_stage("doctest", DropReason::Disabled { place: self.config.place });
            return;
        }
        if !has_doctests {
            self.drop_stage("doctest", DropReason::NoDoctests);
            return;
        }
        let mut c = self.compiling(Subcommand::Test);
        c.doc = true;
        c.no_fail_fast = true;
        c.profile = self.profile_or(None);
        c.rustdoc_shim = self.options.rustdoc_shim.as_ref().map(|program| RustdocShim {
            program: program.to_string(),
            user_rustdoc: self.options.user_rustdoc.clone(),
        });
        let shape = StageShape {
            depends_on: self.after_build(),
            reason: "runs documentation tests, which nextest does not run".into(),
            proves: vec![Proof::DoctestsPass],
            ..StageShape::compiling(&self.dev_dir)
        };
        let command = self.command(c);
        self.push("doctest", StageKind::Doctest, command, shape);
    }

    /// bench-build: the bench profile shares no artifacts with dev, so it gets its own
    /// build directory and overlaps the dev stages instead of waiting for their lock.
    fn bench_stage(&mut self) {
        let all_benches_unbuildable = !self.has_benches
            && self.selected.iter().any(|p| p.targets.iter().any(|t| t.kind == TargetKind::Bench));
        // Without bench targets `cargo bench --no-run` still compiles the libraries' and
        // binaries' unit tests in the bench profile (they are `bench = true` by default):
        // the strict plan does the same, the others leave it out and say so.
        if self.disabled("bench-build") {
            return self
                .drop_stage("bench-build", DropReason::Disabled { place: self.config.place });
        }
        if !self.has_benches && (all_benches_unbuildable || self.bench_proof != BenchProof::Build) {
            let reason = if all_benches_unbuildable {
                DropReason::BenchesNeedNightly
            } else {
                DropReason::NoBenchTargets
            };
            return self.drop_stage("bench-build", reason);
        }
        let benches =
            self.target_list(&[TargetKind::Bench], &[TargetSelector::Kind(TargetKind::Bench)]);
        let (c, reason, proves) = match self.bench_proof {
            BenchProof::Dev => {
                let build_in_test_profile = self.build_in_test_profile;
                return self.drop_stage(
                    "bench-build",
                    DropReason::BenchesInBuild { build_in_test_profile },
                );
            }
            BenchProof::Build => {
                let mut c = self.compiling(Subcommand::BenchNoRun);
                c.targets = benches;
                (
                    c,
                    "compiles the benchmarks in the bench profile, as `cargo bench --no-run` does",
                    Proof::BenchNoRun,
                )
            }
            BenchProof::Check => {
                let mut c = self.compiling(Subcommand::Check);
                c.targets = benches;
                c.profile = Some("bench".into());
                (
                    c,
                    "type-checks the benchmarks in the bench profile (bench-proof = \"check\"; `--strict` or bench-proof = \"build\" compiles them fully)",
                    Proof::CheckBenches,
                )
            }
        };
        let bench_dir = self.workspace.state_dir(self.config).bench_target();
        let mut command = self.command(c);
        command.env.insert("CARGO_TARGET_DIR".into(), bench_dir.to_string());
        let shape = StageShape {
            depends_on: self.after_fetch(),
            reason: reason.into(),
            proves: vec![proves],
            ..StageShape::compiling(&bench_dir)
        };
        self.push("bench-build", StageKind::BenchBuild, command, shape);
    }

    /// clippy, fmt and doc, when `enable` names them.
    fn optional_stages(&mut self) {
        let state_dir = self.workspace.state_dir(self.config);
        for id in &self.config.enable {
            let (kind, c, reason, proves, dir) = match id.as_str() {
                "clippy" => {
                    let mut c = self.compiling(Subcommand::Clippy);
                    c.targets = self.target_list(&BUILD_KINDS, &[TargetSelector::All]);
                    (
                        StageKind::Clippy,
                        c,
                        "lints every target with clippy (enabled in config)",
                        Proof::Clippy,
                        Some(state_dir.clippy_target()),
                    )
                }
                "fmt" => (
                    StageKind::Fmt,
                    self.cargo(Subcommand::Fmt),
                    "checks formatting (enabled in config)",
                    Proof::Fmt,
                    None,
                ),
                "doc" => (
                    StageKind::Doc,
                    self.compiling(Subcommand::Doc),
                    "builds the documentation (enabled in config)",
                    Proof::Doc,
                    Some(state_dir.doc_target()),
                ),
                _ => unreachable!("check_stage_names accepts only optional stage names"),
            };
            let mut command = self.command(c);
            if let Some(d) = &dir {
                command.env.insert("CARGO_TARGET_DIR".into(), d.to_string());
            }
            let shape = StageShape {
                depends_on: if kind == StageKind::Fmt { vec![] } else { self.after_fetch() },
                reason: reason.into(),
                proves: vec![proves],
                cpu_heavy: kind != StageKind::Fmt,
                build_dir: dir,
                ..StageShape::default()
            };
            self.push(id, kind, command, shape);
        }
    }

    /// services: starts with the first stage and runs beside compilation, so the pool is
    /// warm when the tests need it. The command is what a person types to do the same by
    /// hand; a run starts the pool in-process instead ([`Plan::run_services_as`]).
    fn services_stage(&mut self) {
        if self.config.services.is_empty() {
            return;
        }
        if self.disabled("services") {
            return self.drop_stage("services", DropReason::Disabled { place: self.config.place });
        }
        let command = self.command(self.cargo(Subcommand::XtaskPoolUp));
        let shape = StageShape {
            reason: format!(
                "starts the service pool ({}) while the code compiles; the test stages lease from it",
                self.config.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            proves: vec![Proof::ServicesAnswer],
            lock: LockUse::Brief,
            ..StageShape::default()
        };
        self.push("services", StageKind::Services, command, shape);
    }

    /// Custom stages from config, run as written.
    fn custom_stages(&mut self) {
        for (name, custom) in &self.config.stages {
            let uses_build_dir = custom.uses_build_dir.unwrap_or(custom.command[0] == "cargo");
            self.stages.push(Stage {
                id: name.clone(),
                kind: StageKind::Custom,
                command: StageCommand::argv(
                    custom.command[0].clone(),
                    custom.command[1..].to_vec(),
                    self.workspace.root.clone(),
                ),
                depends_on: custom.depends_on.clone(),
                reason: format!("custom stage `{name}` from {}", self.config.place.table("stages")),
                proves: vec![Proof::Custom(custom.command.join(" "))],
                build_dir: uses_build_dir.then(|| self.dev_dir.clone()),
                lock: LockUse::Exclusive,
                cpu_heavy: uses_build_dir,
                timeout: custom.timeout.or(self.config.stage_timeout),
            });
        }
    }

    /// What applies across stages: dependencies on dropped stages, the pool's address,
    /// the incremental setting and a scratch build directory.
    fn finish(mut self) -> Result<Plan, PlanError> {
        // A custom stage may depend on a built-in stage that this plan dropped: it then
        // depends on whatever that stage depended on, so the order still holds.
        let present: BTreeSet<String> = self.stages.iter().map(|s| s.id.clone()).collect();
        for s in &mut self.stages {
            s.depends_on.retain(|d| present.contains(d) || !BUILTIN_STAGES.contains(&d.as_str()));
            if s.kind == StageKind::Custom
                && let Some(missing) = s.depends_on.iter().find(|d| !present.contains(*d))
            {
                return Err(self
                    .config
                    .place
                    .unknown_stage(
                        &format!("stages.{}.depends-on", s.id),
                        missing,
                        present.iter().cloned().collect::<Vec<_>>().join(", "),
                    )
                    .into());
            }
        }
        // The user's variables for a stage, set on its command alone: the planner's own
        // (below) and the orchestrator's shares then leave them as they are.
        for s in &mut self.stages {
            if let Some(vars) = self.config.env.get(&s.id) {
                s.command.env.extend(vars.clone());
            }
        }
        // Stages that wait for the services learn where the pool is.
        let pool_dir = self.workspace.state_dir(self.config).pool();
        for s in &mut self.stages {
            if s.depends_on.iter().any(|d| d == "services") {
                s.command.env.insert(crate::state::POOL_ENV.into(), pool_dir.to_string());
            }
        }
        if let Some(cycle) = find_cycle(&self.stages) {
            let stages = self.config.place.table("stages");
            return Err(ConfigError::Cycle { cycle, stages }.into());
        }
        self.incremental();
        if let Some(dir) = &self.options.target_dir {
            for s in &mut self.stages {
                name_target_dir(s, dir);
            }
        }
        let root = self.workspace.root.clone();
        Ok(Plan {
            workspace_root: root,
            stages: self.stages,
            dropped: self.dropped,
            notes: self.notes,
        })
    }

    /// Every cargo stage gets the same setting: stages that share a build directory with
    /// different incremental settings would rebuild each other's artifacts.
    fn incremental(&mut self) {
        // sccache caches no incremental compile: with the shared cache on, incremental
        // compilation is off whatever the setting.
        let cache = self.config.compile_cache.is_some();
        let off = cache
            || match self.config.incremental {
                Incremental::Off => true,
                Incremental::On => false,
                Incremental::Auto => self.options.ci && !self.options.cargo_incremental_set,
            };
        if !off {
            return;
        }
        // Not where the user set it for the stage (`env.<stage>`).
        for s in self.stages.iter_mut().filter(|s| s.command.is_cargo()) {
            s.command.env.entry("CARGO_INCREMENTAL".into()).or_insert_with(|| "0".into());
        }
        self.notes.push(match self.config.incremental {
            _ if cache => "incremental compilation is off because the shared compile cache is on: sccache does not cache incremental compiles".into(),
            Incremental::Off => "incremental compilation is off (incremental = \"off\")".into(),
            _ => format!(
                "incremental compilation is off because CI is set: a CI job builds from cold and discards the incremental data it would write (incremental = \"on\" in {} keeps it)",
                self.config.place.table("")
            ),
        });
    }
}

/// Names the scratch build directory on a cargo stage that has none of its own. A flag,
/// not the CARGO_TARGET_DIR variable, for the stages that run tests: the variable would
/// reach the tests, and a test that runs cargo on a fixture of its own would build into
/// (and look for its output in) the scratch directory.
fn name_target_dir(s: &mut Stage, dir: &Utf8Path) {
    if !s.command.is_cargo() || s.command.env.contains_key("CARGO_TARGET_DIR") {
        return;
    }
    let runs_tests = matches!(
        s.kind,
        StageKind::Build
            | StageKind::Check
            | StageKind::Test
            | StageKind::CustomTests
            | StageKind::Doctest
    );
    match s.command.cargo_invocation() {
        Some(c) if runs_tests => c.target_dir = Some(dir.to_owned()),
        _ => {
            s.command.env.insert("CARGO_TARGET_DIR".into(), dir.to_string());
        }
    }
}

/// `shard run`: one stage that runs shard `index` of a nextest archive against this
/// checkout (`--workspace-remap`), extracted under `out`, with JUnit on through
/// nextest's tool config at `tool_config`. It compiles nothing: the archive holds the
/// test binaries, so the stage takes no build directory and no core budget.
pub fn shard_run_plan(
    workspace: &Workspace,
    archive: &Utf8Path,
    index: usize,
    selection: &crate::shard::Selection,
    out: &Utf8Path,
    tool_config: &Utf8Path,
) -> Plan {
    let mut c = CargoInvocation::new(Subcommand::NextestRun, workspace.manifest_path.as_str());
    c.archive_file = Some(archive.to_owned());
    c.no_fail_fast = true;
    c.shard = Some(command::ShardRun {
        workspace_remap: workspace.root.clone(),
        extract_to: out.join("extracted"),
        tool_config: tool_config.to_owned(),
        selection: selection.clone(),
    });
    let stage = Stage {
        id: format!("shard-{index}"),
        kind: StageKind::Test,
        command: StageCommand::cargo(&workspace.root, c),
        depends_on: Vec::new(),
        reason: format!("runs shard {index}'s tests from the archive, compiling nothing"),
        proves: vec![Proof::TestsPass],
        build_dir: None,
        lock: LockUse::Exclusive,
        cpu_heavy: false,
        timeout: None,
    };
    Plan {
        workspace_root: workspace.root.clone(),
        stages: vec![stage],
        dropped: Vec::new(),
        notes: Vec::new(),
    }
}

/// One shard process of `optimize --shards N --local`: `shard run` of shard `index` of
/// the plan at `plan_file`, against the checkout copy whose root manifest is `manifest`,
/// with its results in `out` and cargo's target directory at `target_dir`, the copy's
/// default (each shard its own, so no two shards share nextest's JUnit or extraction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalShard {
    pub index: usize,
    pub plan_file: Utf8PathBuf,
    pub out: Utf8PathBuf,
    pub manifest: Utf8PathBuf,
    pub target_dir: Utf8PathBuf,
}

/// `--local`: one stage per shard, `EXE shard run …` (this binary), all independent,
/// so the orchestrator runs them side by side in their own process groups, logs each
/// one's output under its id and stops them all on Ctrl-C.
pub fn local_shards_plan(workspace_root: &Utf8Path, exe: &str, shards: &[LocalShard]) -> Plan {
    let stages = shards
        .iter()
        .map(|s| {
            let args = [
                "shard",
                "run",
                "--plan",
                s.plan_file.as_str(),
                "--shard",
                &s.index.to_string(),
                "--out",
                s.out.as_str(),
                "--manifest-path",
                s.manifest.as_str(),
            ]
            .map(String::from)
            .to_vec();
            let cwd = s.manifest.parent().map(Utf8Path::to_owned).unwrap_or_default();
            // The copy's own target directory, by cargo's default: CARGO_TARGET_DIR would
            // reach the tests, and tests that run cargo themselves would build into it.
            let command = StageCommand::argv(exe, args, cwd);
            Stage {
                id: format!("shard-{}", s.index),
                kind: StageKind::Custom,
                command,
                depends_on: Vec::new(),
                reason: format!("shard {} of the archive, as its own process", s.index),
                proves: vec![Proof::TestsPass],
                build_dir: None,
                lock: LockUse::Exclusive,
                cpu_heavy: false,
                timeout: None,
            }
        })
        .collect();
    Plan {
        workspace_root: workspace_root.to_owned(),
        stages,
        dropped: Vec::new(),
        notes: Vec::new(),
    }
}

/// The fields in which stages differ beyond id, kind and command.
struct StageShape {
    depends_on: Vec<String>,
    reason: String,
    proves: Vec<Proof>,
    build_dir: Option<Utf8PathBuf>,
    lock: LockUse,
    cpu_heavy: bool,
}

impl Default for StageShape {
    fn default() -> StageShape {
        StageShape {
            depends_on: Vec::new(),
            reason: String::new(),
            proves: Vec::new(),
            build_dir: None,
            lock: LockUse::Exclusive,
            cpu_heavy: false,
        }
    }
}

impl StageShape {
    /// A stage that compiles in `dir`, holding its lock throughout.
    fn compiling(dir: &Utf8Path) -> StageShape {
        StageShape { build_dir: Some(dir.to_owned()), cpu_heavy: true, ..StageShape::default() }
    }
}

/// The selected packages' targets the toolchain cannot build, each with a note.
fn unbuildable_targets(
    workspace: &Workspace,
    options: &PlanOptions,
    selected: &[&Package],
    notes: &mut Vec<String>,
) -> BTreeSet<(String, String)> {
    let Some(tc) = &options.toolchain else { return BTreeSet::new() };
    workspace
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
        .collect()
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
            return Err(config.place.unknown_stage("disable", d, known()));
        }
    }
    for e in &config.enable {
        if !OPTIONAL_STAGES.contains(&e.as_str()) {
            return Err(config.place.unknown_stage("enable", e, OPTIONAL_STAGES.join(", ")));
        }
    }
    for stage in config.targets.stages.keys() {
        if !BUILTIN_STAGES.contains(&stage.as_str()) && !config.stages.contains_key(stage) {
            return Err(config.place.unknown_stage("targets.stages", stage, known()));
        }
    }
    for stage in config.env.keys() {
        if !BUILTIN_STAGES.contains(&stage.as_str()) && !config.stages.contains_key(stage) {
            return Err(config.place.unknown_stage("env", stage, known()));
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

    /// Whether any stage runs tests with `runner`, whose settings then matter.
    pub fn runs(&self, runner: TestRunnerCommand) -> bool {
        self.stages.iter().any(|s| s.command.runs(runner))
    }

    /// nextest gets the tool's config: retries, so that a flaky test is reported as
    /// flaky, not as a failure that hides the rest, and a JUnit file.
    pub fn configure_nextest(&mut self, tool_config: &NextestToolConfig) {
        for c in self.nextest_stages() {
            c.tool_config = Some(tool_config.clone());
        }
    }

    /// The tool config a test stage runs with, which must exist when it starts.
    pub fn nextest_tool_config(&self) -> Option<&NextestToolConfig> {
        self.stages.iter().find_map(|s| s.command.nextest_tool_config())
    }

    /// Leaves nextest's fail-fast to the user's nextest profile, which sets it: the
    /// planned `--no-fail-fast` would override it.
    pub fn keep_nextest_fail_fast(&mut self) {
        for c in self.nextest_stages() {
            c.no_fail_fast = false;
        }
    }

    /// Whether a test stage runs nextest (custom stages aside).
    pub fn tests_with_nextest(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.kind == StageKind::Test && s.command.runs(TestRunnerCommand::Nextest))
    }

    fn nextest_stages(&mut self) -> impl Iterator<Item = &mut CargoInvocation> {
        self.stages
            .iter_mut()
            .filter(|s| s.kind == StageKind::Test)
            .filter_map(|s| s.command.cargo_invocation())
            .filter(|c| c.subcommand == Subcommand::NextestRun)
    }

    /// Runs the services stage as `exe` with `env` added (a program that starts the
    /// pool itself) instead of `cargo xtask pool up`, which needs the user's xtask.
    /// The plan cut down to what one test needs (fetch, build, services and the test
    /// stage), its test stage running only `test`, once (no retries, no JUnit), under `wrapper`
    /// (a profiler such as `perf record … --`). `None` when the plan has no test stage
    /// that runs tests by name (nextest or `cargo test`).
    pub fn only_one_test(mut self, test: &OneTest, wrapper: Vec<String>) -> Option<Plan> {
        let keep = [StageKind::Fetch, StageKind::Build, StageKind::Services, StageKind::Test];
        self.stages.retain(|s| keep.contains(&s.kind));
        let ids: Vec<String> = self.stages.iter().map(|s| s.id.clone()).collect();
        let stage = self.stages.iter_mut().find(|s| s.kind == StageKind::Test)?;
        let c = stage.command.cargo_invocation()?;
        c.narrowed_to = None;
        c.tool_config = None;
        c.only_test = Some(test.clone());
        stage.command.wrapper = wrapper;
        for s in &mut self.stages {
            s.depends_on.retain(|d| ids.contains(d));
        }
        self.dropped.clear();
        Some(self)
    }

    pub fn run_services_as(&mut self, exe: &str, env: [(&str, String); 2]) {
        let Some(stage) = self.stages.iter_mut().find(|s| s.kind == StageKind::Services) else {
            return;
        };
        let mut command = StageCommand::argv(exe, Vec::new(), stage.command.cwd.clone());
        command.env = std::mem::take(&mut stage.command.env);
        command.env.extend(env.map(|(k, v)| (k.to_string(), v)));
        stage.command = command;
    }

    /// Leaves out the stages in `cached` (served from the cache); their dependents no
    /// longer wait for them.
    pub fn skip_cached<T>(&mut self, cached: &BTreeMap<String, T>) {
        self.stages.retain(|s| !cached.contains_key(&s.id));
        for s in &mut self.stages {
            s.depends_on.retain(|d| !cached.contains_key(d));
        }
    }

    /// Runs nothing: every stage is dropped for `reason`.
    pub fn drop_all(&mut self, reason: DropReason) {
        for s in self.stages.drain(..) {
            self.dropped.push(Dropped { id: s.id, reason: reason.clone() });
        }
    }

    /// Whether the plan dropped stage `id` for `reason`.
    pub fn dropped_for(&self, id: &str, reason: &DropReason) -> bool {
        self.dropped.iter().any(|d| d.id == id && &d.reason == reason)
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
            out.push_str(&format!("  proves:     {}\n", s.proves_text().join("; ")));
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
