//! The pool's on-disk state as the supervisor writes it: atomic writes, stopping the
//! processes it recorded, where instance data lives. Where each file lives and the
//! process records are the lease protocol's (`pipeline_opt_lease::protocol`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::PoolError;
// The layout, the process records and the liveness check are the lease protocol's, so
// the supervisor writes exactly what a lease reads.
pub use pipeline_opt_lease::ProcessRecord;
pub(crate) use pipeline_opt_lease::protocol::{Layout, read_json, supervisor_running};

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
