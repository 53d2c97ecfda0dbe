//! Everything a plan is made from, loaded once: the workspace model, its config, the
//! active toolchain, which tools are installed and the workspace facts the reports need.
//! The only module before the planner that runs commands (`cargo metadata`, `rustc -vV`,
//! `cargo nextest --version`).

use camino::{Utf8Path, Utf8PathBuf};

use crate::config::{Config, ConfigError};
use crate::facts::WorkspaceFacts;
use crate::plan::{CargoArgs, Plan, PlanError, PlanOptions};
use crate::toolchain::{Toolchain, ToolchainError};
use crate::workspace::{LoadWorkspaceError, Workspace};

#[derive(Debug, Clone)]
pub struct Inputs {
    pub workspace: Workspace,
    pub config: Config,
    pub toolchain: Toolchain,
    /// Whether `cargo nextest` runs in this workspace.
    pub nextest: bool,
    /// What the recommendations need beyond the measurements, saved in the run record.
    pub facts: WorkspaceFacts,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadInputsError {
    #[error(transparent)]
    Workspace(#[from] LoadWorkspaceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
}

impl Inputs {
    pub fn load(manifest_path: Option<&Utf8Path>) -> Result<Inputs, LoadInputsError> {
        // `cargo metadata` and `rustc -vV` take a few hundred milliseconds each and do
        // not depend on each other, so an all-cached run asks both at once. rustc is
        // asked in the manifest's directory, where the same toolchain file applies.
        let toolchain_dir: Utf8PathBuf = match manifest_path {
            Some(p) => p
                .parent()
                .filter(|d| !d.as_str().is_empty())
                .unwrap_or(Utf8Path::new("."))
                .to_owned(),
            None => Utf8PathBuf::from("."),
        };
        let (metadata, toolchain) = std::thread::scope(|s| {
            let toolchain = s.spawn(|| Toolchain::detect(&toolchain_dir));
            let metadata = Workspace::metadata(manifest_path);
            (metadata, toolchain.join().expect("the toolchain probe does not panic"))
        });
        let metadata = metadata?;
        let workspace = Workspace::from_metadata(&metadata);
        // The reports' facts come from the same resolve, so a saved record renders the
        // same recommendations without cargo; an unreadable manifest means no debug advice.
        let root_manifest = std::fs::read_to_string(&workspace.manifest_path).ok();
        let mut facts = WorkspaceFacts::new(&metadata, root_manifest.as_deref());
        let toolchain = toolchain?;
        let config = workspace.config()?;
        let nextest = nextest_installed();
        facts.nextest_missing = !nextest;
        Ok(Inputs { workspace, config, toolchain, nextest, facts })
    }

    pub fn plan(&self, cargo: CargoArgs, strict: bool) -> Result<Plan, PlanError> {
        crate::plan::plan(&self.workspace, &self.config, &self.plan_options(cargo, strict))
    }

    /// What the planner is told about this machine and the user's flags.
    pub fn plan_options(&self, cargo: CargoArgs, strict: bool) -> PlanOptions {
        let cargo_target = cargo.target.clone();
        PlanOptions {
            toolchain: Some(self.toolchain.clone()),
            nextest: self.nextest,
            cargo,
            strict,
            ci: std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0"),
            cargo_incremental_set: std::env::var_os("CARGO_INCREMENTAL").is_some(),
            test_profile_overrides: self.workspace.test_profile_overrides(),
            target_dir: None,
            lease_runner: self.lease_runner(),
            user_runner: self.user_runner(cargo_target),
            rustdoc_shim: None,
            user_rustdoc: crate::cargo_config::user_rustdoc(&self.workspace.root),
            test_archive: None,
        }
    }

    /// The program every test process starts through when a service declares `env`:
    /// the small `pipeline-opt-lease-runner` beside the running binary when it answers
    /// this build's protocol (starting it costs a test about half what starting the
    /// whole command line does, docs/services.md), else the running binary itself.
    fn lease_runner(&self) -> Option<Utf8PathBuf> {
        let exe = std::env::current_exe().ok().and_then(|p| Utf8PathBuf::from_path_buf(p).ok())?;
        if self.config.services.values().all(|s| s.env.is_empty()) {
            return Some(exe);
        }
        let beside = exe.with_file_name(crate::plan::LEASE_RUNNER_BIN);
        let answers = beside.is_file()
            && std::process::Command::new(&beside)
                .args([crate::plan::LEASE_RUNNER_ARG, "--protocol"])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .is_ok_and(|out| {
                    out.status.success()
                        && out.stdout.trim_ascii() == crate::plan::LEASE_RUNNER_PROTOCOL.as_bytes()
                });
        Some(if answers { beside } else { exe })
    }

    /// The target runner the user set for the tests' platform, looked for only when the
    /// tool's lease runner takes its place (a service declares `env`).
    fn user_runner(&self, target: Option<String>) -> Option<crate::target_runner::UserRunner> {
        if self.config.services.values().all(|s| s.env.is_empty()) {
            return None;
        }
        let triple = target.unwrap_or_else(|| self.toolchain.host.clone());
        let root = &self.workspace.root;
        crate::target_runner::find_user_runner(root, &triple, || {
            Toolchain::target_cfg(root, &triple)
        })
    }
}

/// Cargo runs `cargo nextest` as the executable `cargo-nextest` from `$CARGO_HOME/bin`
/// or PATH; looking for it there costs nothing, where `cargo nextest --version` costs
/// half a second of every run.
fn nextest_installed() -> bool {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    cargo_home.map(|h| h.join("bin")).into_iter().chain(path_dirs).any(|dir| {
        let exe = dir.join("cargo-nextest");
        std::fs::metadata(&exe).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    })
}
