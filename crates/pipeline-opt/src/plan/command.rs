//! A stage's command as the planner wrote it: a cargo invocation in typed fields, or a
//! program with an argv given verbatim (custom stages). It becomes argv in exactly one
//! place, [`StageCommand::args`], so the plan text, the fingerprint and the process the
//! orchestrator starts always agree. Only the planner builds or changes one.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Serialize, Serializer};
use xshell::{Shell, cmd};

use crate::record::CommandKind;
use crate::state::StateDir;
use crate::workspace::TargetKind;

/// A program and its arguments, turned into an `xshell::Cmd` only when it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCommand {
    pub(super) invocation: Invocation,
    pub env: BTreeMap<String, String>,
    pub cwd: Utf8PathBuf,
    /// A program that runs the command under it (a profiler: `perf record … --`).
    pub(super) wrapper: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Invocation {
    Cargo(Box<CargoInvocation>),
    /// Run as given: a custom stage's command, or this binary in services mode.
    Argv {
        program: String,
        args: Vec<String>,
    },
}

/// What cargo (or cargo-nextest) is asked to do, one field per kind of flag.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CargoInvocation {
    pub(super) subcommand: Subcommand,
    pub(super) layout: Layout,
    pub(super) manifest_path: String,
    /// `--target-dir`: a scratch build directory (fresh and naive runs).
    pub(super) target_dir: Option<Utf8PathBuf>,
    pub(super) offline: bool,
    pub(super) selection: Selection,
    pub(super) targets: Vec<TargetSelector>,
    /// `--doc`: documentation tests only.
    pub(super) doc: bool,
    pub(super) no_fail_fast: bool,
    /// Cargo's profile; nextest takes it as `--cargo-profile`.
    pub(super) profile: Option<String>,
    /// nextest's tool config: retries of flaky tests and where its JUnit goes.
    pub(super) tool_config: Option<NextestToolConfig>,
    /// Only these packages' tests run (the cache proved the others').
    pub(super) narrowed_to: Option<Vec<String>>,
    /// Only this one test runs (a flame graph of it).
    pub(super) only_test: Option<OneTest>,
    /// A doctest stage: what cargo can run as `RUSTDOC` to leave out the doctests the
    /// cache proved ([`super::Stage::skip_proven_doctests`]).
    pub(super) rustdoc_shim: Option<RustdocShim>,
    /// Every test process leases the services whose variables the tests read.
    pub(super) leases: Option<TestLeases>,
    /// `--archive-file`: where `cargo nextest archive` writes the test binaries, or
    /// where `cargo nextest run` takes them from (a shard).
    pub(super) archive_file: Option<Utf8PathBuf>,
    /// A shard run from an archive: the checkout the archive's paths are remapped to,
    /// where it is extracted, nextest's tool config (JUnit), and the shard's tests.
    pub(super) shard: Option<ShardRun>,
}

/// The program cargo runs as `RUSTDOC` in a narrowed doctest stage (this binary, which
/// answers in `doctest_shim` mode), and the user's own rustdoc that it runs in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustdocShim {
    pub program: String,
    pub user_rustdoc: Option<String>,
}

/// One test, as the reports name it: nextest's binary id (`pkg`, `pkg::it`, `pkg::bin/x`)
/// and the test's path in its binary; the binary may be left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTest {
    pub binary_id: Option<String>,
    pub name: String,
}

impl OneTest {
    /// `BINARY TEST` as the reports print it, or `TEST` alone.
    pub fn parse(s: &str) -> OneTest {
        match s.trim().split_once(' ') {
            Some((binary, name)) => {
                OneTest { binary_id: Some(binary.to_string()), name: name.trim().to_string() }
            }
            None => OneTest { binary_id: None, name: s.trim().to_string() },
        }
    }
}

/// The first argument of the lease runner: the running binary, started by cargo or
/// nextest in place of a test binary with this argument, leases and runs the test
/// (`pool::runner`). The planner writes it; nothing else does.
pub const LEASE_RUNNER_ARG: &str = "--pipeline-opt-lease-runner";

/// What a lease runner prints for `--pipeline-opt-lease-runner --protocol`: the plan
/// uses a separate runner binary only when it answers exactly this, so a stale one
/// (built from other sources) is never given arguments it may read otherwise.
pub const LEASE_RUNNER_PROTOCOL: &str =
    concat!("pipeline-opt-lease-runner ", env!("CARGO_PKG_VERSION"), " protocol 1");

/// The small binary that is only a lease runner, preferred when it sits beside the
/// running binary (as `cargo install pipeline-opt` puts it).
pub const LEASE_RUNNER_BIN: &str = "pipeline-opt-lease-runner";

/// Every test process of a stage gets its own lease of each service that declares
/// variables, as those variables: cargo and cargo-nextest start each test binary through
/// this target runner (`--config target.<triple>.runner=[…]`, which outranks the user's
/// own setting), which leases, sets the variables, and runs the user's runner (chained)
/// or the test binary in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLeases {
    /// The program cargo starts in the test binary's place: this binary, in lease-runner
    /// mode.
    pub program: String,
    /// The platform whose runner it is set as: `--target`, else the host.
    pub triple: String,
    /// Each service to lease, with its variables and their templates.
    pub services: Vec<LeasedService>,
    /// The user's own runner, which the lease runner runs in turn.
    pub user_runner: Option<Vec<String>>,
}

/// A service whose variables every test process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedService {
    pub name: String,
    /// `mode = "server"`: the variables name the whole server's maintenance database,
    /// shared, and no lease is taken (`--server` instead of `--lease`).
    pub whole_server: bool,
    /// The variables and their templates.
    pub env: Vec<(String, String)>,
}

impl LeasedService {
    /// As the plan's note names it.
    pub fn describe(&self) -> String {
        if self.whole_server {
            format!("the whole server of `{}`", self.name)
        } else {
            format!("its own lease of `{}`", self.name)
        }
    }
}

impl TestLeases {
    /// The runner's argv, before the test binary and its arguments that cargo appends:
    /// `PROGRAM --pipeline-opt-lease-runner --lease SERVICE --env VAR=TEMPLATE … -- [USER RUNNER…]`.
    pub fn runner_argv(&self) -> Vec<String> {
        let mut a = vec![self.program.clone(), LEASE_RUNNER_ARG.to_string()];
        for service in &self.services {
            let how = if service.whole_server { "--server" } else { "--lease" };
            a.extend([how.to_string(), service.name.clone()]);
            for (var, template) in &service.env {
                a.extend(["--env".to_string(), format!("{var}={template}")]);
            }
        }
        a.push("--".into());
        a.extend(self.user_runner.iter().flatten().cloned());
        a
    }

    /// The `--config` value that makes it the runner: a TOML array, so no path or
    /// template is split at whitespace as a runner string would be.
    fn config_value(&self) -> String {
        let array =
            toml::Value::Array(self.runner_argv().into_iter().map(toml::Value::String).collect());
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        let key = if self.triple.chars().all(plain) {
            self.triple.clone()
        } else {
            toml::Value::String(self.triple.clone()).to_string()
        };
        format!("target.{key}.runner={array}")
    }
}

/// What `cargo nextest run` needs to run one shard of an archive.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ShardRun {
    pub(super) workspace_remap: Utf8PathBuf,
    pub(super) extract_to: Utf8PathBuf,
    pub(super) tool_config: Utf8PathBuf,
    pub(super) selection: crate::shard::Selection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subcommand {
    Fetch,
    Build,
    Check,
    Clippy,
    Doc,
    Fmt,
    Test,
    BenchNoRun,
    NextestRun,
    /// `cargo nextest archive`: builds the test binaries and packs them for shards.
    NextestArchive,
    XtaskPoolUp,
}

impl Subcommand {
    fn words(self) -> &'static [&'static str] {
        match self {
            Subcommand::Fetch => &["fetch"],
            Subcommand::Build => &["build"],
            Subcommand::Check => &["check"],
            Subcommand::Clippy => &["clippy"],
            Subcommand::Doc => &["doc", "--no-deps"],
            Subcommand::Fmt => &["fmt", "--all", "--check"],
            Subcommand::Test => &["test"],
            Subcommand::BenchNoRun => &["bench", "--no-run"],
            Subcommand::NextestRun => &["nextest", "run"],
            Subcommand::NextestArchive => &["nextest", "archive"],
            Subcommand::XtaskPoolUp => &["xtask", "pool", "up"],
        }
    }
}

/// Where the flags go: the planner's order, or the order of the usual CI commands
/// that the naive sequence runs (its commands are reported as they always were).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    Planned,
    Naive,
}

/// What the tool asks of nextest in a *tool config* file, which nextest ranks below the
/// workspace's own config: retries of flaky tests (`--retries` would override a per-test
/// override's) and a JUnit file (a profile of the user's that sets `junit.path` keeps
/// theirs). The user's `.config/nextest.toml` is never written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextestToolConfig {
    /// 0: no retries of the tool's.
    pub retries: u32,
    /// Where nextest writes its JUnit XML unless the user's profile says otherwise.
    pub junit: Utf8PathBuf,
    /// The tool config file, which a run writes before the tests start.
    pub config: Utf8PathBuf,
}

impl NextestToolConfig {
    /// One file per retry count under the state directory: the path is part of the test
    /// stage's command, and so of its fingerprint.
    pub fn in_state_dir(state_dir: &StateDir, retries: u32) -> NextestToolConfig {
        NextestToolConfig {
            retries,
            junit: state_dir.nextest_junit(),
            config: state_dir.nextest_tool_config(retries),
        }
    }

    /// The tool config's text. A profile the user selects with `NEXTEST_PROFILE`
    /// inherits both settings from `default` unless it sets its own.
    pub fn config_text(&self) -> String {
        let mut t = String::from("[profile.default]\n");
        if self.retries > 0 {
            t.push_str(&format!("retries = {}\n", self.retries));
        }
        // A TOML basic string: the path's backslashes and quotes escaped.
        let path = toml::Value::String(self.junit.to_string());
        t.push_str(&format!("\n[profile.default.junit]\npath = {path}\n"));
        t
    }
}

/// Which packages, features and platform; one feature set across stages so that cargo
/// never recompiles a dependency.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Selection {
    /// `None`: the subcommand takes no package selection (fetch); empty: `--workspace`.
    pub(super) packages: Option<Vec<String>>,
    /// `--exclude`, with `--workspace` (an empty `packages`) only.
    pub(super) exclude: Vec<String>,
    pub(super) locked: bool,
    pub(super) frozen: bool,
    pub(super) features: Vec<String>,
    pub(super) all_features: bool,
    pub(super) no_default_features: bool,
    pub(super) target: Option<String>,
}

/// A target flag: `--all-targets`, a plural kind flag such as `--tests`, or one target.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TargetSelector {
    All,
    Kind(TargetKind),
    Named(TargetKind, String),
}

impl CargoInvocation {
    pub(super) fn new(subcommand: Subcommand, manifest_path: &str) -> CargoInvocation {
        CargoInvocation {
            subcommand,
            layout: Layout::Planned,
            manifest_path: manifest_path.to_string(),
            target_dir: None,
            offline: false,
            selection: Selection::default(),
            targets: Vec::new(),
            doc: false,
            no_fail_fast: false,
            profile: None,
            tool_config: None,
            narrowed_to: None,
            only_test: None,
            rustdoc_shim: None,
            leases: None,
            archive_file: None,
            shard: None,
        }
    }

    /// The argv after `cargo`: the only place a cargo command becomes strings.
    fn render(&self) -> Vec<String> {
        let mut a: Vec<String> = self.subcommand.words().iter().map(|w| w.to_string()).collect();
        match self.layout {
            Layout::Planned => {
                if let Some(d) = &self.target_dir {
                    a.extend(["--target-dir".to_string(), d.to_string()]);
                }
                a.extend(["--manifest-path".to_string(), self.manifest_path.clone()]);
                if let Some(leases) = &self.leases {
                    a.extend(["--config".to_string(), leases.config_value()]);
                }
                if self.offline {
                    a.push("--offline".into());
                }
                self.render_selection(&mut a, true);
                a.extend(self.targets.iter().flat_map(TargetSelector::render));
                if self.doc {
                    a.push("--doc".into());
                }
                if let Some(f) = &self.archive_file {
                    a.extend(["--archive-file".to_string(), f.to_string()]);
                }
                if let Some(shard) = &self.shard {
                    a.extend([
                        "--workspace-remap".to_string(),
                        shard.workspace_remap.to_string(),
                        "--extract-to".to_string(),
                        shard.extract_to.to_string(),
                        "--extract-overwrite".to_string(),
                        "--tool-config-file".to_string(),
                        format!("pipeline-opt:{}", shard.tool_config),
                        // An empty shard (more shards than tests) passes.
                        "--no-tests=pass".to_string(),
                    ]);
                    a.extend(shard.selection.args());
                }
                if self.no_fail_fast {
                    a.push("--no-fail-fast".into());
                }
                self.render_profile(&mut a);
                if let Some(r) = &self.tool_config {
                    a.extend([
                        "--tool-config-file".to_string(),
                        format!("pipeline-opt:{}", r.config),
                    ]);
                }
                self.render_narrowing(&mut a);
                self.render_only_test(&mut a);
            }
            Layout::Naive => {
                a.extend(self.targets.iter().flat_map(TargetSelector::render));
                a.extend(["--manifest-path".to_string(), self.manifest_path.clone()]);
                self.render_selection(&mut a, false);
                self.render_profile(&mut a);
                render_lock_flags(&self.selection, &mut a);
                if let Some(d) = &self.target_dir {
                    a.extend(["--target-dir".to_string(), d.to_string()]);
                }
            }
        }
        a
    }

    fn render_selection(&self, a: &mut Vec<String>, with_lock_flags: bool) {
        let s = &self.selection;
        // `cargo test` narrowed to some packages names them at the end instead.
        let narrowed = self.narrowed_to.is_some() && self.subcommand != Subcommand::NextestRun;
        if let (Some(packages), false) = (&s.packages, narrowed) {
            if packages.is_empty() {
                a.push("--workspace".into());
                for p in &s.exclude {
                    a.extend(["--exclude".to_string(), p.clone()]);
                }
            }
            for p in packages {
                a.extend(["--package".to_string(), p.clone()]);
            }
        }
        if with_lock_flags {
            render_lock_flags(s, a);
        }
        if !s.features.is_empty() {
            a.extend(["--features".to_string(), s.features.join(",")]);
        }
        if s.all_features {
            a.push("--all-features".into());
        }
        if s.no_default_features {
            a.push("--no-default-features".into());
        }
        if let Some(t) = &s.target {
            a.extend(["--target".to_string(), t.clone()]);
        }
    }

    fn render_profile(&self, a: &mut Vec<String>) {
        if let Some(p) = &self.profile {
            // nextest's own `--profile` names a nextest profile; cargo's is `--cargo-profile`.
            let flag =
                if matches!(self.subcommand, Subcommand::NextestRun | Subcommand::NextestArchive) {
                    "--cargo-profile"
                } else {
                    "--profile"
                };
            a.extend([flag.to_string(), p.clone()]);
        }
    }

    /// One nextest run with a filterset (the build and the feature set stay those of the
    /// whole selection, so nothing recompiles), or `cargo test` with `--package` flags.
    fn render_narrowing(&self, a: &mut Vec<String>) {
        let Some(packages) = &self.narrowed_to else { return };
        if self.subcommand == Subcommand::NextestRun {
            let filter =
                packages.iter().map(|p| format!("package(={p})")).collect::<Vec<_>>().join(" | ");
            a.extend(["-E".to_string(), filter]);
            // A package whose tests are all in other kinds of targets is not an error.
            a.push("--no-tests=warn".into());
        } else {
            for p in packages {
                a.extend(["--package".to_string(), p.clone()]);
            }
        }
    }
}

impl CargoInvocation {
    /// One test: a nextest filterset of exact matches (nextest fails when it matches
    /// none), or libtest's `--exact` filter after `--`.
    fn render_only_test(&self, a: &mut Vec<String>) {
        let Some(t) = &self.only_test else { return };
        if self.subcommand == Subcommand::NextestRun {
            let test = format!("test(={})", t.name);
            let filter = match &t.binary_id {
                Some(b) => format!("binary_id(={b}) & {test}"),
                None => test,
            };
            a.extend(["-E".to_string(), filter, "--no-tests=fail".to_string()]);
        } else {
            a.extend(["--".to_string(), "--exact".to_string(), t.name.clone()]);
        }
    }
}

fn render_lock_flags(s: &Selection, a: &mut Vec<String>) {
    if s.locked {
        a.push("--locked".into());
    }
    if s.frozen {
        a.push("--frozen".into());
    }
}

impl TargetSelector {
    fn render(&self) -> Vec<String> {
        match self {
            TargetSelector::All => vec!["--all-targets".into()],
            TargetSelector::Kind(kind) => vec![plural_flag(*kind).into()],
            TargetSelector::Named(TargetKind::Lib, _) => vec!["--lib".into()],
            TargetSelector::Named(kind, name) => vec![
                kind.selector_flag().expect("build scripts are never selected").into(),
                name.clone(),
            ],
        }
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

impl StageCommand {
    pub(super) fn cargo(cwd: &Utf8Path, invocation: CargoInvocation) -> StageCommand {
        StageCommand {
            invocation: Invocation::Cargo(Box::new(invocation)),
            env: BTreeMap::new(),
            cwd: cwd.to_owned(),
            wrapper: Vec::new(),
        }
    }

    /// A command run exactly as given, such as a custom stage's from the config.
    pub fn argv(program: impl Into<String>, args: Vec<String>, cwd: Utf8PathBuf) -> StageCommand {
        StageCommand {
            invocation: Invocation::Argv { program: program.into(), args },
            env: BTreeMap::new(),
            cwd,
            wrapper: Vec::new(),
        }
    }

    pub fn program(&self) -> &str {
        if let Some(w) = self.wrapper.first() {
            return w;
        }
        self.inner_program()
    }

    fn inner_program(&self) -> &str {
        match &self.invocation {
            Invocation::Cargo(_) => "cargo",
            Invocation::Argv { program, .. } => program,
        }
    }

    /// The arguments after the program.
    pub fn args(&self) -> Vec<String> {
        let inner = match &self.invocation {
            Invocation::Cargo(c) => c.render(),
            Invocation::Argv { args, .. } => args.clone(),
        };
        match self.wrapper.split_first() {
            None => inner,
            Some((_, wrapper_args)) => {
                let mut a = wrapper_args.to_vec();
                a.push(self.inner_program().to_string());
                a.extend(inner);
                a
            }
        }
    }

    /// What kind of work the command does, for the run record: reporters read this,
    /// never the command text. A custom stage's verbatim `cargo …` counts by its
    /// subcommand.
    pub fn kind(&self) -> CommandKind {
        let subcommand = match &self.invocation {
            Invocation::Cargo(c) => c.subcommand,
            Invocation::Argv { program, args } if program == "cargo" => {
                return match args.first().map(String::as_str) {
                    Some("fetch") => CommandKind::Fetch,
                    Some("test") => CommandKind::CargoTest,
                    Some("nextest") => CommandKind::Nextest,
                    _ => CommandKind::Cargo,
                };
            }
            Invocation::Argv { .. } => return CommandKind::Other,
        };
        match subcommand {
            Subcommand::Fetch => CommandKind::Fetch,
            Subcommand::Build
            | Subcommand::Check
            | Subcommand::Clippy
            | Subcommand::Doc
            | Subcommand::BenchNoRun
            | Subcommand::NextestArchive => CommandKind::Compile,
            Subcommand::Test => CommandKind::CargoTest,
            Subcommand::NextestRun => CommandKind::Nextest,
            Subcommand::Fmt => CommandKind::Cargo,
            Subcommand::XtaskPoolUp => CommandKind::Other,
        }
    }

    /// The cargo profile a planned cargo command builds in: the one it names, `bench`
    /// for `cargo bench`, else `dev`; none for a command that builds nothing.
    pub fn cargo_profile(&self) -> Option<String> {
        let Invocation::Cargo(c) = &self.invocation else { return None };
        match c.subcommand {
            Subcommand::Fetch | Subcommand::Fmt | Subcommand::XtaskPoolUp => None,
            Subcommand::BenchNoRun => Some(c.profile.clone().unwrap_or_else(|| "bench".into())),
            _ => Some(c.profile.clone().unwrap_or_else(|| "dev".into())),
        }
    }

    /// Whether the command is cargo (or a cargo subcommand the planner wrote), under a
    /// wrapper or not.
    pub fn is_cargo(&self) -> bool {
        self.inner_program() == "cargo"
    }

    /// Whether the command is `cargo <subcommand>`: a custom stage's verbatim argv
    /// counts too, as the test settings it reads apply to it alike.
    pub fn runs(&self, runner: TestRunnerCommand) -> bool {
        let first = match &self.invocation {
            Invocation::Cargo(c) => c.subcommand.words()[0],
            Invocation::Argv { program, args } if program == "cargo" => {
                args.first().map_or("", String::as_str)
            }
            Invocation::Argv { .. } => return false,
        };
        first == runner.subcommand()
    }

    pub(super) fn cargo_invocation(&mut self) -> Option<&mut CargoInvocation> {
        match &mut self.invocation {
            Invocation::Cargo(c) => Some(c),
            Invocation::Argv { .. } => None,
        }
    }

    /// The tool config of a nextest command (retries, JUnit).
    pub fn nextest_tool_config(&self) -> Option<&NextestToolConfig> {
        match &self.invocation {
            Invocation::Cargo(c) => c.tool_config.as_ref(),
            Invocation::Argv { .. } => None,
        }
    }

    /// The leases its test processes get, if any.
    pub fn leases(&self) -> Option<&TestLeases> {
        match &self.invocation {
            Invocation::Cargo(c) => c.leases.as_ref(),
            Invocation::Argv { .. } => None,
        }
    }

    /// The packages the command selects with `--package`; empty for the whole workspace
    /// or a command that selects none.
    /// The members the command leaves out of the whole workspace with `--exclude`.
    pub fn excluded_packages(&self) -> &[String] {
        match &self.invocation {
            Invocation::Cargo(c) => &c.selection.exclude,
            Invocation::Argv { .. } => &[],
        }
    }

    pub fn selected_packages(&self) -> &[String] {
        match &self.invocation {
            Invocation::Cargo(c) => c.selection.packages.as_deref().unwrap_or_default(),
            Invocation::Argv { .. } => &[],
        }
    }

    /// The command ready to run, built with `cmd!` (no shell). xshell 0.3's `Cmd` can
    /// only add variables, never remove inherited ones, so run it through
    /// [`StageCommand::to_command`], which strips what `cargo xtask` set for this
    /// workspace.
    pub fn to_cmd(&self, sh: &Shell) -> xshell::Cmd {
        let program = self.program();
        let args = self.args();
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
        out.push_str(&quote(self.program()));
        for a in &self.args() {
            out.push(' ');
            out.push_str(&quote(a));
        }
        out
    }
}

/// The test runners whose settings a plan can depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestRunnerCommand {
    Nextest,
    CargoTest,
}

impl TestRunnerCommand {
    fn subcommand(self) -> &'static str {
        match self {
            TestRunnerCommand::Nextest => "nextest",
            TestRunnerCommand::CargoTest => "test",
        }
    }
}

/// Saved and printed as the program and argv it runs, as a person reads it.
impl Serialize for StageCommand {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Rendered<'a> {
            program: &'a str,
            args: Vec<String>,
            env: &'a BTreeMap<String, String>,
            cwd: &'a Utf8Path,
        }
        Rendered { program: self.program(), args: self.args(), env: &self.env, cwd: &self.cwd }
            .serialize(serializer)
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_command(subcommand: Subcommand, targets: Vec<TargetSelector>) -> CargoInvocation {
        let mut c = CargoInvocation::new(subcommand, "/w/Cargo.toml");
        c.offline = true;
        c.selection.packages = Some(Vec::new());
        c.targets = targets;
        c.no_fail_fast = true;
        c
    }

    #[test]
    fn narrowing_uses_one_nextest_filterset_or_package_flags() {
        let mut c = test_command(Subcommand::NextestRun, vec![]);
        c.narrowed_to = Some(vec!["a".into(), "b-c".into()]);
        assert_eq!(
            c.render().join(" "),
            "nextest run --manifest-path /w/Cargo.toml --offline --workspace --no-fail-fast -E package(=a) | package(=b-c) --no-tests=warn"
        );
        let mut c = test_command(Subcommand::Test, vec![TargetSelector::Kind(TargetKind::Lib)]);
        c.narrowed_to = Some(vec!["a".into(), "b".into()]);
        assert_eq!(
            c.render().join(" "),
            "test --manifest-path /w/Cargo.toml --offline --lib --no-fail-fast --package a --package b"
        );
    }

    #[test]
    fn one_test_is_an_exact_filter_and_a_wrapper_goes_first() {
        let mut c = test_command(Subcommand::NextestRun, vec![]);
        c.only_test = Some(OneTest::parse("app::it tests::big"));
        let mut command = StageCommand::cargo("/w".into(), c);
        command.wrapper = vec!["perf".into(), "record".into(), "--".into()];
        assert_eq!(command.program(), "perf");
        assert!(command.is_cargo(), "cargo under a wrapper still gets the shim and jobserver");
        assert_eq!(
            command.args().join(" "),
            "record -- cargo nextest run --manifest-path /w/Cargo.toml --offline --workspace --no-fail-fast -E binary_id(=app::it) & test(=tests::big) --no-tests=fail"
        );
        let mut c = test_command(Subcommand::Test, vec![TargetSelector::Kind(TargetKind::Lib)]);
        c.only_test = Some(OneTest::parse("tests::big"));
        assert_eq!(
            c.render().join(" "),
            "test --manifest-path /w/Cargo.toml --offline --workspace --lib --no-fail-fast -- --exact tests::big"
        );
    }

    #[test]
    fn a_scratch_target_dir_follows_the_subcommand_and_retries_come_last() {
        let mut c = test_command(Subcommand::NextestRun, vec![]);
        c.target_dir = Some("/scratch".into());
        c.tool_config = Some(NextestToolConfig::in_state_dir(&StateDir::new("/s"), 2));
        assert_eq!(
            c.render().join(" "),
            "nextest run --target-dir /scratch --manifest-path /w/Cargo.toml --offline --workspace --no-fail-fast --tool-config-file pipeline-opt:/s/nextest-tool-config-retries-2.toml"
        );
    }
}
