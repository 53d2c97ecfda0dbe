//! The command line of `cargo xtask`, declared with xflags. The generated structs below
//! the macro are committed; regenerate them with `UPDATE_XFLAGS=1 cargo build -p xtask`.

#![allow(unreachable_pub)]

use std::path::PathBuf;

xflags::xflags! {
    src "./src/flags.rs"

    /// Plan, run, profile and gate a Cargo workspace's CI pipeline.
    cmd xtask {
        /// Print the stage DAG: each stage, its command, its dependencies, and why it
        /// exists or was dropped.
        cmd plan {
            /// Path to the workspace's Cargo.toml (default: the current workspace).
            optional --manifest-path path: PathBuf
            /// `text` (default) or `json`.
            optional --format format: String
            /// Build exactly what a naive CI builds (a full bench build).
            optional --strict
            optional --locked
            optional --frozen
            optional -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
            /// Plan only the packages affected by changes since this git ref, as
            /// `optimize --since` does.
            optional --since git_ref: String
            /// Retries of flaky nextest tests, as `optimize` runs them (it retries 2).
            optional --retries retries: u32
        }

        /// Run the whole pipeline as a graph of stages, profile it and report.
        cmd optimize {
            optional --manifest-path path: PathBuf
            /// Exit 101 when the total misses a target: `required`, `stretch` or a
            /// duration such as `50s`.
            optional --gate gate: String
            /// Run every stage that can still run after a failure.
            optional --keep-going
            /// Where to write the markdown report (default:
            /// target/pipeline-opt/pipeline-optimization-report.md).
            optional --report path: PathBuf
            /// Write the run record as JSON to this path.
            optional --json path: PathBuf
            /// Write Prometheus text-format metrics to this path.
            optional --prometheus path: PathBuf
            /// Also run the naive sequence and report both totals and the ratio.
            optional --against-naive
            /// Build exactly what a naive CI builds (a full bench build).
            optional --strict
            /// Say why each stage ran instead of being served from the cache.
            optional --explain
            /// Run every stage, also those the cache has proven (successes are still
            /// recorded).
            optional --no-cache
            /// Run the stages the cache has proven anyway and fail (exit 100) naming each
            /// whose result differs from the cached success.
            optional --verify-cache
            /// Only build and test packages affected by changes since this git ref.
            optional --since git_ref: String
            /// Try profile-setting variants in a scratch target directory.
            optional --explore
            /// Most stages to run at once (default: twice the cores; CPU-heavy stages share
            /// the cores separately).
            optional -j, --jobs jobs: usize
            optional --locked
            optional --frozen
            optional -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
        }

        /// The quickest useful signal: `cargo check --all-targets`.
        cmd check {
            optional --manifest-path path: PathBuf
            /// Where to write the markdown report (default:
            /// target/pipeline-opt/pipeline-optimization-report.md).
            optional --report path: PathBuf
            /// Write the run record as JSON to this path.
            optional --json path: PathBuf
            optional --locked
            optional --frozen
            optional -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
        }

        /// This workspace's own checks and tests, as CI runs them.
        cmd ci {}

        /// Benchmark the working tree against a git ref and report regressions.
        cmd bench-compare {
            /// Branch, tag or commit to compare against.
            required git_ref: String
            optional --manifest-path path: PathBuf
            /// Smallest slowdown that counts as a regression (default 5%).
            optional --threshold threshold: String
            /// Only benchmarks whose id contains this string.
            optional --filter filter: String
            /// Paired rounds per side (default 20).
            optional --rounds rounds: usize
            /// Criterion warm-up per benchmark and round, e.g. `50ms` (default 50ms).
            optional --warm-up duration: String
            /// Criterion measurement per benchmark and round, e.g. `200ms` (default 200ms).
            optional --measurement-time duration: String
            optional --json path: PathBuf
            optional --markdown path: PathBuf
            /// Save head's results as a criterion baseline with this name.
            optional --save-baseline name: String
            /// Compare against a saved criterion baseline instead of building REF.
            optional --baseline name: String
        }

        /// Manage the pool of service instances (PostgreSQL, Redis, commands).
        cmd pool {
            /// `up` (start the supervisor, or find the running one), `status`, `down`
            /// (stop every instance) or `clean` (stop what crashed runs left behind).
            required action: String
            optional --manifest-path path: PathBuf
        }

        /// Inspect or clear the stage cache.
        cmd cache {
            /// `status` (size, entries, hit rate) or `clean`.
            required action: String
            optional --manifest-path path: PathBuf
            /// With `clean`: only entries older than this age, e.g. `7d`.
            optional --older-than age: String
            /// With `clean`: also clean a state directory at the workspace root or outside
            /// the target directory (only what pipeline-opt created there is removed).
            optional --force
        }

        /// Trend of total and per-stage times across recorded runs.
        cmd history {
            optional --manifest-path path: PathBuf
            /// Export the history as CSV to this path.
            optional --csv path: PathBuf
        }

        /// Render the reports (markdown, JSON, HTML) of a saved run record again,
        /// without cargo or the workspace.
        cmd report {
            /// The run record: a run.json that `optimize` or `check` wrote.
            required --from path: PathBuf
            /// The directory to write the reports to, under the names the run used.
            required --out dir: PathBuf
        }

        /// Print a GitHub Actions workflow that calls these xtask commands.
        cmd ci-workflow {}
    }
}
// generated start
// The following code is generated by `xflags` macro.
// Run `env UPDATE_XFLAGS=1 cargo build` to regenerate.
#[derive(Debug)]
pub struct Xtask {
    pub subcommand: XtaskCmd,
}

#[derive(Debug)]
pub enum XtaskCmd {
    Plan(Plan),
    Optimize(Optimize),
    Check(Check),
    Ci(Ci),
    BenchCompare(BenchCompare),
    Pool(Pool),
    Cache(Cache),
    History(History),
    Report(Report),
    CiWorkflow(CiWorkflow),
}

#[derive(Debug)]
pub struct Plan {
    pub manifest_path: Option<PathBuf>,
    pub format: Option<String>,
    pub strict: bool,
    pub locked: bool,
    pub frozen: bool,
    pub features: Option<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
    pub since: Option<String>,
    pub retries: Option<u32>,
}

#[derive(Debug)]
pub struct Optimize {
    pub manifest_path: Option<PathBuf>,
    pub gate: Option<String>,
    pub keep_going: bool,
    pub report: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub prometheus: Option<PathBuf>,
    pub against_naive: bool,
    pub strict: bool,
    pub explain: bool,
    pub no_cache: bool,
    pub verify_cache: bool,
    pub since: Option<String>,
    pub explore: bool,
    pub jobs: Option<usize>,
    pub locked: bool,
    pub frozen: bool,
    pub features: Option<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
}

#[derive(Debug)]
pub struct Check {
    pub manifest_path: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub locked: bool,
    pub frozen: bool,
    pub features: Option<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
}

#[derive(Debug)]
pub struct Ci;

#[derive(Debug)]
pub struct BenchCompare {
    pub git_ref: String,

    pub manifest_path: Option<PathBuf>,
    pub threshold: Option<String>,
    pub filter: Option<String>,
    pub rounds: Option<usize>,
    pub warm_up: Option<String>,
    pub measurement_time: Option<String>,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub save_baseline: Option<String>,
    pub baseline: Option<String>,
}

#[derive(Debug)]
pub struct Pool {
    pub action: String,

    pub manifest_path: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Cache {
    pub action: String,

    pub manifest_path: Option<PathBuf>,
    pub older_than: Option<String>,
    pub force: bool,
}

#[derive(Debug)]
pub struct History {
    pub manifest_path: Option<PathBuf>,
    pub csv: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Report {
    pub from: PathBuf,
    pub out: PathBuf,
}

#[derive(Debug)]
pub struct CiWorkflow;

impl Xtask {
    #[allow(dead_code)]
    pub fn from_env_or_exit() -> Self {
        Self::from_env_or_exit_()
    }

    #[allow(dead_code)]
    pub fn from_env() -> xflags::Result<Self> {
        Self::from_env_()
    }

    #[allow(dead_code)]
    pub fn from_vec(args: Vec<std::ffi::OsString>) -> xflags::Result<Self> {
        Self::from_vec_(args)
    }
}
// generated end
