//! The pool's on-disk state: where each file lives, atomic writes, and process records
//! (pid plus kernel start time) that tell a live process we started from a stranger
//! that reused its pid.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::PoolError;

/// The layout of one pool directory (`<state-dir>/pool`).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
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

pub(crate) fn io_err(action: &str, path: &Path) -> impl FnOnce(io::Error) -> PoolError {
    let action = action.to_string();
    let path = path.to_path_buf();
    move |source| PoolError::Io { action, path, source }
}

pub(crate) fn create_dir(path: &Path) -> Result<(), PoolError> {
    fs::create_dir_all(path).map_err(io_err("create directory", path))
}

/// Writes `value` as JSON through a temporary file and a rename, readable by the owner
/// only: slot files and the spec hold passwords.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PoolError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(value).expect("pool state serializes");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    f.write_all(&bytes).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("write", path))
}

/// Reads a JSON file; `None` when it is missing or not (yet) valid.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

/// A process we started: its pid and the kernel's start time for it, so that a later
/// check never mistakes a new process with a reused pid for ours.
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
pub(crate) fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
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

/// Random hex for passwords and names, from the kernel.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable on Linux");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asks the process group led by `record` (our servers lead their own group) to stop
/// with `signal`, waits up to `grace` for its leader, then kills the group. Only while
/// the pid is still the process we started, so a reused pid is never signalled; the
/// leader is not reaped here, since it may be another process's child (or a thread's
/// `Child`, which reaps it).
pub(crate) fn stop_record(record: &ProcessRecord, signal: i32, grace: std::time::Duration) {
    let alive = || record.alive();
    crate::process::GroupStop::new(grace)
        .signal(signal)
        .until_leader_gone(&alive)
        .poll(std::time::Duration::from_millis(5))
        .stop(&[record.pid as i32]);
}

/// Whether some process holds the supervisor lock (a supervisor runs).
pub(crate) fn supervisor_running(layout: &Layout) -> bool {
    let Ok(f) = File::open(layout.supervisor_lock()) else { return false };
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Where instance data lives: tmpfs when there is one (copies and database clones are
/// many times faster in memory), a private temp dir otherwise.
pub(crate) fn data_root(layout: &Layout) -> PathBuf {
    let tag = {
        // A short stable name per pool directory, so two pools never share data dirs.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in layout.dir.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        format!("pipeline-opt-pool-{h:016x}")
    };
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::Builder::new().prefix(".probe").tempfile_in(shm).is_ok() {
        shm.join(tag)
    } else {
        std::env::temp_dir().join(tag)
    }
}
