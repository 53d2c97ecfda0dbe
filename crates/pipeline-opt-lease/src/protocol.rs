//! The pool directory as the engine's supervisor writes it and a lease reads it: where
//! each file lives, the slot file's contents, and the process records that tell a live
//! server from a stranger that reused its pid. Defined once, here, for both sides.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// What kind of server a service is, as the config writes it (`kind = "postgres"`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    Postgres,
    Redis,
    Command,
}

impl ServiceKind {
    /// As the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "postgres",
            ServiceKind::Redis => "redis",
            ServiceKind::Command => "command",
        }
    }
}

/// What a slot file holds. The URL carries the password: slot files are mode 0600 and
/// the URL is never printed (see `Lease`'s `Debug`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot {
    pub service: String,
    pub kind: ServiceKind,
    pub url: String,
    /// The database name (PostgreSQL) or number (Redis), if any.
    pub database: Option<String>,
    pub port: u16,
    /// The server that holds the slot's data; a lease never returns a dead one.
    pub server: Option<ProcessRecord>,
    pub generation: u32,
}

/// The part of the pool's `run/spec.json` a lease reads: which services there are and
/// how many slots each has (the engine's spec holds more, which serde skips here).
#[derive(Debug, Deserialize)]
pub(crate) struct SpecView {
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ServiceView {
    pub name: String,
    pub size: usize,
}

/// The layout of one pool directory (`<state-dir>/pool`).
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout { dir: dir.to_path_buf() }
    }
    /// State of the running supervisor; removed by `down` and `clean`.
    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Held (flock) by the supervisor for its whole life: free means none runs.
    pub fn supervisor_lock(&self) -> PathBuf {
        self.run().join("supervisor.lock")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.run().join("supervisor.pid")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.run().join("supervisor.log")
    }
    /// PostgreSQL: the server's maintenance database as a slot (URL with the
    /// password, 0600), for `mode = "server"`; rewritten when the server is replaced.
    pub fn server(&self, service: &str) -> PathBuf {
        self.run().join("servers").join(format!("{service}.json"))
    }
    pub fn spec(&self) -> PathBuf {
        self.run().join("spec.json")
    }
    pub fn status(&self) -> PathBuf {
        self.run().join("status.json")
    }
    /// One record per server process, for `clean` after a crash.
    pub fn instances(&self) -> PathBuf {
        self.run().join("instances")
    }
    pub fn logs(&self) -> PathBuf {
        self.run().join("logs")
    }
    pub fn ready(&self, service: &str) -> PathBuf {
        self.run().join("slots").join(service).join("ready")
    }
    pub fn leased(&self, service: &str) -> PathBuf {
        self.run().join("slots").join(service).join("leased")
    }
    pub fn slots_tmp(&self, service: &str) -> PathBuf {
        self.run().join("slots").join(service).join("tmp")
    }
    /// Cached `initdb` output, kept across runs (not under `run/`).
    pub fn default_template_cache(&self) -> PathBuf {
        self.dir.join("template")
    }
}

/// Reads a JSON file; `None` when it is missing or not (yet) valid.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

/// Whether some process holds the supervisor lock (a supervisor runs).
pub fn supervisor_running(layout: &Layout) -> bool {
    let Ok(f) = File::open(layout.supervisor_lock()) else { return false };
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// A process the pool started: its pid and the kernel's start time for it, so that a
/// later check never mistakes a new process with a reused pid for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessRecord {
    pub fn of(pid: u32) -> Option<ProcessRecord> {
        Some(ProcessRecord { pid, start_time: proc_start_time(pid)? })
    }
    /// The same process still exists and has not exited (zombies count as gone).
    pub fn alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of `/proc/<pid>/stat`; `None` for a missing or zombie process.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}
