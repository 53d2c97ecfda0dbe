//! The base side's source: REF checked out in a detached git worktree under
//! `<state dir>/worktrees/`, reused across runs, moved when REF moves, pruned when
//! unused for a week; and its own target directory, seeded from the head's.

use std::process::Command;
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};

use super::BenchCompareError;
use crate::state::StateDir;

/// Worktrees nobody used for this long are removed at the start of a run.
const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// A checked-out base side.
#[derive(Debug, Clone)]
pub struct BaseCheckout {
    /// The commit REF resolved to.
    pub commit: String,
    /// Root of the worktree (the repository's top level at `commit`).
    pub dir: Utf8PathBuf,
    /// The workspace manifest inside the worktree.
    pub manifest: Utf8PathBuf,
    /// The base side's own target directory.
    pub target_dir: Utf8PathBuf,
}

fn git(dir: &Utf8Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    // A parent git (a hook, `git rebase -x`) would point us at its own repository.
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().map_err(|e| format!("could not run git: {e}; is git installed?"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string())
    }
}

/// The top level of the git repository that holds `dir`.
pub fn repo_root(dir: &Utf8Path) -> Result<Utf8PathBuf, BenchCompareError> {
    git(dir, &["rev-parse", "--show-toplevel"])
        .map(Utf8PathBuf::from)
        .map_err(|message| BenchCompareError::NotAGitRepository { dir: dir.to_owned(), message })
}

/// The commit `git_ref` names in the repository at `repo`.
pub fn resolve_ref(repo: &Utf8Path, git_ref: &str) -> Result<String, BenchCompareError> {
    // A ref starting with `-` would be read as an option.
    let found = if git_ref.starts_with('-') {
        None
    } else {
        git(repo, &["rev-parse", "--verify", "--quiet", &format!("{git_ref}^{{commit}}")]).ok()
    };
    found.filter(|s| !s.is_empty()).ok_or_else(|| BenchCompareError::RefNotFound {
        git_ref: git_ref.to_string(),
        repo: repo.to_owned(),
    })
}

/// Checks out `commit` in the worktree for `git_ref` (creating or moving it). Its target
/// directory is seeded by [`seed_target_dir`] once the head side is built.
pub fn checkout(
    repo: &Utf8Path,
    head_manifest: &Utf8Path,
    state_dir: &StateDir,
    git_ref: &str,
    commit: &str,
    notes: &mut Vec<String>,
) -> Result<BaseCheckout, BenchCompareError> {
    let worktrees = state_dir.worktrees();
    std::fs::create_dir_all(&worktrees)
        .map_err(|e| BenchCompareError::Io { path: worktrees.clone(), source: e })?;
    prune_stale(repo, &worktrees, notes);

    // One worktree per (repository, ref): several repositories may share a state dir.
    let name = format!("{}-{:08x}", sanitize(git_ref), fnv(repo.as_str()) as u32);
    let dir = worktrees.join(&name);
    let err = |message: String| BenchCompareError::Worktree { dir: dir.clone(), message };
    let usable = dir.join(".git").exists() && git(&dir, &["rev-parse", "--git-dir"]).is_ok();
    if usable {
        git(&dir, &["checkout", "--quiet", "--force", "--detach", commit]).map_err(err)?;
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        }
        let _ = git(repo, &["worktree", "prune"]);
        git(repo, &["worktree", "add", "--quiet", "--force", "--detach", dir.as_str(), commit])
            .map_err(err)?;
    }
    touch(&dir.join(".pipeline-opt-used"));

    let relative = head_manifest.strip_prefix(repo).unwrap_or(Utf8Path::new("Cargo.toml"));
    let manifest = dir.join(relative);
    if !manifest.is_file() {
        return Err(BenchCompareError::NoManifestAtRef {
            git_ref: git_ref.to_string(),
            path: relative.to_owned(),
        });
    }
    let target_dir = worktrees.join(format!("{name}.target"));
    Ok(BaseCheckout { commit: commit.to_string(), dir, manifest, target_dir })
}

/// Copies the head's `release` directory (where `cargo bench` builds) into an empty
/// base target dir, so the base build only recompiles what differs. `cp --reflink=auto`
/// shares the blocks on filesystems that can. Best effort: a failed copy only costs time.
/// Called after the head build: on a cold machine the head's `release` only exists then,
/// and seeding before it left the base to build every dependency a second time.
///
/// The copy holds the head's workspace crates too, under the same artifact names (cargo
/// leaves the path out of a workspace member's hash) and newer than the worktree's
/// sources: cargo would take them as fresh and benchmark head's code as the base. So
/// every file of the worktree is touched after seeding, which makes the workspace crates
/// rebuild from the base's sources while the dependencies stay fresh.
pub fn seed_target_dir(
    head_target: &Utf8Path,
    target_dir: &Utf8Path,
    worktree: &Utf8Path,
    notes: &mut Vec<String>,
) {
    let release = target_dir.join("release");
    if release.exists() {
        return;
    }
    let _ = std::fs::create_dir_all(target_dir);
    let source = head_target.join("release");
    if !source.is_dir() {
        return;
    }
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto", source.as_str(), release.as_str()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        notes.push(format!(
            "could not seed {release} from {source}; the base side builds from scratch"
        ));
        let _ = std::fs::remove_dir_all(&release);
        return;
    }
    touch_tree(worktree.as_std_path(), SystemTime::now());
}

/// Sets the modification time of every file under `dir` (not `.git`) to `now`.
fn touch_tree(dir: &std::path::Path, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() && entry.file_name() != ".git" {
            touch_tree(&path, now);
        } else if kind.is_file()
            && let Ok(f) = std::fs::OpenOptions::new().append(true).open(&path)
        {
            let _ = f.set_modified(now);
        }
    }
}

/// Removes our worktrees (and their target dirs) unused for [`STALE_AFTER`], and lets
/// git forget worktrees whose directories are gone.
fn prune_stale(repo: &Utf8Path, worktrees: &Utf8Path, notes: &mut Vec<String>) {
    let Ok(entries) = worktrees.read_dir_utf8() else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension() == Some("target") || !path.is_dir() {
            continue;
        }
        let used = std::fs::metadata(path.join(".pipeline-opt-used")).and_then(|m| m.modified());
        let stale = used.is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_AFTER);
        if stale {
            let _ = git(repo, &["worktree", "remove", "--force", path.as_str()]);
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_dir_all(format!("{path}.target"));
            notes.push(format!("pruned the stale worktree {path}"));
        }
    }
    let _ = git(repo, &["worktree", "prune"]);
}

fn touch(path: &Utf8Path) {
    let _ = std::fs::write(path, b"");
}

fn sanitize(git_ref: &str) -> String {
    git_ref
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .take(48)
        .collect()
}

/// FNV-1a: a stable, dependency-free hash for directory names.
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
