//! Building one side's bench targets (`cargo bench --no-run --message-format=json`) and
//! running one bench binary directly with criterion's own command line, in its own
//! `CRITERION_HOME`, so that the two sides never write to the same result directory.
//! Every child runs under a [`Supervisor`], which stops its whole process tree on Ctrl-C.

use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use cargo_metadata::Message;

use crate::process::{self, SIGKILL};

use super::criterion::{CorruptResult, Measurement, parse_text_output, read_results};

/// How a bench binary reports: criterion writes JSON files, a custom `harness = false`
/// binary may only print criterion-style lines, a libtest harness we cannot drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    Criterion,
    Printing,
    Libtest,
}

#[derive(Debug, Clone)]
pub struct BenchBinary {
    pub package: String,
    pub target: String,
    pub executable: Utf8PathBuf,
    /// The package directory: cargo runs benches from there, so do we.
    pub package_dir: Utf8PathBuf,
    pub harness: Harness,
}

#[derive(Debug, Clone)]
pub struct BuildFailure {
    pub package: String,
    pub target: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct BuildOutcome {
    pub binaries: Vec<BenchBinary>,
    pub failures: Vec<BuildFailure>,
}

/// Why a child did not give a result.
#[derive(Debug)]
pub enum Stop {
    /// Could not start it, or a build could not be read: the message says what.
    Failed(String),
    /// SIGINT/SIGTERM arrived (the signal): the child's process tree was stopped.
    Interrupted(i32),
}

impl From<String> for Stop {
    fn from(message: String) -> Self {
        Stop::Failed(message)
    }
}

/// How long an interrupted child's process group has between SIGTERM and SIGKILL: a
/// bench binary or cargo has nothing to save, so the wait is short.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Every child of a comparison (cargo builds, bench binaries) runs in a process group of
/// its own and carries the run's marker (as `optimize`'s stages do), so that Ctrl-C can
/// stop the group and then anything else that carries the marker: no bench process
/// outlives an interrupted comparison.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub run_id: String,
    /// The marker list: outer runs' ids (when bench-compare runs inside `optimize`) and ours.
    runs: String,
    handle_signals: bool,
}

/// A child that ran to its end.
pub struct Finished<T> {
    pub status: ExitStatus,
    pub stdout: T,
    pub stderr: String,
}

impl Supervisor {
    /// With `handle_signals`, installs the SIGINT/SIGTERM handlers `optimize` uses; the
    /// comparison then checks for them between steps and while a child runs.
    pub fn new(handle_signals: bool) -> Self {
        let run_id = crate::orchestrator::new_run_id();
        let runs = process::run_markers(&run_id);
        if handle_signals {
            process::install_signal_handlers();
        }
        Supervisor { run_id, runs, handle_signals }
    }

    /// The signal that asked us to stop, if any.
    pub fn interrupted(&self) -> Option<i32> {
        self.handle_signals.then(process::received_signal).flatten()
    }

    pub fn check(&self) -> Result<(), Stop> {
        self.interrupted().map_or(Ok(()), |sig| Err(Stop::Interrupted(sig)))
    }

    /// Runs `cmd` to its end: stdout goes to `read_stdout` on a thread, stderr is
    /// collected. On an interrupt the child's process group gets SIGTERM, then SIGKILL
    /// after a grace period, and so does any process still carrying our marker.
    pub fn run<T: Send + 'static>(
        &self,
        cmd: &mut Command,
        read_stdout: impl FnOnce(ChildStdout) -> T + Send + 'static,
    ) -> Result<Finished<T>, Stop> {
        self.check()?;
        cmd.env(process::RUN_ID_VAR, &self.run_id)
            .env(process::RUNS_VAR, &self.runs)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child =
            cmd.spawn().map_err(|e| Stop::Failed(format!("could not run {program}: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let stdout = std::thread::spawn(move || read_stdout(stdout));
        // Drained on a thread so a chatty child cannot block on a full pipe.
        let stderr = child.stderr.take().expect("piped");
        let stderr =
            std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(Stop::Failed(format!("could not wait for {program}: {e}"))),
            }
            if let Some(sig) = self.interrupted() {
                process::stop_group(child.id() as i32, STOP_GRACE);
                process::signal_marked(&self.run_id, None, SIGKILL);
                let _ = child.wait();
                // The reader threads end when the last writer is gone; not joined, so a
                // stray holder of the pipe cannot hang the interrupt.
                return Err(Stop::Interrupted(sig));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = stdout
            .join()
            .map_err(|_| Stop::Failed(format!("reading {program}'s output failed")))?;
        Ok(Finished { status, stdout, stderr: stderr.join().unwrap_or_default() })
    }
}

/// The side's declared bench targets: (package, target, package dir).
pub type BenchTargets = Vec<(String, String, Utf8PathBuf)>;

pub fn bench_targets(metadata: &cargo_metadata::Metadata) -> BenchTargets {
    let mut out = Vec::new();
    for package in metadata.workspace_packages() {
        for target in &package.targets {
            if target.kind.iter().any(|k| k.to_string() == "bench") {
                let dir = package.manifest_path.parent().unwrap_or(Utf8Path::new(".")).to_owned();
                out.push((package.name.to_string(), target.name.clone(), dir));
            }
        }
    }
    out
}

pub fn cargo(dir: &Utf8Path, target_dir: Option<&Utf8Path>) -> Command {
    let mut cmd = Command::new(std::env::var("PIPELINE_OPT_CARGO").unwrap_or("cargo".into()));
    cmd.current_dir(dir);
    for var in crate::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    if let Some(t) = target_dir {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    cmd
}

/// Builds every bench target of the workspace at `dir`. When the whole build fails, each
/// target is built on its own so that one broken target does not hide the others.
pub fn build(
    sup: &Supervisor,
    dir: &Utf8Path,
    manifest: &Utf8Path,
    target_dir: Option<&Utf8Path>,
    targets: &BenchTargets,
) -> Result<BuildOutcome, Stop> {
    if targets.is_empty() {
        return Ok(BuildOutcome::default());
    }
    let all = build_once(sup, dir, manifest, target_dir, &["--workspace", "--bench", "*"])?;
    let mut outcome = BuildOutcome::default();
    if all.success {
        outcome.binaries = all.binaries;
    } else {
        for (package, target, _) in targets {
            let one =
                build_once(sup, dir, manifest, target_dir, &["-p", package, "--bench", target])?;
            match one.binaries.into_iter().find(|b| &b.target == target) {
                Some(bin) if one.success => outcome.binaries.push(bin),
                _ => outcome.failures.push(BuildFailure {
                    package: package.clone(),
                    target: target.clone(),
                    message: one
                        .first_error
                        .unwrap_or_else(|| "cargo bench --no-run failed".into()),
                }),
            }
        }
    }
    for bin in &mut outcome.binaries {
        if let Some((_, _, pdir)) =
            targets.iter().find(|(p, t, _)| *p == bin.package && *t == bin.target)
        {
            bin.package_dir = pdir.clone();
        }
        bin.harness = detect_harness(&bin.executable);
    }
    Ok(outcome)
}

struct OneBuild {
    success: bool,
    binaries: Vec<BenchBinary>,
    first_error: Option<String>,
}

fn build_once(
    sup: &Supervisor,
    dir: &Utf8Path,
    manifest: &Utf8Path,
    target_dir: Option<&Utf8Path>,
    select: &[&str],
) -> Result<OneBuild, Stop> {
    let mut cmd = cargo(dir, target_dir);
    cmd.args(["bench", "--no-run", "--message-format=json", "--manifest-path", manifest.as_str()])
        .args(select);
    let owner = dir.to_owned();
    let done = sup.run(&mut cmd, move |stdout| {
        let mut binaries = Vec::new();
        let mut first_error = None;
        for message in Message::parse_stream(BufReader::new(stdout)).flatten() {
            match message {
                Message::CompilerArtifact(a) => {
                    if a.target.kind.iter().any(|k| k.to_string() == "bench")
                        && let Some(exe) = a.executable
                    {
                        binaries.push(BenchBinary {
                            package: package_name(&a.package_id.repr),
                            target: a.target.name.clone(),
                            executable: exe,
                            package_dir: owner.clone(),
                            harness: Harness::Criterion,
                        });
                    }
                }
                Message::CompilerMessage(m)
                    if first_error.is_none()
                        && m.message.level
                            == cargo_metadata::diagnostic::DiagnosticLevel::Error =>
                {
                    let text = m.message.rendered.clone().unwrap_or(m.message.message.clone());
                    first_error = Some(text.trim_end().to_string());
                }
                _ => {}
            }
        }
        (binaries, first_error)
    })?;
    let (binaries, mut first_error) = done.stdout;
    if first_error.is_none() && !done.status.success() {
        first_error = done
            .stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .map(str::to_string)
            .or_else(|| done.stderr.lines().last().map(str::to_string));
    }
    Ok(OneBuild { success: done.status.success(), binaries, first_error })
}

/// `path+file:///x/crates/foo#0.1.0` or `path+file:///x/foo#name@0.1.0` → the package
/// name (the spec's last path segment unless the fragment names it).
fn package_name(id: &str) -> String {
    let (path, fragment) = id.split_once('#').unwrap_or((id, ""));
    if let Some((name, _)) = fragment.split_once('@') {
        return name.to_string();
    }
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Criterion's command line is compiled into the binary; libtest's too. Looking for it
/// avoids running an unknown harness just to ask.
fn detect_harness(exe: &Utf8Path) -> Harness {
    let Ok(bytes) = std::fs::read(exe) else { return Harness::Printing };
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if has(b"Criterion Benchmark") && has(b"save-baseline") {
        Harness::Criterion
    } else if has(b"include-ignored") {
        Harness::Libtest
    } else {
        Harness::Printing
    }
}

/// How long criterion may warm up and measure each benchmark in one round.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    pub warm_up: Duration,
    pub measurement: Duration,
}

#[derive(Debug, Default)]
pub struct RunOutcome {
    pub measurements: Vec<Measurement>,
    pub corrupt: Vec<CorruptResult>,
    /// The binary failed (a panic): the message to report.
    pub failure: Option<String>,
}

/// Runs `bin` once, its results going to a fresh `home`.
pub fn run(
    sup: &Supervisor,
    bin: &BenchBinary,
    settings: RunSettings,
    filter: Option<&str>,
    home: &Utf8Path,
) -> Result<RunOutcome, Stop> {
    let _ = std::fs::remove_dir_all(home);
    std::fs::create_dir_all(home).map_err(|e| format!("could not create {home}: {e}"))?;
    let mut cmd = Command::new(&bin.executable);
    cmd.current_dir(&bin.package_dir).arg("--bench");
    for var in crate::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    cmd.env("CRITERION_HOME", home);
    if bin.harness == Harness::Criterion {
        cmd.args([
            "--noplot",
            "--warm-up-time",
            &secs(settings.warm_up),
            "--measurement-time",
            &secs(settings.measurement),
            // The analysis criterion does after each benchmark is not what we compare;
            // fewer resamples keep it from dominating short rounds.
            "--nresamples",
            "1000",
        ]);
    }
    if let Some(f) = filter {
        cmd.arg(regex_escape(f));
    }
    let out = sup.run(&mut cmd, |mut stdout| {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })?;
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    let mut outcome = RunOutcome::default();
    if bin.harness == Harness::Criterion {
        let (found, corrupt) = read_results(home, "new");
        outcome.measurements = found;
        outcome.corrupt = corrupt;
    }
    if outcome.measurements.is_empty() && outcome.corrupt.is_empty() {
        outcome.measurements = parse_text_output(stdout);
    }
    if !out.status.success() {
        let panic = stderr
            .lines()
            .position(|l| l.contains("panicked at"))
            .map(|i| stderr.lines().skip(i).take(2).collect::<Vec<_>>().join(" "));
        outcome.failure = Some(panic.unwrap_or_else(|| {
            format!("exited with {}: {}", out.status, stderr.lines().last().unwrap_or("").trim())
        }));
    }
    Ok(outcome)
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// Criterion reads its filter as a regex; ours is a substring.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn package_names_from_ids() {
        assert_eq!(super::package_name("path+file:///x/crates/foo#0.1.0"), "foo");
        assert_eq!(super::package_name("path+file:///x/bar#baz@0.1.0"), "baz");
    }
}
