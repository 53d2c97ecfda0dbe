//! Changed files since a git ref, mapped to the packages whose builds and tests they can
//! affect: files → owning packages (longest directory prefix) → reverse dependencies.
//! A change to a root input widens to the whole workspace, with the reason.

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use xshell::{Shell, cmd};

use crate::cache::fingerprint::{DepInfo, ROOT_INPUTS, owning_package, package_dirs};
use crate::plan::CargoArgs;
use crate::workspace::{PackageIdx, TargetKind, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum AffectedError {
    #[error(
        "`git {args}` failed in {dir}: {message}; is {dir} a git repository and `{git_ref}` a commit, branch or tag in it?"
    )]
    Git { dir: Utf8PathBuf, args: String, git_ref: String, message: String },
}

/// The packages a change since a git ref can affect.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Affected {
    pub since: String,
    /// Changed, staged, unstaged and untracked files, absolute.
    pub changed_files: Vec<Utf8PathBuf>,
    /// Packages owning a changed file (or reading one, per dep-info).
    pub changed_packages: Vec<String>,
    /// Those and every member that depends on them: the packages to build and test.
    pub packages: Vec<String>,
    /// Set when a change widens to the whole workspace: why.
    pub widened: Option<String>,
    /// Changed files that no package reads, and similar remarks.
    pub notes: Vec<String>,
}

impl Affected {
    /// The cargo selection for an affected-only run: `None` when nothing is affected
    /// (nothing to build), the base selection when the change widened to everything.
    pub fn narrow(&self, base: &CargoArgs) -> Option<CargoArgs> {
        if self.widened.is_some() {
            return Some(base.clone());
        }
        let packages: Vec<String> = if base.packages.is_empty() {
            self.packages.iter().filter(|p| !base.exclude.contains(p)).cloned().collect()
        } else {
            base.packages.iter().filter(|p| self.packages.contains(p)).cloned().collect()
        };
        if packages.is_empty() {
            return None;
        }
        // The packages named, the exclusions already applied to them.
        Some(CargoArgs { packages, exclude: Vec::new(), ..base.clone() })
    }

    /// The line the plan shows.
    pub fn note(&self) -> String {
        match &self.widened {
            Some(reason) => format!("--since {}: everything is affected: {reason}", self.since),
            None if self.packages.is_empty() => {
                format!(
                    "--since {}: no package is affected by the {} changed file(s)",
                    self.since,
                    self.changed_files.len()
                )
            }
            None => format!(
                "--since {}: {} changed; with their dependents: {}",
                self.since,
                self.changed_packages.join(", "),
                self.packages.join(", ")
            ),
        }
    }
}

/// Files that differ between `git_ref` and the working tree (committed since, staged,
/// unstaged), plus untracked files that are not ignored; absolute paths.
pub fn changed_files(root: &Utf8Path, git_ref: &str) -> Result<Vec<Utf8PathBuf>, AffectedError> {
    let git = |args: &[&str]| -> Result<String, AffectedError> {
        let err = |message: String| AffectedError::Git {
            dir: root.to_owned(),
            args: args.join(" "),
            git_ref: git_ref.to_string(),
            message,
        };
        let sh = Shell::new().map_err(|e| err(e.to_string()))?;
        let sh = sh.with_current_dir(root);
        let out =
            cmd!(sh, "git {args...}").ignore_status().output().map_err(|e| err(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(err(stderr.lines().next().unwrap_or("").trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let top = Utf8PathBuf::from(git(&["rev-parse", "--show-toplevel"])?.trim());
    let commit = format!("{git_ref}^{{commit}}");
    git(&["rev-parse", "--verify", "--quiet", &commit])?;
    let mut files = BTreeSet::new();
    for line in git(&["diff", "--name-only", "--no-renames", git_ref, "--"])?.lines() {
        files.insert(top.join(line));
    }
    for line in git(&["ls-files", "--others", "--exclude-standard", "--full-name"])?.lines() {
        files.insert(top.join(line));
    }
    Ok(files.into_iter().collect())
}

/// Maps changed files to the packages they can affect. `dep_info` tells which packages
/// read files outside their own directory.
pub fn affected_packages(
    workspace: &Workspace,
    dep_info: &DepInfo,
    changed: &[Utf8PathBuf],
    since: &str,
) -> Affected {
    let dirs = package_dirs(workspace);
    let mut direct: BTreeSet<PackageIdx> = BTreeSet::new();
    let mut widened = None;
    let mut notes = Vec::new();
    let with_build_script: Vec<&str> = workspace
        .packages
        .iter()
        .filter(|p| p.targets.iter().any(|t| t.kind == TargetKind::BuildScript))
        .map(|p| p.name.as_str())
        .collect();
    let root_inputs: Vec<Utf8PathBuf> =
        ROOT_INPUTS.iter().map(|r| workspace.root.join(r)).collect();
    for file in changed {
        let rel = file.strip_prefix(&workspace.root).unwrap_or(file);
        if root_inputs.contains(file) {
            widened.get_or_insert_with(|| format!("{rel} is a root input of every package"));
            continue;
        }
        if let Some(p) = owning_package(&dirs, file) {
            direct.insert(p);
            continue;
        }
        let readers: Vec<PackageIdx> = (0..workspace.packages.len())
            .filter(|&p| dep_info.extra_files[p].contains(file))
            .collect();
        if !readers.is_empty() {
            direct.extend(readers);
            continue;
        }
        if !file.starts_with(&workspace.root) || file.starts_with(&workspace.target_dir) {
            continue;
        }
        if let Some(p) = with_build_script.first() {
            widened.get_or_insert_with(|| {
                format!(
                    "{rel} lies outside every package and the build script of `{p}` may read it"
                )
            });
        } else if dep_info.seen.iter().any(|s| !s) {
            widened.get_or_insert_with(|| {
                format!("{rel} lies outside every package and no build has recorded yet which packages read it")
            });
        } else {
            notes.push(format!("{rel} changed, but no package reads it"));
        }
    }
    let mut all: BTreeSet<PackageIdx> = BTreeSet::new();
    for &p in &direct {
        all.extend(workspace.reverse_deps(p));
    }
    let name = |p: &PackageIdx| workspace.packages[*p].name.clone();
    let packages = if widened.is_some() {
        workspace.packages.iter().map(|p| p.name.clone()).collect()
    } else {
        all.iter().map(name).collect()
    };
    Affected {
        since: since.to_string(),
        changed_files: changed.to_vec(),
        changed_packages: direct.iter().map(name).collect(),
        packages,
        widened,
        notes,
    }
}

/// `changed_files` then `affected_packages`, reading dep-info from the workspace's
/// target directory and `target_dirs` (the plan's other build directories).
pub fn since(
    workspace: &Workspace,
    git_ref: &str,
    target_dirs: &[Utf8PathBuf],
) -> Result<Affected, AffectedError> {
    // Build output (and a state directory kept inside it) is never an input.
    let changed: Vec<Utf8PathBuf> = changed_files(&workspace.root, git_ref)?
        .into_iter()
        .filter(|f| {
            !f.starts_with(&workspace.target_dir) && !target_dirs.iter().any(|t| f.starts_with(t))
        })
        .collect();
    let mut dirs = vec![workspace.target_dir.clone()];
    dirs.extend(target_dirs.iter().cloned());
    let dep_info = DepInfo::load(workspace, &dirs);
    Ok(affected_packages(workspace, &dep_info, &changed, git_ref))
}
