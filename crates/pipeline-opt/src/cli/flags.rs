//! The command line of `cargo pipeline-opt` and `cargo xtask`, declared with xflags. The
//! generated structs below the macro are committed; regenerate them with
//! `UPDATE_XFLAGS=1 cargo build -p pipeline-opt`. Values from a closed set are typed
//! (their `FromStr` is in `values.rs`), so a bad one is a usage error like a bad flag.

#![allow(unreachable_pub)]

use std::path::PathBuf;

pub use super::values::{
    CacheAction, ColorChoice, MessageFormat, PlanFormat, PoolAction, Services, ShardCount,
};
pub use crate::record::Gate;

xflags::xflags! {
    src "./src/cli/flags.rs"

    /// Plan, run, profile and gate a Cargo workspace's CI pipeline.
    cmd pipeline-opt {
        /// Print the stage DAG: each stage, its command, its dependencies, and why it
        /// exists or was dropped.
        cmd plan {
            /// Path to the workspace's Cargo.toml (default: the current workspace).
            optional --manifest-path path: PathBuf
            /// `text` (default) or `json`.
            optional --format format: PlanFormat
            /// Build exactly what a naive CI builds (a full bench build).
            optional --strict
            optional --locked
            optional --frozen
            repeated -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
            /// The whole workspace (the default; wins over -p, as in cargo).
            optional --workspace
            /// Leave this member out of the whole workspace.
            repeated --exclude package: String
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
            /// Archive the tests with `cargo nextest archive` instead of running them, and
            /// plan N shard machines by the history's test durations
            /// (docs/scale-out.md).
            optional --shards count: usize
            /// Where --shards writes the archive, the shard plan and the run record
            /// (default: target/pipeline-opt/shards).
            optional --shards-dir path: PathBuf
            /// With --shards: run the shards here too, each as its own process against
            /// its own copy of the checkout, and merge them into one report.
            optional --local
            /// A compile cache shared between machines: run rustc under sccache with
            /// this Redis (redis://HOST:PORT) as its backend, or `gha`: the GitHub
            /// Actions cache, in a workflow's job (docs/scale-out.md).
            optional --compile-cache url: String
            /// Most stages to run at once (default: twice the cores; CPU-heavy stages share
            /// the cores separately).
            optional -j, --jobs jobs: usize
            optional --locked
            optional --frozen
            repeated -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
            /// The whole workspace (the default; wins over -p, as in cargo).
            optional --workspace
            /// Leave this member out of the whole workspace.
            repeated --exclude package: String
            /// Also show every stage's output as it comes.
            optional -v, --verbose
            /// No live view and no report paths: errors and the exit code only.
            optional -q, --quiet
            /// `auto` (default), `always` or `never`: colour and redrawing of the live view.
            optional --color when: ColorChoice
            /// `human` (default) or `json`: the run's events as JSON lines on stdout.
            optional --message-format format: MessageFormat
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
            repeated -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
            /// The whole workspace (the default; wins over -p, as in cargo).
            optional --workspace
            /// Leave this member out of the whole workspace.
            repeated --exclude package: String
            /// Also show every stage's output as it comes.
            optional -v, --verbose
            /// No live view and no report paths: errors and the exit code only.
            optional -q, --quiet
            /// `auto` (default), `always` or `never`: colour and redrawing of the live view.
            optional --color when: ColorChoice
            /// `human` (default) or `json`: the run's events as JSON lines on stdout.
            optional --message-format format: MessageFormat
        }

        /// Run one test under `perf record` and draw where its time went as a flame
        /// graph (SVG), linked from the last run's HTML report.
        cmd flamegraph {
            /// The test binary as the reports name it (`app`, `app::it`), then the test;
            /// or the test alone, in any binary.
            required binary_or_test: String
            /// The test, when the binary came first.
            optional test: String
            optional --manifest-path path: PathBuf
            /// Samples per second (default 499).
            optional --frequency hz: u32
            optional --locked
            optional --frozen
            repeated -F, --features features: String
            optional --all-features
            optional --no-default-features
            optional --target triple: String
            optional --profile profile: String
            repeated -p, --package package: String
            /// The whole workspace (the default; wins over -p, as in cargo).
            optional --workspace
            /// Leave this member out of the whole workspace.
            repeated --exclude package: String
        }

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
            required action: PoolAction
            optional --manifest-path path: PathBuf
        }

        /// Inspect or clear the stage cache.
        cmd cache {
            /// `status` (size, entries, hit rate) or `clean`.
            required action: CacheAction
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

        /// Print a GitHub Actions workflow that runs the pipeline on this workspace with
        /// commands it has: `cargo xtask` when its xtask embeds pipeline-opt, else
        /// `cargo pipeline-opt`, installed from git.
        cmd ci-workflow {
            optional --manifest-path path: PathBuf
            /// Add `--gate GATE` to the optimize step: `required`, `stretch` or a duration
            /// such as `50s` (default: no gate; the targets are reported, not enforced).
            optional --gate gate: Gate
            /// Install PostgreSQL and Redis: `auto` (default: the services the workspace
            /// declares), `all` or `none`.
            optional --services services: Services
            /// The git URL to install cargo-pipeline-opt from, when the workspace has no
            /// xtask that embeds it (default: none; the workflow says where to set it).
            optional --install-from url: String
            /// Run the tests on shard jobs: a number, or `auto` to pick it from the
            /// history's test durations and the per-job overhead (default: 1, the tests
            /// in the one job). See docs/scale-out.md.
            optional --shards shards: ShardCount
            /// With --shards auto: a job's overhead (start, checkout, caches, artifact),
            /// such as `40s` (default: measured from the last `optimize --shards N
            /// --local` run's shards).
            optional --job-overhead duration: String
            /// Compile through sccache with the GitHub Actions cache as the shared
            /// backend (`optimize --compile-cache gha`), so a job whose target
            /// directory missed the cache still reuses compiled libraries.
            optional --compile-cache
        }

        /// Scale-out: run one shard of the tests that `optimize --shards N` archived and
        /// planned (docs/scale-out.md).
        cmd shard {
            /// Run shard K of the plan from the archive beside it, against this checkout,
            /// compiling nothing.
            cmd run {
                optional --manifest-path path: PathBuf
                /// The shard-plan.json that `optimize --shards N` wrote.
                required --plan path: PathBuf
                /// Which shard, 1 to N.
                required --shard k: usize
                /// Where the run record, reports and JUnit go (default: shard-K beside
                /// the plan).
                optional --out dir: PathBuf
            }
            /// Merge the build's artifact directory and the shards' directories into one
            /// run record, report and history line; exit 100 naming any test of the
            /// plan that ran on no shard or on two.
            cmd merge {
                optional --manifest-path path: PathBuf
                /// The artifact directory of `optimize --shards` and each shard's.
                /// Also write the merged run's metrics in Prometheus text format here.
                optional --prometheus path: PathBuf
                repeated dirs: PathBuf
            }
        }

        /// Write an `xtask` crate that runs these commands into the workspace: the crate,
        /// the `cargo xtask` alias in .cargo/config.toml and the workspace membership.
        /// A second run changes nothing; a differing file of yours is never overwritten.
        cmd init-xtask {
            optional --manifest-path path: PathBuf
            /// Depend on pipeline-opt at this directory (default: the directory this
            /// binary was built from).
            optional --path dir: PathBuf
            /// Depend on pipeline-opt from this git repository instead.
            optional --git url: String
        }
    }
}
// generated start
// The following code is generated by `xflags` macro.
// Run `env UPDATE_XFLAGS=1 cargo build` to regenerate.
#[derive(Debug)]
pub struct PipelineOpt {
    pub subcommand: PipelineOptCmd,
}

#[derive(Debug)]
pub enum PipelineOptCmd {
    Plan(Plan),
    Optimize(Optimize),
    Check(Check),
    Flamegraph(Flamegraph),
    BenchCompare(BenchCompare),
    Pool(Pool),
    Cache(Cache),
    History(History),
    Report(Report),
    CiWorkflow(CiWorkflow),
    Shard(Shard),
    InitXtask(InitXtask),
}

#[derive(Debug)]
pub struct Plan {
    pub manifest_path: Option<PathBuf>,
    pub format: Option<PlanFormat>,
    pub strict: bool,
    pub locked: bool,
    pub frozen: bool,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
    pub workspace: bool,
    pub exclude: Vec<String>,
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
    pub shards: Option<usize>,
    pub shards_dir: Option<PathBuf>,
    pub local: bool,
    pub compile_cache: Option<String>,
    pub jobs: Option<usize>,
    pub locked: bool,
    pub frozen: bool,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
    pub workspace: bool,
    pub exclude: Vec<String>,
    pub verbose: bool,
    pub quiet: bool,
    pub color: Option<ColorChoice>,
    pub message_format: Option<MessageFormat>,
}

#[derive(Debug)]
pub struct Check {
    pub manifest_path: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub locked: bool,
    pub frozen: bool,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
    pub workspace: bool,
    pub exclude: Vec<String>,
    pub verbose: bool,
    pub quiet: bool,
    pub color: Option<ColorChoice>,
    pub message_format: Option<MessageFormat>,
}

#[derive(Debug)]
pub struct Flamegraph {
    pub binary_or_test: String,
    pub test: Option<String>,

    pub manifest_path: Option<PathBuf>,
    pub frequency: Option<u32>,
    pub locked: bool,
    pub frozen: bool,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub target: Option<String>,
    pub profile: Option<String>,
    pub package: Vec<String>,
    pub workspace: bool,
    pub exclude: Vec<String>,
}

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
    pub action: PoolAction,

    pub manifest_path: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Cache {
    pub action: CacheAction,

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
pub struct CiWorkflow {
    pub manifest_path: Option<PathBuf>,
    pub gate: Option<Gate>,
    pub services: Option<Services>,
    pub install_from: Option<String>,
    pub shards: Option<ShardCount>,
    pub job_overhead: Option<String>,
    pub compile_cache: bool,
}

#[derive(Debug)]
pub struct Shard {
    pub subcommand: ShardCmd,
}

#[derive(Debug)]
pub enum ShardCmd {
    Run(Run),
    Merge(Merge),
}

#[derive(Debug)]
pub struct Run {
    pub manifest_path: Option<PathBuf>,
    pub plan: PathBuf,
    pub shard: usize,
    pub out: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Merge {
    pub dirs: Vec<PathBuf>,

    pub manifest_path: Option<PathBuf>,
    pub prometheus: Option<PathBuf>,
}

#[derive(Debug)]
pub struct InitXtask {
    pub manifest_path: Option<PathBuf>,
    pub path: Option<PathBuf>,
    pub git: Option<String>,
}

impl PipelineOpt {
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
