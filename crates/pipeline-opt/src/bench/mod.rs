//! `bench-compare`: the working tree ("head") against a git ref ("base"), both built,
//! their criterion benchmarks run in interleaved rounds (A B B A …) and compared with a
//! paired test per benchmark, corrected across the suite, into a gate with exit codes.

pub mod criterion;
pub mod output;
pub mod runner;
pub mod stats;
pub mod worktree;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::exit;
use crate::workspace::Workspace;
use runner::{BenchBinary, Harness, RunSettings};
pub use stats::Verdict;

/// Version of the JSON output; bumped on incompatible changes.
pub const JSON_VERSION: u32 = 1;

/// What to compare and how hard to look.
#[derive(Debug, Clone)]
pub struct BenchCompareOptions {
    pub manifest_path: Option<Utf8PathBuf>,
    /// Branch, tag or commit of the base side.
    pub git_ref: String,
    /// Smallest slowdown that counts, as a fraction (0.05 = 5%).
    pub threshold: f64,
    /// Family-wise error rate across the suite.
    pub alpha: f64,
    /// Only benchmarks whose id contains this string.
    pub filter: Option<String>,
    /// Paired rounds; each runs every benchmark once per side.
    pub rounds: usize,
    pub warm_up: Duration,
    pub measurement: Duration,
    /// Also store head's last round as a criterion baseline of this name.
    pub save_baseline: Option<String>,
    /// Compare against this stored criterion baseline instead of building `git_ref`.
    pub baseline: Option<String>,
    /// Stop on SIGINT/SIGTERM (the command line sets it): the children are stopped and
    /// the comparison returns [`BenchCompareError::Interrupted`].
    pub handle_signals: bool,
}

impl Default for BenchCompareOptions {
    fn default() -> Self {
        BenchCompareOptions {
            manifest_path: None,
            git_ref: "main".into(),
            threshold: 0.05,
            alpha: 0.05,
            filter: None,
            // Chosen from the per-round noise of the quality experiment (docs/bench-compare.md,
            // "Choosing the defaults"): 20 short rounds beat 8 longer ones because each
            // round is an independent draw of the machine's load.
            rounds: 20,
            warm_up: Duration::from_millis(50),
            measurement: Duration::from_millis(200),
            save_baseline: None,
            baseline: None,
            handle_signals: false,
        }
    }
}

/// `5%`, `5` (percent) or `0.05`: the threshold as a fraction.
pub fn parse_threshold(s: &str) -> Result<f64, BenchCompareError> {
    let bad = || BenchCompareError::BadThreshold { value: s.to_string() };
    let (num, percent) = match s.trim().strip_suffix('%') {
        Some(n) => (n, true),
        None => (s.trim(), false),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let fraction = if percent || v >= 1.0 { v / 100.0 } else { v };
    if !(fraction > 0.0 && fraction < 10.0) {
        return Err(bad());
    }
    Ok(fraction)
}

/// `--warm-up` / `--measurement-time`: a humantime duration (`300ms`, `1s`, `1.5s`).
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, BenchCompareError> {
    let bad = || BenchCompareError::BadDuration { flag: flag.to_string(), value: s.to_string() };
    // humantime has no fractions; `1.5s` is spelled out as milliseconds.
    let d = match s.trim().strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        _ => humantime::parse_duration(s.trim()).map_err(|_| bad())?,
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

#[derive(Debug, thiserror::Error)]
pub enum BenchCompareError {
    #[error("cannot load the workspace at {path}: {message}")]
    Workspace { path: Utf8PathBuf, message: String },
    #[error(
        "{dir} is not inside a git repository ({message}); bench-compare needs git to check out the base side"
    )]
    NotAGitRepository { dir: Utf8PathBuf, message: String },
    #[error(
        "git ref `{git_ref}` not found in {repo}: name an existing branch, tag or commit (`git fetch` it first if it lives on a remote)"
    )]
    RefNotFound { git_ref: String, repo: Utf8PathBuf },
    #[error("could not prepare the worktree {dir}: {message}; delete it and run again")]
    Worktree { dir: Utf8PathBuf, message: String },
    #[error(
        "`{git_ref}` has no {path}: the workspace did not exist there; compare against a later ref"
    )]
    NoManifestAtRef { git_ref: String, path: Utf8PathBuf },
    #[error("could not build the {side} side's benchmarks: {message}")]
    Build { side: Side, message: String },
    #[error(
        "no benchmarks found in the {side} side's workspace: add a `[[bench]]` target with `harness = false` and criterion"
    )]
    NoBenchmarks { side: Side },
    #[error("could not run a benchmark: {message}")]
    Run { message: String },
    #[error("invalid --threshold `{value}`: use a percentage such as `5%`")]
    BadThreshold { value: String },
    #[error("invalid {flag} `{value}`: use a positive duration such as `300ms` or `1s`")]
    BadDuration { flag: String, value: String },
    #[error(
        "interrupted by signal {signal}: the benchmark processes were stopped and nothing was compared"
    )]
    Interrupted { signal: i32 },
    #[error("invalid --rounds {rounds}: a paired comparison needs at least 2 rounds")]
    TooFewRounds { rounds: usize },
    #[error(
        "no criterion baseline `{name}` under {dir}: save one first with `--save-baseline {name}`"
    )]
    BaselineNotFound { name: String, dir: Utf8PathBuf },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Base,
    Head,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Base => "base",
            Side::Head => "head",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The bench target did not compile.
    BuildFailed,
    /// The bench binary exited with an error, usually a panic.
    Failed,
    /// A criterion result file could not be read.
    CorruptResult,
    /// A libtest (`#[bench]`) target: criterion's command line does not apply.
    Skipped,
}

/// Something that went wrong on one side; reported, and never hides the other results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub side: Side,
    pub package: String,
    pub target: String,
    pub kind: ProblemKind,
    pub message: String,
}

impl Problem {
    /// Head-side failures and unreadable results make the run an error (exit 1): the
    /// change under review broke a benchmark. A base that fails is only a note.
    pub fn is_error(&self) -> bool {
        match self.kind {
            ProblemKind::Skipped => false,
            ProblemKind::CorruptResult => true,
            ProblemKind::BuildFailed | ProblemKind::Failed => self.side == Side::Head,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideInfo {
    /// The git ref, `working tree`, or `baseline NAME`.
    pub label: String,
    pub commit: Option<String>,
    pub workspace: Utf8PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkResult {
    pub package: String,
    pub target: String,
    pub id: String,
    pub verdict: Verdict,
    /// Median over rounds of each round's value (ns/iteration), per side.
    pub base_nanos: Option<f64>,
    pub head_nanos: Option<f64>,
    /// Geometric mean of head/base over the paired rounds.
    pub ratio: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    pub noise_floor: Option<f64>,
    /// Rounds with a value on both sides.
    pub paired_rounds: usize,
    /// The raw per-round values (ns/iteration), `null` where a round has none.
    pub base_rounds: Vec<Option<f64>>,
    pub head_rounds: Vec<Option<f64>>,
}

/// The whole result: what the terminal table, markdown and JSON are rendered from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub version: u32,
    pub base: SideInfo,
    pub head: SideInfo,
    pub threshold: f64,
    pub alpha: f64,
    pub rounds: usize,
    pub method: String,
    pub benchmarks: Vec<BenchmarkResult>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
    /// Criterion's warm-up and measurement time per benchmark and round.
    #[serde(default)]
    pub warm_up_secs: f64,
    #[serde(default)]
    pub measurement_secs: f64,
    pub elapsed_secs: f64,
    pub build_secs: f64,
}

impl BenchCompareError {
    /// [`exit::INTERRUPTED`] for an interrupt, [`exit::ERROR`] otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchCompareError::Interrupted { .. } => exit::INTERRUPTED,
            _ => exit::ERROR,
        }
    }
}

impl From<runner::Stop> for BenchCompareError {
    fn from(stop: runner::Stop) -> Self {
        match stop {
            runner::Stop::Interrupted(signal) => BenchCompareError::Interrupted { signal },
            runner::Stop::Failed(message) => BenchCompareError::Run { message },
        }
    }
}

impl Comparison {
    /// 1 when a head-side benchmark broke or a result is unreadable, else 102 when
    /// anything regressed, else 103 when anything was inconclusive, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.problems.iter().any(Problem::is_error) {
            exit::ERROR
        } else if self.count(Verdict::Regressed) > 0 {
            exit::REGRESSION
        } else if self.count(Verdict::Inconclusive) > 0 {
            exit::INCONCLUSIVE
        } else {
            exit::OK
        }
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.benchmarks.iter().filter(|b| b.verdict == verdict).count()
    }
}

/// One side ready to run: its binaries and where its results go.
struct PreparedSide {
    side: Side,
    binaries: Vec<BenchBinary>,
    homes: Utf8PathBuf,
}

type Key = (String, String, String);

/// Runs the whole comparison. `progress` receives one line per step (building, each
/// round) for the terminal.
pub fn bench_compare(
    options: &BenchCompareOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Comparison, BenchCompareError> {
    if options.rounds < 2 {
        return Err(BenchCompareError::TooFewRounds { rounds: options.rounds });
    }
    let started = Instant::now();
    let sup = runner::Supervisor::new(options.handle_signals);
    let head_metadata = load_metadata(options.manifest_path.as_deref())?;
    let workspace = Workspace::from_metadata(&head_metadata);
    // An invalid config is reported by the commands that use it; here only the state
    // dir matters, so fall back to the default rather than refuse to compare.
    let config = workspace.config().unwrap_or_default();
    let state_dir = workspace.state_dir(&config);
    let run_dir =
        state_dir.bench_compare(&format!("{:08x}", worktree::fnv(workspace.root.as_str()) as u32));

    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let head_targets = runner::bench_targets(&head_metadata);
    if head_targets.is_empty() {
        return Err(BenchCompareError::NoBenchmarks { side: Side::Head });
    }

    // The base side: a worktree at REF, or a stored criterion baseline.
    let mut base_checkout = None;
    let base_info = if let Some(name) = &options.baseline {
        SideInfo {
            label: format!("baseline {name}"),
            commit: None,
            workspace: workspace.root.clone(),
        }
    } else {
        let repo = worktree::repo_root(&workspace.root)?;
        let commit = worktree::resolve_ref(&repo, &options.git_ref)?;
        progress(&format!(
            "checking out {} ({}) for the base side",
            options.git_ref,
            short(&commit)
        ));
        let checkout = worktree::checkout(
            &repo,
            &workspace.manifest_path,
            &state_dir,
            &options.git_ref,
            &commit,
            &mut notes,
        )?;
        let info = SideInfo {
            label: options.git_ref.clone(),
            commit: Some(commit),
            workspace: checkout.manifest.parent().unwrap_or(&checkout.dir).to_owned(),
        };
        base_checkout = Some(checkout);
        info
    };
    let head_commit = worktree::repo_root(&workspace.root)
        .ok()
        .and_then(|repo| worktree::resolve_ref(&repo, "HEAD").ok());
    let head_info = SideInfo {
        label: "working tree".into(),
        commit: head_commit,
        workspace: workspace.root.clone(),
    };

    let build_started = Instant::now();
    progress("building the head side's benchmarks");
    sup.check()?;
    let head_build =
        runner::build(&sup, &workspace.root, &workspace.manifest_path, None, &head_targets)
            .map_err(|stop| build_error(Side::Head, stop))?;
    let mut sides = vec![prepare(Side::Head, head_build, &run_dir, &mut problems)];
    if let Some(checkout) = &base_checkout {
        worktree::seed_target_dir(
            &workspace.target_dir,
            &checkout.target_dir,
            &checkout.dir,
            &mut notes,
        );
        progress("building the base side's benchmarks");
        let base_dir = checkout.manifest.parent().unwrap_or(&checkout.dir).to_owned();
        match load_metadata_at(&checkout.manifest, &base_dir, Some(&checkout.target_dir)) {
            Ok(base_metadata) => {
                let targets = runner::bench_targets(&base_metadata);
                let build = runner::build(
                    &sup,
                    &base_dir,
                    &checkout.manifest,
                    Some(&checkout.target_dir),
                    &targets,
                )
                .map_err(|stop| build_error(Side::Base, stop))?;
                sides.insert(0, prepare(Side::Base, build, &run_dir, &mut problems));
            }
            Err(e) => notes.push(format!(
                "the base side could not be loaded ({e}); every benchmark counts as added"
            )),
        }
    }
    let build_secs = build_started.elapsed().as_secs_f64();

    // Rounds: base/head, then head/base, … so that drift in the machine's speed over the
    // run falls on both sides equally.
    let settings = RunSettings { warm_up: options.warm_up, measurement: options.measurement };
    let rounds =
        if options.baseline.is_some() { options.rounds.div_ceil(2).max(2) } else { options.rounds };
    let mut values: BTreeMap<(Side, Key), Vec<Option<f64>>> = BTreeMap::new();
    let mut failed: Vec<(Side, String, String)> = Vec::new();
    for round in 0..rounds {
        sup.check()?;
        progress(&format!("round {}/{rounds}", round + 1));
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &i in &order {
            let side = &sides[i];
            for bin in &side.binaries {
                let tag = (side.side, bin.package.clone(), bin.target.clone());
                if failed.contains(&tag) {
                    continue;
                }
                let home = side.homes.join(format!("{}-{}", bin.package, bin.target));
                let outcome = runner::run(&sup, bin, settings, options.filter.as_deref(), &home)?;
                for m in outcome.measurements {
                    if options.filter.as_ref().is_some_and(|f| !m.id.contains(f.as_str())) {
                        continue;
                    }
                    let key = (bin.package.clone(), bin.target.clone(), m.id);
                    let slot = values.entry((side.side, key)).or_default();
                    slot.resize(round, None);
                    slot.push(Some(m.nanos));
                }
                for c in outcome.corrupt {
                    push_problem(
                        &mut problems,
                        side.side,
                        bin,
                        ProblemKind::CorruptResult,
                        c.to_string(),
                    );
                }
                if let Some(message) = outcome.failure {
                    push_problem(&mut problems, side.side, bin, ProblemKind::Failed, message);
                    failed.push(tag);
                }
            }
        }
    }

    let head_target_dir = workspace.target_dir.clone();
    if let Some(name) = &options.baseline {
        load_saved_baseline(name, &head_target_dir, &sides, &mut values, &mut problems)?;
    }
    if let Some(name) = &options.save_baseline {
        save_baseline(name, &sides, &head_target_dir, &mut notes);
    }

    let benchmarks = assess(&values, options, rounds);
    let method = if options.baseline.is_some() {
        "one-sample t-test of ln(head/stored baseline) over rounds (unpaired: drift is not controlled)"
    } else {
        "paired t-test of ln(head/base) over interleaved rounds (A B B A), Holm correction across the suite, Bonferroni simultaneous intervals"
    };
    Ok(Comparison {
        version: JSON_VERSION,
        base: base_info,
        head: head_info,
        threshold: options.threshold,
        alpha: options.alpha,
        rounds,
        method: method.into(),
        benchmarks,
        problems,
        notes,
        warm_up_secs: options.warm_up.as_secs_f64(),
        measurement_secs: options.measurement.as_secs_f64(),
        elapsed_secs: started.elapsed().as_secs_f64(),
        build_secs,
    })
}

fn build_error(side: Side, stop: runner::Stop) -> BenchCompareError {
    match stop {
        runner::Stop::Interrupted(signal) => BenchCompareError::Interrupted { signal },
        runner::Stop::Failed(message) => BenchCompareError::Build { side, message },
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

fn push_problem(
    problems: &mut Vec<Problem>,
    side: Side,
    bin: &BenchBinary,
    kind: ProblemKind,
    message: String,
) {
    problems.push(Problem {
        side,
        package: bin.package.clone(),
        target: bin.target.clone(),
        kind,
        message,
    });
}

fn prepare(
    side: Side,
    build: runner::BuildOutcome,
    run_dir: &Utf8Path,
    problems: &mut Vec<Problem>,
) -> PreparedSide {
    for f in build.failures {
        problems.push(Problem {
            side,
            package: f.package,
            target: f.target,
            kind: ProblemKind::BuildFailed,
            message: f.message,
        });
    }
    let mut binaries = Vec::new();
    for bin in build.binaries {
        if bin.harness == Harness::Libtest {
            push_problem(
                problems,
                side,
                &bin,
                ProblemKind::Skipped,
                "a libtest `#[bench]` target: criterion's command line does not apply; port it to criterion with `harness = false`".into(),
            );
        } else {
            binaries.push(bin);
        }
    }
    PreparedSide { side, binaries, homes: run_dir.join(side.to_string()) }
}

/// Turns the per-round values into verdicts, the suite corrected together.
fn assess(
    values: &BTreeMap<(Side, Key), Vec<Option<f64>>>,
    options: &BenchCompareOptions,
    rounds: usize,
) -> Vec<BenchmarkResult> {
    let mut keys: Vec<&Key> = values.keys().map(|(_, k)| k).collect();
    keys.sort();
    keys.dedup();
    let mut results = Vec::new();
    let mut tested = Vec::new();
    for key in keys {
        let get = |side| values.get(&(side, key.clone()));
        let base = get(Side::Base);
        let head = get(Side::Head);
        let mid = |v: Option<&Vec<Option<f64>>>| {
            v.and_then(|v| stats::median(&v.iter().flatten().copied().collect::<Vec<_>>()))
        };
        let mut result = BenchmarkResult {
            package: key.0.clone(),
            target: key.1.clone(),
            id: key.2.clone(),
            verdict: Verdict::Inconclusive,
            base_nanos: mid(base),
            head_nanos: mid(head),
            ratio: None,
            ci_low: None,
            ci_high: None,
            p_value: None,
            p_adjusted: None,
            noise_floor: None,
            paired_rounds: 0,
            base_rounds: base.cloned().unwrap_or_default(),
            head_rounds: head.cloned().unwrap_or_default(),
        };
        match (base, head) {
            (None, Some(_)) => result.verdict = Verdict::Added,
            (Some(_), None) => result.verdict = Verdict::Removed,
            (Some(b), Some(h)) => {
                let test = if options.baseline.is_some() {
                    // The stored baseline is one value; every head round is compared to it.
                    let b = b.iter().flatten().next().copied().unwrap_or(f64::NAN);
                    let logs: Vec<f64> = h
                        .iter()
                        .flatten()
                        .map(|h| (h / b).ln())
                        .filter(|x| x.is_finite())
                        .collect();
                    stats::one_sample_test(&logs)
                } else {
                    let pairs: (Vec<f64>, Vec<f64>) = (0..rounds)
                        .filter_map(|r| Some((b.get(r).copied()??, h.get(r).copied()??)))
                        .unzip();
                    stats::paired_test(&pairs.0, &pairs.1)
                };
                if let Some(t) = test {
                    result.paired_rounds = t.rounds;
                    tested.push((results.len(), t));
                }
            }
            (None, None) => continue,
        }
        results.push(result);
    }
    let assessments = stats::assess_suite(
        &tested.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        options.threshold,
        options.alpha,
    );
    for ((i, _), a) in tested.iter().zip(assessments) {
        let r = &mut results[*i];
        r.verdict = a.verdict;
        r.ratio = Some(a.ratio);
        r.ci_low = Some(a.ci_low);
        r.ci_high = Some(a.ci_high);
        r.p_value = Some(a.p_value);
        r.p_adjusted = Some(a.p_adjusted);
        r.noise_floor = Some(a.noise_floor);
    }
    results
}

/// `--baseline NAME`: the base values come from `<target>/criterion/**/NAME/`.
fn load_saved_baseline(
    name: &str,
    head_target_dir: &Utf8Path,
    sides: &[PreparedSide],
    values: &mut BTreeMap<(Side, Key), Vec<Option<f64>>>,
    problems: &mut Vec<Problem>,
) -> Result<(), BenchCompareError> {
    let dir = criterion_dir(head_target_dir);
    let (found, corrupt) = criterion::read_results(&dir, name);
    if found.is_empty() && corrupt.is_empty() {
        return Err(BenchCompareError::BaselineNotFound { name: name.into(), dir });
    }
    for c in corrupt {
        problems.push(Problem {
            side: Side::Base,
            package: String::new(),
            target: String::new(),
            kind: ProblemKind::CorruptResult,
            message: c.to_string(),
        });
    }
    // The saved files do not say which bench target wrote them; the head's ids do.
    let head_keys: Vec<Key> =
        values.keys().filter(|(s, _)| *s == Side::Head).map(|(_, k)| k.clone()).collect();
    let _ = sides;
    for m in found {
        let key = head_keys.iter().find(|k| k.2 == m.id).cloned().unwrap_or((
            String::new(),
            String::new(),
            m.id.clone(),
        ));
        values.insert((Side::Base, key), vec![Some(m.nanos)]);
    }
    Ok(())
}

/// `--save-baseline NAME`: head's last round, copied where `cargo bench -- --baseline
/// NAME` looks for it, so the criterion workflow keeps working.
fn save_baseline(
    name: &str,
    sides: &[PreparedSide],
    head_target_dir: &Utf8Path,
    notes: &mut Vec<String>,
) {
    let Some(head) = sides.iter().find(|s| s.side == Side::Head) else { return };
    let dest_root = criterion_dir(head_target_dir);
    let mut saved = 0;
    for bin in &head.binaries {
        let home = head.homes.join(format!("{}-{}", bin.package, bin.target));
        let (found, _) = criterion::read_results(&home, "new");
        for m in found {
            let Some(src) = m.dir else { continue };
            let Some(rel) = src.parent().and_then(|p| p.strip_prefix(&home).ok()) else { continue };
            let dest = dest_root.join(rel).join(name);
            let _ = std::fs::remove_dir_all(&dest);
            if std::fs::create_dir_all(&dest).is_ok() {
                for file in ["benchmark.json", "estimates.json", "sample.json", "tukey.json"] {
                    let _ = std::fs::copy(src.join(file), dest.join(file));
                }
                saved += 1;
            }
        }
    }
    notes
        .push(format!("saved {saved} benchmarks as criterion baseline `{name}` under {dest_root}"));
}

fn criterion_dir(target_dir: &Utf8Path) -> Utf8PathBuf {
    match std::env::var("CRITERION_HOME") {
        Ok(home) if !home.is_empty() => Utf8PathBuf::from(home),
        _ => target_dir.join("criterion"),
    }
}

fn load_metadata(
    manifest: Option<&Utf8Path>,
) -> Result<cargo_metadata::Metadata, BenchCompareError> {
    let cwd = std::env::current_dir().ok().and_then(|d| Utf8PathBuf::from_path_buf(d).ok());
    let manifest = match manifest {
        Some(m) => {
            if !m.is_file() {
                return Err(BenchCompareError::Workspace {
                    path: m.to_owned(),
                    message: "no such file; pass the workspace's Cargo.toml to --manifest-path"
                        .into(),
                });
            }
            m.canonicalize_utf8().unwrap_or_else(|_| m.to_owned())
        }
        None => cwd.clone().unwrap_or_default().join("Cargo.toml"),
    };
    // Cargo reads `.cargo/config.toml` from the current directory, not the manifest's:
    // run it where the workspace is so the workspace's own config applies.
    let dir = manifest.parent().map(Utf8Path::to_owned).or(cwd).unwrap_or_default();
    load_metadata_at(&manifest, &dir, None)
}

fn load_metadata_at(
    manifest: &Utf8Path,
    dir: &Utf8Path,
    target_dir: Option<&Utf8Path>,
) -> Result<cargo_metadata::Metadata, BenchCompareError> {
    let mut cmd = cargo_metadata::MetadataCommand::new();
    cmd.manifest_path(manifest).current_dir(dir).no_deps();
    for var in crate::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    if let Some(t) = target_dir {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    cmd.exec().map_err(|e| BenchCompareError::Workspace {
        path: manifest.to_owned(),
        message: match e {
            cargo_metadata::Error::CargoMetadata { stderr } => {
                stderr.lines().find(|l| l.starts_with("error")).unwrap_or(stderr.trim()).to_string()
            }
            other => other.to_string(),
        },
    })
}
