//! Everything a plan is made from, loaded once: the workspace model, its config, the
//! active toolchain and which tools are installed. The only module before the planner
//! that runs commands (`cargo metadata`, `rustc -vV`, `cargo nextest --version`).

use camino::Utf8Path;
use xshell::{Shell, cmd};

use crate::config::{Config, ConfigError};
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
        let workspace = Workspace::load(manifest_path)?;
        let config = Config::from_workspace_metadata(&workspace.metadata)?;
        let toolchain = Toolchain::detect(&workspace.root)?;
        let nextest = nextest_installed(&workspace.root);
        Ok(Inputs { workspace, config, toolchain, nextest })
    }

    pub fn plan(&self, cargo: CargoArgs, strict: bool) -> Result<Plan, PlanError> {
        let options = PlanOptions {
            toolchain: Some(self.toolchain.clone()),
            nextest: self.nextest,
            cargo,
            strict,
        };
        crate::plan::plan(&self.workspace, &self.config, &options)
    }
}

fn nextest_installed(dir: &Utf8Path) -> bool {
    let Ok(sh) = Shell::new() else { return false };
    let sh = sh.with_current_dir(dir);
    crate::toolchain::clean_command(&cmd!(sh, "cargo nextest --version"))
        .output()
        .is_ok_and(|o| o.status.success())
}
