//! The build machine's side of scale-out (`optimize --shards N`): the artifact
//! directory (archive, inventory, shard plan, run record), the archive's inventory as
//! nextest lists it, and the shard plan made from it and the history's test durations.
//! The planning itself is [`crate::shard`]'s, with no I/O; this module only reads and
//! writes around it.

use std::num::NonZeroUsize;

use camino::{Utf8Path, Utf8PathBuf};
use xshell::{Shell, cmd};

use crate::shard::{Inventory, ShardOptions, ShardPlan, plan_shards};
use crate::state::StateDir;

/// `--shards N` and where its artifacts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shards {
    pub count: NonZeroUsize,
    /// Default: [`StateDir::shards`].
    pub dir: Option<Utf8PathBuf>,
}

impl Shards {
    pub fn artifacts(&self, state_dir: &StateDir) -> Artifacts {
        Artifacts(self.dir.clone().unwrap_or_else(|| state_dir.shards()))
    }
}

/// The files of one artifact directory, which a shard machine receives whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts(pub Utf8PathBuf);

impl Artifacts {
    pub fn dir(&self) -> &Utf8Path {
        &self.0
    }
    /// `cargo nextest archive`'s output: the test binaries and what they need.
    pub fn archive(&self) -> Utf8PathBuf {
        self.0.join("tests.tar.zst")
    }
    /// The [`ShardPlan`] as JSON.
    pub fn plan(&self) -> Utf8PathBuf {
        self.0.join("shard-plan.json")
    }
    /// The build machine's run record.
    pub fn build_record(&self) -> Utf8PathBuf {
        self.0.join("build-run.json")
    }
    /// The JUnit of the tests the build machine ran itself (doctests, custom harnesses).
    pub fn build_junit(&self) -> Utf8PathBuf {
        self.0.join("build-junit.xml")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error(
        "could not create the shard artifact directory {dir}: {source}; pick a writable --shards-dir"
    )]
    CreateDir {
        dir: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`cargo nextest list --archive-file {archive}` failed: {detail}; check that the archive stage succeeded and cargo-nextest is installed"
    )]
    List { archive: Utf8PathBuf, detail: String },
    #[error(transparent)]
    Inventory(#[from] crate::shard::InventoryError),
    #[error(
        "could not read the shard plan {path}: {detail}; pass the shard-plan.json that `optimize --shards N` wrote"
    )]
    ReadPlan { path: Utf8PathBuf, detail: String },
    #[error(
        "the shard plan {path} has shards 1 to {count}, not {shard}: pass --shard 1 to {count}"
    )]
    NoSuchShard { path: Utf8PathBuf, shard: usize, count: usize },
    #[error(
        "could not read the run record {path}: {detail}; pass the directories that `optimize --shards` and `shard run` wrote"
    )]
    ReadRecord { path: Utf8PathBuf, detail: String },
    #[error("{0}")]
    MergeInput(String),
    #[error(
        "optimize --local gives each shard its own copy of the checkout and its own target directory, and CARGO_TARGET_DIR would make them share one (and reach the tests): unset CARGO_TARGET_DIR"
    )]
    LocalSharedTargetDir,
    #[error("could not write {path}: {source}; check that the directory is writable")]
    Write {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "could not write the shard plan {path}: {source}; check that the directory is writable"
    )]
    WritePlan {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes the artifact directory; a run writes the archive into it.
pub fn prepare(artifacts: &Artifacts) -> Result<(), ScaleError> {
    std::fs::create_dir_all(artifacts.dir())
        .map_err(|source| ScaleError::CreateDir { dir: artifacts.dir().to_owned(), source })
}

/// The archive's tests, as `cargo nextest list --archive-file A --message-format json`
/// prints them; `manifest` is the workspace the archive was built from.
pub fn list_archive(manifest: &Utf8Path, archive: &Utf8Path) -> Result<Inventory, ScaleError> {
    let sh = Shell::new()
        .map_err(|e| ScaleError::List { archive: archive.to_owned(), detail: e.to_string() })?;
    let cmd = cmd!(
        sh,
        "cargo nextest list --manifest-path {manifest} --archive-file {archive} --message-format json"
    );
    let out = crate::toolchain::clean_command(&cmd)
        .output()
        .map_err(|e| ScaleError::List { archive: archive.to_owned(), detail: e.to_string() })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(ScaleError::List {
            archive: archive.to_owned(),
            detail: format!("{} ({})", out.status, crate::record::strip_ansi(last.trim())),
        });
    }
    Ok(Inventory::from_nextest_list_json(&String::from_utf8_lossy(&out.stdout))?)
}

/// Plans the shards from the archive's inventory and the history at `history`, and
/// writes the plan into the artifact directory.
pub fn plan_and_write(
    inventory: &Inventory,
    history: &Utf8Path,
    count: NonZeroUsize,
    artifacts: &Artifacts,
) -> Result<ShardPlan, ScaleError> {
    // An unreadable history only costs the weights: the plan falls back to slice.
    let durations =
        crate::report::history::read(history).map(|h| h.test_durations()).unwrap_or_default();
    let plan = plan_shards(inventory, &durations, &ShardOptions::new(count));
    let path = artifacts.plan();
    let json = serde_json::to_string_pretty(&plan).expect("a shard plan serialises");
    crate::report::write_atomic(&path, json.as_bytes()).map_err(|e| ScaleError::WritePlan {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(plan)
}

/// `shard run --plan P --shard K`: the plan file, the shard, and where its results go
/// (default: `shard-K` beside the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRunOptions {
    pub plan: Utf8PathBuf,
    pub shard: usize,
    pub out: Option<Utf8PathBuf>,
}

impl ShardRunOptions {
    /// The artifact directory the plan lies in: the archive is beside it.
    pub fn artifacts(&self) -> Artifacts {
        Artifacts(self.plan.parent().map(Utf8Path::to_owned).unwrap_or_else(|| ".".into()))
    }

    pub fn out_dir(&self) -> Utf8PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.artifacts().dir().join(format!("shard-{}", self.shard)))
    }
}

/// Reads a shard plan that `optimize --shards` wrote.
pub fn read_plan(path: &Utf8Path) -> Result<ShardPlan, ScaleError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScaleError::ReadPlan { path: path.to_owned(), detail: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| ScaleError::ReadPlan { path: path.to_owned(), detail: e.to_string() })
}

/// The tool config a shard run gives nextest: JUnit on, at nextest's default place
/// under the extracted target directory (the user's own nextest config outranks it).
pub const JUNIT_TOOL_CONFIG: &str = "[profile.default.junit]\npath = \"junit.xml\"\n";

/// Writes `contents` to `path`, naming the path on failure.
pub fn write_file(path: &Utf8Path, contents: &[u8]) -> Result<(), ScaleError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| ScaleError::Write { path: dir.to_owned(), source })?;
    }
    std::fs::write(path, contents)
        .map_err(|source| ScaleError::Write { path: path.to_owned(), source })
}

/// What `shard merge` found: the merged record, and the tests of the plan that ran on
/// no shard or on more than one.
#[derive(Debug, Clone)]
pub struct Merged {
    pub record: crate::record::RunRecord,
    pub missing: Vec<String>,
    pub doubled: Vec<String>,
}

/// One record of the build and its shards' records: the build's stages, then each
/// shard's; every test; the shards predicted against measured. `total` is the build's
/// plus the slowest shard's, the time a CI pipeline whose shards run side by side takes.
/// A test the plan holds that ran on no shard or on two makes the run failed.
pub fn merge(
    plan: &ShardPlan,
    build: &crate::record::RunRecord,
    shard_records: &[(usize, crate::record::RunRecord)],
) -> Merged {
    use crate::record::{RunOutcome, ShardResult, ShardsSummary};
    use std::collections::BTreeMap;
    let mut record = build.clone();
    let mut ran: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut results = Vec::new();
    let mut slowest = std::time::Duration::ZERO;
    let mut slowest_stage: Option<crate::record::CriticalStep> = None;
    for (index, r) in shard_records {
        // The shards start when the build has ended, side by side: on the merged
        // timeline each shard's stages follow the build's.
        for stage in &r.stages {
            let mut stage = stage.clone();
            stage.start = build.total.saturating_add(stage.start);
            let end = stage.start.saturating_add(stage.wall);
            if slowest_stage.as_ref().is_none_or(|s| end > s.end) {
                slowest_stage = Some(crate::record::CriticalStep {
                    kind: "stage".into(),
                    name: stage.id.clone(),
                    start: stage.start,
                    end,
                });
            }
            record.stages.push(stage);
        }
        record.tests.extend(r.tests.iter().cloned());
        record.test_counts.extend(r.test_counts.iter().cloned());
        record.crates.extend(r.crates.iter().cloned());
        record.compiled_by_tests.extend(r.compiled_by_tests.iter().cloned());
        for t in &r.tests {
            ran.entry(t.name.clone()).or_default().push(*index);
        }
        if r.outcome != RunOutcome::Succeeded && record.outcome == RunOutcome::Succeeded {
            record.outcome = r.outcome;
        }
        slowest = slowest.max(r.total);
        results.push(ShardResult {
            index: *index,
            run_id: r.run_id.clone(),
            tests: r.tests.len(),
            predicted: plan.shards.iter().find(|s| s.index == *index).and_then(|s| s.predicted),
            test_time: r.tests.iter().map(|t| t.duration).sum(),
            wall: r.total,
        });
    }
    results.sort_by_key(|s| s.index);
    record.total = build.total.saturating_add(slowest);
    // The pipeline's longest chain goes on through the shard that ended last.
    record.critical_path.extend(slowest_stage);
    let planned = plan.shards.iter().flat_map(|s| {
        s.tests.iter().flat_map(|(b, ts)| ts.iter().map(|t| crate::shard::test_key(b, t)))
    });
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    for key in planned {
        match ran.get(&key).map(Vec::len) {
            None => missing.push(key),
            Some(1) => {}
            Some(_) => doubled.push(key),
        }
    }
    let walls: Vec<f64> = results.iter().map(|s| s.wall.as_secs_f64()).collect();
    let mut errors: Vec<f64> = results
        .iter()
        .filter_map(|s| {
            let p = s.predicted?.as_secs_f64();
            (p > 0.0).then(|| (s.test_time.as_secs_f64() - p).abs() / p)
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    let prediction_error = (!errors.is_empty()).then(|| {
        let m = errors.len() / 2;
        if errors.len() % 2 == 1 { errors[m] } else { (errors[m - 1] + errors[m]) / 2.0 }
    });
    record.shards = Some(ShardsSummary {
        strategy: match plan.fallback {
            None => "durations".into(),
            Some(f) => format!("slice ({})", f.reason()),
        },
        balance: crate::shard::balance(&walls),
        prediction_error,
        shards: results,
    });
    record.schema_version = crate::record::SCHEMA_VERSION;
    record.command = format!("cargo xtask shard merge ({} shards)", shard_records.len());
    if !missing.is_empty() || !doubled.is_empty() {
        record.outcome = RunOutcome::StageFailed;
        record.notes.push(coverage_problem(&missing, &doubled));
    }
    Merged { record, missing, doubled }
}

/// One line naming the tests of the plan that ran on no shard or on two.
pub fn coverage_problem(missing: &[String], doubled: &[String]) -> String {
    let list = |v: &[String]| {
        let shown: Vec<&str> = v.iter().take(10).map(String::as_str).collect();
        let more = v.len().saturating_sub(10);
        if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{} tests ran on no shard: {}", missing.len(), list(missing)));
    }
    if !doubled.is_empty() {
        parts.push(format!(
            "{} tests ran on more than one shard: {}",
            doubled.len(),
            list(doubled)
        ));
    }
    format!(
        "{}; run every shard of the plan once, then merge all of their directories",
        parts.join("; ")
    )
}

/// Reads a run record that `optimize` or `shard run` wrote.
pub fn read_record(path: &Utf8Path) -> Result<crate::record::RunRecord, ScaleError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScaleError::ReadRecord { path: path.to_owned(), detail: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| ScaleError::ReadRecord { path: path.to_owned(), detail: e.to_string() })
}

/// Copies the checkout at `root` to `dest` (which must not exist yet), leaving out the
/// directories in `skip` (the target directory, the artifact directory) and `.git`:
/// what a shard machine's checkout of the same commit holds, at another path, so a path
/// baked in at build time fails there as it would on another machine. Symbolic links
/// are copied as links.
pub fn copy_checkout(
    root: &Utf8Path,
    dest: &Utf8Path,
    skip: &[Utf8PathBuf],
) -> Result<(), ScaleError> {
    let io = |path: &Utf8Path| {
        let path = path.to_owned();
        move |source| ScaleError::Write { path, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut stack = vec![(root.to_owned(), dest.to_owned())];
    while let Some((from, to)) = stack.pop() {
        for entry in std::fs::read_dir(&from).map_err(io(&from))? {
            let entry = entry.map_err(io(&from))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let src = from.join(&name);
            let dst = to.join(&name);
            if name == ".git" || skip.contains(&src) {
                continue;
            }
            let kind = entry.file_type().map_err(io(&src))?;
            if kind.is_dir() {
                std::fs::create_dir(&dst).map_err(io(&dst))?;
                stack.push((src, dst));
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&src).map_err(io(&src))?;
                std::os::unix::fs::symlink(target, &dst).map_err(io(&dst))?;
            } else if kind.is_file() {
                std::fs::copy(&src, &dst).map_err(io(&dst))?;
            }
        }
    }
    Ok(())
}
