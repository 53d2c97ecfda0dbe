//! `cargo xtask history` (the trend of recorded runs, optionally as CSV),
//! `cargo xtask report` (the reports of a saved run record, rendered again) and
//! `cargo xtask ci-workflow` (a GitHub Actions workflow that calls these commands).
//! All only call the library (`crate::report`, `crate::workflow`).

use crate::exit;
use crate::report::{self, history};
use crate::workspace::Workspace;
use anyhow::{Context, Result};

impl super::flags::History {
    pub(crate) fn run(self) -> Result<i32> {
        let manifest = super::utf8(self.manifest_path.as_ref())?;
        let workspace = Workspace::load(manifest.as_deref())?;
        let config = workspace.config()?;
        let path = workspace.state_dir(&config).report(report::HISTORY_FILE);
        let h = history::read(&path)?;
        for w in &h.warnings {
            eprintln!("warning: {path}: {w}");
        }
        out!("{}", history::render_trend(&h));
        if let Some(csv) = super::utf8(self.csv.as_ref())? {
            report::write_atomic(&csv, history::to_csv(&h.entries).as_bytes())
                .with_context(|| format!("cannot export the history to {csv}"))?;
            eprintln!("wrote {} runs to {csv}", h.entries.len());
        }
        Ok(exit::OK)
    }
}

impl super::flags::Report {
    pub(crate) fn run(self) -> Result<i32> {
        let record = report::json::read(&super::utf8_path(&self.from)?)?;
        let out = super::utf8_path(&self.out)?;
        for path in report::rerender(&record, &out)? {
            eprintln!("wrote {path}");
        }
        Ok(exit::OK)
    }
}

impl super::flags::CiWorkflow {
    pub(crate) fn run(self) -> Result<i32> {
        out!("{}", crate::workflow::github_actions());
        Ok(exit::OK)
    }
}

#[cfg(test)]
mod tests {
    /// Every `cargo xtask …` line of the generated workflow parses with our own flags,
    /// so the workflow cannot drift from the command line.
    #[test]
    fn workflow_calls_existing_commands() {
        let wf = crate::workflow::github_actions();
        let calls: Vec<&str> =
            wf.lines().filter_map(|l| l.split("run: cargo xtask ").nth(1)).collect();
        assert!(calls.len() >= 3, "{wf}");
        for call in calls {
            let args = call.split_whitespace().map(std::ffi::OsString::from).collect();
            crate::cli::flags::PipelineOpt::from_vec(args)
                .unwrap_or_else(|e| panic!("`cargo xtask {call}` does not parse: {e}"));
        }
    }
}
