//! Leases across processes: a ready slot is a file in `slots/<service>/ready/`; a lease
//! takes an exclusive lock on it, checks that the file is still the one in `ready/`, and
//! moves it to `leased/`. The lock lives as long as the [`Lease`] (or its process): once
//! it is free, the supervisor resets or drops what the slot names. No SQL or server
//! command runs on this path.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::files::{self, Layout, read_json};
use super::{POOL_ENV, PoolError, PoolSpec, TIMEOUT_ENV};
use crate::config::ServiceKind;
use crate::state::StateDir;

/// What a slot file holds. The URL carries the password: slot files are mode 0600 and
/// the URL is never printed (see [`Lease`]'s `Debug`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Slot {
    pub service: String,
    pub kind: ServiceKind,
    pub url: String,
    /// The database name (PostgreSQL) or number (Redis), if any.
    pub database: Option<String>,
    pub port: u16,
    /// The server that holds the slot's data; a lease never returns a dead one.
    pub server: Option<files::ProcessRecord>,
    pub generation: u32,
}

/// An instance leased to this process; dropping it (or the process dying) returns it.
pub struct Lease {
    slot: Slot,
    _lock: File,
    acquired_in: Duration,
}

impl Lease {
    /// The connection URL, credentials included: give it to a client, never print it.
    pub fn url(&self) -> &str {
        &self.slot.url
    }
    pub fn service(&self) -> &str {
        &self.slot.service
    }
    pub fn kind(&self) -> ServiceKind {
        self.slot.kind
    }
    /// The leased database name (PostgreSQL) or number (Redis).
    pub fn database(&self) -> Option<&str> {
        self.slot.database.as_deref()
    }
    pub fn port(&self) -> u16 {
        self.slot.port
    }
    /// The pid of the server process (process backend).
    pub fn server_pid(&self) -> Option<u32> {
        self.slot.server.map(|s| s.pid)
    }
    /// How long the lease call took.
    pub fn acquired_in(&self) -> Duration {
        self.acquired_in
    }
    pub(crate) fn slot(&self) -> &Slot {
        &self.slot
    }
    /// The descriptor whose lock is the lease: while any process holds it open, the slot
    /// stays leased.
    pub(crate) fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._lock.as_raw_fd()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("service", &self.slot.service)
            .field("database", &self.slot.database)
            .field("port", &self.slot.port)
            .field("url", &"<redacted>")
            .finish()
    }
}

/// Leases an instance of `service` from the pool named by `PIPELINE_OPT_POOL` (or found
/// in a `target/pipeline-opt/pool` above the current directory), waiting up to
/// `PIPELINE_OPT_POOL_TIMEOUT` (default 30 s) for a free one.
pub fn lease(service: &str) -> Result<Lease, PoolError> {
    let dir = pool_dir()?;
    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|t| humantime::parse_duration(&t).ok())
        .unwrap_or(Duration::from_secs(30));
    lease_from(&dir, service, timeout)
}

/// The pool named by `PIPELINE_OPT_POOL`, or found in a `target/pipeline-opt/pool`
/// above the current directory.
pub(crate) fn pool_dir() -> Result<PathBuf, PoolError> {
    match std::env::var_os(POOL_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => find_pool_dir(),
    }
}

/// `mode = "server"`: the running server of PostgreSQL service `service`, as a slot
/// naming its maintenance database; nothing is leased.
pub(crate) fn server_slot(service: &str) -> Result<Slot, PoolError> {
    let dir = pool_dir()?;
    let layout = Layout::new(&dir);
    let spec: PoolSpec = match read_json(&layout.spec()) {
        Some(spec) if files::supervisor_running(&layout) => spec,
        _ => return Err(PoolError::NotRunning { dir }),
    };
    if !spec.services.iter().any(|s| s.name == service) {
        let known: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        return Err(PoolError::UnknownService {
            dir,
            service: service.to_string(),
            known: if known.is_empty() { "none".into() } else { known.join(", ") },
        });
    }
    read_json(&layout.server(service)).ok_or(PoolError::NotRunning { dir })
}

fn find_pool_dir() -> Result<PathBuf, PoolError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    // Only a UTF-8 path can hold a state directory: the tool keeps no other.
    for dir in cwd.ancestors().filter_map(camino::Utf8Path::from_path) {
        let candidate = StateDir::in_target_dir(&dir.join("target")).pool().into_std_path_buf();
        if candidate.join("run/spec.json").exists() {
            return Ok(candidate);
        }
    }
    Err(PoolError::NoPool { cwd })
}

/// Leases from the pool in `dir`.
pub fn lease_from(dir: &Path, service: &str, timeout: Duration) -> Result<Lease, PoolError> {
    let start = Instant::now();
    let layout = Layout::new(dir);
    let spec: PoolSpec = match read_json(&layout.spec()) {
        Some(spec) if files::supervisor_running(&layout) => spec,
        _ => return Err(PoolError::NotRunning { dir: dir.to_path_buf() }),
    };
    let Some(size) = spec.services.iter().find(|s| s.name == service).map(|s| s.size) else {
        let known: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        return Err(PoolError::UnknownService {
            dir: dir.to_path_buf(),
            service: service.to_string(),
            known: if known.is_empty() { "none".into() } else { known.join(", ") },
        });
    };
    let ready = layout.ready(service);
    let leased = layout.leased(service);
    // Processes start at different slots so that they do not all fight for the first.
    let offset = std::process::id() as usize;
    let mut pause = Duration::from_micros(200);
    let mut last_liveness_check = Instant::now();
    loop {
        let mut names: Vec<_> = std::fs::read_dir(&ready)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        let n = names.len();
        for i in 0..n {
            let name = &names[(i + offset) % n];
            if let Some((slot, lock)) = try_claim(&ready.join(name), &leased.join(name)) {
                return Ok(Lease { slot, _lock: lock, acquired_in: start.elapsed() });
            }
        }
        if start.elapsed() >= timeout {
            return Err(PoolError::Timeout {
                service: service.to_string(),
                waited: timeout,
                size,
                dir: dir.to_path_buf(),
            });
        }
        if last_liveness_check.elapsed() > Duration::from_millis(200) {
            if !files::supervisor_running(&layout) {
                return Err(PoolError::NotRunning { dir: dir.to_path_buf() });
            }
            last_liveness_check = Instant::now();
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Claims one ready slot, or `None` when another process got it first or it went stale.
fn try_claim(ready: &Path, leased: &Path) -> Option<(Slot, File)> {
    let mut file = OpenOptions::new().read(true).write(true).open(ready).ok()?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) | Err(TryLockError::Error(_)) => return None,
    }
    // The lock is on the file, not the name: between our open and our lock another
    // process may have leased it and given it back, or the supervisor retired it.
    let ours = file.metadata().ok()?;
    let named = std::fs::metadata(ready).ok()?;
    if (ours.dev(), ours.ino()) != (named.dev(), named.ino()) {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let slot: Slot = serde_json::from_str(&text).ok()?;
    if slot.server.is_some_and(|s| !s.alive()) {
        // A killed server: the supervisor replaces it and retires this slot.
        return None;
    }
    std::fs::rename(ready, leased).ok()?;
    Some((slot, file))
}
