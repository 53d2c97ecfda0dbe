//! `cargo xtask history` (the trend of recorded runs, optionally as CSV),
//! `cargo xtask report` (the reports of a saved run record, rendered again) and
//! `cargo xtask ci-workflow` (a GitHub Actions workflow that calls these commands).
//! All only call the library (`crate::report`, `crate::workflow`).

use crate::config::ServiceKind;
use crate::exit;
use crate::report::{self, history};
use crate::workflow::{Runner, WorkflowOptions};
use crate::workspace::Workspace;
use anyhow::{Context, Result};
use camino::Utf8Path;

use super::values::{Services, ShardCount};

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
        let manifest = super::utf8(self.manifest_path.as_ref())?;
        let workspace = Workspace::load(manifest.as_deref())?;
        let config = workspace.config()?;
        let declared = |kind| config.services.values().any(|s| s.kind == kind);
        let (postgres, redis) = match self.services.unwrap_or_default() {
            Services::Auto => (declared(ServiceKind::Postgres), declared(ServiceKind::Redis)),
            Services::All => (true, true),
            Services::None => (false, false),
        };
        let runner = if has_pipeline_opt_xtask(&workspace) {
            Runner::Xtask
        } else {
            Runner::Installed { git: self.install_from }
        };
        let (shards, shards_why) = match self.shards {
            None => (1, None),
            Some(ShardCount::Count(n)) => (n, None),
            Some(ShardCount::Auto) => {
                let state = workspace.state_dir(&config);
                let choice = choose_shards(&state, self.job_overhead.as_deref())?;
                eprintln!("--shards auto: {}", choice.reason);
                (choice.count, Some(format!("--shards auto: {}", choice.reason)))
            }
        };
        let options = WorkflowOptions {
            runner,
            gate: self.gate,
            postgres,
            redis,
            dir: repository_dir(&workspace.root),
            state_dir: state_dir(&workspace, &config),
            locked: workspace.root.join("Cargo.lock").exists(),
            shards,
            shards_why,
            compile_cache: self.compile_cache,
        };
        out!("{}", crate::workflow::github_actions(&options));
        Ok(exit::OK)
    }
}

/// `--shards auto`: N from the history's test durations and the per-job overhead,
/// given (`--job-overhead`) or measured: the median, over the shards of the last
/// `optimize --shards N --local` run, of a shard's wall beyond its tests' time.
fn choose_shards(
    state: &crate::state::StateDir,
    job_overhead: Option<&str>,
) -> Result<crate::shard::ShardCountChoice> {
    let (overhead, source) = match job_overhead {
        Some(text) => (
            humantime::parse_duration(text).map_err(|e| {
                anyhow::anyhow!("--job-overhead `{text}` is not a duration ({e}): use e.g. `40s`")
            })?,
            "given".to_string(),
        ),
        None => {
            let merged = state.shards().join("merged-run.json");
            let record = crate::scale::read_record(&merged).map_err(|_| {
                anyhow::anyhow!(
                    "--shards auto needs a per-job overhead: run `optimize --shards 2 --local` once to measure it ({merged}), or pass --job-overhead"
                )
            })?;
            let mut beyond: Vec<std::time::Duration> = record
                .shards
                .iter()
                .flat_map(|s| &s.shards)
                .map(|s| s.wall.saturating_sub(s.test_time))
                .collect();
            beyond.sort();
            let Some(median) = beyond.get(beyond.len() / 2).copied() else {
                anyhow::bail!(
                    "{merged} has no shards to measure a job's overhead from: run `optimize --shards 2 --local`, or pass --job-overhead"
                );
            };
            (median, format!("measured by run {}", record.run_id))
        }
    };
    let history = history::read(&state.report(report::HISTORY_FILE))?;
    let mut choice = crate::shard::choose_shard_count(
        &history.test_durations(),
        overhead,
        std::num::NonZeroUsize::new(16).expect("16 > 0"),
    );
    choice.reason = format!("{} (overhead {source})", choice.reason);
    Ok(choice)
}

/// Whether `cargo xtask optimize` exists in the workspace: the `xtask` alias in its
/// `.cargo/config.toml` (or `.cargo/config`) and an `xtask` package that depends on
/// pipeline-opt, as `init-xtask` writes them. An xtask of other commands does not count.
fn has_pipeline_opt_xtask(workspace: &Workspace) -> bool {
    let read_toml = |path: &Utf8Path| -> Option<toml_edit::DocumentMut> {
        std::fs::read_to_string(path).ok()?.parse().ok()
    };
    let alias = ["config.toml", "config"].iter().any(|name| {
        read_toml(&workspace.root.join(".cargo").join(name))
            .is_some_and(|doc| doc.get("alias").and_then(|a| a.get("xtask")).is_some())
    });
    let embeds = workspace.packages.iter().filter(|p| p.name == "xtask").any(|p| {
        read_toml(&p.manifest_path).is_some_and(|doc| {
            doc.get("dependencies").and_then(|d| d.get("pipeline-opt")).is_some()
        })
    });
    alias && embeds
}

/// The workspace root relative to the repository's (the nearest directory above it with
/// `.git`), `/`-separated; empty at the repository root or outside any repository.
fn repository_dir(root: &Utf8Path) -> String {
    let Some(repo) = root.ancestors().find(|dir| dir.join(".git").exists()) else {
        return String::new();
    };
    root.strip_prefix(repo)
        .map(|p| p.components().map(|c| c.as_str()).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

/// The state directory relative to the workspace root. The default one in a target
/// directory elsewhere (`CARGO_TARGET_DIR` on this machine) is `target/pipeline-opt`
/// in CI, where no such variable is set; a configured one outside stays absolute.
fn state_dir(workspace: &Workspace, config: &crate::config::Config) -> String {
    let dir = workspace.state_dir(config);
    match dir.strip_prefix(&workspace.root) {
        Ok(rel) => rel.components().map(|c| c.as_str()).collect::<Vec<_>>().join("/"),
        Err(_) if config.cache.dir.is_none() => "target/pipeline-opt".to_string(),
        Err(_) => dir.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::workflow::{Runner, WorkflowOptions, github_actions};

    /// Every `cargo xtask …` / `cargo pipeline-opt …` line of the generated workflow, for
    /// either runner and with a gate, parses with our own flags, so the workflow cannot
    /// drift from the command line.
    #[test]
    fn workflow_calls_existing_commands() {
        let variants = [
            WorkflowOptions::default(),
            WorkflowOptions {
                runner: Runner::Installed { git: None },
                gate: Some("1m30s".parse().unwrap()),
                dir: "sub/ws".to_string(),
                ..Default::default()
            },
            WorkflowOptions { gate: Some(crate::record::Gate::Stretch), ..Default::default() },
        ];
        for options in variants {
            let wf = github_actions(&options);
            let prefix = match options.runner {
                Runner::Xtask => "run: cargo xtask ",
                Runner::Installed { .. } => "run: cargo pipeline-opt ",
            };
            let calls: Vec<&str> = wf.lines().filter_map(|l| l.split(prefix).nth(1)).collect();
            assert!(calls.len() >= 3, "{wf}");
            for call in calls {
                let args = call.split_whitespace().map(std::ffi::OsString::from).collect();
                crate::cli::flags::PipelineOpt::from_vec(args)
                    .unwrap_or_else(|e| panic!("`{prefix}{call}` does not parse: {e}"));
            }
        }
    }
}
