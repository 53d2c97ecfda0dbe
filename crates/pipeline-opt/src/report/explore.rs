//! `--explore`: tries profile-setting variants (less debug info, no incremental) by
//! building the workspace's tests from scratch once per variant and round, each in its
//! own scratch target directory, and reports the measured wall time against the baseline.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

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
    ]
}

#[derive(Debug, Clone)]
pub struct ExploreOptions {
    pub manifest_path: Utf8PathBuf,
    /// Each variant builds in `<scratch_dir>/<n>`, emptied before every round.
    pub scratch_dir: Utf8PathBuf,
    /// Rounds of every variant, interleaved so drift in machine load hits all alike.
    pub rounds: usize,
    /// Cargo arguments of the build that is timed.
    pub cargo_args: Vec<String>,
    pub variants: Vec<Variant>,
}

impl ExploreOptions {
    pub fn new(manifest_path: Utf8PathBuf, scratch_dir: Utf8PathBuf) -> ExploreOptions {
        ExploreOptions {
            manifest_path,
            scratch_dir,
            rounds: 1,
            cargo_args: ["test", "--workspace", "--no-run"].map(String::from).to_vec(),
            variants: default_variants(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantResult {
    pub variant: Variant,
    /// Wall time of each successful round.
    pub walls: Vec<Duration>,
    /// The last error line of a failed build, if any round failed.
    pub error: Option<String>,
}

impl VariantResult {
    /// The fastest round: the least disturbed by other load on the machine.
    pub fn best(&self) -> Option<Duration> {
        self.walls.iter().min().copied()
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
    #[error("cannot run cargo for variant `{variant}`: {source}; is cargo on PATH?")]
    Spawn {
        variant: String,
        #[source]
        source: std::io::Error,
    },
}

/// Builds once per variant and round from an empty target directory and times it.
pub fn explore(opts: &ExploreOptions) -> Result<Vec<VariantResult>, ExploreError> {
    let mut results: Vec<VariantResult> = opts
        .variants
        .iter()
        .map(|v| VariantResult { variant: v.clone(), walls: Vec::new(), error: None })
        .collect();
    for _ in 0..opts.rounds.max(1) {
        for (i, result) in results.iter_mut().enumerate() {
            let dir = opts.scratch_dir.join(i.to_string());
            let scratch = |source| ExploreError::Scratch { path: dir.clone(), source };
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(scratch(e)),
                _ => {}
            }
            std::fs::create_dir_all(&dir).map_err(scratch)?;
            let mut cmd = std::process::Command::new("cargo");
            for var in crate::toolchain::inherited_cargo_vars() {
                cmd.env_remove(var);
            }
            cmd.args(&opts.cargo_args)
                .arg("--manifest-path")
                .arg(&opts.manifest_path)
                .env("CARGO_TARGET_DIR", &dir)
                .env("CARGO_TERM_COLOR", "never")
                .envs(result.variant.env.iter().map(|(k, v)| (k, v)));
            let started = Instant::now();
            let out = cmd.output().map_err(|source| ExploreError::Spawn {
                variant: result.variant.name.clone(),
                source,
            })?;
            let wall = started.elapsed();
            if out.status.success() {
                result.walls.push(wall);
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let line =
                    stderr.lines().rev().find(|l| l.contains("error")).unwrap_or("cargo failed");
                result.error = Some(line.trim().to_string());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&opts.scratch_dir);
    Ok(results)
}

/// A markdown section: each variant's best time and its saving against the baseline
/// (the first variant).
pub fn render_markdown(results: &[VariantResult], cargo_args: &[String], rounds: usize) -> String {
    let mut o = String::new();
    writeln!(o, "## Explored settings\n").unwrap();
    writeln!(
        o,
        "`cargo {}` from an empty target directory, best of {rounds} interleaved round(s) per variant:\n",
        cargo_args.join(" ")
    )
    .unwrap();
    writeln!(o, "| variant | best | saving vs baseline |").unwrap();
    writeln!(o, "| --- | ---: | ---: |").unwrap();
    let baseline = results.first().and_then(VariantResult::best);
    for r in results {
        let (best, saving) = match (r.best(), baseline, &r.error) {
            (_, _, Some(e)) => ("failed".to_string(), e.clone()),
            (Some(b), Some(base), None) => {
                let saved = base.as_secs_f64() - b.as_secs_f64();
                (secs(b), format!("{saved:+.1} s ({:+.0}%)", 100.0 * saved / base.as_secs_f64()))
            }
            (Some(b), None, None) => (secs(b), "-".into()),
            (None, _, None) => ("-".into(), "-".into()),
        };
        writeln!(o, "| {} | {best} | {saving} |", r.variant.name).unwrap();
    }
    o
}

/// The scratch directory `--explore` uses under the state directory.
pub fn scratch_dir(state_dir: &Utf8Path) -> Utf8PathBuf {
    state_dir.join("explore")
}
