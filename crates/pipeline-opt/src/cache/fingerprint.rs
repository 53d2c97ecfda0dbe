//! Stage fingerprints: a map from every input a stage depends on (file contents, root
//! inputs, environment variables, toolchain, command, config) to a content hash. Two
//! fingerprints are compared input by input, so a mismatch explains itself
//! ("crates/foo/src/lib.rs changed", "RUSTFLAGS changed").

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::config::{Config, glob_matches};
use crate::plan::{StageCommand, StageKind};
use crate::toolchain::Toolchain;
use crate::workspace::{PackageIdx, Workspace};

/// Environment variables that change what cargo or rustc produce. Our own bookkeeping
/// variables (`CARGO_MAKEFLAGS`, the run marker) are deliberately absent.
pub const RELEVANT_ENV: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTC_BOOTSTRAP",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_RUSTDOCFLAGS",
];
/// Variables that change how tests run (and so whether they pass) without changing
/// what is built: the user's nextest profile and settings, libtest's thread count. Test
/// and doctest fingerprints include them; the run's own `NEXTEST_*` bookkeeping (run
/// ids, slots) stays out.
pub const TEST_ENV: &[&str] = &[
    "NEXTEST_PROFILE",
    "NEXTEST_TEST_THREADS",
    "NEXTEST_RETRIES",
    "NEXTEST_RUN_IGNORED",
    "RUST_TEST_THREADS",
];
/// Prefixes of cargo's configuration-by-environment that change artifacts.
const RELEVANT_ENV_PREFIXES: &[&str] = &["CARGO_PROFILE_", "CARGO_TARGET_", "CARGO_FEATURE_"];

/// Variables that steer how we run a stage, not what it produces: the jobserver, our
/// run markers and log paths.
pub fn is_bookkeeping(name: &str) -> bool {
    name.starts_with("PIPELINE_OPT_")
        || name.starts_with("NEXTEST_")
        || matches!(name, "CARGO_MAKEFLAGS" | "MAKEFLAGS" | "MFLAGS" | "CARGO_BUILD_JOBS")
}

/// The arguments without `-j N`: how many cores a stage gets does not change its result.
fn without_job_count(args: &[String]) -> Vec<&str> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if a == "-j" || a == "--jobs" {
            skip_next = true;
            continue;
        }
        if a.starts_with("--jobs=") || (a.starts_with("-j") && a[2..].parse::<u32>().is_ok()) {
            continue;
        }
        out.push(a.as_str());
    }
    out
}

fn is_relevant_prefixed(name: &str) -> bool {
    name != "CARGO_TARGET_DIR" && RELEVANT_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The value a stage's process sees: the stage's own setting, else what we pass on.
fn insert_env(fp: &mut Fingerprint, name: &str, command: &StageCommand) {
    let value = match command.env.get(name) {
        Some(v) => Some(std::ffi::OsString::from(v)),
        // What reaches the stage: an outer nextest run's own variables do not.
        None => crate::toolchain::passed_env(name),
    };
    if let Some(v) = value {
        fp.insert(format!("env:{name}"), v.as_encoded_bytes());
    }
}

/// `file:<path relative to the root>` (absolute outside the root).
fn file_key(root: &Utf8Path, path: &Utf8Path) -> String {
    format!("file:{}", path.strip_prefix(root).unwrap_or(path))
}

/// Adds what a successful run's fresh dep-info reveals (files outside the package
/// directories, `env!` variables) to the fingerprint it ran with, so the next run
/// compares like with like. A newly revealed file is added only if it was last modified
/// before `planned_at`: then the stage read this very content. Otherwise it stays out,
/// and the next run misses, which is safe.
pub fn augment_after_success(
    fp: &mut Fingerprint,
    workspace: &Workspace,
    closure: &BTreeSet<PackageIdx>,
    target_dirs: &[Utf8PathBuf],
    command: &StageCommand,
    planned_at: SystemTime,
) {
    let info = DepInfo::load(workspace, target_dirs);
    for &p in closure {
        for f in &info.extra_files[p] {
            let key = file_key(&workspace.root, f);
            if fp.inputs.contains_key(&key) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(f) else { continue };
            let older = meta.modified().is_ok_and(|m| m + RACY_WINDOW < planned_at);
            if older && let Ok(bytes) = std::fs::read(f) {
                fp.inputs.insert(key, short_hex(blake3::hash(&bytes)));
            }
        }
        for name in &info.env[p] {
            if !fp.inputs.contains_key(&format!("env:{name}")) {
                insert_env(fp, name, command);
            }
        }
    }
}

/// Files at the workspace root whose change can affect every package.
pub const ROOT_INPUTS: &[&str] = &[
    "Cargo.lock",
    "Cargo.toml",
    ".cargo/config.toml",
    ".cargo/config",
    "rust-toolchain",
    "rust-toolchain.toml",
];

/// One input's content hash, keyed by what the input is: `file:<path>`, `env:<NAME>`,
/// `toolchain`, `command`, `config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub inputs: BTreeMap<String, String>,
}

impl Fingerprint {
    /// One hash of every input, for display and quick equality.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for (k, v) in &self.inputs {
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(v.as_bytes());
            h.update(&[0]);
        }
        short_hex(h.finalize())
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl AsRef<[u8]>) {
        self.inputs.insert(key.into(), short_hex(blake3::hash(value.as_ref())));
    }

    /// Why `self` does not match `recorded`; empty when they are equal.
    pub fn explain_against(&self, recorded: &Fingerprint) -> Vec<Explanation> {
        let mut out = Vec::new();
        for (k, v) in &self.inputs {
            match recorded.inputs.get(k) {
                Some(old) if old == v => {}
                Some(_) => out.push(Explanation::changed(k)),
                None => out.push(Explanation::added(k)),
            }
        }
        for k in recorded.inputs.keys() {
            if !self.inputs.contains_key(k) {
                out.push(Explanation::removed(k));
            }
        }
        out
    }
}

/// Why a stage (or a package's tests) ran instead of being served from the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Explanation {
    NoEarlierSuccess,
    /// The dependency cache has no fetch of this `Cargo.lock` with this toolchain.
    NotFetched,
    FileChanged {
        path: String,
    },
    FileAdded {
        path: String,
    },
    FileRemoved {
        path: String,
    },
    EnvChanged {
        name: String,
    },
    ToolchainChanged,
    CommandChanged,
    ConfigChanged,
    /// The recorded entry could not be read; it counts as a miss.
    UnreadableEntry {
        message: String,
    },
    /// The stage is never served from the cache (services, custom commands).
    NotCacheable {
        reason: String,
    },
    /// Some other input changed.
    InputChanged {
        input: String,
    },
}

impl Explanation {
    fn changed(key: &str) -> Explanation {
        if let Some(p) = key.strip_prefix("file:") {
            Explanation::FileChanged { path: p.into() }
        } else if let Some(n) = key.strip_prefix("env:") {
            Explanation::EnvChanged { name: n.into() }
        } else {
            match key {
                "toolchain" => Explanation::ToolchainChanged,
                "command" => Explanation::CommandChanged,
                "config" => Explanation::ConfigChanged,
                other => Explanation::InputChanged { input: other.into() },
            }
        }
    }

    fn added(key: &str) -> Explanation {
        match key.strip_prefix("file:") {
            Some(p) => Explanation::FileAdded { path: p.into() },
            None => Explanation::changed(key),
        }
    }

    fn removed(key: &str) -> Explanation {
        match key.strip_prefix("file:") {
            Some(p) => Explanation::FileRemoved { path: p.into() },
            None => Explanation::changed(key),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::NoEarlierSuccess => f.write_str("no earlier success"),
            Explanation::NotFetched => {
                f.write_str("this Cargo.lock was not fetched with this toolchain yet")
            }
            Explanation::FileChanged { path } => write!(f, "{path} changed"),
            Explanation::FileAdded { path } => write!(f, "{path} is a new input"),
            Explanation::FileRemoved { path } => write!(f, "{path} is no longer an input"),
            Explanation::EnvChanged { name } => write!(f, "{name} changed"),
            Explanation::ToolchainChanged => f.write_str("the toolchain changed"),
            Explanation::CommandChanged => f.write_str("the command or its flags changed"),
            Explanation::ConfigChanged => f.write_str("the pipeline-opt config changed"),
            Explanation::UnreadableEntry { message } => {
                write!(f, "the cache entry was unreadable ({message})")
            }
            Explanation::NotCacheable { reason } => write!(f, "not cacheable: {reason}"),
            Explanation::InputChanged { input } => write!(f, "{input} changed"),
        }
    }
}

/// Renders explanations on one line, the first few in full.
pub fn summarize(explanations: &[Explanation]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = explanations.iter().take(SHOWN).map(|e| e.to_string()).collect();
    if explanations.len() > SHOWN {
        parts.push(format!("and {} more", explanations.len() - SHOWN));
    }
    parts.join(", ")
}

fn short_hex(hash: blake3::Hash) -> String {
    // 128 bits are plenty to tell contents apart and halve the size of the records.
    hash.to_hex()[..32].to_string()
}

/// Content hashes of files, remembered by (size, mtime, inode) so that a warm
/// fingerprint re-reads only what changed. Touching a file's mtime re-hashes it, and the
/// same content gives the same hash: mtimes never decide a match, contents do.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FileHasher {
    /// By absolute path as a string: hashing a string is much cheaper than hashing a
    /// path component by component, and this map is probed once per file per run.
    entries: HashMap<String, StatEntry>,
    /// Files read and hashed by this instance (not served from the stat cache).
    #[serde(skip)]
    pub rehashed: usize,
    /// Whether the entries changed since loading: only then is saving worth it.
    #[serde(skip)]
    pub dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatEntry {
    size: u64,
    mtime_ns: u128,
    ino: u64,
    hash: String,
}

/// Entries whose mtime is this close to the moment of hashing are not trusted later:
/// a write in the same clock tick would leave size and mtime unchanged.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(2);

impl FileHasher {
    /// The content hash of `path`, or `missing` when it cannot be read.
    pub fn hash(&mut self, path: &Utf8Path) -> String {
        let (hash, update) = self.hash_shared(path);
        self.apply(path.as_str(), update);
        hash
    }

    /// The hash without touching the cache, and the change the cache needs: lets
    /// several threads hash at once and the caller apply the changes after.
    fn hash_shared(&self, path: &Utf8Path) -> (String, StatUpdate) {
        let Ok(meta) = std::fs::metadata(path) else {
            return ("missing".into(), StatUpdate::Keep);
        };
        if meta.is_dir() {
            return ("directory".into(), StatUpdate::Keep);
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let mtime_ns = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let ino = inode(&meta);
        if let Some(e) = self.entries.get(path.as_str())
            && e.size == meta.len()
            && e.mtime_ns == mtime_ns
            && e.ino == ino
        {
            return (e.hash.clone(), StatUpdate::Keep);
        }
        let Ok(bytes) = std::fs::read(path) else {
            return ("missing".into(), StatUpdate::Keep);
        };
        let hash = short_hex(blake3::hash(&bytes));
        let racy = SystemTime::now().duration_since(mtime).map_or(true, |age| age < RACY_WINDOW);
        let update = if racy {
            StatUpdate::Forget
        } else {
            StatUpdate::Store(StatEntry { size: meta.len(), mtime_ns, ino, hash: hash.clone() })
        };
        (hash, update)
    }

    fn apply(&mut self, path: &str, update: StatUpdate) {
        match update {
            StatUpdate::Keep => return,
            StatUpdate::Forget => {
                self.entries.remove(path);
            }
            StatUpdate::Store(e) => {
                self.entries.insert(path.to_owned(), e);
            }
        }
        self.rehashed += 1;
        self.dirty = true;
    }

    /// Forgets entries of files not seen since `keep` was built, so the cache does not
    /// grow without bound.
    pub fn retain(&mut self, keep: &HashSet<&str>) {
        let before = self.entries.len();
        self.entries.retain(|p, _| keep.contains(p.as_str()));
        self.dirty |= self.entries.len() != before;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What hashing one file means for the stat cache.
enum StatUpdate {
    /// Served from the cache (or unreadable): nothing to change.
    Keep,
    /// Re-read; too recently modified to trust its stat data next time.
    Forget,
    /// Re-read; remember it.
    Store(StatEntry),
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// What cargo's dep-info files (`<target>/<profile>/deps/*.d`) say a package's
/// compilation read beyond its own directory, and which `env!` variables it read.
#[derive(Debug, Clone, Default)]
pub struct DepInfo {
    /// Per package: files outside the package directory (include_str! of a shared file,
    /// a `#[path]` module elsewhere), absolute.
    pub extra_files: Vec<BTreeSet<Utf8PathBuf>>,
    /// Per package: variables read with `env!`/`option_env!`, minus cargo's own.
    pub env: Vec<BTreeSet<String>>,
    /// Whether any dep-info file was found for the package.
    pub seen: Vec<bool>,
}

impl DepInfo {
    /// Reads every `deps/*.d` under `target_dirs` and assigns each to the package whose
    /// directory holds the crate root it lists first.
    pub fn load(workspace: &Workspace, target_dirs: &[Utf8PathBuf]) -> DepInfo {
        let n = workspace.packages.len();
        let mut info = DepInfo {
            extra_files: vec![BTreeSet::new(); n],
            env: vec![BTreeSet::new(); n],
            seen: vec![false; n],
        };
        let dirs = package_dirs(workspace);
        let ignored = ignored_roots(workspace, target_dirs);
        for target in target_dirs {
            for deps_dir in deps_dirs(target) {
                let Ok(rd) = std::fs::read_dir(&deps_dir) else { continue };
                for entry in rd.flatten() {
                    let Ok(path) = Utf8PathBuf::from_path_buf(entry.path()) else { continue };
                    if path.extension() != Some("d") {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(&path) else { continue };
                    let parsed = parse_dep_info(&text);
                    let files: Vec<Utf8PathBuf> = parsed
                        .files
                        .iter()
                        .map(|f| {
                            normalize(&if f.is_absolute() {
                                f.clone()
                            } else {
                                workspace.root.join(f)
                            })
                        })
                        .collect();
                    let Some(owner) = files.first().and_then(|f| owning_package(&dirs, f)) else {
                        continue;
                    };
                    info.seen[owner] = true;
                    for f in files {
                        if f.starts_with(&dirs[owner].0) || ignored.iter().any(|i| f.starts_with(i))
                        {
                            continue;
                        }
                        info.extra_files[owner].insert(f);
                    }
                    for v in parsed.env {
                        if !v.starts_with("CARGO_") && v != "OUT_DIR" {
                            info.env[owner].insert(v);
                        }
                    }
                }
            }
        }
        info
    }
}

/// The dependency files and `env-dep` names of one `.d` file. rustc writes one
/// `path:` line per input file after the rule line, so those lines are the inputs.
pub struct ParsedDepInfo {
    pub files: Vec<Utf8PathBuf>,
    pub env: Vec<String>,
}

pub fn parse_dep_info(text: &str) -> ParsedDepInfo {
    let mut files = Vec::new();
    let mut env = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# env-dep:") {
            let name = rest.split('=').next().unwrap_or(rest);
            env.push(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(path) = line.strip_suffix(':')
            && !path.is_empty()
        {
            files.push(Utf8PathBuf::from(path.replace("\\ ", " ")));
        }
    }
    ParsedDepInfo { files, env }
}

/// Resolves `.` and `..` lexically (`src/../../x` from `include_str!`), as the file
/// may be reached through different spellings.
pub fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    use camino::Utf8Component as C;
    let mut out = Utf8PathBuf::new();
    for c in path.components() {
        match c {
            C::CurDir => {}
            C::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_str()),
        }
    }
    out
}

fn deps_dirs(target: &Utf8Path) -> Vec<Utf8PathBuf> {
    // <target>/<profile>/deps and <target>/<triple>/<profile>/deps
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(target) else { return out };
    for e in rd.flatten() {
        let Ok(p) = Utf8PathBuf::from_path_buf(e.path()) else { continue };
        if !p.is_dir() {
            continue;
        }
        if p.join("deps").is_dir() {
            out.push(p.join("deps"));
        } else if let Ok(rd2) = std::fs::read_dir(&p) {
            for e2 in rd2.flatten() {
                if let Ok(p2) = Utf8PathBuf::from_path_buf(e2.path())
                    && p2.join("deps").is_dir()
                    && p2.join(".fingerprint").is_dir()
                {
                    out.push(p2.join("deps"));
                }
            }
        }
    }
    out
}

/// Package directories, longest first, so the first prefix match is the owner.
pub fn package_dirs(workspace: &Workspace) -> Vec<(Utf8PathBuf, PackageIdx)> {
    let mut dirs: Vec<(Utf8PathBuf, PackageIdx)> =
        workspace.packages.iter().enumerate().map(|(i, p)| (p.dir().to_owned(), i)).collect();
    dirs.sort_by_key(|(d, _)| std::cmp::Reverse(d.as_str().len()));
    dirs
}

/// With a package at the workspace root, the directories holding its targets' sources
/// (`src/`, `crates/core/` of a binary declared there, `tests/`, …) other than the root
/// itself: what is in them is that package's code, an input of its own fingerprint and
/// of its dependents', not a workspace-level file that every package's tests might read.
fn root_package_source_dirs(workspace: &Workspace) -> Vec<Utf8PathBuf> {
    let root = normalize(&workspace.root);
    let Some(p) = workspace.packages.iter().find(|p| normalize(p.dir()) == root) else {
        return Vec::new();
    };
    let mut dirs: Vec<Utf8PathBuf> = p
        .targets
        .iter()
        .filter_map(|t| t.src_path.parent().map(normalize))
        .filter(|d| *d != root && d.starts_with(&root))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The package whose directory holds `file` (the longest matching directory).
pub fn owning_package(dirs: &[(Utf8PathBuf, PackageIdx)], file: &Utf8Path) -> Option<PackageIdx> {
    dirs.iter().find(|(d, _)| file.starts_with(d)).map(|&(_, i)| i)
}

/// Files no fingerprint includes: build output, cargo's registry (pinned by
/// `Cargo.lock`) and the toolchain's sources (pinned by the toolchain version).
fn ignored_roots(workspace: &Workspace, target_dirs: &[Utf8PathBuf]) -> Vec<Utf8PathBuf> {
    let mut out: Vec<Utf8PathBuf> = target_dirs.to_vec();
    out.push(workspace.target_dir.clone());
    let cargo_home = std::env::var("CARGO_HOME")
        .map(Utf8PathBuf::from)
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| Utf8PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        out.push(home.join("registry"));
        out.push(home.join("git"));
    }
    if let Ok(rustup) = std::env::var("RUSTUP_HOME") {
        out.push(rustup.into());
    } else if let Ok(h) = std::env::var("HOME") {
        out.push(Utf8PathBuf::from(h).join(".rustup"));
    }
    out
}

/// Computes fingerprints for one workspace state. Each package's own files are listed
/// and hashed once, however many stages need them.
pub struct Fingerprinter<'a> {
    pub workspace: &'a Workspace,
    pub toolchain: &'a Toolchain,
    pub config: &'a Config,
    pub dep_info: DepInfo,
    pub hasher: FileHasher,
    skip_dirs: Vec<Utf8PathBuf>,
    /// Per package: (absolute path, content hash) of every input file.
    package_files: Vec<Option<Vec<(String, String)>>>,
    /// Root inputs hashed so far (package files are in `package_files`).
    seen_files: BTreeSet<Utf8PathBuf>,
    /// Files outside every member package (but the root one), listed once.
    workspace_files: Option<Vec<Utf8PathBuf>>,
    /// Files matched by `cache.inputs`, listed once.
    declared_files: Option<Vec<Utf8PathBuf>>,
}

impl<'a> Fingerprinter<'a> {
    /// `target_dirs` are the build directories whose dep-info to read; `state_dir` is
    /// never read as input.
    pub fn new(
        workspace: &'a Workspace,
        toolchain: &'a Toolchain,
        config: &'a Config,
        target_dirs: &[Utf8PathBuf],
        hasher: FileHasher,
    ) -> Fingerprinter<'a> {
        let dep_info = DepInfo::load(workspace, target_dirs);
        let mut skip_dirs = target_dirs.to_vec();
        skip_dirs.push(workspace.target_dir.clone());
        skip_dirs.push(workspace.state_dir(config).path().to_owned());
        Fingerprinter {
            workspace,
            toolchain,
            config,
            dep_info,
            hasher,
            skip_dirs,
            package_files: vec![None; workspace.packages.len()],
            seen_files: BTreeSet::new(),
            workspace_files: None,
            declared_files: None,
        }
    }

    /// Every file under the package directory (minus nested packages, build output and
    /// VCS metadata), plus the files its dep-info names elsewhere, with content hashes.
    /// Listing the whole directory rather than only dep-info's files keeps the first run
    /// (no dep-info yet) and later runs comparable, and can only over-invalidate.
    pub fn package_files(&mut self, package: PackageIdx) -> &[(String, String)] {
        self.list_packages(&[package]);
        self.package_files[package].as_ref().expect("listed above")
    }

    /// Lists and hashes the packages not listed yet, spread over the cores: on a warm
    /// run this is one `stat` per file, and the kernel does those in parallel.
    fn list_packages(&mut self, packages: &[PackageIdx]) {
        let todo: Vec<PackageIdx> =
            packages.iter().copied().filter(|&p| self.package_files[p].is_none()).collect();
        if todo.is_empty() {
            return;
        }
        let dirs: Vec<(PackageIdx, Utf8PathBuf, Vec<Utf8PathBuf>)> = todo
            .iter()
            .map(|&p| {
                let dir = self.workspace.packages[p].dir().to_owned();
                let nested = self
                    .workspace
                    .packages
                    .iter()
                    .map(|q| q.dir().to_owned())
                    .filter(|d| d != &dir && d.starts_with(&dir))
                    .collect();
                (p, dir, nested)
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let chunk = dirs.len().div_ceil(threads).max(1);
        let hasher = &self.hasher;
        let skip = &self.skip_dirs;
        let listed: Vec<(PackageIdx, Vec<Listed>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(p, dir, nested)| (*p, list_dir(dir, nested, skip, hasher)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("listing never panics")).collect()
        });
        for (p, entries) in listed {
            let mut files = Vec::with_capacity(entries.len());
            for (path, hash, update) in entries {
                self.hasher.apply(&path, update);
                files.push((path, hash));
            }
            for extra in self.dep_info.extra_files[p].clone() {
                let h = self.hasher.hash(&extra);
                files.push((extra.into_string(), h));
            }
            self.package_files[p] = Some(files);
        }
    }

    /// `packages` and every member they need to build (and, with `dev`, to build their
    /// tests), transitively.
    pub fn closure(&self, packages: &[PackageIdx], dev: bool) -> BTreeSet<PackageIdx> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<PackageIdx> = Vec::new();
        for &p in packages {
            stack.push(p);
            if dev {
                stack.extend(self.workspace.packages[p].dev_deps.iter().copied());
            }
        }
        while let Some(p) = stack.pop() {
            if seen.insert(p) {
                stack.extend(self.workspace.packages[p].deps.iter().copied());
            }
        }
        seen
    }

    /// The fingerprint of a stage that compiles or tests `packages` (with their
    /// dependencies, and with `dev` their dev-dependencies) by running `command`.
    pub fn fingerprint(
        &mut self,
        packages: &[PackageIdx],
        dev: bool,
        command: &StageCommand,
    ) -> Fingerprint {
        let mut fp = Fingerprint::default();
        let root = self.workspace.root.clone();
        let closure = self.closure(packages, dev);
        let mut env_names: BTreeSet<String> = BTreeSet::new();
        self.list_packages(&closure.iter().copied().collect::<Vec<_>>());
        for &p in &closure {
            let files = self.package_files[p].as_ref().expect("listed above");
            for (path, hash) in files {
                let key = match path.strip_prefix(root.as_str()).and_then(|r| r.strip_prefix('/')) {
                    Some(rel) => format!("file:{rel}"),
                    None => format!("file:{path}"),
                };
                fp.inputs.insert(key, hash.clone());
            }
            env_names.extend(self.dep_info.env[p].iter().cloned());
        }
        for name in ROOT_INPUTS {
            let path = root.join(name);
            if path.exists() {
                let h = self.hasher.hash(&path);
                self.seen_files.insert(path);
                fp.inputs.insert(format!("file:{name}"), h);
            }
        }
        env_names.extend(RELEVANT_ENV.iter().map(|s| s.to_string()));
        env_names.extend(self.config.cache.env.iter().cloned());
        for k in std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()) {
            if is_relevant_prefixed(&k) {
                env_names.insert(k);
            }
        }
        for k in command.env.keys() {
            if is_relevant_prefixed(k) {
                env_names.insert(k.clone());
            }
        }
        for name in &env_names {
            insert_env(&mut fp, name, command);
        }
        fp.insert("toolchain", &self.toolchain.verbose_version);
        // The command proper: program, arguments, directory, and the variables it sets
        // that are not inputs of their own (CARGO_TARGET_DIR, ...).
        let all_args = command.args();
        let args = without_job_count(&all_args);
        let mut cmd = format!("{}\0{}\0{}", command.cwd, command.program(), args.join("\0"));
        for (k, v) in &command.env {
            if !env_names.contains(k) && !is_bookkeeping(k) {
                cmd.push_str(&format!("\0{k}={v}"));
            }
        }
        fp.insert("command", cmd);
        fp.insert("config", config_identity(self.config));
        fp
    }

    /// The fingerprint of a planned stage of `kind` over `packages`: [`Self::fingerprint`]
    /// plus the files a test can read at run time without dep-info ever naming them, and
    /// the configs of the tools that run it; then `cache.inputs` added and
    /// `cache.exclude` taken out.
    ///
    /// Tests and doctests cover every file git lists (tracked, or untracked and not
    /// ignored; every file outside git) that is not inside another member package: a
    /// test may read `../../testdata/x.txt` at run time, which no dep-info names.
    pub fn stage_fingerprint(
        &mut self,
        kind: StageKind,
        packages: &[PackageIdx],
        command: &StageCommand,
    ) -> Fingerprint {
        let mut fp = self.fingerprint(packages, true, command);
        let root = self.workspace.root.clone();
        let mut extra = self.tool_configs(kind);
        if matches!(kind, StageKind::Test | StageKind::Doctest) {
            extra.extend(self.workspace_level_files().iter().cloned());
            // Cargo unifies features over the whole selection, so any member's manifest
            // can change what a package's tests are compiled with, even one outside its
            // dependency closure.
            extra.extend(self.workspace.packages.iter().map(|p| p.manifest_path.clone()));
            for name in TEST_ENV {
                if !fp.inputs.contains_key(&format!("env:{name}")) {
                    insert_env(&mut fp, name, command);
                }
            }
        }
        extra.extend(self.declared_files().iter().cloned());
        for path in extra {
            let key = file_key(&root, &path);
            if let std::collections::btree_map::Entry::Vacant(slot) = fp.inputs.entry(key) {
                slot.insert(self.hasher.hash(&path));
                self.seen_files.insert(path);
            }
        }
        let exclude = &self.config.cache.exclude;
        if !exclude.is_empty() {
            fp.inputs.retain(|k, _| match k.strip_prefix("file:") {
                Some(rel) => !exclude.iter().any(|g| glob_matches(g, rel)),
                None => true,
            });
        }
        fp
    }

    /// The configs that change how cargo, rustup, nextest or clippy behave: cargo reads
    /// `.cargo/config*` in every directory above the workspace and in `CARGO_HOME`,
    /// rustup looks for `rust-toolchain*` upwards, clippy for `clippy.toml`.
    fn tool_configs(&self, kind: StageKind) -> Vec<Utf8PathBuf> {
        let root = &self.workspace.root;
        let mut names =
            vec![".cargo/config.toml", ".cargo/config", "rust-toolchain", "rust-toolchain.toml"];
        if kind == StageKind::Clippy {
            names.extend(["clippy.toml", ".clippy.toml"]);
        }
        let mut out: Vec<Utf8PathBuf> =
            root.ancestors().flat_map(|d| names.iter().map(move |n| d.join(n))).collect();
        let cargo_home = std::env::var("CARGO_HOME")
            .map(Utf8PathBuf::from)
            .ok()
            .or_else(|| std::env::var("HOME").ok().map(|h| Utf8PathBuf::from(h).join(".cargo")));
        if let Some(home) = cargo_home {
            out.extend([home.join("config.toml"), home.join("config")]);
        }
        if kind == StageKind::Test {
            out.push(root.join(".config/nextest.toml"));
        }
        out.retain(|p| p.is_file());
        out.dedup();
        out
    }

    /// Files outside every member package but the root one: what git lists (tracked,
    /// or untracked and not ignored), or outside git every file, minus build output,
    /// `.git` and the state directory.
    fn workspace_level_files(&mut self) -> &[Utf8PathBuf] {
        if self.workspace_files.is_none() {
            let root = &self.workspace.root;
            let dirs = package_dirs(self.workspace);
            let members: Vec<Utf8PathBuf> =
                dirs.iter().map(|(d, _)| d.clone()).filter(|d| d != root).collect();
            // A state directory at the root (`cache.dir = "."`) must not hide everything.
            let skip: Vec<Utf8PathBuf> =
                self.skip_dirs.iter().filter(|s| normalize(s) != *root).cloned().collect();
            let listed =
                git_listed_files(root).unwrap_or_else(|| walk_files(root, &skip, &members));
            let root_sources = root_package_source_dirs(self.workspace);
            let files = listed
                .into_iter()
                .filter(|f| !members.iter().any(|m| f.starts_with(m)))
                .filter(|f| !root_sources.iter().any(|d| f.starts_with(d)))
                .filter(|f| !skip.iter().any(|s| f.starts_with(s)))
                .collect();
            self.workspace_files = Some(files);
        }
        self.workspace_files.as_deref().unwrap_or_default()
    }

    /// Files matching `cache.inputs`, wherever they are (ignored by git or not).
    fn declared_files(&mut self) -> &[Utf8PathBuf] {
        if self.declared_files.is_none() {
            let globs = &self.config.cache.inputs;
            let root = &self.workspace.root;
            let files = if globs.is_empty() {
                Vec::new()
            } else {
                walk_files(root, &self.skip_dirs, &[])
                    .into_iter()
                    .filter(|f| {
                        let rel = f.strip_prefix(root).map_or(f.as_str(), |r| r.as_str());
                        globs.iter().any(|g| glob_matches(g, rel))
                    })
                    .collect()
            };
            self.declared_files = Some(files);
        }
        self.declared_files.as_deref().unwrap_or_default()
    }

    /// Drops stat-cache entries for files this fingerprinter never looked at and hands
    /// the hasher back for saving.
    pub fn into_hasher(mut self) -> FileHasher {
        let mut seen: HashSet<&str> = self.seen_files.iter().map(|p| p.as_str()).collect();
        for files in self.package_files.iter().flatten() {
            seen.extend(files.iter().map(|(p, _)| p.as_str()));
        }
        // Keep entries of packages this fingerprinter never listed.
        if self.package_files.iter().any(Option::is_none) {
            return self.hasher;
        }
        self.hasher.retain(&seen);
        self.hasher
    }
}

/// What `git ls-files` lists under `root`: tracked files and untracked ones that are
/// not ignored. `None` outside a git repository (or without git).
fn git_listed_files(root: &Utf8Path) -> Option<Vec<Utf8PathBuf>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut files: Vec<Utf8PathBuf> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(|p| root.join(p))
        .collect();
    files.dedup();
    Some(files)
}

/// Every file under `root` except `.git`, directories named `target`, `skip` and
/// `prune` (each with its contents).
fn walk_files(root: &Utf8Path, skip: &[Utf8PathBuf], prune: &[Utf8PathBuf]) -> Vec<Utf8PathBuf> {
    let walk = walkdir::WalkDir::new(root).sort_by_file_name().into_iter();
    walk.filter_entry(|e| {
        let p = e.path();
        if !e.file_type().is_dir() || e.depth() == 0 {
            return true;
        }
        let name = e.file_name().to_string_lossy();
        name != ".git"
            && name != "target"
            && !skip.iter().chain(prune).any(|s| p == s.as_std_path())
    })
    .filter_map(Result::ok)
    .filter(|e| e.file_type().is_file())
    .filter_map(|e| Utf8PathBuf::from_path_buf(e.into_path()).ok())
    .collect()
}

/// One listed file: absolute path, content hash, and what the stat cache must learn.
type Listed = (String, String, StatUpdate);

/// Every file under `dir` except nested packages, build output and VCS metadata.
fn list_dir(
    dir: &Utf8Path,
    nested: &[Utf8PathBuf],
    skip: &[Utf8PathBuf],
    hasher: &FileHasher,
) -> Vec<Listed> {
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(dir).sort_by_file_name().into_iter();
    for entry in walk.filter_entry(|e| {
        let p = e.path();
        if e.file_type().is_dir() && e.depth() > 0 {
            let name = e.file_name().to_string_lossy();
            if name == ".git" || name == "target" {
                return false;
            }
            if skip.iter().any(|s| p == s.as_std_path())
                || nested.iter().any(|n| p == n.as_std_path())
            {
                return false;
            }
        }
        true
    }) {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(path) = Utf8PathBuf::from_path_buf(entry.into_path()) else { continue };
        let (hash, update) = hasher.hash_shared(&path);
        out.push((path.into_string(), hash, update));
    }
    out
}

/// The parts of the config that change what a stage does. Performance targets and the
/// cache's own settings do not.
fn config_identity(config: &Config) -> String {
    let mut c = config.clone();
    c.targets = Default::default();
    c.cache = Default::default();
    c.stage_timeout = None;
    serde_json::to_string(&c).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_lists_inputs_and_env_deps() {
        let text = "/t/debug/deps/foo-1.d: crates/foo/src/lib.rs crates/foo/src/../../../shared/a\\ b.txt\n\n\
                    crates/foo/src/lib.rs:\n\
                    crates/foo/src/../../../shared/a\\ b.txt:\n\n\
                    # env-dep:GREETING=hi\n\
                    # env-dep:UNSET\n";
        let parsed = parse_dep_info(text);
        assert_eq!(
            parsed.files,
            ["crates/foo/src/lib.rs", "crates/foo/src/../../../shared/a b.txt"]
                .map(Utf8PathBuf::from)
        );
        assert_eq!(parsed.env, ["GREETING", "UNSET"]);
        assert_eq!(normalize("/w/crates/foo/src/../../../shared/x".into()), "/w/shared/x");
    }

    #[test]
    fn explanations_name_the_input() {
        let mut old = Fingerprint::default();
        old.insert("file:a.rs", "1");
        old.insert("file:gone.rs", "1");
        old.insert("env:RUSTFLAGS", "");
        old.insert("toolchain", "1.95");
        let mut new = Fingerprint::default();
        new.insert("file:a.rs", "2");
        new.insert("file:b.rs", "1");
        new.insert("toolchain", "1.96");
        let why: Vec<String> = new.explain_against(&old).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            why,
            [
                "a.rs changed",
                "b.rs is a new input",
                "the toolchain changed",
                "RUSTFLAGS changed",
                "gone.rs is no longer an input"
            ]
        );
        assert_eq!(
            summarize(&new.explain_against(&old)),
            "a.rs changed, b.rs is a new input, the toolchain changed, and 2 more"
        );
        assert!(new.explain_against(&new).is_empty());
    }

    #[test]
    fn job_counts_and_bookkeeping_are_not_inputs() {
        let args: Vec<String> =
            ["build", "-j", "3", "--jobs=2", "-j4", "--offline"].map(String::from).to_vec();
        assert_eq!(without_job_count(&args), ["build", "--offline"]);
        assert!(is_bookkeeping("CARGO_MAKEFLAGS") && is_bookkeeping("PIPELINE_OPT_RUN_ID"));
        assert!(!is_bookkeeping("RUSTFLAGS"));
    }
}
