//! The quality experiment of `bench-compare` (issue 7): a fixture git repository whose
//! working tree makes some benchmarks slower by a controlled amount (+5%, +10%) and
//! leaves the others identical, compared run after run with the default settings; plus
//! the time of one plain `cargo bench` of both sides. Raw results go to a JSON file; the
//! docs table is generated from it.
//!
//! ```text
//! cargo run -p pipeline-opt-benches --example bench_compare_quality -- run [RUNS] [OUT.json]
//! cargo run -p pipeline-opt-benches --example bench_compare_quality -- table OUT.json
//! ```

use std::process::Command;
use std::time::Instant;

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::bench::{BenchCompareOptions, Verdict, bench_compare};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use serde::{Deserialize, Serialize};

/// Benchmarks per suite; per run two get +5%, two get +10%, the rest stay identical, so
/// 10 runs give the 100 / 20 / 20 comparisons issue 7 asks for.
const BENCHES: usize = 14;

const LIB: &str = "pub fn work(n: u64) -> u64 {\n    let mut acc = 0u64;\n    for i in 0..n {\n        acc = acc.wrapping_mul(31).wrapping_add(i ^ (acc >> 3));\n    }\n    acc\n}\n";

#[derive(Serialize, Deserialize)]
struct Record {
    run: usize,
    benchmark: String,
    /// Injected slowdown in percent (0, 5 or 10).
    injected_percent: u32,
    verdict: Verdict,
    ratio: Option<f64>,
    ci_low: Option<f64>,
    ci_high: Option<f64>,
    noise_floor: Option<f64>,
    #[serde(default)]
    base_rounds: Vec<Option<f64>>,
    #[serde(default)]
    head_rounds: Vec<Option<f64>>,
}

#[derive(Serialize, Deserialize)]
struct RunTime {
    run: usize,
    elapsed_secs: f64,
    build_secs: f64,
    loadavg_before: String,
}

#[derive(Serialize, Deserialize)]
struct Experiment {
    version: u32,
    command: String,
    benches_per_suite: usize,
    rounds: usize,
    warm_up_secs: f64,
    measurement_secs: f64,
    threshold: f64,
    cores: usize,
    records: Vec<Record>,
    runs: Vec<RunTime>,
    /// `cargo bench` on the head, then on the base, default criterion settings.
    plain_cargo_bench_secs: Option<f64>,
    loadavg_after: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let runs = args.get(1).map(|r| r.parse().expect("RUNS is a number")).unwrap_or(10);
            let out = args
                .get(2)
                .cloned()
                .unwrap_or("benches/experiments/bench_compare_quality.json".into());
            run(runs, Utf8Path::new(&out));
        }
        Some("table") => {
            let path = args.get(1).expect("table PATH");
            let e: Experiment =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            print!("{}", table(&e));
        }
        _ => eprintln!("usage: bench_compare_quality run [RUNS] [OUT.json] | table OUT.json"),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

fn n_for(bench: usize) -> u64 {
    4000 + 2000 * bench as u64
}

fn bench_src(slowdown: &dyn Fn(usize) -> u32) -> String {
    let mut body = String::new();
    for i in 0..BENCHES {
        // n scales the loop linearly, so n * (100 + p) / 100 is p% more work.
        let n = n_for(i) * (100 + slowdown(i) as u64) / 100;
        body.push_str(&format!(
            "    c.bench_function(\"b{i:02}\", |b| b.iter(|| fx::work(std::hint::black_box({n}))));\n"
        ));
    }
    format!(
        "use criterion::{{Criterion, criterion_group, criterion_main}};\n\n\
         fn benches(c: &mut Criterion) {{\n{body}}}\n\n\
         criterion_group!(g, benches);\ncriterion_main!(g);\n"
    )
}

fn git(dir: &Utf8Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=x", "-c", "user.email=x@x", "-c", "commit.gpgsign=false"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn run(runs: usize, out: &Utf8Path) {
    let workspace_target = Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    // The integration tests' fixture target dir: criterion is already compiled there.
    let target = workspace_target.join("tmp/bench-compare-fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let root = Utf8Path::from_path(tmp.path()).unwrap().join("repo");
    let mut krate = FixtureCrate::new("fx").lib(LIB).bench("suite", bench_src(&|_| 0));
    krate.manifest_extra =
        "[dev-dependencies.criterion]\nversion = \"0.8\"\ndefault-features = false\n".into();
    FixtureWorkspace::new(vec![krate])
        .file(
            ".cargo/config.toml",
            format!("[build]\ntarget-dir = \"{target}\"\n\n[net]\noffline = true\n"),
        )
        .write(&root)
        .unwrap();
    git(&root, &["init", "--quiet", "-b", "main"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "--quiet", "-m", "base"]);

    let options = BenchCompareOptions {
        manifest_path: Some(root.join("Cargo.toml")),
        git_ref: "main".into(),
        ..BenchCompareOptions::default()
    };
    let defaults = BenchCompareOptions::default();
    let mut e = Experiment {
        version: 2,
        command: format!(
            "cargo run -p pipeline-opt-benches --example bench_compare_quality -- run {runs} {out}"
        ),
        benches_per_suite: BENCHES,
        rounds: defaults.rounds,
        warm_up_secs: defaults.warm_up.as_secs_f64(),
        measurement_secs: defaults.measurement.as_secs_f64(),
        threshold: defaults.threshold,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        records: Vec::new(),
        runs: Vec::new(),
        plain_cargo_bench_secs: None,
        loadavg_after: String::new(),
    };
    for run in 0..runs {
        // Rotate which benchmarks are slowed so no single benchmark decides the result.
        let slowdown = move |i: usize| match (i + BENCHES * runs - 4 * run) % BENCHES {
            0 | 1 => 5,
            2 | 3 => 10,
            _ => 0,
        };
        std::fs::write(root.join("crates/fx/benches/suite.rs"), bench_src(&slowdown)).unwrap();
        let loadavg_before = loadavg();
        let c = bench_compare(&options, &mut |line| eprintln!("run {run}: {line}")).unwrap();
        for b in &c.benchmarks {
            let i: usize = b.id[1..].parse().unwrap();
            e.records.push(Record {
                run,
                benchmark: b.id.clone(),
                injected_percent: slowdown(i),
                verdict: b.verdict,
                ratio: b.ratio,
                ci_low: b.ci_low,
                ci_high: b.ci_high,
                noise_floor: b.noise_floor,
                base_rounds: b.base_rounds.clone(),
                head_rounds: b.head_rounds.clone(),
            });
        }
        eprintln!("run {run}: {:.1}s", c.elapsed_secs);
        e.runs.push(RunTime {
            run,
            elapsed_secs: c.elapsed_secs,
            build_secs: c.build_secs,
            loadavg_before,
        });
        if run == 0 {
            // One plain `cargo bench` of each side, builds warm as in our runs; measured
            // once, after the first run has created the base worktree.
            e.plain_cargo_bench_secs = plain_both_sides(&root, &target);
        }
        // Written after every run so that a stopped experiment keeps what it measured.
        e.loadavg_after = loadavg();
        std::fs::write(out, serde_json::to_string_pretty(&e).unwrap()).unwrap();
    }
    print!("{}", table(&e));
}

fn plain_both_sides(root: &Utf8Path, target: &Utf8Path) -> Option<f64> {
    let worktrees = target.join("pipeline-opt/worktrees");
    let base = std::fs::read_dir(&worktrees)
        .unwrap()
        .flatten()
        .map(|e| Utf8PathBuf::from_path_buf(e.path()).unwrap())
        .find(|p| {
            p.is_dir() && p.extension().is_none() && p.file_name().unwrap().starts_with("main-")
        })
        .expect("the base worktree");
    let started = Instant::now();
    let head_ok = plain_cargo_bench(root, None);
    let base_ok = plain_cargo_bench(&base, Some(&Utf8PathBuf::from(format!("{base}.target"))));
    (head_ok && base_ok).then(|| started.elapsed().as_secs_f64())
}

fn plain_cargo_bench(dir: &Utf8Path, target_dir: Option<&Utf8Path>) -> bool {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir).args(["bench", "--bench", "suite"]);
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    if let Some(t) = target_dir {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    cmd.stdout(std::process::Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

/// The docs table: per injected slowdown, how the comparisons came out.
fn table(e: &Experiment) -> String {
    let mut out = String::from(
        "| injected | comparisons | regressed | improved | unchanged | inconclusive | median ratio | median noise floor |\n|---|---|---|---|---|---|---|---|\n",
    );
    for pct in [0, 5, 10] {
        let rs: Vec<&Record> = e.records.iter().filter(|r| r.injected_percent == pct).collect();
        let n = |v: Verdict| rs.iter().filter(|r| r.verdict == v).count();
        let med = |mut xs: Vec<f64>| {
            xs.sort_by(f64::total_cmp);
            xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let ratio = med(rs.iter().filter_map(|r| r.ratio).collect());
        let floor = med(rs.iter().filter_map(|r| r.noise_floor).collect());
        out.push_str(&format!(
            "| +{pct}% | {} | {} | {} | {} | {} | {:+.2}% | ±{:.2}% |\n",
            rs.len(),
            n(Verdict::Regressed),
            n(Verdict::Improved),
            n(Verdict::Unchanged),
            n(Verdict::Inconclusive),
            (ratio - 1.0) * 100.0,
            floor * 100.0
        ));
    }
    let count = |pct: u32, vs: &[Verdict]| {
        let rs: Vec<&Record> = e.records.iter().filter(|r| r.injected_percent == pct).collect();
        (rs.iter().filter(|r| vs.contains(&r.verdict)).count(), rs.len())
    };
    let (flagged, same) = count(0, &[Verdict::Regressed, Verdict::Improved]);
    let (caught5, n5) = count(5, &[Verdict::Regressed]);
    let (improved5, _) = count(5, &[Verdict::Improved]);
    let (caught10, n10) = count(10, &[Verdict::Regressed]);
    let mark = |ok: bool| if ok { "yes" } else { "**no**" };
    out.push_str(&format!(
        "\n| goal (issue 7) | measured | met? |\n|---|---|---|\n\
         | identical: ≤ 1 flagged in 100 | {flagged} of {same} regressed or improved | {} |\n\
         | +5%: caught ≥ 18 of 20, never improved | {caught5} of {n5} caught, {improved5} improved | {} |\n\
         | +10%: caught every time | {caught10} of {n10} | {} |\n",
        mark(same >= 100 && flagged * 100 <= same),
        mark(n5 >= 20 && caught5 * 10 >= n5 * 9 && improved5 == 0),
        mark(n10 >= 20 && caught10 == n10),
    ));
    let mean_run = e.runs.iter().map(|r| r.elapsed_secs).sum::<f64>() / e.runs.len().max(1) as f64;
    out.push_str(&format!(
        "\nSuite of {} benchmarks, {} runs, {} rounds × ({}s warm-up + {}s measurement) per side, threshold {:.0}%, {} cores.\n",
        e.benches_per_suite,
        e.runs.len(),
        e.rounds,
        e.warm_up_secs,
        e.measurement_secs,
        e.threshold * 100.0,
        e.cores
    ));
    match e.plain_cargo_bench_secs {
        Some(plain) => out.push_str(&format!(
            "End to end: {mean_run:.1}s per bench-compare run (mean) vs {plain:.1}s for one plain `cargo bench` of both sides: {:.2}×.\n",
            mean_run / plain
        )),
        None => out.push_str(&format!("End to end: {mean_run:.1}s per run; the plain `cargo bench` timing failed.\n")),
    }
    out.push_str(&format!(
        "Load average before each run: {}; after: {}.\n",
        e.runs
            .iter()
            .map(|r| r.loadavg_before.split_whitespace().next().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", "),
        e.loadavg_after.split_whitespace().next().unwrap_or("?")
    ));
    out
}
