//! `--explore`: tries profile-setting variants (less debug info, no incremental, fewer
//! codegen units) by running the build stage's command from scratch once per variant and
//! round, each in its own scratch target directory, and measures wall and CPU time
//! against the baseline. The user's manifest and target directory are never touched.
//! The measurements go into the run record; `report::explore` renders them.

use std::io::Read as _;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::plan::StageCommand;
use crate::record::{Exploration, ExploredVariant};
use crate::report::secs;

/// One set of settings to try, given as cargo's `CARGO_PROFILE_*` / `CARGO_*` variables so
/// the user's manifest stays untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub env: Vec<(String, String)>,
}

impl Variant {
    pub fn new(name: &str, env: &[(&str, &str)]) -> Variant {
        Variant {
            name: name.into(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

/// The baseline (the workspace's own settings) first, then the variants worth trying.
/// Both `dev` and `test` are set: `--all-targets` builds test targets with `test`.
pub fn default_variants() -> Vec<Variant> {
    vec![
        Variant::new("baseline", &[]),
        Variant::new(
            "debug = \"line-tables-only\"",
            &[
                ("CARGO_PROFILE_DEV_DEBUG", "line-tables-only"),
                ("CARGO_PROFILE_TEST_DEBUG", "line-tables-only"),
            ],
        ),
        Variant::new(
            "debug = false",
            &[("CARGO_PROFILE_DEV_DEBUG", "false"), ("CARGO_PROFILE_TEST_DEBUG", "false")],
        ),
        Variant::new("incremental = false", &[("CARGO_INCREMENTAL", "0")]),
        Variant::new(
            "codegen-units = 16",
            &[
                ("CARGO_PROFILE_DEV_CODEGEN_UNITS", "16"),
                ("CARGO_PROFILE_TEST_CODEGEN_UNITS", "16"),
            ],
        ),
    ]
}

#[derive(Debug, Clone)]
pub struct ExploreOptions {
    /// The command that is timed (the build stage's), run with its own environment plus
    /// the variant's and `CARGO_TARGET_DIR` pointing at the scratch directory.
    pub command: StageCommand,
    /// Each variant builds in `<scratch_dir>/<n>`, emptied before every round.
    pub scratch_dir: Utf8PathBuf,
    /// Rounds of every variant, interleaved so drift in machine load hits all alike.
    pub rounds: usize,
    pub variants: Vec<Variant>,
}

impl ExploreOptions {
    /// `cargo test --workspace --no-run` on `manifest_path`: every test target, built
    /// the way the tests need them.
    pub fn new(manifest_path: Utf8PathBuf, scratch_dir: Utf8PathBuf) -> ExploreOptions {
        let cwd = manifest_path.parent().map(Utf8Path::to_owned).unwrap_or_else(|| ".".into());
        let args = ["test", "--workspace", "--no-run", "--manifest-path", manifest_path.as_str()];
        let command = StageCommand::argv("cargo", args.map(String::from).to_vec(), cwd);
        ExploreOptions::for_command(command, scratch_dir)
    }

    /// Times `command` (a plan's build stage) under every default variant.
    pub fn for_command(command: StageCommand, scratch_dir: Utf8PathBuf) -> ExploreOptions {
        ExploreOptions { command, scratch_dir, rounds: 1, variants: default_variants() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantResult {
    pub variant: Variant,
    /// Wall time of each successful round.
    pub walls: Vec<Duration>,
    /// User + system CPU time of the whole build (cargo, rustc, linkers, build scripts)
    /// of each successful round.
    pub cpus: Vec<Duration>,
    /// The last error line of a failed build, if any round failed.
    pub error: Option<String>,
}

impl VariantResult {
    /// The fastest round: the least disturbed by other load on the machine.
    pub fn best(&self) -> Option<Duration> {
        self.walls.iter().min().copied()
    }

    /// The least CPU time of any round; CPU time varies far less with load than wall time.
    pub fn best_cpu(&self) -> Option<Duration> {
        self.cpus.iter().min().copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    #[error("cannot prepare the scratch directory {path}: {source}")]
    Scratch {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{program}` for variant `{variant}`: {source}; is it on PATH?")]
    Spawn {
        program: String,
        variant: String,
        #[source]
        source: std::io::Error,
    },
}

/// Builds once per variant and round from an empty target directory and times it;
/// `on_result` hears of each variant's round as it ends (the terminal view).
pub fn explore(
    opts: &ExploreOptions,
    on_result: &mut dyn FnMut(&VariantResult),
) -> Result<Vec<VariantResult>, ExploreError> {
    let mut results: Vec<VariantResult> = opts
        .variants
        .iter()
        .map(|v| VariantResult {
            variant: v.clone(),
            walls: Vec::new(),
            cpus: Vec::new(),
            error: None,
        })
        .collect();
    let sh = xshell::Shell::new().map_err(|e| ExploreError::Scratch {
        path: opts.scratch_dir.clone(),
        source: std::io::Error::other(e),
    })?;
    for _ in 0..opts.rounds.max(1) {
        for (i, result) in results.iter_mut().enumerate() {
            let dir = opts.scratch_dir.join(i.to_string());
            let scratch = |source| ExploreError::Scratch { path: dir.clone(), source };
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(scratch(e)),
                _ => {}
            }
            std::fs::create_dir_all(&dir).map_err(scratch)?;
            let mut cmd = opts.command.to_command(&sh);
            // No wrapper: sccache would serve the cold build from its cache, and an outer
            // run's rustc shim would record the variant's crates into that run.
            cmd.env_remove("RUSTC_WRAPPER")
                .env_remove(crate::rustc_shim::SHIM_LOG_VAR)
                .env("CARGO_TARGET_DIR", &dir)
                .env("CARGO_TERM_COLOR", "never")
                .envs(result.variant.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            let spawn_err = |source| ExploreError::Spawn {
                program: opts.command.program().to_string(),
                variant: result.variant.name.clone(),
                source,
            };
            let started = Instant::now();
            let (code, cpu, stderr) = run_timed(cmd).map_err(spawn_err)?;
            let wall = started.elapsed();
            if code == Some(0) {
                result.walls.push(wall);
                result.cpus.push(cpu);
            } else {
                let line =
                    stderr.lines().rev().find(|l| l.contains("error")).unwrap_or("cargo failed");
                result.error = Some(line.trim().to_string());
            }
            on_result(result);
        }
    }
    let _ = std::fs::remove_dir_all(&opts.scratch_dir);
    Ok(results)
}

/// Runs `cmd` to the end and returns its exit code, the CPU time of its whole tree (from
/// `wait4`, which counts every descendant the child waited for) and its stderr.
fn run_timed(mut cmd: std::process::Command) -> std::io::Result<(Option<i32>, Duration, String)> {
    let mut child = cmd.spawn()?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        // To the end before waiting, so a chatty build never blocks on a full pipe.
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        stderr = String::from_utf8_lossy(&bytes).into_owned();
    }
    let reaped = crate::process::wait_with_rusage(child.id() as i32)?;
    drop(child); // reaped above; dropping a `Child` neither waits nor kills
    Ok((reaped.exit_code(), reaped.cpu_user + reaped.cpu_system, stderr))
}

// The record keeps the type; building it from measured results is this module's.
impl Exploration {
    pub fn from_results(
        command: &StageCommand,
        rounds: usize,
        results: &[VariantResult],
    ) -> Exploration {
        Exploration {
            command: command.display(),
            rounds: rounds.max(1),
            variants: results
                .iter()
                .map(|r| ExploredVariant {
                    name: r.variant.name.clone(),
                    env: r.variant.env.iter().cloned().collect(),
                    wall: r.best(),
                    cpu: r.best_cpu(),
                    rounds_ok: r.walls.len(),
                    error: r.error.clone(),
                })
                .collect(),
        }
    }
}

/// One plain line per explored round, for the terminal.
pub fn render_line(r: &VariantResult) -> String {
    match (&r.error, r.walls.last(), r.cpus.last()) {
        (Some(e), _, _) => format!("explore: {}: failed: {e}", r.variant.name),
        (None, Some(w), Some(c)) => {
            format!("explore: {}: {} wall, {} CPU", r.variant.name, secs(*w), secs(*c))
        }
        _ => format!("explore: {}: no result", r.variant.name),
    }
}
