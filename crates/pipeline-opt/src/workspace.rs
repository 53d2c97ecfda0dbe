//! The workspace model: packages, targets and the dependency graph between workspace
//! members, loaded once through `cargo metadata`. Everything downstream (config, plan,
//! affected, cache) reads this plain data and never runs cargo itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use crate::state::StateDir;
use crate::toolchain::Toolchain;

/// Index of a package in [`Workspace::packages`].
pub type PackageIdx = usize;

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub root: Utf8PathBuf,
    pub manifest_path: Utf8PathBuf,
    pub target_dir: Utf8PathBuf,
    /// Workspace members, sorted by name.
    pub packages: Vec<Package>,
    /// `[workspace.metadata]` as cargo reports it (`null` when absent).
    pub metadata: serde_json::Value,
    /// `[package.metadata]` of the root package, the one whose manifest is the root
    /// `Cargo.toml` (`null` when absent or in a virtual workspace).
    pub root_package_metadata: serde_json::Value,
    /// Whether `cargo metadata` resolved dependencies; without a resolve the graph only
    /// has the path dependencies declared in manifests.
    pub resolved: bool,
    /// Number of packages in the whole dependency graph, members included.
    pub total_packages: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The oldest compiler the package supports (`rust-version`), e.g. `1.80.0`.
    pub rust_version: Option<String>,
    pub id: String,
    pub manifest_path: Utf8PathBuf,
    pub targets: Vec<Target>,
    /// The `[features]` table: each feature and what it enables.
    pub features: BTreeMap<String, Vec<String>>,
    /// Members this package needs to build (normal and build dependencies).
    pub deps: Vec<PackageIdx>,
    /// Members needed only by its tests, examples and benches.
    pub dev_deps: Vec<PackageIdx>,
}

impl Package {
    pub fn dir(&self) -> &Utf8Path {
        self.manifest_path.parent().expect("a manifest path has a parent")
    }

    /// Whether `cargo test --doc` runs doctests of this package: its library has them
    /// enabled.
    pub fn has_doctests(&self) -> bool {
        self.targets.iter().any(|t| t.kind == TargetKind::Lib && t.doctest)
    }

    /// The crate name rustc and rustdoc are given for the library (its target name,
    /// `-` as `_`); `None` without a library.
    pub fn lib_crate_name(&self) -> Option<String> {
        let lib = self.targets.iter().find(|t| t.kind == TargetKind::Lib)?;
        Some(lib.name.replace('-', "_"))
    }

    /// Whether building this package with `features` (the user's `--features`: plain,
    /// or `package/feature`), its default features unless `no_default`, enables every
    /// one of `required`; `None` where that cannot be told from the manifest alone (a
    /// required feature of a dependency).
    pub fn enables(
        &self,
        required: &[String],
        features: &[String],
        no_default: bool,
    ) -> Option<bool> {
        if required.iter().any(|r| r.contains('/')) {
            return None;
        }
        let mut todo: Vec<&str> = features
            .iter()
            .flat_map(|f| f.split([',', ' ']))
            .filter_map(|f| match f.split_once('/') {
                Some((package, feature)) => (package == self.name).then_some(feature),
                None => Some(f),
            })
            .filter(|f| !f.is_empty())
            .collect();
        if !no_default {
            todo.push("default");
        }
        let mut enabled = BTreeSet::new();
        while let Some(f) = todo.pop() {
            if enabled.insert(f) {
                // `dep:x`, `x/y` and `x?/y` turn on dependencies, not features of ours.
                let implied = self.features.get(f).into_iter().flatten();
                todo.extend(implied.map(String::as_str).filter(|i| !i.contains([':', '/'])));
            }
        }
        Some(required.iter().all(|r| enabled.contains(r.as_str())))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Lib,
    Bin,
    Test,
    Bench,
    Example,
    BuildScript,
}

impl TargetKind {
    /// The cargo flag that selects one target of this kind (`--bench NAME`).
    pub fn selector_flag(self) -> Option<&'static str> {
        match self {
            TargetKind::Lib => Some("--lib"),
            TargetKind::Bin => Some("--bin"),
            TargetKind::Test => Some("--test"),
            TargetKind::Bench => Some("--bench"),
            TargetKind::Example => Some("--example"),
            TargetKind::BuildScript => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub src_path: Utf8PathBuf,
    pub required_features: Vec<String>,
    pub doctest: bool,
    pub test: bool,
    /// `#![feature(..)]` gates named in the crate root: such a target builds only on a
    /// nightly compiler.
    pub nightly_features: Vec<String>,
    /// `false` for `harness = false` in the manifest: the target has its own `main`,
    /// which need not understand libtest's `--list` that cargo-nextest relies on.
    /// `cargo metadata` does not say, so the member's Cargo.toml is read for it.
    pub harness: bool,
}

impl Target {
    pub fn needs_nightly(&self) -> bool {
        !self.nightly_features.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadWorkspaceError {
    #[error("no Cargo.toml at {path}: pass --manifest-path with a workspace's Cargo.toml")]
    ManifestNotFound { path: Utf8PathBuf },
    #[error("`cargo metadata` failed for {path}: {message}")]
    Metadata { path: Utf8PathBuf, message: String },
    #[error("could not run `cargo metadata`: {source}; is cargo on PATH?")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
}

/// How a package's weight on the critical path was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightSource {
    /// Compile seconds measured in an earlier run.
    MeasuredSeconds,
    /// Bytes of Rust source, used where nothing was measured.
    SourceBytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriticalPath {
    /// Package names from the first to compile to the last.
    pub packages: Vec<String>,
    pub weight: f64,
    pub weight_source: WeightSource,
}

impl Workspace {
    /// Loads the workspace around `manifest_path` (default: the one cargo finds from the
    /// current directory). Dependencies are resolved so that the graph is exact; cargo
    /// is run with the inherited environment minus what `cargo xtask` set for this
    /// workspace, so that the target's own toolchain file applies.
    pub fn load(manifest_path: Option<&Utf8Path>) -> Result<Workspace, LoadWorkspaceError> {
        Ok(Workspace::from_metadata(&Workspace::metadata(manifest_path)?))
    }

    /// The `cargo metadata` that [`Workspace::load`] models, for callers that also need
    /// facts the model leaves out (the whole resolved graph).
    pub fn metadata(
        manifest_path: Option<&Utf8Path>,
    ) -> Result<cargo_metadata::Metadata, LoadWorkspaceError> {
        let mut cmd = cargo_metadata::MetadataCommand::new();
        if let Some(path) = manifest_path {
            if !path.is_file() {
                return Err(LoadWorkspaceError::ManifestNotFound { path: path.to_owned() });
            }
            cmd.manifest_path(path);
        }
        for var in crate::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        cmd.exec().map_err(|err| match err {
            cargo_metadata::Error::Io(source) => LoadWorkspaceError::Spawn { source },
            cargo_metadata::Error::CargoMetadata { stderr } => LoadWorkspaceError::Metadata {
                path: manifest_path.map(Utf8Path::to_owned).unwrap_or_else(|| "Cargo.toml".into()),
                message: first_error_line(&stderr),
            },
            other => LoadWorkspaceError::Metadata {
                path: manifest_path.map(Utf8Path::to_owned).unwrap_or_else(|| "Cargo.toml".into()),
                message: other.to_string(),
            },
        })
    }

    /// Builds the model from metadata that was already loaded (benchmarks and tests use
    /// this to keep cargo out of the measurement).
    pub fn from_metadata(metadata: &cargo_metadata::Metadata) -> Workspace {
        let by_id: HashMap<&cargo_metadata::PackageId, &cargo_metadata::Package> =
            metadata.packages.iter().map(|p| (&p.id, p)).collect();
        let mut members: Vec<&cargo_metadata::Package> =
            metadata.workspace_members.iter().filter_map(|id| by_id.get(id).copied()).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let idx_by_id: HashMap<&cargo_metadata::PackageId, PackageIdx> =
            members.iter().enumerate().map(|(i, p)| (&p.id, i)).collect();
        let idx_by_name: HashMap<&str, PackageIdx> =
            members.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();

        let mut packages: Vec<Package> = members
            .iter()
            .map(|p| Package {
                name: p.name.to_string(),
                version: p.version.to_string(),
                rust_version: p.rust_version.as_ref().map(ToString::to_string),
                id: p.id.repr.clone(),
                manifest_path: p.manifest_path.clone(),
                features: p.features.clone().into_iter().collect(),
                targets: {
                    let custom = custom_harness_targets(&p.manifest_path);
                    p.targets
                        .iter()
                        .filter_map(model_target)
                        .map(|mut t| {
                            t.harness = !custom.contains(&(t.kind, t.name.clone()));
                            t
                        })
                        .collect()
                },
                deps: Vec::new(),
                dev_deps: Vec::new(),
            })
            .collect();

        let resolved = metadata.resolve.is_some();
        if let Some(resolve) = &metadata.resolve {
            for node in &resolve.nodes {
                let Some(&from) = idx_by_id.get(&node.id) else {
                    continue;
                };
                for dep in &node.deps {
                    let Some(&to) = idx_by_id.get(&dep.pkg) else {
                        continue;
                    };
                    let build_order = dep
                        .dep_kinds
                        .iter()
                        .any(|k| k.kind != cargo_metadata::DependencyKind::Development);
                    let list = if build_order {
                        &mut packages[from].deps
                    } else {
                        &mut packages[from].dev_deps
                    };
                    list.push(to);
                }
            }
        } else {
            // Without a resolve, fall back to the path dependencies the manifests declare.
            for (from, p) in members.iter().enumerate() {
                for dep in &p.dependencies {
                    if dep.path.is_none() {
                        continue;
                    }
                    let Some(&to) = idx_by_name.get(dep.name.as_str()) else {
                        continue;
                    };
                    let list = if dep.kind == cargo_metadata::DependencyKind::Development {
                        &mut packages[from].dev_deps
                    } else {
                        &mut packages[from].deps
                    };
                    list.push(to);
                }
            }
        }
        for p in &mut packages {
            p.deps.sort_unstable();
            p.deps.dedup();
            p.dev_deps.sort_unstable();
            p.dev_deps.dedup();
            p.dev_deps.retain(|d| !p.deps.contains(d));
        }

        Workspace {
            root: metadata.workspace_root.clone(),
            manifest_path: metadata.workspace_root.join("Cargo.toml"),
            target_dir: metadata.target_directory.clone(),
            packages,
            metadata: metadata.workspace_metadata.clone(),
            root_package_metadata: metadata
                .root_package()
                .map(|p| p.metadata.clone())
                .unwrap_or(serde_json::Value::Null),
            resolved,
            total_packages: metadata.packages.len(),
        }
    }

    /// The pipeline-opt config, from whichever one place holds it (see [`Config::load`]).
    ///
    /// [`Config::load`]: crate::config::Config::load
    pub fn config(&self) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::load(&self.metadata, &self.root_package_metadata, &self.root)
    }

    /// Where the tool keeps everything (cache, logs, reports, worktrees, pool state):
    /// `<target-dir>/pipeline-opt` unless the config moves it, so `cargo clean` resets
    /// it and nothing lands in the source tree.
    pub fn state_dir(&self, config: &crate::config::Config) -> StateDir {
        StateDir::new(match &config.cache.dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => self.root.join(dir),
            None => return StateDir::in_target_dir(&self.target_dir),
        })
    }

    /// Where the `test` profile, which `cargo test` and cargo-nextest build with, is set
    /// apart from `dev`, which `cargo build` uses: `[profile.test]` in the workspace
    /// manifest or a cargo config file that applies here, or `CARGO_PROFILE_TEST_*`
    /// variables. Empty when the test profile is `dev` unchanged; then both build the
    /// same artifacts. Unreadable files count as setting nothing.
    pub fn test_profile_overrides(&self) -> Vec<String> {
        let sets_test_profile = |path: &Utf8Path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .and_then(|doc| doc.get("profile")?.get("test")?.as_table().map(|t| !t.is_empty()))
                .unwrap_or(false)
        };
        let mut found = Vec::new();
        if sets_test_profile(&self.manifest_path) {
            found.push(format!("[profile.test] in {}", self.manifest_path));
        }
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
            .and_then(|p| Utf8PathBuf::from_path_buf(p).ok());
        let configs = self
            .root
            .ancestors()
            .map(|d| d.join(".cargo"))
            .chain(cargo_home)
            .flat_map(|d| [d.join("config.toml"), d.join("config")]);
        let mut seen = BTreeSet::new();
        for path in configs {
            if seen.insert(path.clone()) && sets_test_profile(&path) {
                found.push(format!("[profile.test] in {path}"));
            }
        }
        let mut vars: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("CARGO_PROFILE_TEST_"))
            .collect();
        vars.sort();
        found.extend(vars);
        found
    }

    pub fn package(&self, name: &str) -> Option<PackageIdx> {
        self.packages.iter().position(|p| p.name == name)
    }

    /// Topological levels over build edges: every package in level `n` depends only on
    /// packages in lower levels, so one level's packages can compile in parallel.
    pub fn levels(&self) -> Vec<Vec<PackageIdx>> {
        let order = self.topological_order();
        let mut level = vec![0usize; self.packages.len()];
        for &p in &order {
            level[p] = self.packages[p].deps.iter().map(|&d| level[d] + 1).max().unwrap_or(0);
        }
        let depth = level.iter().copied().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for (p, &l) in level.iter().enumerate() {
            levels[l].push(p);
        }
        levels
    }

    /// Packages in an order where each comes after all of its build dependencies.
    /// Build edges between members cannot form a cycle (cargo rejects that), so this
    /// is total.
    pub fn topological_order(&self) -> Vec<PackageIdx> {
        let n = self.packages.len();
        let mut remaining: Vec<usize> = self.packages.iter().map(|p| p.deps.len()).collect();
        let rdeps = self.direct_reverse_deps();
        let mut ready: Vec<PackageIdx> = (0..n).filter(|&p| remaining[p] == 0).rev().collect();
        let mut order = Vec::with_capacity(n);
        while let Some(p) = ready.pop() {
            order.push(p);
            for &r in &rdeps[p] {
                remaining[r] -= 1;
                if remaining[r] == 0 {
                    ready.push(r);
                }
            }
        }
        order
    }

    /// For each package, the members that depend on it directly (build or dev edges).
    pub fn direct_reverse_deps(&self) -> Vec<Vec<PackageIdx>> {
        let mut rdeps = vec![Vec::new(); self.packages.len()];
        for (p, pkg) in self.packages.iter().enumerate() {
            for &d in &pkg.deps {
                rdeps[d].push(p);
            }
        }
        rdeps
    }

    /// Every member whose build or tests can be affected by a change to `package`:
    /// transitive dependents through build edges, plus the packages whose tests use any
    /// of those as a dev-dependency. `package` itself is included.
    pub fn reverse_deps(&self, package: PackageIdx) -> Vec<PackageIdx> {
        let rdeps = self.direct_reverse_deps();
        let mut seen = vec![false; self.packages.len()];
        let mut stack = vec![package];
        seen[package] = true;
        while let Some(p) = stack.pop() {
            for &r in &rdeps[p] {
                if !seen[r] {
                    seen[r] = true;
                    stack.push(r);
                }
            }
        }
        let build_affected: Vec<bool> = seen.clone();
        for (p, pkg) in self.packages.iter().enumerate() {
            if pkg.dev_deps.iter().any(|&d| build_affected[d]) {
                seen[p] = true;
            }
        }
        (0..self.packages.len()).filter(|&p| seen[p]).collect()
    }

    /// The longest chain of build dependencies, weighted by measured compile seconds
    /// where `measured` has every package, else by source size (which walks the package
    /// directories, so it is computed only here).
    pub fn critical_path(&self, measured: &BTreeMap<String, f64>) -> CriticalPath {
        let use_measured = !self.packages.is_empty()
            && self.packages.iter().all(|p| measured.contains_key(&p.name));
        let weights: Vec<f64> = self
            .packages
            .iter()
            .map(|p| if use_measured { measured[&p.name] } else { source_bytes(p.dir()) as f64 })
            .collect();
        let mut best = vec![0.0f64; self.packages.len()];
        let mut prev: Vec<Option<PackageIdx>> = vec![None; self.packages.len()];
        for p in self.topological_order() {
            let (base, from) = self.packages[p]
                .deps
                .iter()
                .map(|&d| (best[d], Some(d)))
                .fold((0.0, None), |acc, x| if x.0 > acc.0 { x } else { acc });
            best[p] = base + weights[p];
            prev[p] = from;
        }
        let end =
            (0..self.packages.len()).max_by(|&a, &b| best[a].total_cmp(&best[b]).then(b.cmp(&a)));
        let mut packages = Vec::new();
        let mut cursor = end;
        while let Some(p) = cursor {
            packages.push(self.packages[p].name.clone());
            cursor = prev[p];
        }
        packages.reverse();
        CriticalPath {
            packages,
            weight: end.map_or(0.0, |e| best[e]),
            weight_source: if use_measured {
                WeightSource::MeasuredSeconds
            } else {
                WeightSource::SourceBytes
            },
        }
    }

    /// Targets that cannot build on `toolchain`, as (package, target) pairs.
    pub fn unbuildable_targets<'a>(
        &'a self,
        toolchain: &Toolchain,
    ) -> Vec<(&'a Package, &'a Target)> {
        if toolchain.allows_feature_gates() {
            return Vec::new();
        }
        self.packages
            .iter()
            .flat_map(|p| p.targets.iter().filter(|t| t.needs_nightly()).map(move |t| (p, t)))
            .collect()
    }
}

fn model_target(t: &cargo_metadata::Target) -> Option<Target> {
    use cargo_metadata::TargetKind as K;
    let kind = t.kind.iter().find_map(|k| match k {
        K::Lib | K::RLib | K::DyLib | K::CDyLib | K::StaticLib | K::ProcMacro => {
            Some(TargetKind::Lib)
        }
        K::Bin => Some(TargetKind::Bin),
        K::Test => Some(TargetKind::Test),
        K::Bench => Some(TargetKind::Bench),
        K::Example => Some(TargetKind::Example),
        K::CustomBuild => Some(TargetKind::BuildScript),
        _ => None,
    })?;
    Some(Target {
        name: t.name.clone(),
        kind,
        src_path: t.src_path.clone(),
        required_features: t.required_features.clone(),
        doctest: t.doctest,
        test: t.test,
        nightly_features: crate_root_head(&t.src_path)
            .map(|s| feature_gates(&s))
            .unwrap_or_default(),
        harness: true,
    })
}

/// Targets declared with `harness = false`, as (kind, name). `[[test]]` and friends
/// without a `name` take the package's name, with dashes as underscores for `[lib]`.
/// An unreadable manifest yields nothing: cargo metadata has just read it.
pub(crate) fn custom_harness_targets(manifest: &Utf8Path) -> Vec<(TargetKind, String)> {
    let Ok(text) = std::fs::read_to_string(manifest) else { return Vec::new() };
    let Ok(doc) = text.parse::<toml::Table>() else { return Vec::new() };
    let package =
        doc.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()).unwrap_or_default();
    let no_harness = |t: &toml::Value| t.get("harness").and_then(|h| h.as_bool()) == Some(false);
    let mut out = Vec::new();
    if let Some(lib) = doc.get("lib").filter(|l| no_harness(l)) {
        let name = lib.get("name").and_then(|n| n.as_str()).unwrap_or(package);
        out.push((TargetKind::Lib, name.replace('-', "_")));
    }
    for (key, kind) in [
        ("bin", TargetKind::Bin),
        ("test", TargetKind::Test),
        ("bench", TargetKind::Bench),
        ("example", TargetKind::Example),
    ] {
        let Some(list) = doc.get(key).and_then(|v| v.as_array()) else { continue };
        for t in list.iter().filter(|t| no_harness(t)) {
            if let Some(name) = t.get("name").and_then(|n| n.as_str()) {
                out.push((kind, name.to_string()));
            }
        }
    }
    out
}

/// The start of a crate root: inner attributes come before any item, so the first
/// 16 KiB hold them in any real crate, and big generated roots are not read whole.
fn crate_root_head(path: &Utf8Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(4096);
    std::fs::File::open(path)?.take(16 * 1024).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The names in `#![feature(a, b)]` crate attributes of a crate root.
pub fn feature_gates(source: &str) -> Vec<String> {
    let mut gates = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("#![") {
        let after = rest[at + 3..].trim_start();
        rest = &rest[at + 3..];
        let Some(inner) = after.strip_prefix("feature") else {
            continue;
        };
        let inner = inner.trim_start();
        let Some(inner) = inner.strip_prefix('(') else {
            continue;
        };
        let Some(close) = inner.find(')') else {
            continue;
        };
        // A commented-out attribute does not count.
        let line_start = source[..source.len() - rest.len()].rfind('\n').map_or(0, |i| i + 1);
        let line = &source[line_start..source.len() - rest.len()];
        if line.contains("//") {
            continue;
        }
        gates.extend(
            inner[..close].split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from),
        );
    }
    gates
}

fn source_bytes(dir: &Utf8Path) -> u64 {
    fn walk(dir: &std::path::Path, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let path = entry.path();
            if ft.is_dir() {
                let name = entry.file_name();
                // Build output and nested VCS data are not source.
                if name == "target" || name == ".git" {
                    continue;
                }
                walk(&path, total);
            } else if ft.is_file() && path.extension().is_some_and(|e| e == "rs") {
                *total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let mut total = 0;
    walk(dir.as_std_path(), &mut total);
    total
}

/// Cargo prints a wall of context; a person needs the first error, where it is, and its
/// causes, on one line.
fn first_error_line(stderr: &str) -> String {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.by_ref().find_map(|l| l.strip_prefix("error:")) else {
        return stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    };
    let mut msg = first.trim().to_string();
    let mut next_is_cause = false;
    for l in lines {
        if l.starts_with("error") {
            break;
        }
        if let Some(location) = l.strip_prefix("-->") {
            msg.push_str(&format!(" at {}", location.trim()));
        } else if l == "Caused by:" {
            next_is_cause = true;
        } else if next_is_cause {
            msg.push_str(": ");
            msg.push_str(l);
            next_is_cause = false;
        }
    }
    msg
}
