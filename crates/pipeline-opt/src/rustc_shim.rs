//! The rustc timing shim: the running binary re-executed as cargo's `RUSTC_WRAPPER`
//! times every rustc invocation into a log, and [`RustcLogTail`] follows that log while
//! a stage runs. The orchestrator sets it up; the record only keeps the timings.

use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use crate::record::{CrateTiming, Event};

/// Environment variable naming the file the rustc shim appends to. Its presence, with a
/// rustc-like first argument, is what puts the xtask binary into shim mode.
pub const SHIM_LOG_VAR: &str = "PIPELINE_OPT_RUSTC_SHIM_LOG";
/// A `RUSTC_WRAPPER` the user already had (sccache, ...), which the shim runs in turn.
pub const SHIM_CHAIN_VAR: &str = "PIPELINE_OPT_RUSTC_CHAINED_WRAPPER";
/// The build directory of the stage the shim times: a unit whose `--out-dir` lies
/// elsewhere belongs to another cargo run (a test's own workspace).
pub const SHIM_TARGET_DIR_VAR: &str = "PIPELINE_OPT_RUSTC_SHIM_TARGET_DIR";
/// The pid of the process that started the stage (the orchestrator): a unit is the
/// stage's own when only cargo processes stand between the shim and it.
pub const SHIM_OWNER_VAR: &str = "PIPELINE_OPT_RUSTC_SHIM_OWNER";

/// One rustc invocation as the shim saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RustcInvocation {
    pub crate_name: String,
    /// `lib`, `bin`, `test`, `build-script`, ...
    pub kind: String,
    /// The package, from the `CARGO_PKG_NAME` cargo gives rustc.
    #[serde(default)]
    pub package: String,
    /// The package's version, from `CARGO_PKG_VERSION`.
    #[serde(default)]
    pub version: String,
    /// Seconds since the Unix epoch.
    pub start: f64,
    pub end: f64,
    pub exit_code: Option<i32>,
    /// Compiled by a cargo or rustc run that a test or build script started, not by
    /// the stage's own cargo ([`started_by_the_stage`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_tests: bool,
    /// Cargo's `-C metadata` hash: two invocations with the same one build the same
    /// unit (cargo tells units apart by features, profile and target through it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// The arguments that decide what rustc produces, paths left out ([`unit_settings`]):
    /// what tells why a unit was compiled again in a later stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
}

/// Call first thing in `main`: when cargo runs this binary as `RUSTC_WRAPPER` (the
/// orchestrator sets [`SHIM_LOG_VAR`]), run the real rustc (through a chained wrapper if
/// the user had one), append the invocation's start and end to the log, and exit with
/// rustc's status. Otherwise return at once.
///
/// Why a shim rather than `--timings`: cargo's JSON messages carry finish times only,
/// and `--timings` writes an HTML report per cargo run whose data layout is unstable;
/// a wrapper sees every rustc start and end directly, also inside nextest's and
/// `cargo test`'s own builds, and costs one extra exec per crate.
pub fn run_rustc_shim_if_requested() {
    let Some(log) = std::env::var_os(SHIM_LOG_VAR) else { return };
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Some(first) = args.get(1) else { return };
    let name = std::path::Path::new(first)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let rustc_like =
        name.contains("rustc") || name.contains("clippy-driver") || name.contains("rustdoc");
    if !rustc_like {
        return;
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let start = now();
    let mut cmd = match std::env::var_os(SHIM_CHAIN_VAR).filter(|w| !w.is_empty()) {
        Some(wrapper) => {
            let mut c = std::process::Command::new(wrapper);
            c.args(&args[1..]);
            // The chained wrapper runs rustc itself; should it be a shim too, it must not
            // chain again.
            c.env_remove(SHIM_CHAIN_VAR).env_remove(SHIM_LOG_VAR);
            c
        }
        None => {
            let mut c = std::process::Command::new(&args[1]);
            c.args(&args[2..]);
            c
        }
    };
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipeline-opt rustc shim: could not run {}: {e}", first.to_string_lossy());
            std::process::exit(1);
        }
    };
    let end = now();
    let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().to_string()).collect();
    let value_of = |flag: &str| rest.iter().position(|a| a == flag).and_then(|i| rest.get(i + 1));
    if let Some(crate_name) = value_of("--crate-name").filter(|n| *n != "___") {
        let kind = if rest.iter().any(|a| a == "--test") {
            "test".to_string()
        } else if crate_name.starts_with("build_script_") {
            "build-script".to_string()
        } else if value_of("--crate-type").is_none()
            && std::env::var_os("CARGO_TARGET_TMPDIR").is_some()
        {
            harnessless_kind(crate_name).to_string()
        } else {
            value_of("--crate-type").cloned().unwrap_or_else(|| "bin".into())
        };
        let inv = RustcInvocation {
            crate_name: crate_name.clone(),
            kind,
            package: std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| crate_name.clone()),
            version: std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
            start,
            end,
            exit_code: status.code(),
            by_tests: !started_by_the_stage(value_of("--out-dir").map(|s| s.as_str())),
            metadata: String::new(),
            settings: Vec::new(),
        };
        let (metadata, settings) = unit_settings(&rest);
        let inv = RustcInvocation { metadata, settings, ..inv };
        if let Ok(line) = serde_json::to_string(&inv) {
            use std::io::Write as _;
            // One short append per line: O_APPEND keeps concurrent writers' lines whole.
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
        }
    }
    std::process::exit(status.code().unwrap_or(1));
}

/// Flags whose value is a separate argument.
const FLAGS_WITH_VALUE: [&str; 18] = [
    "--cfg",
    "-C",
    "--crate-type",
    "--crate-name",
    "--check-cfg",
    "--cap-lints",
    "--edition",
    "--target",
    "--emit",
    "-L",
    "-l",
    "--extern",
    "--out-dir",
    "--error-format",
    "--json",
    "--diagnostic-width",
    "--remap-path-prefix",
    "--sysroot",
];

/// Cargo's `-C metadata` value and the arguments of a rustc invocation that decide what
/// it produces, each flag joined with its value (`-C opt-level=3`, `--cfg feature="x"`),
/// sorted: left out are paths (`--out-dir`, `-L`, `--extern`, the source file, the
/// incremental directory), output formatting and the crate name, which differ between
/// two builds of the same unit in different places, and the metadata itself.
pub fn unit_settings(args: &[String]) -> (String, Vec<String>) {
    let mut metadata = String::new();
    let mut settings = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (flag, value) = if FLAGS_WITH_VALUE.contains(&a) && i + 1 < args.len() {
            i += 1;
            (a, Some(args[i].as_str()))
        } else if let Some((f, v)) = a.split_once('=').filter(|(f, _)| FLAGS_WITH_VALUE.contains(f))
        {
            (f, Some(v))
        } else {
            (a, None)
        };
        i += 1;
        match (flag, value) {
            ("-C", Some(v)) if v.starts_with("metadata=") => {
                metadata = v["metadata=".len()..].to_string();
            }
            ("-C", Some(v))
                if v.starts_with("incremental=") || v.starts_with("extra-filename=") => {}
            (
                "-L"
                | "-l"
                | "--extern"
                | "--out-dir"
                | "--error-format"
                | "--json"
                | "--diagnostic-width"
                | "--remap-path-prefix"
                | "--sysroot"
                | "--crate-name",
                _,
            ) => {}
            (f, None) if !f.starts_with('-') => {} // the source file
            (f, None) => settings.push(f.to_string()),
            (f, Some(v)) => settings.push(format!("{f} {v}")),
        }
    }
    settings.sort();
    settings.dedup();
    (metadata, settings)
}

/// Whether the stage's own cargo asked for this rustc run, rather than a cargo (or
/// rustc) run that one of its tests or build scripts started: trybuild, escargot,
/// snapbox or fixture tests inherit `RUSTC_WRAPPER` and our variables with the rest of
/// the environment, so the shim sees their units too. Two signs, each enough:
/// - the unit's `--out-dir` is not in the stage's build directory
///   (`<dir>[/<triple>]/<profile>/{deps,examples,build/<unit>}`); a test's workspace
///   under `target/tmp` or trybuild's `target/tests/trybuild` are deeper;
/// - on Linux, a process other than cargo (a test binary, a build script, a shell)
///   stands between the shim and the process that started the stage.
///
/// What cannot be read counts as the stage's own: a unit is never hidden on a guess.
fn started_by_the_stage(out_dir: Option<&str>) -> bool {
    if let (Some(dir), Some(out)) = (std::env::var_os(SHIM_TARGET_DIR_VAR), out_dir)
        && !in_build_dir(std::path::Path::new(&dir), std::path::Path::new(out))
    {
        return false;
    }
    let Some(owner) = std::env::var(SHIM_OWNER_VAR).ok().and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if pid == owner {
            return true;
        }
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        let Ok(exe) = std::fs::read_link(proc.join("exe")) else { return true };
        if !is_cargo_process(&exe) {
            return false;
        }
        // `pid (comm) state ppid ...`; the command name may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else { return true };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            return true;
        };
        if ppid <= 1 {
            // Reparented to init: whoever started it is gone, and it was not the stage.
            return false;
        }
        pid = ppid;
    }
    true
}

/// `cargo`, `cargo-nextest`, `cargo-clippy`, the rustup proxy: the processes between a
/// stage's command and its rustc. A test binary (`target/*/deps/name-hash`) never is,
/// whatever its name.
fn is_cargo_process(exe: &std::path::Path) -> bool {
    let name = exe.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let in_deps = exe.parent().and_then(|p| p.file_name()).is_some_and(|d| d == "deps");
    !in_deps && (name == "cargo" || name == "rustup" || name.starts_with("cargo-"))
}

/// `out` is a unit directory of the build directory `dir`: `<profile>/deps`,
/// `<profile>/examples`, `<profile>/build/<unit>`, each optionally under a target
/// triple's directory.
fn in_build_dir(dir: &std::path::Path, out: &std::path::Path) -> bool {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (dir, out) = (canon(dir), canon(out));
    let Ok(rel) = out.strip_prefix(&dir) else { return false };
    let mut parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    match parts.len() {
        n if n >= 3 && parts[n - 2] == "build" => parts.truncate(n - 2),
        n if n >= 2 => parts.truncate(n - 1),
        _ => return false,
    }
    // Left: the profile's directory, alone or under a target triple (which has dashes).
    match parts.as_slice() {
        [_profile] => true,
        [triple, _profile] => triple.contains('-'),
        _ => false,
    }
}

/// A `harness = false` test or bench: cargo passes neither `--test` nor `--crate-type`
/// and sets `CARGO_TARGET_TMPDIR` for both, so the package's manifest, which must
/// declare such a target, says which of the two it is.
fn harnessless_kind(crate_name: &str) -> &'static str {
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else { return "test" };
    let Ok(manifest) = Utf8PathBuf::try_from(std::path::PathBuf::from(dir).join("Cargo.toml"))
    else {
        return "test";
    };
    let declared = crate::workspace::custom_harness_targets(&manifest);
    let is_bench = declared.iter().any(|(kind, name)| {
        *kind == crate::workspace::TargetKind::Bench && name.replace('-', "_") == crate_name
    });
    if is_bench { "bench" } else { "test" }
}

/// Copies the running executable to `<state_dir>/bin/pipeline-opt-rustc-shim` and
/// returns its path, so that cargo can use it as `RUSTC_WRAPPER` even while a build of
/// this very workspace replaces the original.
pub fn install_rustc_shim(state_dir: &crate::state::StateDir) -> std::io::Result<Utf8PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = state_dir.bin();
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join("pipeline-opt-rustc-shim");
    let tmp = dir.join(format!(".pipeline-opt-rustc-shim.{}", std::process::id()));
    std::fs::copy(&exe, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// The crate timings the shim recorded for `stage`, relative to `run_start`.
pub fn read_rustc_log(
    path: &camino::Utf8Path,
    stage: &str,
    run_start: std::time::SystemTime,
) -> Vec<CrateTiming> {
    RustcLogTail::new(path.to_owned(), stage, run_start).read_new()
}

/// Follows a stage's rustc shim log while the stage runs, so compile units are reported
/// as they finish (the live view counts them) rather than when the stage ends. Only
/// whole lines are consumed: the shim appends each line with one write, but a read may
/// still land between two writes.
#[derive(Debug, Clone)]
pub struct RustcLogTail {
    path: Utf8PathBuf,
    stage: String,
    base: f64,
    offset: u64,
}

impl RustcLogTail {
    pub fn new(path: Utf8PathBuf, stage: &str, run_start: std::time::SystemTime) -> RustcLogTail {
        let base =
            run_start.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        RustcLogTail { path, stage: stage.to_string(), base, offset: 0 }
    }

    /// The units appended since the last call (none while the file does not exist),
    /// leaving out those compiled by tests ([`RustcLogTail::read_events`] has them).
    pub fn read_new(&mut self) -> Vec<CrateTiming> {
        self.read_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::CrateCompiled(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The units appended since the last call, each as [`Event::CrateCompiled`], or as
    /// [`Event::CompiledByTests`] when a test's own cargo run compiled it.
    pub fn read_events(&mut self) -> Vec<Event> {
        use std::io::{Read as _, Seek as _};
        let Ok(mut file) = std::fs::File::open(&self.path) else { return Vec::new() };
        if file.metadata().map(|m| m.len() <= self.offset).unwrap_or(true) {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file.seek(std::io::SeekFrom::Start(self.offset)).is_err()
            || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        self.offset += last_newline as u64 + 1;
        let rel = |t: f64| Duration::from_secs_f64((t - self.base).max(0.0));
        String::from_utf8_lossy(&bytes[..last_newline])
            .lines()
            .filter_map(|l| serde_json::from_str::<RustcInvocation>(l).ok())
            .map(|inv| {
                let by_tests = inv.by_tests;
                let unit = CrateTiming {
                    package: if inv.package.is_empty() {
                        inv.crate_name.clone()
                    } else {
                        inv.package
                    },
                    version: inv.version,
                    target: inv.crate_name,
                    kind: inv.kind,
                    stage: self.stage.clone(),
                    start: rel(inv.start),
                    end: rel(inv.end),
                    metadata: inv.metadata,
                    settings: inv.settings,
                };
                if by_tests { Event::CompiledByTests(unit) } else { Event::CrateCompiled(unit) }
            })
            .collect()
    }
}
