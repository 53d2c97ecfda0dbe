//! Reports of a finished run, from a fixed hand-built run record: snapshots of markdown,
//! JSON and Prometheus output, the JSON schema, the HTML timeline in headless Chromium,
//! promtool, the history file, JUnit from real `cargo test` output, recommendations and
//! live progress with and without a terminal.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use expect_test::{expect, expect_file};
use pipeline_opt::PerformanceTargets;
use pipeline_opt::facts::{self, DebugLevel, ResolvedPackage, TestDebug, WorkspaceFacts};
use pipeline_opt::plan::DroppedStage;
use pipeline_opt::record::{
    CommandKind, Exploration, ExploredVariant, FlameGraphLink, LateReason, LateUnit, LowerBound,
};
use pipeline_opt::record::{
    CompiledByTests, CpuSample, CrateTiming, CriticalStep, Event, NaiveComparison, RunOutcome,
    RunRecord, SCHEMA_VERSION, StageMetrics, StageStatus, TestCounts, TestTiming,
};
use pipeline_opt::report::history::{self, HistoryEntry};
use pipeline_opt::report::progress::ProgressReporter;
use pipeline_opt::report::recommend;
use pipeline_opt::report::{self, ReportOptions, github, html, json, junit, markdown, prometheus};
use pipeline_opt::targets::Gate;

fn s(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn stage(
    id: &str,
    command: &str,
    status: StageStatus,
    start: u64,
    wall: u64,
    cpu: u64,
) -> StageMetrics {
    StageMetrics {
        id: id.into(),
        command: command.into(),
        status,
        start: s(start),
        wall: s(wall),
        cpu_user: s(cpu * 9 / 10),
        cpu_system: s(cpu / 10),
        peak_rss_kib: if wall > 0 { 512_000 } else { 0 },
        exit_code: if wall > 0 { Some(0) } else { None },
        log_path: Some(format!("/ws/target/pipeline-opt/logs/{id}.log").into()),
        tail: vec![],
        failed_tests: vec![],
        flaky_tests: vec![],
        proves: vec![format!("{id} (dev)")],
        kind: kind_of(command),
        profile: profile_of(command),
    }
}

/// What the planner would record for `command`: the fixtures here are written as text.
fn kind_of(command: &str) -> CommandKind {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["cargo", "fetch", ..] => CommandKind::Fetch,
        ["cargo", "test", ..] => CommandKind::CargoTest,
        ["cargo", "nextest", ..] => CommandKind::Nextest,
        ["cargo", "build" | "check" | "clippy" | "doc" | "bench", ..] => CommandKind::Compile,
        ["cargo", ..] => CommandKind::Cargo,
        _ => CommandKind::Other,
    }
}

fn profile_of(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let named = words.windows(2).find(|w| w[0] == "--profile").map(|w| w[1].to_string());
    match kind_of(command) {
        CommandKind::Fetch | CommandKind::Cargo | CommandKind::Other => None,
        _ if words.contains(&"--release") => Some("release".into()),
        _ if words.get(1) == Some(&"bench") => Some(named.unwrap_or_else(|| "bench".into())),
        _ => Some(named.unwrap_or_else(|| "dev".into())),
    }
}

fn unit(package: &str, kind: &str, stage: &str, start: u64, end: u64) -> CrateTiming {
    CrateTiming {
        package: package.into(),
        version: String::new(),
        target: package.replace('-', "_"),
        kind: kind.into(),
        stage: stage.into(),
        start: s(start),
        end: s(end),
        metadata: String::new(),
        settings: Vec::new(),
    }
}

/// A unit of a package whose version the shim recorded.
fn versioned(mut unit: CrateTiming, version: &str) -> CrateTiming {
    unit.version = version.into();
    unit
}

/// A failed run on 4 cores: fetch, a build whose `core` crate dominates the critical
/// path, a failing test stage, a cached doctest stage and a skipped bench build.
fn fixture_record() -> RunRecord {
    let mut test =
        stage("test", "cargo test --workspace", StageStatus::Failed, 31_000, 9_000, 10_000);
    test.exit_code = Some(101);
    test.failed_tests = vec!["app::tests::adds_up".into()];
    test.flaky_tests = vec!["app::tests::flaky_clock".into()];
    test.tail = vec![
        "---- app::tests::adds_up stdout ----".into(),
        "thread 'app::tests::adds_up' panicked at crates/app/src/lib.rs:9:5:".into(),
        "assertion `left == right` failed".into(),
        "test result: FAILED. 3 passed; 1 failed; 0 ignored".into(),
    ];
    let stages = vec![
        stage("fetch", "cargo fetch --locked", StageStatus::Succeeded, 0, 1_000, 200),
        stage(
            "build",
            "cargo build --workspace --all-targets",
            StageStatus::Succeeded,
            1_000,
            30_000,
            36_000,
        ),
        test,
        stage(
            "doctest",
            "cargo test --doc",
            StageStatus::Cached { from_run: "run-0041".into() },
            1_000,
            0,
            0,
        ),
        stage(
            "bench-build",
            "cargo bench --no-run",
            StageStatus::Skipped { reason: "dependency `test` failed".into() },
            0,
            0,
            0,
        ),
    ];
    let crates = vec![
        unit("serde", "lib", "build", 1_500, 4_000),
        unit("serde", "lib", "build", 4_000, 6_200),
        unit("util", "lib", "build", 2_000, 5_000),
        // `app` asks for syn 2, a dependency for syn 1: both are built.
        versioned(unit("syn", "lib", "build", 1_200, 3_000), "1.0.109"),
        versioned(unit("syn", "lib", "build", 3_000, 6_100), "2.0.90"),
        unit("core", "lib", "build", 6_200, 26_000),
        unit("app", "lib", "build", 26_000, 29_000),
        unit("app", "test", "build", 29_000, 31_000),
    ];
    // Named and ordered as the profiler does: each stage, then the units it waited on.
    let step = |kind: &str, name: &str, start, end| CriticalStep {
        kind: kind.into(),
        name: name.into(),
        start: s(start),
        end: s(end),
    };
    let critical_path = vec![
        step("stage", "fetch", 0, 1_000),
        step("stage", "build", 1_000, 31_000),
        step("crate", "serde (lib serde)", 4_000, 6_200),
        step("crate", "core (lib core)", 6_200, 26_000),
        step("crate", "app (lib app)", 26_000, 29_000),
        step("stage", "test", 31_000, 40_000),
    ];
    let mut targets = PerformanceTargets::required();
    targets.stages = BTreeMap::from([("build".into(), s(25_000)), ("test".into(), s(20_000))]);
    let total = s(40_000);
    let verdict = targets.verdict(total, &stages);
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: "run-0042".into(),
        started_at: "2026-11-26T12:00:00Z".into(),
        workspace_root: "/ws".into(),
        command: "cargo xtask optimize".into(),
        kind: Default::default(),
        outcome: RunOutcome::StageFailed,
        total,
        stages,
        crates,
        critical_path,
        dropped: vec![DroppedStage {
            id: "check".into(),
            reason: "`build --all-targets` already proves `check --all-targets`".into(),
        }],
        notes: vec!["cargo-nextest is not installed: tests run with `cargo test`, one binary at a time (install it with `cargo install cargo-nextest --locked`)".into()],
        cores: 4,
        targets,
        verdict,
        tests: vec![
            TestTiming { stage: "test".into(), name: "app tests::big_matrix".into(), duration: s(6_000), passed: true },
            TestTiming { stage: "test".into(), name: "app::integration adds_up".into(), duration: s(100), passed: false },
        ],
        naive: Some(NaiveComparison {
            naive_total: s(95_000),
            optimized_total: s(40_000),
            ratio: 40.0 / 95.0,
            naive_outcome: RunOutcome::StageFailed,
            naive_stages: vec![
                stage("naive-build", "cargo build --workspace", StageStatus::Succeeded, 0, 45_000, 50_000),
                stage("naive-test", "cargo test --workspace", StageStatus::Failed, 45_000, 50_000, 52_000),
            ],
            only_naive_proves: vec![],
            only_optimized_proves: vec!["doctest (dev)".into()],
            method: "naive first, then ours, each from a fresh target directory".into(),
        }),
        // 4 cores × 40 s minus 46.2 s of stage CPU.
        idle_cpu: s(113_800),
        cache: Default::default(),
        // Every 4 s (a real run samples every 250 ms): fetch idles, build fills the
        // machine, the failing test stage half of it.
        cpu_samples: [0.1, 0.9, 0.95, 0.97, 0.92, 0.96, 0.9, 0.85, 0.55, 0.5]
            .iter()
            .enumerate()
            .map(|(i, busy)| CpuSample { at: s(4_000 * (i as u64 + 1)), busy: *busy })
            .collect(),
        test_settings: Vec::new(),
        // A test of `app` built a workspace of its own with cargo.
        compiled_by_tests: vec![CompiledByTests { stage: "test".into(), units: 3, time: s(2_400) }],
        // The test stage rebuilt `core` with a feature the build stage's unit lacks.
        compiled_after_build: vec![LateUnit {
            stage: "test".into(),
            package: "core".into(),
            version: "0.1.0".into(),
            target: "core".into(),
            kind: "lib".into(),
            time: s(1_500),
            why: LateReason::OtherSettings {
                only_in_build: vec![],
                only_here: vec!["--cfg feature=\"extra\"".into()],
            },
        }],
        test_counts: vec![TestCounts { stage: "test".into(), passed: 1, failed: 1, skipped: 1 }],
        // `flamegraph 'app tests::big_matrix'` drew its slowest test.
        flamegraphs: vec![FlameGraphLink {
            test: "app tests::big_matrix".into(),
            svg: "flamegraphs/app_tests__big_matrix.svg".into(),
            cpu: s(5_800),
        }],
        explore: Some(Exploration {
            command: "cargo build --manifest-path /ws/Cargo.toml --offline --workspace --all-targets".into(),
            rounds: 1,
            variants: vec![
                explored("baseline", &[], Some((30_000, 52_000))),
                explored("debug = \"line-tables-only\"", &[("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")], Some((26_500, 45_000))),
                explored("incremental = false", &[("CARGO_INCREMENTAL", "0")], Some((30_400, 51_000))),
                explored("bogus", &[("CARGO_PROFILE_DEV_DEBUG", "bogus")], None),
            ],
        }),
        workspace_facts: fixture_context(),
        // fetch -> build -> test at their walls; 46.2 s of stage CPU over 4 cores.
        lower_bound: Some(LowerBound {
            chain: s(40_000),
            chain_stages: vec!["fetch".into(), "build".into(), "test".into()],
            cpu_work: s(46_200),
            cpu: s(11_550),
        }),
        shards: None,
        doctests: Vec::new(),
        compile_cache: None,
    }
}

/// A variant as `--explore` reports it: best wall and CPU time in ms, or a failure.
fn explored(name: &str, env: &[(&str, &str)], times: Option<(u64, u64)>) -> ExploredVariant {
    ExploredVariant {
        name: name.into(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        wall: times.map(|t| s(t.0)),
        cpu: times.map(|t| s(t.1)),
        rounds_ok: usize::from(times.is_some()),
        error: times.is_none().then(|| "error: invalid value for `debug`".into()),
    }
}

fn fixture_context() -> WorkspaceFacts {
    WorkspaceFacts {
        packages: vec![
            ResolvedPackage {
                name: "serde".into(),
                version: "1.0.200".into(),
                features: vec!["derive".into(), "std".into()],
                member_dep: true,
            },
            ResolvedPackage {
                name: "syn".into(),
                version: "1.0.109".into(),
                features: vec![],
                member_dep: false,
            },
            ResolvedPackage {
                name: "syn".into(),
                version: "2.0.90".into(),
                features: vec![],
                member_dep: true,
            },
        ],
        test_debug: Some(TestDebug {
            level: DebugLevel::Full,
            source: "[profile.dev] debug is unset, and cargo's default is full debug info".into(),
        }),
        // As the fixture record's note says.
        nextest_missing: true,
        lib_editions: BTreeMap::new(),
    }
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `tool` can run; under `CI=true` a missing tool fails the test instead.
#[track_caller]
fn tool_available(tool: &str, install: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !under_ci(),
            "`{tool}` is missing under CI=true: `cargo xtask ci` installs it ({install})"
        );
        eprintln!("SKIPPED: `{tool}` is not installed ({install}); `cargo xtask ci` installs it");
    }
    found
}

fn temp_dir() -> (tempfile::TempDir, Utf8PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    (dir, path)
}

#[test]
fn report_markdown_snapshot() {
    let record = fixture_record();
    let recs = recommend::recommend(&record, &fixture_context());
    expect_file!["snapshots/report.md"].assert_eq(&markdown::render(&record, &recs));
}

/// A cold build on few cores puts every unit that waited for a token on the critical
/// path; those under 1% of the run are folded into one line per stretch, the rest keep
/// their own lines, and a lone short unit is not folded.
#[test]
fn report_markdown_folds_short_critical_units() {
    let mut record = fixture_record();
    let step = |name: String, start: u64, end: u64| CriticalStep {
        kind: "crate".into(),
        name,
        start: s(start),
        end: s(end),
    };
    // 40 units of 0.1 s (0.25% of the run each) before `core`, one after it.
    let at = record.critical_path.iter().position(|c| c.name.starts_with("core")).unwrap();
    let tiny: Vec<CriticalStep> = (0..40)
        .map(|i| step(format!("tiny{i} (lib tiny{i})"), 2_000 + i * 100, 2_100 + i * 100))
        .collect();
    record.critical_path.splice(at..at, tiny);
    let at = record.critical_path.iter().position(|c| c.name.starts_with("core")).unwrap();
    record.critical_path.insert(at + 1, step("lone (lib lone)".into(), 26_000, 26_100));
    let md = markdown::render(&record, &[]);
    let section: String = md
        .split("## Critical path")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap()
        .into();
    assert!(
        section.contains(
            "40 shorter compile units, each under 1% of the run: 2.0 s → 6.0 s (4.0 s compiling)"
        ),
        "{section}"
    );
    assert!(!section.contains("tiny7"), "{section}");
    assert!(
        section.contains("`core (lib core)`") && section.contains("`lone (lib lone)`"),
        "{section}"
    );
    let numbered = section
        .lines()
        .filter(|l| l.split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()));
    assert_eq!(numbered.count(), fixture_record().critical_path.len() + 2, "{section}");
}

#[test]
fn report_json_snapshot_matches_schema_and_round_trips() {
    let record = fixture_record();
    let text = json::render(&record).unwrap();
    expect_file!["snapshots/run.json"].assert_eq(&text);
    assert_eq!(json::parse(&text).unwrap(), record);

    let schema: serde_json::Value = serde_json::from_str(json::SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(
        errors.is_empty(),
        "run.json does not match docs/run-record.schema.json:\n{}",
        errors.join("\n")
    );

    // The schema is strict: an unknown field or a wrong type is caught.
    let mut bad = value.clone();
    bad["stages"][0]["surprise"] = serde_json::json!(1);
    assert!(!validator.is_valid(&bad));
    let mut bad = value;
    bad["total"] = serde_json::json!("40 s");
    assert!(!validator.is_valid(&bad));

    // A record written before `tests` existed still reads.
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in ["tests", "naive", "idle_cpu", "cpu_samples", "workspace_facts"] {
        old.as_object_mut().unwrap().remove(field);
    }
    assert!(validator.is_valid(&old));
    let old = serde_json::from_value::<RunRecord>(old).unwrap();
    assert!(old.tests.is_empty() && old.naive.is_none() && old.idle_cpu.is_zero());
    assert!(old.cpu_samples.is_empty() && old.workspace_facts.is_empty());

    // Numbers read back exactly, so a saved run.json renders the same bytes again: a
    // measured CPU share that serde_json's default (approximate) float parser reads
    // one unit in the last place off.
    let mut measured = record;
    measured.cpu_samples[0].busy = 0.9473684210526315;
    let text = json::render(&measured).unwrap();
    assert_eq!(json::render(&json::parse(&text).unwrap()).unwrap(), text);
}

fn history_of(totals: &[(u64, u64)]) -> Vec<HistoryEntry> {
    totals
        .iter()
        .enumerate()
        .map(|(i, (total, build))| {
            let mut r = fixture_record();
            r.run_id = format!("run-{i:04}");
            r.started_at = format!("2026-11-2{}T12:00:00Z", i % 10);
            r.total = s(*total);
            r.stages[1].wall = s(*build);
            r.verdict = r.targets.verdict(r.total, &r.stages);
            HistoryEntry::from_record(&r)
        })
        .collect()
}

#[test]
fn report_prometheus_snapshot_and_promtool() {
    let record = fixture_record();
    let mut entries = history_of(&[(30_000, 20_000), (70_000, 50_000)]);
    entries.push(HistoryEntry::from_record(&record));
    let text = prometheus::render(&record, &entries).unwrap();
    expect_file!["snapshots/pipeline.prom"].assert_eq(&text);
    assert!(!text.contains("# EOF"), "the textfile collector rejects `# EOF`");

    if !tool_available("promtool", "apt-get install prometheus") {
        return;
    }
    let (_dir, dir) = temp_dir();
    let path = dir.join("pipeline.prom");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The alerting rule in docs/reports.md is valid and uses metrics we export.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reports.md"))
            .unwrap();
    let rules = docs
        .split("```yaml\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("docs/reports.md has a ```yaml block with the alerting rules");
    assert!(rules.contains("pipeline_last_run_duration_seconds"), "{rules}");
    let rules_path = dir.join("rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    let out = Command::new("promtool").args(["check", "rules"]).arg(&rules_path).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn report_html_has_a_bar_per_stage_and_unit() {
    let record = fixture_record();
    let page = html::render(&record);
    assert_eq!(
        page.matches("<rect class=\"bar ").count(),
        record.stages.len() + record.crates.len()
    );
    assert_eq!(
        page.matches(" critical\"").count(),
        6,
        "stages fetch, build, test; units serde (2nd), core, app lib"
    );
    assert_eq!(page.matches("http").count(), 1, "no link but the SVG namespace");
    assert!(!page.contains("<script src") && !page.contains("<link"), "self-contained");
    let util = html::cpu_utilisation(&record);
    // build: 36 s CPU over 30 s on 4 cores = 30%.
    assert!(util.iter().any(|(t, u)| *t == 1.0 && (*u - 0.3).abs() < 1e-9), "{util:?}");
}

/// Renders the timeline in headless Chromium: the DOM has one bar per stage and compile
/// unit, and the screenshot is not blank.
#[test]
fn report_html_renders_in_chromium() {
    if !tool_available("chromium", "apt-get install chromium") {
        return;
    }
    let record = fixture_record();
    let (_dir, dir) = temp_dir();
    let page = dir.join("report.html");
    std::fs::write(&page, html::render(&record)).unwrap();
    let dom = String::from_utf8(chromium(&["--dump-dom".to_string()], &page)).unwrap();
    let bars = dom.matches("<rect class=\"bar ").count();
    assert_eq!(bars, record.stages.len() + record.crates.len(), "bars in the rendered DOM");

    // A drawn chart compresses far worse than an empty page of the same size.
    let shot = |name: &str, url: &Utf8Path| {
        let path = dir.join(name);
        chromium_screenshot(&path, url);
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
        png_image_data_len(&png)
    };
    let blank_page = dir.join("blank.html");
    std::fs::write(&blank_page, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank = shot("blank.png", &blank_page);
    let drawn = shot("report.png", &page);
    assert!(
        drawn > 4 * blank,
        "the screenshot looks blank: {drawn} bytes of image data, an empty page {blank}"
    );

    // The sampled CPU line is in the DOM with every sample, and its colour (used by
    // nothing else on the page) is painted; a record without samples paints none.
    assert!(dom.contains("class=\"cpu-sampled\" data-samples=\"10\""), "{dom}");
    let magenta = magenta_pixels(&std::fs::read(dir.join("report.png")).unwrap());
    // A 2 px line across 900 px of chart paints 600 to 700 pixels in the exact colour.
    assert!(magenta > 300, "the sampled CPU line is not painted: {magenta} pixels");
    let mut unsampled = record.clone();
    unsampled.cpu_samples.clear();
    let page = dir.join("unsampled.html");
    std::fs::write(&page, html::render(&unsampled)).unwrap();
    chromium_screenshot(&dir.join("unsampled.png"), &page);
    let none = magenta_pixels(&std::fs::read(dir.join("unsampled.png")).unwrap());
    assert_eq!(none, 0, "only the sampled line is magenta");
}

/// Pixels of the sampled CPU line's colour (#e0119d, give or take anti-aliasing).
fn magenta_pixels(png_bytes: &[u8]) -> usize {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|p| {
            p[0].abs_diff(0xe0) < 12 && p[1].abs_diff(0x11) < 12 && p[2].abs_diff(0x9d) < 12
        })
        .count()
}

fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// Runs chromium on `url` with a fresh profile and returns its stdout.
fn chromium(extra: &[String], page: &Utf8Path) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args(chromium_args(profile.path()))
        .args(extra)
        .arg(format!("file://{page}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn chromium_screenshot(path: &Utf8Path, page: &Utf8Path) {
    chromium(&[format!("--screenshot={path}")], page);
}

/// Bytes of compressed image data (the IDAT chunks) in a PNG.
fn png_image_data_len(png: &[u8]) -> usize {
    let mut total = 0;
    let mut i = 8;
    while i + 8 <= png.len() {
        let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        if &png[i + 4..i + 8] == b"IDAT" {
            total += len;
        }
        i += 12 + len;
    }
    total
}

#[test]
fn report_history_tolerates_a_truncated_last_line() {
    let (_dir, dir) = temp_dir();
    let path = dir.join("history.jsonl");
    let entries = history_of(&[(30_000, 20_000), (32_000, 22_000), (35_000, 25_000)]);
    let mut text: String =
        entries.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    let cut = serde_json::to_string(&entries[0]).unwrap();
    text.push_str(&cut[..cut.len() / 2]);
    std::fs::write(&path, &text).unwrap();

    let h = history::read(&path).unwrap();
    assert_eq!(h.entries, entries);
    assert_eq!(h.warnings.len(), 1);
    assert!(h.warnings[0].starts_with("line 4: skipped"), "{:?}", h.warnings);

    expect![[r#"
        3 runs from 2026-11-20T12:00:00Z to 2026-11-22T12:00:00Z
        sparklines show the last 3 runs; blank: not run (cached, skipped)

        series               last      min      max    per run  trend
        total              35.0 s   30.0 s   35.0 s    +2.50 s  ▁▄█
        bench-build             -        -        -          -     
        build              25.0 s   20.0 s   25.0 s    +2.50 s  ▁▄█
        doctest                 -        -        -          -     
        fetch               1.0 s    1.0 s    1.0 s    +0.00 s  ▄▄▄
        test                9.0 s    9.0 s    9.0 s    +0.00 s  ▄▄▄

        fastest-growing stage: `build`, +2.50 s per run (least squares over its measured runs)
        required target met in 3 of 3 runs
    "#]]
    .assert_eq(&history::render_trend(&h));

    expect![[r#"
        run_id,started_at,outcome,total_seconds,bench-build_seconds,build_seconds,doctest_seconds,fetch_seconds,test_seconds
        run-0000,2026-11-20T12:00:00Z,stage-failed,30.000,,20.000,,1.000,9.000
        run-0001,2026-11-21T12:00:00Z,stage-failed,32.000,,22.000,,1.000,9.000
        run-0002,2026-11-22T12:00:00Z,stage-failed,35.000,,25.000,,1.000,9.000
    "#]]
    .assert_eq(&history::to_csv(&h.entries));

    // Appending heals the file: the broken line goes, the new run is the last line.
    let new = history_of(&[(36_000, 26_000)]).remove(0);
    let all = history::append(&path, &new).unwrap();
    assert_eq!(all.len(), 4);
    let h = history::read(&path).unwrap();
    assert!(h.warnings.is_empty());
    assert_eq!(h.entries.last(), Some(&new));
}

#[test]
fn report_history_stays_bounded() {
    let (_dir, dir) = temp_dir();
    let path = dir.join("history.jsonl");
    let one = history_of(&[(30_000, 20_000)]).remove(0);
    let line = serde_json::to_string(&one).unwrap() + "\n";
    std::fs::write(&path, line.repeat(history::MAX_ENTRIES)).unwrap();
    let mut new = one.clone();
    new.run_id = "newest".into();
    let all = history::append(&path, &new).unwrap();
    assert_eq!(all.len(), history::MAX_ENTRIES);
    let h = history::read(&path).unwrap();
    assert_eq!(h.entries.len(), history::MAX_ENTRIES);
    assert_eq!(h.entries.last().unwrap().run_id, "newest");
}

/// Passed tests' durations go into the history; only the last few runs keep them (so
/// the file stays small), and the shard planner reads them back oldest first.
#[test]
fn report_history_keeps_test_durations_of_the_last_runs() {
    let (_dir, dir) = temp_dir();
    let path = dir.join("history.jsonl");
    for i in 0..history::TEST_RUNS_KEPT + 2 {
        let mut r = fixture_record();
        r.run_id = format!("run-{i}");
        r.tests = vec![
            pipeline_opt::record::TestTiming {
                stage: "test".into(),
                name: "app::it adds_up".into(),
                duration: Duration::from_millis(100 * (i as u64 + 1)),
                passed: true,
            },
            pipeline_opt::record::TestTiming {
                stage: "test".into(),
                name: "app::it broken".into(),
                duration: Duration::from_secs(9),
                passed: false,
            },
        ];
        history::append(&path, &HistoryEntry::from_record(&r)).unwrap();
    }
    let h = history::read(&path).unwrap();
    let with_tests: Vec<&str> =
        h.entries.iter().filter(|e| !e.tests.is_empty()).map(|e| e.run_id.as_str()).collect();
    assert_eq!(with_tests, ["run-2", "run-3", "run-4", "run-5", "run-6"]);
    let d = h.test_durations();
    let ms: Vec<u128> = d.samples["app::it adds_up"].iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [300, 400, 500, 600, 700]);
    assert!(!d.samples.contains_key("app::it broken"), "a failed run's time is no weight");
}

/// What the next run expects of a stage is its wall time in the latest run where it
/// succeeded: a later failure (cut short) does not count.
#[test]
fn report_history_expected_walls_take_the_latest_success() {
    let mut entries = history_of(&[(30_000, 20_000), (31_000, 22_000), (9_000, 1_000)]);
    // `history_of` sets the second stage's wall.
    let build = fixture_record().stages[1].id.clone();
    entries[2].stages.get_mut(&build).unwrap().status = "failed".into();
    let h = history::History { entries, warnings: vec![] };
    let expected = h.expected_walls();
    assert_eq!(expected[&build], s(22_000));
    assert_eq!(
        expected.len(),
        h.entries[0].stages.values().filter(|s| s.status == "succeeded").count()
    );
}

#[test]
fn report_write_reports_writes_every_file() {
    let (_dir, dir) = temp_dir();
    let state = dir.join("state");
    let prom = dir.join("metrics/pipeline.prom");
    let opts = ReportOptions {
        state_dir: state.clone().into(),
        markdown: None,
        json: None,
        prometheus: Some(prom.clone()),
        step_summary: None,
    };
    let mut record = fixture_record();
    // A workspace that does not exist: reports are still written.
    record.workspace_root = dir.join("gone");
    let written = report::write_reports(&record, &opts).unwrap();
    assert_eq!(written.markdown, state.join("pipeline-optimization-report.md"));
    assert_eq!(written.json, state.join("run.json"));
    assert_eq!(written.html, state.join("report.html"));
    assert_eq!(written.history, state.join("history.jsonl"));
    assert_eq!(written.prometheus, Some(prom.clone()));
    for path in [&written.markdown, &written.json, &written.html, &written.history, &prom] {
        assert!(std::fs::metadata(path).unwrap().len() > 0, "{path} is empty");
    }
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains("**a stage failed**"), "{md}");
    // The interrupted run of the same workspace adds a second history line, and the
    // histogram counts both.
    record.outcome = RunOutcome::Interrupted;
    report::write_reports(&record, &opts).unwrap();
    assert_eq!(history::read(&written.history).unwrap().entries.len(), 2);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("pipeline_duration_seconds_count{command=\"optimize\",cached=\"some\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("pipeline_runs_total{command=\"optimize\",outcome=\"interrupted\"} 1"),
        "{text}"
    );
    // Nothing but the reports and the history's lock file is left behind.
    let mut names: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "history.jsonl",
            "history.jsonl.lock",
            "pipeline-optimization-report.md",
            "report.html",
            "run.json"
        ]
    );
}

#[test]
fn report_github_annotations_and_summary() {
    let record = fixture_record();
    expect![[r#"
        ::error title=stage test failed::`cargo test --workspace` failed with exit code 101; failed tests: app::tests::adds_up; full log: /ws/target/pipeline-opt/logs/test.log%0Atest result: FAILED. 3 passed; 1 failed; 0 ignored
    "#]]
    .assert_eq(&github::annotations(&record));
    // Under `--gate required` the missed stage target fails the gate.
    let mut gated = record.clone();
    gated.verdict.gate = Some(gated.verdict.check(Gate::Required));
    expect![[r#"
        ::error title=stage test failed::`cargo test --workspace` failed with exit code 101; failed tests: app::tests::adds_up; full log: /ws/target/pipeline-opt/logs/test.log%0Atest result: FAILED. 3 passed; 1 failed; 0 ignored
        ::error title=stage build over its target::stage `build` took 30.0 s, over its target 25.0 s (gate required (60.0 s))
    "#]]
    .assert_eq(&github::annotations(&gated));

    // Over the required total but not gated: nothing to annotate; gated: an error.
    let mut slow = record.clone();
    slow.stages.clear();
    slow.verdict = slow.targets.verdict(s(61_000), &[]);
    assert_eq!(github::annotations(&slow), "");
    slow.verdict.gate = Some(slow.verdict.check(Gate::Required));
    expect![[r#"
        ::error title=required gate missed::the pipeline took 61.0 s, over the gate required (60.0 s)
    "#]]
    .assert_eq(&github::annotations(&slow));
    // A custom gate judges the total by its own limit, whatever the required target.
    slow.verdict.gate = Some(slow.verdict.check(Gate::Custom(s(90_000))));
    assert_eq!(github::annotations(&slow), "");

    let (_dir, dir) = temp_dir();
    let summary = dir.join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    github::append_summary(summary.as_std_path(), "# Pipeline").unwrap();
    assert_eq!(std::fs::read_to_string(&summary).unwrap(), "earlier step\n# Pipeline\n");

    let wf = pipeline_opt::workflow::github_actions(&Default::default());
    assert!(wf.contains("Swatinem/rust-cache@v2") && wf.contains("tool: cargo-nextest"));
    assert!(wf.contains("cargo xtask optimize --locked --prometheus"));
}

#[test]
fn report_junit_from_canned_libtest_output() {
    let output = "\
   Compiling app v0.1.0 (/ws/crates/app)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.50s
     Running unittests src/lib.rs (target/debug/deps/app-0123456789abcdef)

running 3 tests
test tests::ignored_one ... ignored, needs a database
test tests::fails ... FAILED
test tests::passes ... ok

failures:

---- tests::fails stdout ----

thread 'tests::fails' panicked at src/lib.rs:7:9:
\x1b[1mboom\x1b[0m <&>

failures:
    tests::fails

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests app

running 1 test
test src/lib.rs - value (line 3) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s
";
    expect![[r#"
        <?xml version="1.0" encoding="UTF-8"?>
        <testsuites name="cargo test" tests="4" skipped="1" failures="1" errors="0">
            <testsuite name="app" tests="3" skipped="1" errors="0" failures="1">
                <testcase name="tests::ignored_one" classname="app">
                    <skipped message="needs a database"/>
                </testcase>
                <testcase name="tests::fails" classname="app">
                    <failure message="thread &apos;tests::fails&apos; panicked at src/lib.rs:7:9:">
        thread &apos;tests::fails&apos; panicked at src/lib.rs:7:9:
        boom &lt;&amp;&gt;</failure>
                </testcase>
                <testcase name="tests::passes" classname="app"/>
            </testsuite>
            <testsuite name="app::doctest" tests="1" skipped="0" errors="0" failures="0">
                <testcase name="src/lib.rs - value (line 3)" classname="app::doctest"/>
            </testsuite>
        </testsuites>
    "#]]
    .assert_eq(&junit::from_libtest_output(output));
}

/// Real `cargo test` on a fixture with a passing, a failing and an ignored test.
#[test]
fn report_junit_from_real_cargo_test() {
    use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
    let (_dir, dir) = temp_dir();
    let lib = "pub fn value() -> u64 { 1 }\n\
               #[cfg(test)]\nmod tests {\n\
               #[test] fn passes() { assert_eq!(super::value(), 1); }\n\
               #[test] fn fails() { assert_eq!(super::value(), 2, \"value is off\"); }\n\
               #[test] #[ignore] fn slow() {}\n}\n";
    let manifest = FixtureWorkspace::new(vec![FixtureCrate::new("junit-fixture").lib(lib)])
        .write(&dir.join("ws"))
        .unwrap();
    let mut cmd = Command::new("cargo");
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(["test", "--manifest-path", manifest.as_str(), "--lib"])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .unwrap();
    assert!(!out.status.success(), "one test fails");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let xml = junit::from_libtest_output(&text);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    let attr = |n: roxmltree::Node, a: &str| n.attribute(a).unwrap_or_default().to_string();
    let counts = ["tests", "failures", "skipped"].map(|a| attr(root, a));
    assert_eq!(counts, ["3", "1", "1"], "{xml}\n{text}");
    // Without the directory it ran in, a suite is named by the binary's file.
    let suite = root.first_element_child().unwrap();
    assert_eq!(attr(suite, "name"), "junit_fixture", "{xml}");
    assert!(xml.contains("value is off"), "{xml}");
    // The same output counted as the reports count a `cargo test` stage's tests.
    let mut counts = TestCounts::default();
    text.lines().filter_map(TestCounts::in_line).for_each(|found| counts.add(found));
    assert_eq!((counts.passed, counts.failed, counts.skipped), (1, 1, 1), "{text}");
}

/// Which recommendation kinds a record and context produce.
#[track_caller]
fn check_kinds(record: &RunRecord, ctx: &WorkspaceFacts, expect: &[&str]) {
    let mut kinds: Vec<_> = recommend::recommend(record, ctx).iter().map(|r| r.kind).collect();
    kinds.sort();
    kinds.dedup();
    let mut expect = expect.to_vec();
    expect.sort();
    assert_eq!(kinds, expect);
}

#[test]
fn report_recommendations_each_have_a_trigger_and_a_non_trigger() {
    let record = fixture_record();
    let ctx = fixture_context();
    check_kinds(
        &record,
        &ctx,
        &[
            "compiled-after-build",
            "compiled-twice",
            "critical-crate",
            "debug-line-tables",
            "duplicate-versions",
            "low-cpu",
            "nextest-missing",
            "slow-test",
        ],
    );

    // A record without any of the conditions: short crates, busy cores, no duplicate,
    // one compile of each unit, tests spread out, nextest present, line tables only.
    let mut calm = record.clone();
    calm.critical_path.retain(|c| c.kind == "stage");
    calm.crates =
        vec![unit("a", "lib", "build", 1_000, 2_000), unit("b", "lib", "build", 1_000, 3_000)];
    for st in &mut calm.stages {
        st.cpu_user = st.wall * 3;
        st.cpu_system = Duration::ZERO;
    }
    calm.tests[0].duration = s(2_000);
    calm.notes.clear();
    calm.compiled_after_build.clear();
    let mut calm_ctx = ctx.clone();
    calm_ctx.packages.retain(|p| p.version != "1.0.109");
    calm_ctx.test_debug = Some(TestDebug { level: DebugLevel::LineTablesOnly, source: "x".into() });
    calm_ctx.nextest_missing = false;
    check_kinds(&calm, &calm_ctx, &[]);

    // Each one alone, from the calm record.
    let mut r = calm.clone();
    r.critical_path.push(CriticalStep {
        kind: "crate".into(),
        name: "core".into(),
        start: s(1_000),
        end: s(15_000),
    });
    check_kinds(&r, &calm_ctx, &["critical-crate"]);

    // One unit compiled again after the build stage, whatever its size.
    let mut r = calm.clone();
    r.compiled_after_build = record.compiled_after_build.clone();
    check_kinds(&r, &calm_ctx, &["compiled-after-build"]);

    // A stage that keeps a third of the cores busy while the machine idles; the same
    // stage on a machine whose cores other work kept busy left none idle.
    let mut r = calm.clone();
    r.stages[1].cpu_user = s(20_000);
    for c in &mut r.cpu_samples {
        c.busy = 0.35;
    }
    check_kinds(&r, &calm_ctx, &["low-cpu"]);
    for c in &mut r.cpu_samples {
        c.busy = 0.95;
    }
    check_kinds(&r, &calm_ctx, &[]);
    r.cpu_samples.clear();
    check_kinds(&r, &calm_ctx, &["low-cpu"]);

    let mut r = calm.clone();
    r.tests[0].duration = s(5_000);
    check_kinds(&r, &calm_ctx, &["slow-test"]);

    // Two tests of nearly half the stage each (as 49 s and 46 s of a 109 s stage in
    // #13): neither dominates alone, the two do together. Ten tests of a sixth each
    // add up to more, but none of them sets the stage's length.
    let mut r = calm.clone();
    r.tests[0].duration = s(4_000);
    r.tests[1].duration = s(3_800);
    check_kinds(&r, &calm_ctx, &["slow-test"]);
    let recs = recommend::recommend(&r, &calm_ctx);
    assert!(
        recs[0].action.starts_with(
            "split `tests::big_matrix` in `app` and `adds_up` in `app::integration` into"
        ),
        "{recs:#?}"
    );
    let mut r = calm.clone();
    r.tests = (0..10)
        .map(|i| TestTiming {
            stage: "test".into(),
            name: format!("app t{i}"),
            duration: s(1_500),
            passed: true,
        })
        .collect();
    check_kinds(&r, &calm_ctx, &[]);

    let mut r = calm.clone();
    r.notes = record.notes.clone();
    let missing_ctx = WorkspaceFacts { nextest_missing: true, ..calm_ctx.clone() };
    check_kinds(&r, &missing_ctx, &["nextest-missing"]);

    // Thousands of tests at a few milliseconds of wall time each under nextest; the same
    // count at 60 ms each, or under `cargo test`, is no sign of process overhead.
    let mut r = calm.clone();
    r.stages[2].command = "cargo nextest run --workspace".into();
    r.stages[2].kind = CommandKind::Nextest;
    r.stages[2].wall = s(9_000);
    r.stages[2].cpu_user = s(27_000);
    r.tests = (0..1_000)
        .map(|i| TestTiming {
            stage: "test".into(),
            name: format!("t{i}"),
            duration: s(5),
            passed: true,
        })
        .collect();
    check_kinds(&r, &calm_ctx, &["tiny-tests"]);
    let mut slow = r.clone();
    slow.stages[2].wall = s(60_000);
    slow.stages[2].cpu_user = s(180_000);
    check_kinds(&slow, &calm_ctx, &[]);
    let mut cargo = r.clone();
    cargo.stages[2].command = "cargo test --workspace".into();
    cargo.stages[2].kind = CommandKind::CargoTest;
    check_kinds(&cargo, &calm_ctx, &[]);

    let mut r = calm.clone();
    r.crates.push(unit("b", "lib", "build", 3_000, 4_000));
    check_kinds(&r, &calm_ctx, &["compiled-twice"]);

    // Two versions built, one asked for by a member: advice. Resolved but not built,
    // or built but out of the workspace's reach (no member asks for either): none.
    let dup_ctx = WorkspaceFacts {
        test_debug: calm_ctx.test_debug.clone(),
        nextest_missing: false,
        ..ctx.clone()
    };
    check_kinds(&calm, &dup_ctx, &[]);
    let mut r = calm.clone();
    r.crates.extend(record.crates.iter().filter(|c| c.package == "syn").cloned());
    check_kinds(&r, &dup_ctx, &["duplicate-versions"]);
    // A saving of 0.2 s (under 0.25 s), or of 1 s in a 200 s run (under 1%): noise.
    let mut tiny = r.clone();
    for c in tiny.crates.iter_mut().filter(|c| c.package == "syn" && c.version == "1.0.109") {
        c.end = c.start + s(200);
    }
    check_kinds(&tiny, &dup_ctx, &[]);
    let mut long_run = r.clone();
    for c in long_run.crates.iter_mut().filter(|c| c.package == "syn" && c.version == "1.0.109") {
        c.end = c.start + s(1_000);
    }
    check_kinds(&long_run, &dup_ctx, &["duplicate-versions"]);
    long_run.total = s(200_000);
    check_kinds(&long_run, &dup_ctx, &[]);
    let mut out_of_reach = dup_ctx.clone();
    out_of_reach.packages.iter_mut().for_each(|p| p.member_dep = false);
    check_kinds(&r, &out_of_reach, &[]);

    // Full debug info only matters once compiling takes time.
    let full = WorkspaceFacts { test_debug: ctx.test_debug.clone(), ..calm_ctx.clone() };
    check_kinds(&calm, &full, &[]);
    let mut r = calm.clone();
    r.crates.push(unit("c", "lib", "build", 3_000, 8_000));
    check_kinds(&r, &full, &["debug-line-tables"]);

    // 40 doctests of an edition 2021 crate took 21 s: merge them. Merged already, of
    // edition 2024, too few or too quick: no advice.
    let mut r = calm.clone();
    r.doctests = vec![pipeline_opt::record::DoctestTiming {
        stage: "doctest".into(),
        crate_name: "app".into(),
        tests: 40,
        time: s(21_000),
        merged: false,
    }];
    let mut editions = calm_ctx.clone();
    editions.lib_editions.insert("app".into(), "2021".into());
    check_kinds(&r, &editions, &["merged-doctests"]);
    let recs = recommend::recommend(&r, &editions);
    assert!(
        recs[0].evidence.starts_with("its 40 doctests took 21.0 s in stage `doctest`"),
        "{recs:#?}"
    );
    check_kinds(&r, &calm_ctx, &[]);
    let mut merged = r.clone();
    merged.doctests[0].merged = true;
    check_kinds(&merged, &editions, &[]);
    let mut e2024 = editions.clone();
    e2024.lib_editions.insert("app".into(), "2024".into());
    check_kinds(&r, &e2024, &[]);
    let mut few = r.clone();
    few.doctests[0].tests = 9;
    check_kinds(&few, &editions, &[]);
    let mut quick = r.clone();
    quick.doctests[0].time = s(4_900);
    check_kinds(&quick, &editions, &[]);

    // Every recommendation names a number.
    for rec in recommend::recommend(&record, &ctx) {
        assert!(rec.evidence.chars().any(|c| c.is_ascii_digit()), "{rec:?}");
    }
}

#[test]
fn report_profile_debug_setting_from_manifest() {
    let level = |toml: &str| facts::test_debug_from_manifest(toml).map(|d| d.level);
    assert_eq!(level("[workspace]\n"), Some(DebugLevel::Full));
    assert_eq!(
        level("[profile.dev]\ndebug = \"line-tables-only\"\n"),
        Some(DebugLevel::LineTablesOnly)
    );
    assert_eq!(
        level("[profile.dev]\ndebug = 0\n[profile.test]\ndebug = true\n"),
        Some(DebugLevel::Full)
    );
    assert_eq!(level("[profile.dev]\ndebug = 1\n"), Some(DebugLevel::Limited));
    assert_eq!(level("not toml ["), None);
}

/// Duplicated versions from a real `cargo metadata` resolve: two path packages named
/// `dup` at different versions, both used by one member.
#[test]
fn report_duplicate_versions_from_cargo_metadata() {
    use pipeline_opt::fixture::{FixtureWorkspace, duplicate_versions_app};
    let (_dir, dir) = temp_dir();
    let mut app = duplicate_versions_app(&dir).unwrap();
    app.manifest_extra.push_str("\n[profile.dev]\ndebug = \"line-tables-only\"\n");
    let manifest = FixtureWorkspace::new(vec![app]).write(&dir.join("ws")).unwrap();
    let ctx = pipeline_opt::inputs::Inputs::load(Some(&manifest)).unwrap().facts;
    let mut dups: Vec<_> =
        ctx.packages.iter().filter(|p| p.name == "dup").map(|p| p.version.as_str()).collect();
    dups.sort();
    assert_eq!(dups, ["0.1.0", "0.2.0"]);
    // `app` depends on both directly, so the workspace can align them.
    assert!(ctx.packages.iter().filter(|p| p.name == "dup").all(|p| p.member_dep));
    assert!(!ctx.packages.iter().any(|p| p.name == "app" && p.member_dep));
    let mut record = fixture_record();
    record.crates.push(versioned(unit("dup", "lib", "build", 1_000, 2_000), "0.1.0"));
    record.crates.push(versioned(unit("dup", "lib", "build", 2_000, 2_500), "0.2.0"));
    let recs = recommend::recommend(&record, &ctx);
    let dup = recs
        .iter()
        .find(|r| r.kind == "duplicate-versions")
        .expect("a duplicate-versions recommendation");
    assert_eq!(
        dup.evidence,
        "`dup` was built at 2 versions in this run: 0.1.0 (1.0 s), 0.2.0 (0.5 s); building \
         one would save at least 0.5 s of compiling"
    );
    assert!(
        dup.action.contains("`cargo tree -i dup@0.1.0` and `cargo tree -i dup@0.2.0`"),
        "{}",
        dup.action
    );
    // The profile lives in the member's manifest, not the root: cargo ignores it there,
    // and so do we (full debug info is the default).
    assert_eq!(ctx.test_debug.map(|d| d.level), Some(DebugLevel::Full));
}

fn progress_events() -> Vec<Event> {
    let r = fixture_record();
    vec![
        Event::StageStarted { id: "fetch".into(), at: s(0) },
        Event::StageFinished(r.stages[0].clone()),
        Event::StageStarted { id: "build".into(), at: s(1_000) },
        Event::CrateCompiled(r.crates[2].clone()),
        Event::CrateCompiled(r.crates[3].clone()),
        Event::StageFinished(r.stages[1].clone()),
        Event::StageFinished(r.stages[3].clone()),
        Event::StageStarted { id: "test".into(), at: s(31_000) },
        Event::StageOutput { id: "test".into(), line: "running 4 tests".into() },
        Event::StageFinished(r.stages[2].clone()),
        Event::StageFinished(r.stages[4].clone()),
        Event::RunFinished { outcome: RunOutcome::StageFailed, total: r.total },
    ]
}

#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn report_progress_plain_lines() {
    let buf = Shared::default();
    let record = fixture_record();
    let mut p = ProgressReporter::plain_to(Box::new(buf.clone()), &record.targets);
    for e in progress_events() {
        p.handle(&e);
    }
    // A second run on the same reporter (the naive sequence of `--against-naive`) has a
    // clock of its own: its skipped stage is not stamped with the first run's 40 s.
    let mut failed = stage("naive-check", "cargo check", StageStatus::Failed, 0, 2_000, 1_000);
    failed.exit_code = Some(101);
    let reason = "not started: stage `naive-check` failed".to_string();
    let skipped = stage("naive-test", "cargo test", StageStatus::Skipped { reason }, 0, 0, 0);
    for e in [
        Event::StageStarted { id: "naive-check".into(), at: s(0) },
        Event::StageFinished(failed),
        Event::StageFinished(skipped),
        Event::RunFinished { outcome: RunOutcome::StageFailed, total: s(2_000) },
    ] {
        p.handle(&e);
    }
    drop(p);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    expect![[r#"
        [  0.0 s] fetch: started
        [  1.0 s] fetch: succeeded in 1.0 s
        [  1.0 s] build: started (target 25.0 s)
        [  5.0 s] build: compiled util (lib `util`) in 3.0 s, 1 units so far
        [  3.0 s] build: compiled syn (lib `syn`) in 1.8 s, 2 units so far
        [ 31.0 s] build: succeeded in 30.0 s (target 25.0 s: missed), 2 units compiled
        [ 31.0 s] doctest: cached (run `run-0041`)
        [ 31.0 s] test: started (target 20.0 s)
        [ 40.0 s] test: failed in 9.0 s (target 20.0 s: met), exit code 101, failed: app::tests::adds_up, log /ws/target/pipeline-opt/logs/test.log
        [ 40.0 s] bench-build: skipped: dependency `test` failed
        run a stage failed in 40.0 s (no --gate; required 60.0 s: met, stretch 45.0 s: met)
        [  0.0 s] naive-check: started
        [  2.0 s] naive-check: failed in 2.0 s, exit code 101, log /ws/target/pipeline-opt/logs/naive-check.log
        [  2.0 s] naive-test: skipped: not started: stage `naive-check` failed
        run a stage failed in 2.0 s (no --gate; required 60.0 s: met, stretch 45.0 s: met)
    "#]]
    .assert_eq(&text);
}

/// The same events under a pseudo-terminal (`script` from util-linux gives the child a
/// pty) draw live bars with escape codes; with `NO_COLOR` or through a pipe they are
/// plain lines. The child is this test binary, re-run with a marker variable.
#[test]
fn report_progress_under_a_terminal() {
    const CHILD: &str = "PIPELINE_OPT_PROGRESS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let mode = pipeline_opt::report::progress::ProgressMode::detect();
        println!("mode={mode:?}");
        let mut p = ProgressReporter::new(mode, &fixture_record().targets);
        for e in progress_events() {
            p.handle(&e);
            std::thread::sleep(Duration::from_millis(30));
        }
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let child_cmd = format!(
        "{} --exact report::report_progress_under_a_terminal --nocapture --test-threads 1",
        exe.display()
    );
    let run = |pty: bool, no_color: bool| {
        let mut cmd = if pty {
            let mut c = Command::new("script");
            c.args(["-qefc", &child_cmd, "/dev/null"]);
            c
        } else {
            let mut parts = child_cmd.split(' ');
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts);
            c
        };
        cmd.env(CHILD, "1").env_remove("CI").env_remove("NO_COLOR").env("TERM", "xterm-256color");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if !tool_available("script", "apt-get install bsdutils") {
        return;
    }
    let live = run(true, false);
    assert!(live.contains("mode=Live"), "{live}");
    assert!(live.contains("\x1b["), "live progress redraws with escape codes: {live:?}");
    assert!(live.contains("build") && live.contains("2 units compiled"), "{live:?}");
    assert!(live.contains("run a stage failed in 40.0 s"), "{live:?}");

    let no_color = run(true, true);
    assert!(no_color.contains("mode=Plain"), "{no_color}");
    assert!(no_color.contains("[ 31.0 s] build: succeeded in 30.0 s"), "{no_color}");

    let piped = run(false, false);
    assert!(piped.contains("mode=Plain"), "{piped}");
    assert!(!piped.contains('\x1b'), "{piped:?}");
    assert!(piped.contains("[ 40.0 s] test: failed in 9.0 s"), "{piped}");
}

/// Reports that write only the GitHub step summary (and the state directory's files).
fn step_summary_only(dir: &Utf8Path, summary: &Utf8Path) -> ReportOptions {
    ReportOptions {
        state_dir: dir.join("state").into(),
        markdown: None,
        json: None,
        prometheus: None,
        step_summary: Some(summary.into()),
    }
}

/// Given GitHub Actions' step summary, `write_reports` appends the markdown to it, and
/// it returns the annotations for the caller to print instead of printing them.
#[test]
fn report_write_reports_publishes_to_github() {
    let (_dir, dir) = temp_dir();
    let summary = dir.join("step-summary.md");
    std::fs::write(&summary, "## earlier step\n").unwrap();
    let mut record = fixture_record();
    record.workspace_root = "/nonexistent-workspace".into();
    record.verdict.gate = Some(record.verdict.check(Gate::Required));
    let opts = step_summary_only(&dir, &summary);
    let written = report::write_reports(&record, &opts).unwrap();
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.starts_with("## earlier step\n# Pipeline optimization report\n"), "{text}");
    let annotations = &written.annotations;
    assert!(annotations.contains("::error title=stage test failed::"), "{annotations}");
    assert!(annotations.contains("::error title=stage build over its target::"), "{annotations}");
}

/// A run interrupted before any stage finished still renders every report.
#[test]
fn report_interrupted_before_any_stage() {
    let mut record = fixture_record();
    record.outcome = RunOutcome::Interrupted;
    record.total = s(2_500);
    record.stages.clear();
    record.crates.clear();
    record.critical_path.clear();
    record.tests.clear();
    record.compiled_after_build.clear();
    record.naive = None;
    record.explore = None;
    record.idle_cpu = s(10_000);
    record.verdict = record.targets.verdict(record.total, &[]);
    let recs = recommend::recommend(&record, &WorkspaceFacts::default());
    assert_eq!(recs, []);
    expect![[r#"
        # Pipeline optimization report

        Run `run-0042` of `cargo xtask optimize` in `/ws`, started 2026-11-26T12:00:00Z, on 4 cores: **interrupted** in 2.5 s.

        ## Totals

        | target | limit | actual | verdict |
        | --- | ---: | ---: | --- |
        | required | 60.0 s | 2.5 s | met |
        | stretch | 45.0 s | 2.5 s | met |

        No `--gate`: the targets are information, not a verdict.

        CPU left idle by this run: 10.0 s of 10 core-seconds (100%). The machine's cores were 76% busy over the run (all processes, sampled every 250 ms), so 24% of them were idle.

        Lower bound: 40.0 s (the larger of the longest chain of dependent stages at their measured times, 40.0 s for `fetch` → `build` → `test`, and the stages' CPU work over 4 cores, 46.2 s ÷ 4 = 11.6 s). The run took 2.5 s, 0.06× its bound: the chain of stages sets the time, so only a shorter chain (less work in it, or its work split across stages) would make the run faster.

        The run was interrupted: the total is the time until the interrupt.

        ## Stages

        | stage | status | start | wall | target | verdict | CPU | peak RSS |
        | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |

        ## Critical path

        No critical path was measured (no stage ran).

        ## Slowest crates

        No compile units were recorded (nothing compiled, or every stage was cached).

        Compiled by tests: 3 units (2.4 s compiling) in stage `test`, by cargo or rustc runs that its tests or build scripts started (another workspace or build directory); they are not this workspace's units, so no table or recommendation uses them.

        ## Tests

        | stage | passed | failed | skipped |
        | --- | ---: | ---: | ---: |
        | `test` | 1 | 1 | 1 |

        The test runner reported no per-test times (`cargo test` does not).

        Flame graphs:

        - [`app tests::big_matrix`](flamegraphs/app_tests__big_matrix.svg) (5.8 s of CPU)

        ## Coverage

        No stage finished: this run proved nothing.

        Dropped from the usual CI sequence:

        - `check`: `build --all-targets` already proves `check --all-targets`

        Notes:

        - cargo-nextest is not installed: tests run with `cargo test`, one binary at a time (install it with `cargo install cargo-nextest --locked`)

        ## Recommendations

        None: no measurement of this run points at a change.
    "#]]
    .assert_eq(&markdown::render(&record, &recs));
    assert_eq!(html::render(&record).matches("<rect class=\"bar ").count(), 0);
    assert!(
        prometheus::render(&record, &[HistoryEntry::from_record(&record)])
            .unwrap()
            .contains("pipeline_last_run_success{command=\"optimize\"} 0")
    );
    assert_eq!(github::annotations(&record), "");
}

/// Many overlapping compile units pack into lanes, one bar each, none overlapping in a lane.
#[test]
fn report_html_packs_many_units_into_lanes() {
    let mut record = fixture_record();
    record.crates = (0..300u64)
        .map(|i| {
            unit(
                &format!("c{i}"),
                "lib",
                "build",
                1_000 + i * 90,
                1_000 + i * 90 + 400 + (i % 7) * 150,
            )
        })
        .collect();
    let page = html::render(&record);
    assert_eq!(page.matches("<rect class=\"bar ").count(), record.stages.len() + 300);
    let mut rows: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for bar in page.split("<rect class=\"bar unit").skip(1) {
        let attr = |name: &str| -> f64 {
            let v = bar.split(&format!(" {name}=\"")).nth(1).unwrap();
            v[..v.find('"').unwrap()].parse().unwrap()
        };
        rows.entry(format!("{}", attr("y")))
            .or_default()
            .push((attr("x"), attr("x") + attr("width")));
    }
    assert!(rows.len() < 300 / 3, "{} lanes for 300 units", rows.len());
    for bars in rows.values() {
        for w in bars.windows(2) {
            assert!(w[0].1 <= w[1].0 + 2.0, "overlap in a lane: {w:?}");
        }
    }
}

/// `--explore` builds a real fixture once per variant from scratch and times it (wall and
/// CPU); a variant cargo rejects is reported as failed, not fatal, which also shows that
/// the variant's variables reach cargo.
#[test]
fn report_explore_times_variants_on_a_fixture() {
    use pipeline_opt::explore::{self, ExploreOptions, Variant};
    use pipeline_opt::fixture::FixtureWorkspace;
    use pipeline_opt::report::explore::Exploration;
    let (_dir, dir) = temp_dir();
    let manifest = FixtureWorkspace::chain(2).write(&dir.join("ws")).unwrap();
    let mut opts = ExploreOptions::new(manifest, dir.join("scratch"));
    opts.variants = vec![
        explore::default_variants().remove(0),
        explore::default_variants().remove(1),
        Variant::new("bogus", &[("CARGO_PROFILE_DEV_DEBUG", "bogus")]),
    ];
    let mut lines = Vec::new();
    let results = explore::explore(&opts, &mut |r| lines.push(explore::render_line(r))).unwrap();
    assert_eq!(results.len(), 3);
    for r in &results[..2] {
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!((r.walls.len(), r.cpus.len()), (1, 1));
        assert!(r.best().unwrap() > Duration::ZERO);
        // rustc really ran: a cold build of two crates takes CPU time.
        assert!(r.best_cpu().unwrap() > Duration::from_millis(50), "{r:?}");
    }
    assert!(results[2].walls.is_empty());
    assert!(results[2].error.as_deref().is_some_and(|e| e.contains("error")), "{:?}", results[2]);
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("explore: baseline: ") && lines[0].ends_with(" CPU"), "{lines:?}");
    assert!(lines[2].starts_with("explore: bogus: failed: "), "{lines:?}");

    let e = Exploration::from_results(&opts.command, opts.rounds, &results);
    assert_eq!(e.variants[1].env["CARGO_PROFILE_TEST_DEBUG"], "line-tables-only");
    let md = pipeline_opt::report::explore::render_markdown(&e);
    assert!(md.contains("`cargo test --workspace --no-run --manifest-path "), "{md}");
    assert!(
        md.contains("| baseline | ") && md.contains("| debug = \"line-tables-only\" | "),
        "{md}"
    );
    assert!(md.contains("| bogus | failed | "), "{md}");
    assert!(!dir.join("scratch").exists(), "the scratch target directories are removed");
}

/// A real run of a fixture whose one test sleeps for seconds: nextest's per-test times
/// reach the run record, and the report recommends splitting that test by name.
#[test]
fn report_slow_test_recommendation_from_a_real_nextest_run() {
    use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nextest {
        assert!(!under_ci(), "cargo-nextest is missing under CI=true");
        eprintln!("SKIPPED: cargo-nextest is not installed (cargo install cargo-nextest)");
        return;
    }
    let (_dir, dir) = temp_dir();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("slowpoke").test(
        "t",
        "#[test] fn quick() {}\n\
         #[test] fn sleeps() { std::thread::sleep(std::time::Duration::from_secs(4)); }\n",
    )])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let report = dir.join("report.md");
    let options = pipeline_opt::OptimizeOptions {
        manifest_path: Some(manifest),
        report: Some(report.clone()),
        ..Default::default()
    };
    let outcome = pipeline_opt::run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    let r = &outcome.record;
    assert_eq!(r.outcome, RunOutcome::Succeeded, "{:#?}", r.stages);
    let timed: Vec<(&str, &str)> =
        r.tests.iter().map(|t| (t.stage.as_str(), t.name.as_str())).collect();
    // The fixture's default library has a unit test of its own.
    assert_eq!(timed.len(), 3, "{:#?}", r.tests);
    assert!(timed.contains(&("test", "slowpoke::t quick")), "{timed:?}");
    assert!(timed.contains(&("test", "slowpoke tests::value_is_positive")), "{timed:?}");
    let sleeps = r.tests.iter().find(|t| t.name == "slowpoke::t sleeps").unwrap();
    assert!(sleeps.passed && sleeps.duration >= Duration::from_secs(4), "{sleeps:?}");
    // The machine's CPU was sampled every 250 ms along the run (half of them at least,
    // on a loaded machine).
    let expected = r.total.as_secs_f64() / 0.25;
    let n = r.cpu_samples.len() as f64;
    assert!(n >= expected / 2.0 && n <= expected + 1.0, "{n} samples in {:?}", r.total);
    assert!(r.cpu_samples.windows(2).all(|w| w[0].at < w[1].at));
    assert!(r.cpu_samples.iter().any(|c| c.busy > 0.0), "{:?}", r.cpu_samples);
    let md = std::fs::read_to_string(&report).unwrap();
    let recs = md.split("## Recommendations").nth(1).unwrap();
    assert!(recs.contains("split `sleeps` in `slowpoke::t` into smaller tests"), "{recs}");
}

/// #13: on a machine whose cores other programs keep busy (here threads spinning in
/// this test's process, as other jobs on a shared CI runner), a test stage that sleeps
/// leaves no core idle, so no low-cpu advice may tell the user to split it or to run
/// another stage beside it; the record's samples show the machine was busy.
#[test]
fn report_no_low_cpu_advice_when_the_machine_was_busy() {
    use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, dir) = temp_dir();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("idler").test(
        "t",
        "#[test] fn waits() { std::thread::sleep(std::time::Duration::from_secs(6)); }\n",
    )])
    .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let report = dir.join("report.md");
    let options = pipeline_opt::OptimizeOptions {
        manifest_path: Some(manifest),
        report: Some(report.clone()),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spinners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let outcome = pipeline_opt::run_optimized_pipeline(&options, &mut |_| {});
    stop.store(true, Ordering::Relaxed);
    spinners.into_iter().for_each(|t| t.join().unwrap());
    let r = outcome.unwrap().record;
    assert_eq!(r.outcome, RunOutcome::Succeeded, "{:#?}", r.stages);
    let test = r.stages.iter().find(|s| s.id == "test").unwrap();
    let busy: Vec<f64> = r
        .cpu_samples
        .iter()
        .filter(|c| c.at > test.start && c.at <= test.start + test.wall)
        .map(|c| c.busy)
        .collect();
    let mean = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
    assert!(mean >= 0.9, "the spinning threads kept the machine busy: {busy:?}");
    let own = (test.cpu_user + test.cpu_system).as_secs_f64() / test.wall.as_secs_f64();
    assert!(test.wall >= Duration::from_secs(6) && own < 0.5, "{test:#?}");
    let md = std::fs::read_to_string(&report).unwrap();
    let recs = md.split("## Recommendations").nth(1).unwrap();
    assert!(!recs.contains("(low-cpu)"), "{recs}");
    // The totals do not call the cores the run did not use idle.
    let totals = md.split("## Totals").nth(1).unwrap().split("\n## ").next().unwrap();
    assert!(totals.contains("CPU left idle by this run: "), "{totals}");
    let machine = totals
        .split("The machine's cores were ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|p| p.parse::<u32>().ok());
    assert!(machine.is_some_and(|p| p >= 80), "{totals}");
}

/// `cargo test --doc` output as the doctest stage shows it: one entry per crate that ran
/// doctests, with libtest's time, or rustdoc's whole time when it merged them (edition
/// 2024); a crate with none, or answered by the cache's rustdoc shim, adds nothing.
#[test]
fn report_doctest_times_per_crate_from_the_stage_output() {
    let lines = [
        "   Doc-tests base",
        "",
        "running 40 tests",
        "test crates/base/src/lib.rs - f0 (line 1) ... ok",
        "test result: ok. 39 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 20.86s",
        "   Doc-tests proven",
        "pipeline-opt: the doctests of `proven` passed on these inputs in run r1; not run again",
        "running 0 tests",
        "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        "   Doc-tests new_ed",
        "running 40 tests",
        "test result: ok. 40 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s",
        "",
        "all doctests ran in 1.60s; merged doctests compilation took 1.46s",
    ];
    let mut p = pipeline_opt::PipelineProfiler::new();
    for line in lines {
        p.observe(&Event::StageOutput { id: "doctest".into(), line: line.into() });
    }
    // Another stage's libtest output is not doctests.
    p.observe(&Event::StageOutput {
        id: "custom-tests".into(),
        line: "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s".into(),
    });
    let got: Vec<(String, usize, f64, bool)> = p
        .doctests
        .iter()
        .map(|d| (d.crate_name.clone(), d.tests, d.time.as_secs_f64(), d.merged))
        .collect();
    assert_eq!(
        got,
        [("base".to_string(), 40, 20.86, false), ("new_ed".to_string(), 40, 1.60, true)]
    );
}

/// A merged scale-out run as `shard merge` makes it: a build (the fixture record) and
/// two shards of a plan by durations, each shard's one stage starting 0.5 s into its
/// own run.
fn merged_shards_record() -> RunRecord {
    use pipeline_opt::shard::{Durations, Inventory, InventoryBinary, ShardOptions, plan_shards};
    let inventory = Inventory {
        binaries: vec![InventoryBinary {
            binary_id: "app".into(),
            tests: ["a", "b", "c", "d"].map(String::from).to_vec(),
        }],
    };
    let mut durations = Durations::default();
    for (t, secs) in [("a", 4), ("b", 3), ("c", 2), ("d", 1)] {
        durations.add(format!("app {t}"), Duration::from_secs(secs));
    }
    let plan = plan_shards(&inventory, &durations, &ShardOptions::new(2.try_into().unwrap()));
    let mut build = fixture_record();
    build.outcome = RunOutcome::Succeeded;
    let shard = |k: usize| {
        let mut r = fixture_record();
        r.run_id = format!("shard-run-{k}");
        r.outcome = RunOutcome::Succeeded;
        let mut st = stage(
            &format!("shard-{k}"),
            "cargo nextest run",
            StageStatus::Succeeded,
            500,
            5_000,
            1_000,
        );
        st.failed_tests.clear();
        r.stages = vec![st];
        r.crates.clear();
        r.critical_path.clear();
        r.tests = plan.shards[k - 1]
            .tests
            .iter()
            .flat_map(|(b, ts)| ts.iter().map(move |t| (b.clone(), t.clone())))
            .map(|(b, t)| TestTiming {
                stage: format!("shard-{k}"),
                name: format!("{b} {t}"),
                duration: Duration::from_secs(1),
                passed: true,
            })
            .collect();
        r.total = s(5_600);
        (k, r)
    };
    pipeline_opt::scale::merge(&plan, &build, &[shard(1), shard(2)]).record
}

/// The `x` and `width` of the stage bar `id` in a rendered page.
fn stage_bar_x(page: &str, id: &str) -> (f64, f64) {
    let at = page.find(&format!("data-stage=\"{id}\"")).unwrap_or_else(|| panic!("no bar {id}"));
    let rest = &page[at..];
    let attr = |name: &str| -> f64 {
        let v = rest.split(&format!(" {name}=\"")).nth(1).unwrap().split('"').next().unwrap();
        v.parse().unwrap()
    };
    (attr("x"), attr("width"))
}

/// The merged run's shards are on the timeline side by side after the build (their
/// stages moved by the build's total), the last one on the critical path, and in a
/// Shards table; checked on the DOM headless Chromium builds from the page.
#[test]
fn report_merged_shards_on_the_timeline_in_chromium() {
    let record = merged_shards_record();
    let build_total = fixture_record().total;
    let shard_stage = |id: &str| record.stages.iter().find(|s| s.id == id).unwrap().clone();
    assert_eq!(shard_stage("shard-1").start, build_total + s(500));
    assert_eq!(shard_stage("shard-2").start, build_total + s(500));
    let last = record.critical_path.last().expect("a critical path");
    assert!(last.name.starts_with("shard-"), "{:?}", record.critical_path);
    let md = markdown::render(&record, &[]);
    assert!(md.contains("## Shards") && md.contains("| `shard-1` |"), "{md}");

    if !tool_available("chromium", "apt-get install chromium") {
        return;
    }
    let (_dir, dir) = temp_dir();
    let page = dir.join("report.html");
    std::fs::write(&page, html::render(&record)).unwrap();
    let dom = String::from_utf8(chromium(&["--dump-dom".to_string()], &page)).unwrap();
    let (x1, _) = stage_bar_x(&dom, "shard-1");
    let (x2, _) = stage_bar_x(&dom, "shard-2");
    assert_eq!(x1, x2, "the shards run side by side");
    for st in record.stages.iter().filter(|s| !s.id.starts_with("shard-") && !s.wall.is_zero()) {
        let (x, w) = stage_bar_x(&dom, &st.id);
        assert!(x + w <= x1 + 0.1, "{} ends at {} after the shards start at {x1}", st.id, x + w);
    }
    let table = dom.split("<table id=\"shards\">").nth(1).expect("the shards table");
    let table = table.split("</table>").next().unwrap();
    assert_eq!(table.matches("<tr>").count(), 3, "a header and a row per shard: {table}");
    assert!(table.contains("shard-run-2"), "{table}");
}

/// Suites split across shards become one suite per name: every case once, the
/// failures counted, the times added up; other suites stay as they are.
#[test]
fn report_junit_suites_split_across_shards_merge_by_name() {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let doc = |cases: &[(&str, bool)], other: Option<&str>| {
        let mut suite = TestSuite::new("app::it");
        suite.set_time(s(1_000));
        for (name, passed) in cases {
            let status = if *passed {
                TestCaseStatus::success()
            } else {
                TestCaseStatus::non_success(NonSuccessKind::Failure)
            };
            suite.add_test_case(TestCase::new(*name, status));
        }
        let mut report = Report::new("nextest-run");
        report.add_test_suite(suite);
        if let Some(o) = other {
            let mut s2 = TestSuite::new(o);
            s2.add_test_case(TestCase::new("only", TestCaseStatus::success()));
            report.add_test_suite(s2);
        }
        report.to_string().unwrap()
    };
    let one = junit::parse_suites(&doc(&[("a", true), ("b", false)], Some("lib"))).unwrap();
    let two = junit::parse_suites(&doc(&[("c", true)], None)).unwrap();
    let merged = junit::merge_by_name(one.into_iter().chain(two));
    let xml = junit::render("pipeline-opt", merged, Some(s(5_000)));
    let back = junit::parse_suites(&xml).unwrap();
    let names: Vec<&str> = back.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["app::it", "lib"], "{xml}");
    let it = &back[0];
    assert_eq!((it.tests, it.failures), (3, 1), "{xml}");
    assert_eq!(it.time, Some(s(2_000)), "{xml}");
    let cases: Vec<&str> = it.test_cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cases, ["a", "b", "c"]);
}

/// A record with the shared compile cache's statistics: a warm Redis that gave no hit
/// and could not store two results, with reasons that need escaping.
fn compile_cache_record() -> RunRecord {
    let mut record = fixture_record();
    record.compile_cache = Some(pipeline_opt::record::CompileCacheStats {
        backend: "redis://127.0.0.1:6399".into(),
        compile_requests: 51,
        hits: 0,
        misses: 12,
        not_cacheable: 39,
        not_cached: BTreeMap::from([("crate-type".into(), 36), ("<odd|reason>".into(), 3)]),
        write_errors: 2,
        read_errors: 0,
        cache_errors: 0,
        entries_before: Some(12),
    });
    record
}

/// The compile cache is in every report a run writes (markdown, the step summary, HTML)
/// and its warnings are GitHub annotations; a healthy cache warns nowhere. The HTML is
/// checked on the DOM headless Chromium builds from the page.
#[test]
fn report_compile_cache_in_every_report() {
    let record = compile_cache_record();
    let md = markdown::render(&record, &[]);
    let section = md.split("## Compile cache\n").nth(1).expect("a compile cache section");
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    expect![[r#"

        sccache on redis://127.0.0.1:6399: 51 compile requests, 0 hits, 12 misses (0.0 % of cacheable compiles), 39 not cacheable; 2 write errors, 0 read errors, 0 cache errors. The cache held 12 entries before the run.

        | not cached because | requests |
        | --- | ---: |
        | <odd\|reason> | 3 |
        | crate-type | 36 |

        **Warning:** the cache held 12 entries before the run and gave no hit: the paths (workspace, CARGO_HOME, target directory) or the toolchain and flags differ from the runs that filled it; sccache's keys include absolute paths, so every machine must build in the same places (docs/scale-out.md).

        **Warning:** 2 compile results could not be written to the cache: later builds will compile them again; check that the backend is writable and not full.
    "#]]
    .assert_eq(section);
    let annotations = github::annotations(&record);
    let warnings: Vec<&str> = annotations.lines().filter(|l| l.starts_with("::warning")).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("::warning title=compile cache::the cache held 12 entries"));
    assert!(warnings[1].contains("2 compile results could not be written"), "{warnings:?}");

    // Through write_reports: the step summary is the markdown, with its warnings.
    let (_dir, dir) = temp_dir();
    let summary = dir.join("step-summary.md");
    let opts = step_summary_only(&dir, &summary);
    let written = report::write_reports(&record, &opts).unwrap();
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(summary, std::fs::read_to_string(&written.markdown).unwrap());
    assert!(summary.contains(&format!("## Compile cache\n{section}")), "{summary}");
    assert!(written.annotations.contains("::warning title=compile cache::"));

    // A cache that served every cacheable compile: the numbers, no warning anywhere.
    let mut healthy = record.clone();
    let c = healthy.compile_cache.as_mut().unwrap();
    (c.hits, c.misses, c.write_errors) = (12, 0, 0);
    let md = markdown::render(&healthy, &[]);
    assert!(md.contains("12 hits, 0 misses (100.0 % of cacheable compiles)"), "{md}");
    assert!(!md.contains("Warning:"), "{md}");
    assert!(!html::render(&healthy).contains("class=\"warning\""));
    assert!(!github::annotations(&healthy).contains("::warning"));
    // No cache, no section.
    assert!(!markdown::render(&fixture_record(), &[]).contains("Compile cache"));
    assert!(!html::render(&fixture_record()).contains("Compile cache"));

    if !tool_available("chromium", "apt-get install chromium") {
        return;
    }
    let page = dir.join("state/report.html");
    assert_eq!(written.html, page);
    let dom = String::from_utf8(chromium(&["--dump-dom".to_string()], &page)).unwrap();
    let cache = dom.split("<h2>Compile cache</h2>").nth(1).expect("the compile cache section");
    let cache = &cache[..cache.find("<h2>").unwrap_or(cache.len())];
    assert!(
        cache.contains(
            "0 hits, 12 misses (0.0 % of cacheable compiles), 39 not cacheable; 2 write errors"
        ),
        "{cache}"
    );
    let table = cache.split("<table id=\"not-cached\">").nth(1).expect("the reasons table");
    let table = table.split("</table>").next().unwrap();
    assert_eq!(table.matches("<tr>").count(), 3, "a header and a row per reason: {table}");
    assert!(table.contains("<td>&lt;odd|reason&gt;</td><td>3</td>"), "{table}");
    let warnings = cache.matches("<p class=\"warning\"><strong>Warning:</strong>").count();
    assert_eq!(warnings, 2, "{cache}");
    assert!(cache.contains("gave no hit"), "{cache}");
}
