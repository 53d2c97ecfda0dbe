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
