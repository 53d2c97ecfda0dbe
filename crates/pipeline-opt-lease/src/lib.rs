//! Leases from a running pipeline-opt service pool, for tests that depend on this crate
//! alone (no engine, no database client). A pool is a directory that a supervisor keeps
//! (`cargo xtask pool up`, or the `services` stage of a run, which exports
//! [`POOL_ENV`]); a lease is an exclusive lock on one of its slot files, held for as long
//! as the [`Lease`] lives or its process runs, so a crashed test frees its slot too.
//!
//! ```no_run
//! let db = pipeline_opt_lease::lease("postgres")?; // waits for a free slot
//! let url = db.url(); // a fresh database; give it to your client, never print it
//! # Ok::<(), pipeline_opt_lease::LeaseError>(())
//! ```
//!
//! [`protocol`] is the pool directory's format, written by the engine and read here.

pub mod protocol;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::{Layout, Slot, SpecView, read_json, supervisor_running};
pub use protocol::{ProcessRecord, ServiceKind};

/// The environment variable that tells tests where the pool is: a run's test stages get
/// it from the `services` stage, and `pool up` prints it to export.
pub const POOL_ENV: &str = "PIPELINE_OPT_POOL";
/// Overrides the default lease timeout (a humantime duration such as `30s`).
pub const TIMEOUT_ENV: &str = "PIPELINE_OPT_POOL_TIMEOUT";
/// Where the engine keeps its state under a target directory, and the pool under that:
/// `<target-dir>/pipeline-opt/pool`, which [`lease`] looks for when [`POOL_ENV`] is unset.
pub const STATE_DIR_NAME: &str = "pipeline-opt";
pub const POOL_DIR_NAME: &str = "pool";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "no pool supervisor runs at {dir}; start one with `cargo xtask pool up` (it prints the {POOL_ENV} to export)"
    )]
    NotRunning { dir: PathBuf },
    #[error(
        "{POOL_ENV} is not set and no pool was found in a `target/pipeline-opt/pool` above {cwd}; start one with `cargo xtask pool up` and export {POOL_ENV}"
    )]
    NoPool { cwd: PathBuf },
    #[error("the pool at {dir} has no service `{service}`; its services: {known}")]
    UnknownService { dir: PathBuf, service: String, known: String },
    #[error(
        "no `{service}` instance was free within {waited:?} (pool of {size} at {dir}); raise `size` in [workspace.metadata.pipeline-opt.services.{service}] or the timeout ({TIMEOUT_ENV})"
    )]
    Timeout { service: String, waited: Duration, size: usize, dir: PathBuf },
}

/// An instance leased to this process; dropping it (or the process dying) returns it.
pub struct Lease {
    slot: Slot,
    lock: File,
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
    /// The slot file's contents, as the supervisor wrote them.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }
    /// The descriptor whose lock is the lease: while any process holds it open (a copy
    /// inherited across a fork, say), the slot stays leased.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.lock.as_raw_fd()
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
pub fn lease(service: &str) -> Result<Lease, LeaseError> {
    let dir = pool_dir()?;
    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|t| humantime::parse_duration(&t).ok())
        .unwrap_or(Duration::from_secs(30));
    lease_from(&dir, service, timeout)
}

/// The pool named by `PIPELINE_OPT_POOL`, or found in a `target/pipeline-opt/pool`
/// above the current directory.
pub fn pool_dir() -> Result<PathBuf, LeaseError> {
    match std::env::var_os(POOL_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => find_pool_dir(),
    }
}

/// `mode = "server"`: the running server of PostgreSQL service `service`, as a slot
/// naming its maintenance database; nothing is leased.
pub fn server(service: &str) -> Result<Slot, LeaseError> {
    let dir = pool_dir()?;
    let layout = Layout::new(&dir);
    let spec = running_spec(&layout)?;
    spec.size_of(&dir, service)?;
    read_json(&layout.server(service)).ok_or(LeaseError::NotRunning { dir })
}

fn find_pool_dir() -> Result<PathBuf, LeaseError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    // Only a UTF-8 path can hold a state directory: the engine keeps no other.
    for dir in cwd.ancestors().filter(|d| d.to_str().is_some()) {
        let candidate = dir.join("target").join(STATE_DIR_NAME).join(POOL_DIR_NAME);
        if Layout::new(&candidate).spec().exists() {
            return Ok(candidate);
        }
    }
    Err(LeaseError::NoPool { cwd })
}

fn running_spec(layout: &Layout) -> Result<SpecView, LeaseError> {
    match read_json(&layout.spec()) {
        Some(spec) if supervisor_running(layout) => Ok(spec),
        _ => Err(LeaseError::NotRunning { dir: layout.dir.clone() }),
    }
}

impl SpecView {
    /// How many slots `service` has, or the error naming the services there are.
    fn size_of(&self, dir: &Path, service: &str) -> Result<usize, LeaseError> {
        match self.services.iter().find(|s| s.name == service) {
            Some(s) => Ok(s.size),
            None => {
                let known: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                Err(LeaseError::UnknownService {
                    dir: dir.to_path_buf(),
                    service: service.to_string(),
                    known: if known.is_empty() { "none".into() } else { known.join(", ") },
                })
            }
        }
    }
}

/// Leases from the pool in `dir`.
pub fn lease_from(dir: &Path, service: &str, timeout: Duration) -> Result<Lease, LeaseError> {
    let start = Instant::now();
    let layout = Layout::new(dir);
    let size = running_spec(&layout)?.size_of(dir, service)?;
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
                return Ok(Lease { slot, lock, acquired_in: start.elapsed() });
            }
        }
        if start.elapsed() >= timeout {
            return Err(LeaseError::Timeout {
                service: service.to_string(),
                waited: timeout,
                size,
                dir: dir.to_path_buf(),
            });
        }
        if last_liveness_check.elapsed() > Duration::from_millis(200) {
            if !supervisor_running(&layout) {
                return Err(LeaseError::NotRunning { dir: dir.to_path_buf() });
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
