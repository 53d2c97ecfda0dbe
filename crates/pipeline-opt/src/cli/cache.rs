//! `cargo xtask cache status|clean`: the stage cache's size, entries and hit rate, and
//! removing entries (all, or older than an age). The work is in
//! `crate::cache::maintain`.

use crate::cache::maintain;
use crate::exit;
use crate::workspace::Workspace;
use anyhow::{Context, Result, bail};

use super::flags::CacheAction;

impl super::flags::Cache {
    pub(crate) fn run(self) -> Result<i32> {
        let action = self.action;
        let older_than = match (&self.older_than, action) {
            (Some(_), CacheAction::Status) => bail!("--older-than applies to `clean` only"),
            (Some(age), _) => Some(humantime::parse_duration(age).with_context(|| {
                format!("--older-than `{age}` is not an age; write it like `7d` or `12h`")
            })?),
            (None, _) => None,
        };
        if self.force && action != CacheAction::Clean {
            bail!("--force applies to `clean` only");
        }
        let manifest = super::utf8(self.manifest_path.as_ref())?;
        let workspace = Workspace::load(manifest.as_deref())?;
        let config = workspace.config()?;
        let state_dir = workspace.state_dir(&config);
        let wait = |lock: &camino::Utf8Path| {
            eprintln!(
                "waiting for another pipeline-opt run on this workspace to release {lock} ..."
            )
        };
        match action {
            CacheAction::Status => {
                out!("{}", maintain::status(&state_dir, config.cache.budget).render_text())
            }
            CacheAction::Clean => {
                let root = &workspace.root;
                match maintain::clean_location_problem(&state_dir, root, &workspace.target_dir) {
                    Some(problem) if !self.force => return Err(problem.into()),
                    _ => out!("{}", maintain::clean(&state_dir, older_than, wait)?.render_text()),
                }
            }
        }
        Ok(exit::OK)
    }
}
