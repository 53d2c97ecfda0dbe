//! `DependencyCache`: fetch dependencies once per `Cargo.lock` content and toolchain.
//! Later runs only confirm offline that everything is present; when the registry cannot
//! be reached but everything is present the run goes on offline, and when something is
//! missing the one error names the package.

use std::collections::BTreeMap;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::store::{CACHE_SCHEMA_VERSION, CacheError, now_secs, read_json, write_json_atomic};
use crate::state::StateDir;
use crate::toolchain::Toolchain;
use crate::workspace::Workspace;

#[derive(Debug, Clone)]
pub struct DependencyCache {
    path: Utf8PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FetchRecord {
    schema_version: u32,
    /// Hash of `Cargo.lock` and the toolchain's `rustc -vV`.
    key: String,
    fetched_at: u64,
    /// The pipeline run that fetched, if a run did.
    #[serde(default)]
    run_id: Option<String>,
}

/// What [`DependencyCache::ensure_fetched`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// This lock file was fetched before and everything is still present: no network.
    AlreadyFetched,
    /// Fetched from the registry.
    Fetched,
    /// The registry could not be reached, but everything needed is present: later
    /// stages run offline. `reason` is cargo's network error.
    WentOffline { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "dependency `{package}` is not downloaded and the registry cannot be reached ({network}); connect to the network and run `cargo fetch`, or vendor it"
    )]
    Missing { package: String, network: String },
    #[error("`cargo fetch` failed in {dir}: {message}")]
    Failed { dir: Utf8PathBuf, message: String },
    #[error("could not run cargo in {dir}: {message}; is cargo on PATH?")]
    Spawn { dir: Utf8PathBuf, message: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl DependencyCache {
    /// The record lives at `<state_dir>/cache/deps.json`.
    pub fn open(state_dir: &StateDir) -> DependencyCache {
        DependencyCache { path: state_dir.deps_record() }
    }

    /// What identifies one fetch: the lock file's content and the toolchain.
    pub fn key(workspace: &Workspace, toolchain: &Toolchain) -> String {
        let lock = std::fs::read(workspace.root.join("Cargo.lock")).unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(&lock);
        h.update(&[0]);
        h.update(toolchain.verbose_version.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    /// Whether this lock file (with this toolchain) has not been fetched yet. A missing
    /// or unreadable record means "fetch".
    pub fn needs_fetch(&self, workspace: &Workspace, toolchain: &Toolchain) -> bool {
        if !workspace.root.join("Cargo.lock").is_file() {
            return true;
        }
        match read_json::<FetchRecord>(&self.path) {
            Ok(Some(r)) => {
                r.schema_version != CACHE_SCHEMA_VERSION || r.key != Self::key(workspace, toolchain)
            }
            Ok(None) => true,
            Err(message) => {
                // Only costs a fetch, but say so rather than rewrite it silently.
                eprintln!(
                    "warning: {}",
                    super::store::set_aside_warning(
                        &self.path,
                        "dependency record",
                        &message,
                        "dependencies are fetched again",
                    )
                );
                true
            }
        }
    }

    pub fn record_fetched(
        &self,
        workspace: &Workspace,
        toolchain: &Toolchain,
    ) -> Result<(), CacheError> {
        self.record_fetched_in(workspace, toolchain, None)
    }

    /// Like [`record_fetched`](Self::record_fetched), naming the run that fetched.
    pub fn record_fetched_in(
        &self,
        workspace: &Workspace,
        toolchain: &Toolchain,
        run_id: Option<&str>,
    ) -> Result<(), CacheError> {
        let record = FetchRecord {
            schema_version: CACHE_SCHEMA_VERSION,
            key: Self::key(workspace, toolchain),
            fetched_at: now_secs(),
            run_id: run_id.map(String::from),
        };
        write_json_atomic(&self.path, &record)
    }

    /// The run that fetched this lock file, when nothing needs fetching.
    pub fn last_run(&self, workspace: &Workspace, toolchain: &Toolchain) -> Option<String> {
        if self.needs_fetch(workspace, toolchain) {
            return None;
        }
        let r = read_json::<FetchRecord>(&self.path).ok().flatten()?;
        Some(r.run_id.unwrap_or_else(|| format!("fetch at {}", r.fetched_at)))
    }

    /// Makes sure every dependency is downloaded, touching the network only when the
    /// lock file changed since the last recorded fetch (or something went missing).
    /// `env` is set on every cargo it runs (the fetch stage's environment).
    pub fn ensure_fetched(
        &self,
        workspace: &Workspace,
        toolchain: &Toolchain,
        env: &BTreeMap<String, String>,
    ) -> Result<FetchOutcome, FetchError> {
        let dir = &workspace.root;
        if !self.needs_fetch(workspace, toolchain) && cargo_fetch(workspace, env, true)?.is_ok() {
            return Ok(FetchOutcome::AlreadyFetched);
        }
        match cargo_fetch(workspace, env, false)? {
            Ok(()) => {
                self.record_fetched(workspace, toolchain)?;
                Ok(FetchOutcome::Fetched)
            }
            Err(online) => {
                if !is_network_error(&online) {
                    return Err(FetchError::Failed { dir: dir.clone(), message: online });
                }
                let network = first_line(&online);
                match cargo_fetch(workspace, env, true)? {
                    Ok(()) => {
                        self.record_fetched(workspace, toolchain)?;
                        Ok(FetchOutcome::WentOffline { reason: network })
                    }
                    Err(offline) => match missing_package(&offline) {
                        Some(package) => Err(FetchError::Missing { package, network }),
                        None => Err(FetchError::Failed { dir: dir.clone(), message: offline }),
                    },
                }
            }
        }
    }
}

/// Runs `cargo fetch` (offline or not); the inner `Err` is cargo's stderr.
fn cargo_fetch(
    workspace: &Workspace,
    env: &BTreeMap<String, String>,
    offline: bool,
) -> Result<Result<(), String>, FetchError> {
    let dir = workspace.root.clone();
    let spawn = |message: String| FetchError::Spawn { dir: dir.clone(), message };
    let sh = Shell::new().map_err(|e| spawn(e.to_string()))?;
    let sh = sh.with_current_dir(&dir);
    let manifest = workspace.manifest_path.as_str();
    let offline_flag: &[&str] = if offline { &["--offline"] } else { &[] };
    let mut c =
        cmd!(sh, "cargo fetch --manifest-path {manifest} {offline_flag...}").ignore_status();
    for var in crate::toolchain::inherited_cargo_vars() {
        c = c.env_remove(var);
    }
    let out = c.envs(env).output().map_err(|e| spawn(e.to_string()))?;
    if out.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

fn is_network_error(stderr: &str) -> bool {
    const SIGNS: &[&str] = &[
        "Could not connect",
        "Couldn't resolve",
        "failed to download from",
        "failed to query replaced source",
        "network failure",
        "Connection refused",
        "timed out",
        "spurious network error",
        "failed to get successful HTTP response",
        "SSL",
    ];
    SIGNS.iter().any(|s| stderr.contains(s))
}

/// The package an offline `cargo fetch` says it lacks: ``failed to download `itoa
/// v0.4.1` `` or ``no matching package named `itoa` found``.
pub fn missing_package(stderr: &str) -> Option<String> {
    for prefix in
        ["failed to download `", "no matching package named `", "no matching package found\n"]
    {
        if let Some(i) = stderr.find(prefix) {
            let rest = &stderr[i + prefix.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

fn first_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Caused by") && !l.starts_with("Downloading"))
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_package_is_named() {
        let download = "error: failed to download `itoa v0.4.1`\n\nCaused by:\n  attempting to make an HTTP request, but --offline was specified\n";
        assert_eq!(missing_package(download).as_deref(), Some("itoa v0.4.1"));
        let resolve =
            "error: no matching package named `itoa` found\nlocation searched: crates.io index\n";
        assert_eq!(missing_package(resolve).as_deref(), Some("itoa"));
        assert_eq!(missing_package("error: something else"), None);
        assert!(is_network_error("[7] Could not connect to server"));
    }
}
