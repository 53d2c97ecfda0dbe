//! The cache on disk under `<state-dir>/cache/`: records of successful stages and
//! per-package test runs, the file-hash stat cache, hit counts of recent runs. Writes
//! are atomic (temp file, fsync, rename); an unreadable record is a miss with a warning;
//! a lock file keeps two invocations on one workspace from interleaving.

use std::fs::File;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fingerprint::{FileHasher, Fingerprint};
use crate::state::StateDir;

/// Bumped on every incompatible change of the files below; older files are misses.
pub const CACHE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "could not create the cache directory {path}: {source}; check its permissions or set [workspace.metadata.pipeline-opt.cache] dir"
    )]
    CreateDir {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the cache file {path}: {source}; is the disk full?")]
    Write {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted while waiting for {path}, held by another run")]
    Interrupted { path: Utf8PathBuf },
    #[error("could not lock {path}: {source}")]
    Lock {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to clean the state directory {dir}: {reason}, where directories of your own may live; move `cache.dir` under the target directory, or run `cargo xtask cache clean --force` to remove only what pipeline-opt created there"
    )]
    UnsafeClean { dir: Utf8PathBuf, reason: String },
    #[error("could not remove {path}: {source}")]
    Remove {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A recorded success: the fingerprint the stage (or package's tests) ran with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuccessRecord {
    pub schema_version: u32,
    pub key: String,
    pub run_id: String,
    /// Seconds since the Unix epoch.
    pub recorded_at: u64,
    pub digest: String,
    pub fingerprint: Fingerprint,
}

/// How many recent successes a stage keeps: a `--since` run and a full run (or two
/// feature sets) alternate without evicting each other.
pub const RECORDS_PER_STAGE: usize = 4;

/// One stage's (or package's tests') recent successes, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RecordFile {
    schema_version: u32,
    records: Vec<SuccessRecord>,
}

fn add_record(path: &Utf8Path, new: SuccessRecord) -> Result<(), CacheError> {
    let mut records = match read_json::<RecordFile>(path) {
        Ok(Some(f)) if f.schema_version == CACHE_SCHEMA_VERSION => f.records,
        _ => Vec::new(),
    };
    records.retain(|r| r.fingerprint != new.fingerprint);
    records.insert(0, new);
    records.truncate(RECORDS_PER_STAGE);
    write_json_atomic(path, &RecordFile { schema_version: CACHE_SCHEMA_VERSION, records })
}

/// Hits and misses of one run, for `cache status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunHits {
    pub run_id: String,
    pub recorded_at: u64,
    pub hits: usize,
    pub misses: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HitsFile {
    schema_version: u32,
    runs: Vec<RunHits>,
}

/// How many runs `cache status` averages the hit rate over.
pub const RECENT_RUNS: usize = 20;

/// The cache directory of one workspace. Holding a `Store` holds its lock.
#[derive(Debug)]
pub struct Store {
    state: StateDir,
    _lock: File,
    /// Problems met while reading (corrupt files); each was treated as a miss.
    pub warnings: Vec<String>,
}

impl Store {
    /// Opens (creating) `<state_dir>/cache` and takes its lock, calling `on_wait` once
    /// if another invocation holds it, then waiting for it.
    pub fn open(
        state_dir: &StateDir,
        on_wait: impl FnOnce(&Utf8Path),
    ) -> Result<Store, CacheError> {
        let dir = state_dir.cache();
        std::fs::create_dir_all(&dir)
            .map_err(|source| CacheError::CreateDir { path: dir.clone(), source })?;
        let lock_path = state_dir.cache_lock();
        let warnings: Vec<String> = set_aside_unusable_lock(&lock_path).into_iter().collect();
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| CacheError::Lock { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait(&lock_path);
                // Polled rather than a blocking flock, which SA_RESTART would resume
                // after a Ctrl-C: an interrupt ends the wait.
                loop {
                    match lock.try_lock() {
                        Ok(()) => break,
                        Err(std::fs::TryLockError::WouldBlock) => {}
                        Err(std::fs::TryLockError::Error(source)) => {
                            return Err(CacheError::Lock { path: lock_path, source });
                        }
                    }
                    if crate::process::received_signal().is_some() {
                        return Err(CacheError::Interrupted { path: lock_path });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(CacheError::Lock { path: lock_path, source });
            }
        }
        Ok(Store { state: state_dir.clone(), _lock: lock, warnings })
    }

    fn stage_path(&self, stage: &str) -> Utf8PathBuf {
        self.state.cache_stage_records().join(format!("{}.json", file_safe(stage)))
    }

    /// One file per stage and package: `<stage>.<package>.json` (stage ids and package
    /// names have no `.`, so no two pairs share a file).
    fn test_path(&self, stage: &str, package: &str) -> Utf8PathBuf {
        self.state.cache_test_records().join(format!(
            "{}.{}.json",
            file_safe(stage),
            file_safe(package)
        ))
    }

    /// The last success of `stage`; `Err` carries why an existing record was unusable.
    /// The recent successes of `stage`, newest first; `Err` carries why an existing
    /// file was unusable (it then counts as empty).
    pub fn stage_records(&mut self, stage: &str) -> Result<Vec<SuccessRecord>, String> {
        let path = self.stage_path(stage);
        self.read_records(&path)
    }

    /// The recent successes of `package`'s part of `stage` (its tests, its doctests).
    pub fn test_records(
        &mut self,
        stage: &str,
        package: &str,
    ) -> Result<Vec<SuccessRecord>, String> {
        let path = self.test_path(stage, package);
        self.read_records(&path)
    }

    fn read_records(&mut self, path: &Utf8Path) -> Result<Vec<SuccessRecord>, String> {
        match read_json::<RecordFile>(path) {
            Ok(Some(f)) if f.schema_version == CACHE_SCHEMA_VERSION => Ok(f.records),
            Ok(Some(f)) => {
                Err(format!("schema version {} is not {CACHE_SCHEMA_VERSION}", f.schema_version))
            }
            Ok(None) => Ok(Vec::new()),
            Err(message) => {
                self.warnings.push(set_aside_warning(
                    path,
                    "cache file",
                    &message,
                    "the stage runs again",
                ));
                Err(message)
            }
        }
    }

    pub fn record_stage(
        &self,
        stage: &str,
        run_id: &str,
        fp: &Fingerprint,
    ) -> Result<(), CacheError> {
        add_record(&self.stage_path(stage), record(stage, run_id, fp))
    }

    pub fn record_test(
        &self,
        stage: &str,
        package: &str,
        run_id: &str,
        fp: &Fingerprint,
    ) -> Result<(), CacheError> {
        add_record(&self.test_path(stage, package), record(package, run_id, fp))
    }

    /// Forgets every recorded success of `stage` (or, with `package`, of that
    /// package's part of it): `--verify-cache` found one that no longer holds.
    pub fn forget(&self, stage: &str, package: Option<&str>) -> Result<(), CacheError> {
        let path = match package {
            Some(p) => self.test_path(stage, p),
            None => self.stage_path(stage),
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CacheError::Remove { path, source: e })
            }
            _ => Ok(()),
        }
    }

    fn junit_dir(&self, stage: &str, package: Option<&str>) -> Utf8PathBuf {
        let dir = self.state.cache_junit().join(file_safe(stage));
        match package {
            Some(p) => dir.join(file_safe(p)),
            None => dir,
        }
    }

    /// Keeps the JUnit XML of a success just recorded (of `stage`, or with `package` of
    /// that package's tests), to replay when the cache serves it; the files of runs no
    /// longer among the recorded successes go.
    pub fn record_junit(
        &self,
        stage: &str,
        package: Option<&str>,
        run_id: &str,
        xml: &str,
    ) -> Result<(), CacheError> {
        let dir = self.junit_dir(stage, package);
        write_text_atomic(&dir.join(format!("{}.xml", file_safe(run_id))), xml)?;
        let records = match package {
            Some(p) => self.test_path(stage, p),
            None => self.stage_path(stage),
        };
        let kept: Vec<String> = match read_json::<RecordFile>(&records) {
            Ok(Some(f)) => {
                f.records.iter().map(|r| format!("{}.xml", file_safe(&r.run_id))).collect()
            }
            _ => return Ok(()),
        };
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".xml") && !kept.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// The JUnit XML recorded with the success of `run_id`, if any.
    pub fn junit(&self, stage: &str, package: Option<&str>, run_id: &str) -> Option<String> {
        let path = self.junit_dir(stage, package).join(format!("{}.xml", file_safe(run_id)));
        std::fs::read_to_string(path).ok()
    }

    pub fn load_hasher(&mut self) -> FileHasher {
        let path = self.state.stat_cache();
        match read_json::<FileHasher>(&path) {
            Ok(h) => h.unwrap_or_default(),
            Err(message) => {
                self.warnings.push(set_aside_warning(
                    &path,
                    "stat cache",
                    &message,
                    "every file is hashed again",
                ));
                FileHasher::default()
            }
        }
    }

    /// The stat cache as saved, for a second look at the inputs within one run; a
    /// corrupt one (already warned about when the run loaded it) hashes every file.
    pub fn peek_hasher(&self) -> FileHasher {
        read_json::<FileHasher>(&self.state.stat_cache()).ok().flatten().unwrap_or_default()
    }

    /// Saves the stat cache if it changed. It is only a cache: it skips the fsync, and a
    /// file torn by a crash is read as empty (every file hashed again), never trusted.
    pub fn save_hasher(&self, hasher: &FileHasher) -> Result<(), CacheError> {
        if !hasher.dirty {
            return Ok(());
        }
        write_json(&self.state.stat_cache(), hasher, false)
    }

    /// Appends one run's hit counts, keeping the most recent runs only.
    pub fn record_hits(
        &mut self,
        run_id: &str,
        hits: usize,
        misses: usize,
    ) -> Result<(), CacheError> {
        let path = self.state.cache_hits();
        let mut file = match read_json::<HitsFile>(&path) {
            Ok(f) => f.unwrap_or_default(),
            Err(message) => {
                self.warnings.push(set_aside_warning(
                    &path,
                    "hit counts",
                    &message,
                    "`cache status` counts from this run on",
                ));
                HitsFile::default()
            }
        };
        file.schema_version = CACHE_SCHEMA_VERSION;
        file.runs.push(RunHits { run_id: run_id.into(), recorded_at: now_secs(), hits, misses });
        let excess = file.runs.len().saturating_sub(RECENT_RUNS);
        file.runs.drain(..excess);
        write_json_atomic(&path, &file)
    }

    pub fn recent_hits(&self) -> Vec<RunHits> {
        read_json::<HitsFile>(&self.state.cache_hits())
            .ok()
            .flatten()
            .map(|f| f.runs)
            .unwrap_or_default()
    }

    /// Every record file (stage and test entries) with its age.
    pub fn entries(&self) -> Vec<(Utf8PathBuf, u64, Duration)> {
        let mut out = Vec::new();
        for records in [self.state.cache_stage_records(), self.state.cache_test_records()] {
            let Ok(rd) = std::fs::read_dir(records) else { continue };
            for e in rd.flatten() {
                let Ok(p) = Utf8PathBuf::from_path_buf(e.path()) else { continue };
                let Ok(meta) = e.metadata() else { continue };
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                out.push((p, meta.len(), age));
            }
        }
        out
    }
}

fn record(key: &str, run_id: &str, fp: &Fingerprint) -> SuccessRecord {
    SuccessRecord {
        schema_version: CACHE_SCHEMA_VERSION,
        key: key.into(),
        run_id: run_id.into(),
        recorded_at: now_secs(),
        digest: fp.digest(),
        fingerprint: fp.clone(),
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Stage ids and package names become file names; anything else is escaped.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect()
}

/// Moves an unreadable state file (or whatever took its place: a directory, a symlink)
/// out of the way as `<name>.corrupt-<unix seconds>`, never deleting it, so the next
/// write starts afresh and the user can still look at it. Returns the new path.
pub fn set_aside(path: &Utf8Path) -> std::io::Result<Utf8PathBuf> {
    let name = path.file_name().unwrap_or("state");
    let base = path.with_file_name(format!("{name}.corrupt-{}", now_secs()));
    let mut aside = base.clone();
    let mut n = 1;
    while std::fs::symlink_metadata(&aside).is_ok() {
        aside = Utf8PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// The warning for a state file read as unusable: set aside (see [`set_aside`]) when
/// possible, with what happens next.
pub(crate) fn set_aside_warning(path: &Utf8Path, what: &str, message: &str, next: &str) -> String {
    match set_aside(path) {
        Ok(aside) => {
            format!("set aside the unreadable {what} {path} as {aside} ({message}); {next}")
        }
        Err(e) => format!(
            "ignoring the unreadable {what} {path} ({message}; could not set it aside: {e}); {next}"
        ),
    }
}

/// Sets aside what stands where the lock file `path` belongs but cannot be opened as
/// one (a directory, a link to one, a link to nothing), and says so. No invocation can
/// be holding a lock on it, since opening it for writing fails, so moving it takes no
/// lock away; without this every run would stop at the lock.
pub(crate) fn set_aside_unusable_lock(path: &Utf8Path) -> Option<String> {
    let present = std::fs::symlink_metadata(path).is_ok();
    let unusable = std::fs::metadata(path).map_or(true, |m| m.is_dir());
    (present && unusable).then(|| {
        set_aside_warning(
            path,
            "lock",
            "a directory or a dangling link where the lock file belongs",
            "a new lock file is made",
        )
    })
}

/// Whether `path` itself is a symlink (dangling or not).
pub fn is_symlink(path: &Utf8Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// `Ok(None)` when the file does not exist; `Err` with the reason when it exists but is
/// not valid (truncated, hand-edited, another schema).
pub fn read_json<T: DeserializeOwned>(path: &Utf8Path) -> Result<Option<T>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        // A symlink to nothing is something in the file's place, not a missing file:
        // read as "missing", it would be replaced without a word.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !is_symlink(path) => {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| e.to_string())
}

/// Writes to a temp file in the same directory, fsyncs it and renames it over `path`, so
/// a reader sees the old or the new content, never a torn one.
pub fn write_json_atomic<T: Serialize>(path: &Utf8Path, value: &T) -> Result<(), CacheError> {
    write_json(path, value, true)
}

fn write_json<T: Serialize>(path: &Utf8Path, value: &T, fsync: bool) -> Result<(), CacheError> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir)
        .map_err(|source| CacheError::CreateDir { path: dir.to_owned(), source })?;
    let err = |source| CacheError::Write { path: path.to_owned(), source };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    let mut w = std::io::BufWriter::new(&mut tmp);
    serde_json::to_writer(&mut w, value).map_err(|e| err(e.into()))?;
    w.flush().map_err(err)?;
    drop(w);
    if fsync {
        tmp.as_file().sync_all().map_err(err)?;
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Writes `text` to `path` through a temporary file beside it, fsynced and renamed.
pub fn write_text_atomic(path: &Utf8Path, text: &str) -> Result<(), CacheError> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir)
        .map_err(|source| CacheError::CreateDir { path: dir.to_owned(), source })?;
    let err = |source| CacheError::Write { path: path.to_owned(), source };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Bytes under `path`, following no symlinks.
pub fn dir_size(path: &Utf8Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Renders a byte count with a binary unit.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
