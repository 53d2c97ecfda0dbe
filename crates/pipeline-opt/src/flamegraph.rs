//! `flamegraph`: where one test spends its time. The pipeline's own plan, cut down to
//! that test ([`crate::plan::Plan::only_one_test`]), runs once under `perf record` with
//! the same environment, rustc shim and jobserver as `optimize`, so nothing compiles
//! again; `perf script`'s stacks are folded and drawn by the inferno crate into an SVG
//! beside the reports, and the last run's reports are rendered again with a link to it.

use std::io::Write as _;

use camino::{Utf8Path, Utf8PathBuf};
use xshell::{Shell, cmd};

use crate::inputs::Inputs;
use crate::optimize::{OptimizeError, OptimizeOptions};
use crate::plan::OneTest;
use crate::record::{Event, FlameGraphLink, RunOutcome, RunRecord};
use crate::state::StateDir;

/// Samples per second: often enough for a test of a second, few enough that DWARF
/// call stacks of a long one stay small.
pub const DEFAULT_FREQUENCY: u32 = 499;

#[derive(Debug, Clone)]
pub struct FlameGraphOptions {
    /// The workspace, selection and run settings, as for `optimize`.
    pub optimize: OptimizeOptions,
    /// The test, as the reports name it: `BINARY TEST`, or `TEST` in any binary.
    pub test: String,
    pub frequency: u32,
}

/// What `flamegraph` drew.
#[derive(Debug, Clone)]
pub struct FlameGraph {
    pub svg: Utf8PathBuf,
    /// The CPU time the samples stand for.
    pub cpu: std::time::Duration,
    /// The HTML report that now links it; `None` when no run had written one.
    pub linked_from: Option<Utf8PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlameGraphError {
    #[error(
        "perf is not installed: install it (Debian and Ubuntu: `apt-get install linux-perf`; Fedora: `dnf install perf`) and run flamegraph again"
    )]
    PerfMissing,
    #[error(
        "perf may not record here ({line}): run as root, or allow it with `sysctl kernel.perf_event_paranoid=1`"
    )]
    PerfNotPermitted { line: String },
    #[error(
        "the plan has no test stage that runs tests by name (nextest or `cargo test`): check `cargo xtask plan`"
    )]
    NoTestStage,
    #[error(
        "no test matched `{test}`: name it as the reports do, `BINARY TEST` or `TEST` (see `cargo nextest list`)"
    )]
    NoSuchTest { test: String },
    #[error("stage `{stage}` {outcome}; its log: {log}")]
    StageFailed { stage: String, outcome: String, log: String },
    #[error(
        "perf sampled no CPU time of `{test}`: it ran too briefly, or spends its time waiting (sleep, I/O, locks), which a CPU flame graph cannot show; for a brief test raise --frequency"
    )]
    NoSamples { test: String },
    #[error("could not read perf's data {path}: {detail}")]
    PerfScript { path: Utf8PathBuf, detail: String },
    #[error("could not write {path}: {source}")]
    Write {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Optimize(#[from] OptimizeError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// Runs the test under `perf record`, draws its flame graph and links it from the last
/// run's reports. Events of the short run go to `on_event` (the live view).
pub fn flamegraph(
    opts: &FlameGraphOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<FlameGraph, FlameGraphError> {
    let sh = Shell::new().map_err(|e| FlameGraphError::Write {
        path: ".".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if !cmd!(sh, "perf --version").output().is_ok_and(|o| o.status.success()) {
        return Err(FlameGraphError::PerfMissing);
    }
    let test = OneTest::parse(&opts.test);
    let inputs =
        Inputs::load(opts.optimize.manifest_path.as_deref()).map_err(OptimizeError::from)?;
    let state_dir = inputs.workspace.state_dir(&inputs.config);
    let slug = slug(&opts.test);
    let data_dir = state_dir.flamegraph_data();
    std::fs::create_dir_all(&data_dir)
        .map_err(|source| FlameGraphError::Write { path: data_dir.clone(), source })?;
    let data = data_dir.join(format!("{slug}.perf.data"));
    let _ = std::fs::remove_file(&data);
    let (plan, _) = crate::optimize::pipeline_plan(&inputs, &opts.optimize)?;
    // cpu-clock everywhere (hardware counters are missing in many VMs): each sample's
    // period is then nanoseconds of CPU, and the graph's counts are CPU time.
    let wrapper = ["perf", "record", "--quiet", "-e", "cpu-clock", "-F"]
        .into_iter()
        .map(String::from)
        .chain([opts.frequency.to_string(), "--call-graph".into(), "dwarf".into()])
        .chain(["-o".into(), data.to_string(), "--".into()])
        .collect();
    let plan = plan.only_one_test(&test, wrapper).ok_or(FlameGraphError::NoTestStage)?;
    let record = crate::optimize::run_plan_once(
        &inputs,
        &opts.optimize,
        &plan,
        &format!("flamegraph {}", opts.test),
        on_event,
    )?;
    check_run(&record, &opts.test)?;

    let comms = test_comms(&sh, &data)?;
    if comms.is_empty() {
        return Err(FlameGraphError::NoSamples { test: opts.test.clone() });
    }
    let comms = comms.join(",");
    // `--no-inline`: resolving inlined frames runs addr2line per address, minutes on a
    // large test binary with full debug info; the graph keeps the real frames.
    let script = cmd!(sh, "perf script -i {data} --no-inline --comms {comms}")
        .output()
        .map_err(|e| FlameGraphError::PerfScript { path: data.clone(), detail: e.to_string() })?;
    let mut folded = Vec::new();
    use inferno::collapse::Collapse as _;
    inferno::collapse::perf::Folder::default()
        .collapse(&script.stdout[..], &mut folded)
        .map_err(|e| FlameGraphError::PerfScript { path: data.clone(), detail: e.to_string() })?;
    let folded = String::from_utf8_lossy(&folded).into_owned();
    let cpu_ns: u64 = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
        .sum();
    if cpu_ns == 0 {
        return Err(FlameGraphError::NoSamples { test: opts.test.clone() });
    }
    let svg = state_dir.flamegraphs().join(format!("{slug}.svg"));
    write_svg(&svg, &folded, &opts.test)?;
    let _ = std::fs::remove_file(&data);
    let cpu = std::time::Duration::from_nanos(cpu_ns);
    let linked_from = link_from_reports(&state_dir, &opts.test, &slug, cpu)?;
    Ok(FlameGraph { svg, cpu, linked_from })
}

/// The processes and threads perf sampled, by command name.
const TOOL_COMMS: &[&str] = &[
    "cargo",
    "cargo-nextest",
    "rustc",
    "rustdoc",
    "rustup",
    "exe",
    "perf",
    "perf-exec",
    "pipeline-opt-ru",
    "tokio-runtime-w",
    "ctrl-c",
    "sh",
];

/// The command names (`comm`) of the test's processes and threads among what perf
/// sampled: every one but cargo's, nextest's, rustc's and perf's own. Unwinding only
/// those keeps `perf script` from unwinding through cargo and its tools: on the 12-crate
/// fixture (load 12), the whole tree's 119 samples took 44 s, its test's alone 2 s.
fn test_comms(sh: &Shell, data: &Utf8Path) -> Result<Vec<String>, FlameGraphError> {
    let out = cmd!(sh, "perf script -i {data} -F comm").output().map_err(|e| {
        FlameGraphError::PerfScript { path: data.to_owned(), detail: e.to_string() }
    })?;
    let mut comms: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|c| !c.is_empty() && !c.contains(',') && !TOOL_COMMS.contains(&c.as_str()))
        .collect();
    comms.sort();
    comms.dedup();
    Ok(comms)
}

/// Fails with what went wrong in the short run: perf refused, no test matched, or a
/// stage failed (its log says how).
fn check_run(record: &RunRecord, test: &str) -> Result<(), FlameGraphError> {
    if record.outcome == RunOutcome::Succeeded {
        return Ok(());
    }
    let failed = record.stages.iter().find(|s| {
        !matches!(
            s.status,
            crate::record::StageStatus::Succeeded | crate::record::StageStatus::Cached { .. }
        )
    });
    let Some(stage) = failed else {
        return Err(FlameGraphError::StageFailed {
            stage: "-".into(),
            outcome: format!("{:?}", record.outcome).to_lowercase(),
            log: "-".into(),
        });
    };
    let log = stage.log_path.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    let text = stage
        .log_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| stage.tail.join("\n"));
    if let Some(line) = text.lines().find(|l| {
        l.contains("perf_event_paranoid") || l.contains("perf_event_open") && l.contains("denied")
    }) {
        return Err(FlameGraphError::PerfNotPermitted { line: line.trim().to_string() });
    }
    if text.contains("no tests to run") || text.contains("0 tests run") {
        return Err(FlameGraphError::NoSuchTest { test: test.to_string() });
    }
    Err(FlameGraphError::StageFailed {
        stage: stage.id.clone(),
        outcome: stage.status.name().to_string(),
        log,
    })
}

fn write_svg(svg: &Utf8Path, folded: &str, test: &str) -> Result<(), FlameGraphError> {
    let write = |source| FlameGraphError::Write { path: svg.to_owned(), source };
    let dir = svg.parent().expect("the flame graphs' directory");
    std::fs::create_dir_all(dir).map_err(write)?;
    let tmp = dir.join(format!(".{}.{}", svg.file_name().unwrap_or("x"), std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(write)?);
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!("{test}: where its process spent CPU time");
    options.count_name = "ns of CPU".into();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut file)
        .map_err(|e| write(std::io::Error::other(e.to_string())))?;
    file.flush().map_err(write)?;
    drop(file);
    std::fs::rename(&tmp, svg).map_err(write)
}

/// Adds the flame graph to the last `optimize` run's record in the state directory and
/// renders its reports again, so its HTML report links the SVG.
fn link_from_reports(
    state_dir: &StateDir,
    test: &str,
    slug: &str,
    cpu: std::time::Duration,
) -> Result<Option<Utf8PathBuf>, FlameGraphError> {
    let json = state_dir.report(crate::report::JSON_FILE);
    let Ok(text) = std::fs::read_to_string(&json) else {
        eprintln!(
            "note: no run record at {json} (the last `optimize` wrote it elsewhere with --json, or none ran), so no report links the flame graph"
        );
        return Ok(None);
    };
    let mut record = match serde_json::from_str::<RunRecord>(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "warning: the last run's record {json} does not parse ({e}); the flame graph is not linked from its reports"
            );
            return Ok(None);
        }
    };
    record.flamegraphs.retain(|f| f.test != test);
    record.flamegraphs.push(FlameGraphLink {
        test: test.to_string(),
        svg: format!("flamegraphs/{slug}.svg"),
        cpu,
    });
    crate::report::rerender(&record, state_dir)?;
    Ok(Some(state_dir.report(crate::report::HTML_FILE)))
}

/// A file name for the test: letters, digits, `-` and `_`, at most 100 of them.
fn slug(test: &str) -> String {
    let s: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(100)
        .collect();
    if s.is_empty() { "test".into() } else { s }
}
