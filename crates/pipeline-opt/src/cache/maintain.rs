//! Looking after the cache on disk: `cache status` (size, entries, hit rate of recent
//! runs), `cache clean` (all, or entries older than an age) and the disk budget, which
//! covers the cache and the extra target directories the plan creates under the state
//! directory (`bench-target`, `clippy-target`, `doc-target`). Only what the tool
//! created and marked as its own ([`OWNED_MARKER`]) is ever removed, never by name.

use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use super::store::{CacheError, RunHits, Store, dir_size, human_bytes};
use crate::state::StateDir;

#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    pub cache_dir: Utf8PathBuf,
    pub cache_bytes: u64,
    /// Stage and per-package test records.
    pub entries: usize,
    /// Extra target directories of the plan, with their sizes.
    pub target_dirs: Vec<(Utf8PathBuf, u64)>,
    pub recent_runs: Vec<RunHits>,
    /// Cached stages over all stages of the recent runs.
    pub hit_rate: Option<f64>,
    pub budget: Option<u64>,
}

impl CacheStatus {
    pub fn total_bytes(&self) -> u64 {
        self.cache_bytes + self.target_dirs.iter().map(|(_, b)| b).sum::<u64>()
    }

    pub fn over_budget(&self) -> bool {
        self.budget.is_some_and(|b| self.total_bytes() > b)
    }

    pub fn render_text(&self) -> String {
        let mut out = format!("cache {}\n", self.cache_dir);
        out.push_str(&format!(
            "  size:      {} ({} entries)\n",
            human_bytes(self.cache_bytes),
            self.entries
        ));
        for (dir, bytes) in &self.target_dirs {
            out.push_str(&format!("  target:    {dir} {}\n", human_bytes(*bytes)));
        }
        out.push_str(&format!("  total:     {}", human_bytes(self.total_bytes())));
        match self.budget {
            Some(b) if self.over_budget() => out.push_str(&format!(
                " (over the budget of {}: `cargo xtask cache clean --older-than 7d` or raise it)\n",
                human_bytes(b)
            )),
            Some(b) => out.push_str(&format!(" of a {} budget\n", human_bytes(b))),
            None => out.push_str(" (no budget set)\n"),
        }
        match self.hit_rate {
            Some(rate) => {
                let hits: usize = self.recent_runs.iter().map(|r| r.hits).sum();
                let all: usize = self.recent_runs.iter().map(|r| r.hits + r.misses).sum();
                out.push_str(&format!(
                    "  hit rate:  {:.0}% ({hits} of {all} stages cached over the last {} runs)\n",
                    rate * 100.0,
                    self.recent_runs.len()
                ));
            }
            None => out.push_str("  hit rate:  no runs recorded yet\n"),
        }
        out
    }
}

/// What `clean` or the budget removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanReport {
    pub removed: Vec<Utf8PathBuf>,
    pub freed_bytes: u64,
}

impl CleanReport {
    pub fn render_text(&self) -> String {
        if self.removed.is_empty() {
            return "nothing to remove\n".into();
        }
        let mut out = format!(
            "removed {} item(s), freed {}\n",
            self.removed.len(),
            human_bytes(self.freed_bytes)
        );
        for p in &self.removed {
            out.push_str(&format!("  {p}\n"));
        }
        out
    }
}

/// The file that marks a directory as created by pipeline-opt: only such directories
/// are ever removed by `clean` or the budget, whatever their name.
pub const OWNED_MARKER: &str = ".pipeline-opt-owned";

/// Makes `dir` a build directory of the tool's own: creates it with the marker when it
/// does not exist yet. An existing directory without the marker is claimed only when
/// `inside_target_dir` (under the workspace's target directory nothing is the user's);
/// elsewhere it may be the user's, and stays out of `clean` and the budget.
pub fn claim_dir(dir: &Utf8Path, inside_target_dir: bool) -> Result<(), CacheError> {
    let marker = dir.join(OWNED_MARKER);
    if marker.is_file() || (dir.exists() && !inside_target_dir) {
        return Ok(());
    }
    let create = |path: &Utf8Path, source| CacheError::CreateDir { path: path.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(|e| create(dir, e))?;
    std::fs::write(
        &marker,
        "created by pipeline-opt; `cargo xtask cache clean` and the cache budget may remove this directory\n",
    )
    .map_err(|e| create(&marker, e))
}

/// Claims the build directories `plan` gives stages inside the state directory (see
/// [`claim_dir`]); call it before running the plan.
pub fn claim_plan_dirs(
    plan: &crate::plan::Plan,
    state_dir: &StateDir,
    target_dir: &Utf8Path,
) -> Result<(), CacheError> {
    let inside = super::fingerprint::normalize(state_dir).starts_with(target_dir);
    for s in &plan.stages {
        let env_dir = s.command.env.get("CARGO_TARGET_DIR").map(Utf8PathBuf::from);
        for dir in s.build_dir.iter().cloned().chain(env_dir) {
            if dir.starts_with(state_dir) && dir != state_dir.path() {
                claim_dir(&dir, inside)?;
            }
        }
    }
    Ok(())
}

/// Why `clean` refuses `state_dir` without `--force`: it is the workspace root, or
/// outside the target directory, where directories of the user's may live.
pub fn clean_location_problem(
    state_dir: &StateDir,
    workspace_root: &Utf8Path,
    target_dir: &Utf8Path,
) -> Option<CacheError> {
    let dir = super::fingerprint::normalize(state_dir);
    let reason = if dir == workspace_root {
        "it is the workspace root"
    } else if !dir.starts_with(target_dir) {
        "it is outside the target directory"
    } else {
        return None;
    };
    Some(CacheError::UnsafeClean { dir, reason: reason.into() })
}

/// The build directories the tool created in the state directory (they hold
/// [`OWNED_MARKER`]): what `status` counts and `clean` and the budget may remove.
pub fn owned_target_dirs(state_dir: &StateDir) -> Vec<Utf8PathBuf> {
    let Ok(rd) = std::fs::read_dir(state_dir) else { return Vec::new() };
    let mut dirs: Vec<Utf8PathBuf> = rd
        .flatten()
        .filter_map(|e| Utf8PathBuf::from_path_buf(e.path()).ok())
        .filter(|p| p.is_dir() && p.join(OWNED_MARKER).is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The extra build directories the plan may have used in the state directory
/// (`*-target`), for reading their dep-info only: never to remove.
pub fn extra_target_dirs(state_dir: &StateDir) -> Vec<Utf8PathBuf> {
    let Ok(rd) = std::fs::read_dir(state_dir) else { return Vec::new() };
    let mut dirs: Vec<Utf8PathBuf> = rd
        .flatten()
        .filter_map(|e| Utf8PathBuf::from_path_buf(e.path()).ok())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.ends_with("-target")))
        .collect();
    dirs.sort();
    dirs
}

/// Reads sizes and hit counts; takes no lock (it only reads).
pub fn status(state_dir: &StateDir, budget: Option<u64>) -> CacheStatus {
    let cache_dir = state_dir.cache();
    let entries = [state_dir.cache_stage_records(), state_dir.cache_test_records()]
        .iter()
        .filter_map(|records| std::fs::read_dir(records).ok())
        .map(|rd| rd.flatten().count())
        .sum();
    let recent_runs: Vec<RunHits> =
        super::store::read_json::<serde_json::Value>(&state_dir.cache_hits())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value(v.get("runs")?.clone()).ok())
            .unwrap_or_default();
    let hits: usize = recent_runs.iter().map(|r| r.hits).sum();
    let all: usize = recent_runs.iter().map(|r| r.hits + r.misses).sum();
    CacheStatus {
        cache_bytes: dir_size(&cache_dir),
        cache_dir,
        entries,
        target_dirs: owned_target_dirs(state_dir)
            .into_iter()
            .map(|d| {
                let s = dir_size(&d);
                (d, s)
            })
            .collect(),
        hit_rate: (all > 0).then(|| hits as f64 / all as f64),
        recent_runs,
        budget,
    }
}

/// Removes every entry and extra target directory, or with `older_than` only those
/// untouched for that long. Holds the cache lock while it works.
pub fn clean(
    state_dir: &StateDir,
    older_than: Option<Duration>,
    on_wait: impl FnOnce(&Utf8Path),
) -> Result<CleanReport, CacheError> {
    let store = Store::open(state_dir, on_wait)?;
    let mut report = CleanReport::default();
    let old_enough = |age: Duration| older_than.is_none_or(|limit| age >= limit);
    for (path, bytes, age) in store.entries() {
        if old_enough(age) {
            remove(&path, bytes, &mut report)?;
        }
    }
    if older_than.is_none() {
        for p in [state_dir.stat_cache(), state_dir.cache_hits(), state_dir.deps_record()] {
            if p.exists() {
                let bytes = dir_size(&p);
                remove(&p, bytes, &mut report)?;
            }
        }
    }
    for dir in owned_target_dirs(state_dir) {
        if old_enough(age_of_tree(&dir)) {
            let bytes = dir_size(&dir);
            remove(&dir, bytes, &mut report)?;
        }
    }
    Ok(report)
}

/// Removes the least recently used extra target directories, then the oldest entries,
/// until the cache and those directories fit in `budget` bytes.
pub fn enforce_budget(
    state_dir: &StateDir,
    budget: u64,
    on_wait: impl FnOnce(&Utf8Path),
) -> Result<CleanReport, CacheError> {
    let store = Store::open(state_dir, on_wait)?;
    enforce_budget_locked(&store, state_dir, budget)
}

/// [`enforce_budget`] with the lock already held through `store`: a run checks its
/// budget before it lets go of the lock, so it never waits for a later run to end.
pub fn enforce_budget_locked(
    store: &Store,
    state_dir: &StateDir,
    budget: u64,
) -> Result<CleanReport, CacheError> {
    let mut report = CleanReport::default();
    let mut total = status(state_dir, None).total_bytes();
    let mut dirs: Vec<(Duration, Utf8PathBuf)> =
        owned_target_dirs(state_dir).into_iter().map(|d| (age_of_tree(&d), d)).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, dir) in dirs {
        if total <= budget {
            return Ok(report);
        }
        let bytes = dir_size(&dir);
        remove(&dir, bytes, &mut report)?;
        total = total.saturating_sub(bytes);
    }
    let mut entries = store.entries();
    entries.sort_by_key(|e| std::cmp::Reverse(e.2));
    for (path, bytes, _) in entries {
        if total <= budget {
            break;
        }
        remove(&path, bytes, &mut report)?;
        total = total.saturating_sub(bytes);
    }
    Ok(report)
}

fn remove(path: &Utf8Path, bytes: u64, report: &mut CleanReport) -> Result<(), CacheError> {
    let res =
        if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match res {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CacheError::Remove { path: path.to_owned(), source }),
    }
    report.removed.push(path.to_owned());
    report.freed_bytes += bytes;
    Ok(())
}

/// How long since anything near the top of a build directory changed (cargo touches
/// `<profile>/.fingerprint` and `deps` on every build that does work).
fn age_of_tree(dir: &Utf8Path) -> Duration {
    let newest = walkdir::WalkDir::new(dir)
        .max_depth(3)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    SystemTime::now().duration_since(newest).unwrap_or_default()
}
