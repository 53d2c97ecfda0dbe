//! Never do the same work twice. [`DependencyCache`] fetches once per `Cargo.lock`;
//! [`StageCache`] fingerprints each stage's inputs and, given a plan, says which stages
//! an earlier success already proved (with the run that proved them), narrows the test
//! and doctest stages to the packages that must rerun, and explains every miss.

pub mod deps;
pub mod fingerprint;
pub mod maintain;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

pub use deps::{DependencyCache, FetchError, FetchOutcome};
pub use fingerprint::{Explanation, Fingerprint, Fingerprinter};
pub use store::{CacheError, Store};

use crate::config::Config;
use crate::plan::{Plan, StageCommand, StageKind};
use crate::state::StateDir;
use crate::toolchain::Toolchain;
use crate::workspace::{PackageIdx, Workspace};

/// Whether a stage runs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// An earlier success proved exactly these inputs: skip, report as cached.
    Cached { from_run: String },
    /// Run it; the explanations say why the cache could not serve it.
    Run { explanations: Vec<Explanation> },
}

impl Decision {
    pub fn is_cached(&self) -> bool {
        matches!(self, Decision::Cached { .. })
    }

    /// One line for `--explain` and reports.
    pub fn summary(&self) -> String {
        match self {
            Decision::Cached { from_run } => format!("cached from run {from_run}"),
            Decision::Run { explanations } => fingerprint::summarize(explanations),
        }
    }
}

/// A plan with the cache's verdict on every stage.
#[derive(Debug, Clone)]
pub struct CachedPlan {
    /// The plan to run: every stage still present (cached ones are to be reported, not
    /// run), the test and doctest stages narrowed to the packages that must rerun.
    pub plan: Plan,
    /// Per stage id.
    pub decisions: BTreeMap<String, Decision>,
    /// Per stage whose results are kept per package (test, doctest), per package.
    pub packages: BTreeMap<String, BTreeMap<String, Decision>>,
    /// Problems met (corrupt cache files): each was treated as a miss.
    pub warnings: Vec<String>,
    /// The fingerprints stages run with, and the packages they cover, to record on
    /// success.
    pending: BTreeMap<String, Pending>,
    /// Per (stage, package).
    pending_packages: BTreeMap<(String, String), Pending>,
    target_dirs: Vec<Utf8PathBuf>,
    planned_at: SystemTime,
    /// The config the fingerprints were taken with, to take them again after a stage.
    config: Config,
    /// The plan before the test stage was narrowed, for [`CachedPlan::run_everything`].
    unnarrowed: Plan,
    /// Every stage and package runs (`--no-cache`, `--verify-cache`).
    forced: bool,
}

/// What a stage (or one package's tests) was planned to run on.
#[derive(Debug, Clone)]
struct Pending {
    kind: StageKind,
    packages: Vec<PackageIdx>,
    closure: BTreeSet<PackageIdx>,
    command: StageCommand,
    fingerprint: Fingerprint,
}

impl CachedPlan {
    pub fn decision(&self, stage: &str) -> Option<&Decision> {
        self.decisions.get(stage)
    }

    /// The run a stage is served from, when it is cached.
    pub fn cached_from(&self, stage: &str) -> Option<&str> {
        match self.decisions.get(stage) {
            Some(Decision::Cached { from_run }) => Some(from_run),
            _ => None,
        }
    }

    /// Packages whose tests run in this plan.
    pub fn tests_to_run(&self) -> Vec<String> {
        self.packages_to_run(StageKind::Test)
    }

    /// Packages whose part of the stage of `kind` (test, doctest) runs in this plan.
    pub fn packages_to_run(&self, kind: StageKind) -> Vec<String> {
        let Some(stage) = self.plan.stages.iter().find(|s| s.kind == kind) else {
            return Vec::new();
        };
        self.of_stage(&stage.id).filter(|(_, d)| !d.is_cached()).map(|(p, _)| p.clone()).collect()
    }

    /// The per-package decisions of `stage` (none for a stage decided as a whole).
    pub fn of_stage(&self, stage: &str) -> impl Iterator<Item = (&String, &Decision)> {
        self.packages.get(stage).into_iter().flatten()
    }

    /// Runs every stage and every package's tests, cached or not (`--no-cache`,
    /// `--verify-cache`); the decisions stay, to report and to compare with, and every
    /// success is still recorded.
    pub fn run_everything(&mut self) {
        self.plan = self.unnarrowed.clone();
        self.forced = true;
    }

    /// `--explain`: one line per stage.
    pub fn render_explain(&self) -> String {
        let mut out = String::new();
        for s in &self.plan.stages {
            let line = self.decisions.get(&s.id).map_or_else(String::new, Decision::summary);
            let verb = if self.cached_from(&s.id).is_some() { "skip" } else { "run " };
            out.push_str(&format!("{verb} {:<12} {line}\n", s.id));
            for (p, d) in self.of_stage(&s.id) {
                out.push_str(&format!("       {} {p}: {}\n", s.id, d.summary()));
            }
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// The stage cache of one workspace; holds the cache lock while it lives.
#[derive(Debug)]
pub struct StageCache {
    pub store: Store,
    state_dir: StateDir,
}

impl StageCache {
    /// Opens `<state_dir>/cache`, waiting (after calling `on_wait`) while another
    /// invocation holds the lock.
    pub fn open(
        state_dir: &StateDir,
        on_wait: impl FnOnce(&Utf8Path),
    ) -> Result<StageCache, CacheError> {
        Ok(StageCache { store: Store::open(state_dir, on_wait)?, state_dir: state_dir.clone() })
    }

    /// Decides which stages of `plan` the cache serves. Pure apart from reading the
    /// working tree and the cache, and saving the file-hash stat cache and hit counts.
    pub fn adjust_plan(
        &mut self,
        mut plan: Plan,
        workspace: &Workspace,
        toolchain: &Toolchain,
        config: &Config,
        run_id: &str,
    ) -> Result<CachedPlan, CacheError> {
        let planned_at = SystemTime::now();
        let mut target_dirs: BTreeSet<Utf8PathBuf> = BTreeSet::new();
        target_dirs.insert(workspace.target_dir.clone());
        for s in &plan.stages {
            target_dirs.extend(s.build_dir.iter().cloned());
            if let Some(d) = s.command.env.get("CARGO_TARGET_DIR") {
                target_dirs.insert(d.into());
            }
        }
        let target_dirs: Vec<Utf8PathBuf> = target_dirs.into_iter().collect();
        let hasher = self.store.load_hasher();
        let mut fp = Fingerprinter::new(workspace, toolchain, config, &target_dirs, hasher);
        let target_dirs = target_dirs.to_vec();
        let deps = DependencyCache::open(&self.state_dir);

        let mut decisions = BTreeMap::new();
        let mut per_package = BTreeMap::new();
        let mut pending = BTreeMap::new();
        let mut pending_packages = BTreeMap::new();
        let unnarrowed = plan.clone();
        for stage in &mut plan.stages {
            match stage.kind {
                StageKind::Services | StageKind::Custom => {
                    let reason = if stage.kind == StageKind::Services {
                        "services are started fresh for every run"
                    } else {
                        "custom commands may have effects the cache cannot see"
                    };
                    decisions.insert(
                        stage.id.clone(),
                        Decision::Run {
                            explanations: vec![Explanation::NotCacheable { reason: reason.into() }],
                        },
                    );
                }
                StageKind::Fetch => {
                    let decision = match deps.last_run(workspace, toolchain) {
                        Some(run) => Decision::Cached { from_run: run },
                        None => Decision::Run { explanations: vec![Explanation::NotFetched] },
                    };
                    decisions.insert(stage.id.clone(), decision);
                }
                StageKind::Test | StageKind::Doctest => {
                    let mut packages = stage.packages(workspace);
                    if stage.kind == StageKind::Doctest {
                        // A package without a library's doctests has nothing to prove.
                        packages.retain(|&p| workspace.packages[p].has_doctests());
                    }
                    let mut decided = BTreeMap::new();
                    let mut proven = Vec::new();
                    let mut rerun = Vec::new();
                    let mut newest: Option<(u64, String)> = None;
                    let mut why: Vec<Explanation> = Vec::new();
                    for &p in &packages {
                        let name = workspace.packages[p].name.clone();
                        let f = fp.stage_fingerprint(stage.kind, &[p], &stage.command);
                        let (d, recorded_at) =
                            decide(self.store.test_records(&stage.id, &name), &f);
                        if let Some(at) = recorded_at
                            && let Decision::Cached { from_run } = &d
                            && newest.as_ref().is_none_or(|(t, _)| at > *t)
                        {
                            newest = Some((at, from_run.clone()));
                        }
                        match &d {
                            Decision::Run { explanations } => {
                                rerun.push(name.clone());
                                for e in explanations {
                                    if !why.contains(e) {
                                        why.push(e.clone());
                                    }
                                }
                            }
                            Decision::Cached { from_run } => {
                                if let Some(lib) = workspace.packages[p].lib_crate_name() {
                                    proven.push((lib, from_run.clone()));
                                }
                            }
                        }
                        let pending = Pending {
                            kind: stage.kind,
                            packages: vec![p],
                            closure: fp.closure(&[p], true),
                            command: stage.command.clone(),
                            fingerprint: f,
                        };
                        pending_packages.insert((stage.id.clone(), name.clone()), pending);
                        decided.insert(name, d);
                    }
                    let decision = if rerun.is_empty() && !packages.is_empty() {
                        Decision::Cached { from_run: newest.map(|(_, r)| r).unwrap_or_default() }
                    } else {
                        if rerun.len() < packages.len() {
                            narrow(stage, &rerun, &proven, &mut decided);
                        }
                        Decision::Run { explanations: why }
                    };
                    decisions.insert(stage.id.clone(), decision);
                    per_package.insert(stage.id.clone(), decided);
                }
                _ => {
                    let packages = stage.packages(workspace);
                    let f = fp.stage_fingerprint(stage.kind, &packages, &stage.command);
                    let (d, _) = decide(self.store.stage_records(&stage.id), &f);
                    decisions.insert(stage.id.clone(), d);
                    let closure = fp.closure(&packages, true);
                    let command = stage.command.clone();
                    let p =
                        Pending { kind: stage.kind, packages, closure, command, fingerprint: f };
                    pending.insert(stage.id.clone(), p);
                }
            }
        }
        // Both are auxiliary: failing to keep them costs time, never correctness, so
        // they never stop a run.
        if let Err(e) = self.store.save_hasher(&fp.into_hasher()) {
            self.store.warnings.push(format!("{e}; every file is hashed again next time"));
        }
        let hits = decisions.values().filter(|d| d.is_cached()).count();
        if let Err(e) = self.store.record_hits(run_id, hits, decisions.len() - hits) {
            self.store.warnings.push(e.to_string());
        }
        Ok(CachedPlan {
            plan,
            decisions,
            packages: per_package,
            warnings: std::mem::take(&mut self.store.warnings),
            pending,
            pending_packages,
            target_dirs,
            planned_at,
            config: config.clone(),
            unnarrowed,
            forced: false,
        })
    }

    /// Records that `stage` succeeded in `run_id` with the inputs it was planned with,
    /// with the JUnit XML of its tests (`junit`, by package for the test stage, by stage
    /// id otherwise) to replay when the cache serves it. Call it only for a stage that
    /// ran and succeeded, after it finished.
    ///
    /// The inputs are fingerprinted again first: when they moved while the stage ran
    /// (an edit during the run), nobody knows which content the stage saw, so nothing
    /// is recorded and the returned note says so; the next run runs the stage again.
    pub fn record_success(
        &self,
        cached: &CachedPlan,
        stage: &str,
        run_id: &str,
        workspace: &Workspace,
        toolchain: &Toolchain,
        junit: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, CacheError> {
        let Some(s) = cached.plan.stage(stage) else { return Ok(Vec::new()) };
        let todo: Vec<(&str, &Pending)> = match s.kind {
            StageKind::Fetch => {
                DependencyCache::open(&self.state_dir).record_fetched_in(
                    workspace,
                    toolchain,
                    Some(run_id),
                )?;
                return Ok(Vec::new());
            }
            StageKind::Test | StageKind::Doctest => cached
                .pending_packages
                .range((stage.to_string(), String::new())..)
                .take_while(|((s, _), _)| s == stage)
                .filter(|((_, package), _)| {
                    cached.forced
                        || !cached
                            .packages
                            .get(stage)
                            .and_then(|d| d.get(package))
                            .is_some_and(Decision::is_cached)
                })
                .map(|((_, package), p)| (package.as_str(), p))
                .collect(),
            _ => cached.pending.get(stage).map(|p| (stage, p)).into_iter().collect(),
        };
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let hasher = self.store.peek_hasher();
        let mut fp =
            Fingerprinter::new(workspace, toolchain, &cached.config, &cached.target_dirs, hasher);
        let mut notes = Vec::new();
        for (name, p) in todo {
            let now = fp.stage_fingerprint(p.kind, &p.packages, &p.command);
            let moved = moved_inputs(&p.fingerprint, &now, &workspace.root, cached.planned_at);
            if !moved.is_empty() {
                let what = if s.kind == StageKind::Test {
                    format!("the tests of `{name}`")
                } else if s.kind == StageKind::Doctest {
                    format!("the doctests of `{name}`")
                } else {
                    format!("stage `{name}`")
                };
                notes.push(format!(
                    "{what} not recorded: inputs changed while it ran ({}); the next run runs it again",
                    moved.join(", ")
                ));
                continue;
            }
            let mut f = p.fingerprint.clone();
            cached.augment(&mut f, workspace, &p.closure, &p.command);
            let package = if matches!(s.kind, StageKind::Test | StageKind::Doctest) {
                self.store.record_test(stage, name, run_id, &f)?;
                Some(name)
            } else {
                self.store.record_stage(name, run_id, &f)?;
                None
            };
            if let Some(xml) = junit.get(name) {
                self.store.record_junit(stage, package, run_id, xml)?;
            }
        }
        Ok(notes)
    }

    /// The JUnit XML recorded with the successes this plan is served from, in plan
    /// order: each cached stage's, and the cached packages' of the test and doctest
    /// stages. What was recorded without a JUnit file (before the tool kept them) has
    /// none.
    pub fn replayed_junit(&self, cached: &CachedPlan) -> Vec<String> {
        if cached.forced {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in &cached.plan.stages {
            if let Some(decided) = cached.packages.get(&s.id) {
                for (package, d) in decided {
                    if let Decision::Cached { from_run } = d {
                        out.extend(self.store.junit(&s.id, Some(package), from_run));
                    }
                }
            } else if let Some(from_run) = cached.cached_from(&s.id) {
                out.extend(self.store.junit(&s.id, None, from_run));
            }
        }
        out
    }
}

/// Runs only `rerun`'s part of a test or doctest stage. A doctest stage keeps its
/// selection (cargo unifies features over it) and leaves the proven crates' doctests to
/// the rustdoc shim; without the shim every package's doctests run again, and the
/// decisions say so.
fn narrow(
    stage: &mut crate::plan::Stage,
    rerun: &[String],
    proven: &[(String, String)],
    decided: &mut BTreeMap<String, Decision>,
) {
    if stage.kind != StageKind::Doctest {
        stage.narrow_to(rerun);
        return;
    }
    if !stage.skip_proven_doctests(proven) {
        for d in decided.values_mut().filter(|d| d.is_cached()) {
            *d = Decision::Run {
                explanations: vec![Explanation::NotCacheable {
                    reason: "no program to run as rustdoc to leave proven doctests out".into(),
                }],
            };
        }
    }
}

/// The inputs of `planned` that differ now (`now` is the same stage fingerprinted
/// again). A file only `now` has is a move unless it is older than the plan: then a
/// build just revealed it in dep-info and [`fingerprint::augment_after_success`] adds
/// it; a variable only `now` has was revealed the same way (our environment is fixed).
fn moved_inputs(
    planned: &Fingerprint,
    now: &Fingerprint,
    root: &Utf8Path,
    planned_at: SystemTime,
) -> Vec<String> {
    let name = |k: &str| k.strip_prefix("file:").unwrap_or(k).to_string();
    let mut moved: Vec<String> = planned
        .inputs
        .iter()
        .filter(|(k, v)| now.inputs.get(*k) != Some(*v))
        .map(|(k, _)| name(k))
        .collect();
    for k in now.inputs.keys().filter(|k| !planned.inputs.contains_key(*k)) {
        let Some(path) = k.strip_prefix("file:") else { continue };
        let older = std::fs::metadata(root.join(path))
            .and_then(|m| m.modified())
            .is_ok_and(|m| m + fingerprint::RACY_WINDOW < planned_at);
        if !older {
            moved.push(name(k));
        }
    }
    moved
}

impl CachedPlan {
    fn augment(
        &self,
        f: &mut Fingerprint,
        workspace: &Workspace,
        closure: &BTreeSet<PackageIdx>,
        command: &StageCommand,
    ) {
        fingerprint::augment_after_success(
            f,
            workspace,
            closure,
            &self.target_dirs,
            command,
            self.planned_at,
        );
    }
}

/// Cached when any recent success ran with exactly `f` (with when it was recorded);
/// otherwise the differences to the most comparable success: the newest one that ran
/// the same command, else the newest.
fn decide(
    records: Result<Vec<store::SuccessRecord>, String>,
    f: &Fingerprint,
) -> (Decision, Option<u64>) {
    let records = match records {
        Ok(r) => r,
        Err(message) => {
            return (
                Decision::Run { explanations: vec![Explanation::UnreadableEntry { message }] },
                None,
            );
        }
    };
    if let Some(r) = records.iter().find(|r| &r.fingerprint == f) {
        return (Decision::Cached { from_run: r.run_id.clone() }, Some(r.recorded_at));
    }
    let same_command =
        records.iter().find(|r| r.fingerprint.inputs.get("command") == f.inputs.get("command"));
    match same_command.or(records.first()) {
        Some(r) => (Decision::Run { explanations: f.explain_against(&r.fingerprint) }, None),
        None => (Decision::Run { explanations: vec![Explanation::NoEarlierSuccess] }, None),
    }
}
