//! The state directory (`<target-dir>/pipeline-opt` unless the config moves it) and the
//! name of every path the tool keeps under it, in one place, so that the layout on disk
//! is written down once and no module joins a name by hand. Imports nothing of the
//! crate: every layer may ask it for a path.

use std::ops::Deref;

use camino::{Utf8Path, Utf8PathBuf};

/// The environment variable that tells tests where the service pool is: the pool
/// directory of the run's state directory, set on the stages that depend on `services`.
/// Defined by the lease crate, which also finds the default pool directory without it.
pub use pipeline_opt_lease::POOL_ENV;
use pipeline_opt_lease::{POOL_DIR_NAME, STATE_DIR_NAME};

/// The directory everything the tool keeps lives under. It dereferences to its path for
/// the code that walks or measures the whole directory (cache status, budget, clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir(Utf8PathBuf);

impl StateDir {
    pub fn new(dir: impl Into<Utf8PathBuf>) -> StateDir {
        StateDir(dir.into())
    }

    /// The default place, `<target-dir>/pipeline-opt`: `cargo clean` resets it, and
    /// nothing lands in the source tree.
    pub fn in_target_dir(target_dir: &Utf8Path) -> StateDir {
        StateDir(target_dir.join(STATE_DIR_NAME))
    }

    pub fn path(&self) -> &Utf8Path {
        &self.0
    }

    /// The stage cache: its records, the dependency record and the lock.
    pub fn cache(&self) -> Utf8PathBuf {
        self.0.join("cache")
    }

    /// The dependency cache's record of what `cargo fetch` last fetched.
    pub fn deps_record(&self) -> Utf8PathBuf {
        self.cache().join("deps.json")
    }

    /// The lock one run at a time holds on the stage cache.
    pub fn cache_lock(&self) -> Utf8PathBuf {
        self.cache().join("lock")
    }

    /// The stage cache's successes of whole stages, a `<stage>.json` each.
    pub fn cache_stage_records(&self) -> Utf8PathBuf {
        self.cache().join("stages")
    }

    /// The stage cache's successes of one package's tests, a `<package>.json` each.
    pub fn cache_test_records(&self) -> Utf8PathBuf {
        self.cache().join("tests")
    }

    /// File hashes by size and modification time, which spare hashing unchanged files.
    pub fn stat_cache(&self) -> Utf8PathBuf {
        self.cache().join("stat-cache.json")
    }

    /// The stage cache's hits and misses of recent runs, for `cache status`.
    pub fn cache_hits(&self) -> Utf8PathBuf {
        self.cache().join("hits.json")
    }

    /// The full output of each stage of one run, a `<stage>.log` each.
    pub fn logs(&self, run_id: &str) -> Utf8PathBuf {
        self.0.join("logs").join(run_id)
    }

    /// The service pool's supervisor, leases and instances.
    pub fn pool(&self) -> Utf8PathBuf {
        self.0.join(POOL_DIR_NAME)
    }

    /// The build directory of the bench profile, apart from the dev stages' lock.
    pub fn bench_target(&self) -> Utf8PathBuf {
        self.0.join("bench-target")
    }

    /// clippy's own build directory: its check artifacts would not serve the build.
    pub fn clippy_target(&self) -> Utf8PathBuf {
        self.0.join("clippy-target")
    }

    /// rustdoc's own build directory, for the same reason.
    pub fn doc_target(&self) -> Utf8PathBuf {
        self.0.join("doc-target")
    }

    /// Where the rustc timing shim is installed.
    pub fn bin(&self) -> Utf8PathBuf {
        self.0.join("bin")
    }

    /// The nextest tool config (JUnit, and `retries` when not 0): one file per count, so
    /// concurrent runs with different counts never rewrite each other's.
    pub fn nextest_tool_config(&self, retries: u32) -> Utf8PathBuf {
        match retries {
            0 => self.0.join("nextest-tool-config.toml"),
            n => self.0.join(format!("nextest-tool-config-retries-{n}.toml")),
        }
    }

    /// The temporary file a nextest tool config is written to before it is renamed.
    pub fn nextest_tool_config_tmp(&self) -> Utf8PathBuf {
        self.0.join(format!(".nextest-tool-config.{}", std::process::id()))
    }

    /// Where the tool config asks nextest to write its JUnit XML (read back after the
    /// test stage; a run holds the cache lock, so one run at a time writes it).
    pub fn nextest_junit(&self) -> Utf8PathBuf {
        self.0.join("nextest-junit.xml")
    }

    /// JUnit XML of successful test stages (`<stage>/<run>.xml`) and of packages'
    /// tests (`test/<package>/<run>.xml`), replayed when the cache serves them.
    pub fn cache_junit(&self) -> Utf8PathBuf {
        self.cache().join("junit")
    }

    /// `--against-naive`: the fresh target directories of both sides of one run.
    pub fn compare(&self, run_id: &str) -> Utf8PathBuf {
        self.0.join("compare").join(run_id)
    }

    /// `--explore`: the scratch target directories of the variants.
    pub fn explore_scratch(&self) -> Utf8PathBuf {
        self.0.join("explore")
    }

    /// `bench-compare`: the detached worktrees of the compared refs.
    pub fn worktrees(&self) -> Utf8PathBuf {
        self.0.join("worktrees")
    }

    /// `bench-compare`: the results of the repository at `repo_key`.
    pub fn bench_compare(&self, repo_key: &str) -> Utf8PathBuf {
        self.0.join("bench-compare").join(repo_key)
    }

    /// Flame graphs (`<name>.svg`) beside the reports that link them.
    pub fn flamegraphs(&self) -> Utf8PathBuf {
        self.0.join("flamegraphs")
    }

    /// The profiler's raw data of a flame graph, kept out of the reports.
    pub fn flamegraph_data(&self) -> Utf8PathBuf {
        self.0.join("flamegraph-data")
    }

    /// `optimize --shards`' artifacts by default: archive, shard plan, run record.
    pub fn shards(&self) -> Utf8PathBuf {
        self.0.join("shards")
    }

    /// A report or the run history by the file name the reports give it (`run.json`,
    /// `check-history.jsonl`): their default place.
    pub fn report(&self, file_name: &str) -> Utf8PathBuf {
        self.0.join(file_name)
    }
}

impl Deref for StateDir {
    type Target = Utf8Path;

    fn deref(&self) -> &Utf8Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for StateDir {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_std_path()
    }
}

impl From<Utf8PathBuf> for StateDir {
    fn from(dir: Utf8PathBuf) -> StateDir {
        StateDir(dir)
    }
}

impl From<&Utf8Path> for StateDir {
    fn from(dir: &Utf8Path) -> StateDir {
        StateDir(dir.to_owned())
    }
}
