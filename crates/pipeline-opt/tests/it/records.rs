//! Records that match their schema and their command: the run.json of real runs
//! validates against docs/run-record.schema.json, `check` keeps its own reports,
//! history and metrics, and the total is the time the command took.

use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::record::{Event, RunKind, RunRecord};
use pipeline_opt::report::{self, history, json};
use pipeline_opt::targets::Gate;
use pipeline_opt::{OptimizeOptions, exit, run_fast_validation, run_optimized_pipeline};

#[track_caller]
fn assert_matches_schema(path: &Utf8Path) -> RunRecord {
    let text = std::fs::read_to_string(path).unwrap();
    let schema: serde_json::Value = serde_json::from_str(json::SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{path} does not match the schema:\n{}\n{text}", errors.join("\n"));
    json::parse(&text).unwrap()
}

/// A real run (then the same run again, all of it from the cache, under a gate) writes
/// a run.json that its published schema accepts; the second run's total is the time
/// the command took, not the 0.0 s of its stages.
#[test]
fn records_of_real_runs_match_the_schema_and_the_time_waited() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("base"),
        FixtureCrate::new("top").dep("base").test("t", "#[test] fn fine() {}\n"),
    ])
    .config("disable = [\"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let state = dir.join("ws/target/pipeline-opt");
    let options = OptimizeOptions {
        manifest_path: Some(manifest.clone()),
        gate: Some(Gate::Custom(Duration::from_secs(600))),
        ..OptimizeOptions::default()
    };
    let first = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(first.exit_code, exit::OK, "{:#?}", first.record.stages);
    let r = assert_matches_schema(&first.reports.json);
    assert!(!r.cache.is_empty(), "the stage cache explains every stage: {r:#?}");

    // The total runs from the command's start to the end of its last stage: at least
    // until the run-finished event (less a margin for the call itself), at most the call.
    let started = Instant::now();
    let mut finished = None;
    let second = run_optimized_pipeline(&options, &mut |ev| {
        if matches!(ev, Event::RunFinished { .. }) {
            finished = Some(started.elapsed());
        }
    })
    .unwrap();
    let waited = started.elapsed();
    let finished = finished.expect("the run finished");
    let r = assert_matches_schema(&second.reports.json);
    assert!(r.stages.iter().all(|s| s.status.name() == "cached"), "{:#?}", r.stages);
    assert!(
        r.total + Duration::from_millis(20) >= finished && r.total <= waited,
        "total {:?} is the time the command took (its stages ended at {finished:?})",
        r.total
    );
    assert_eq!(r.verdict.total, r.total);

    // `check` writes its own files: optimize's report and history stay optimize's.
    let check = run_fast_validation(
        &OptimizeOptions { manifest_path: Some(manifest), ..OptimizeOptions::default() },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(check.exit_code, exit::OK);
    assert_eq!(check.reports.json, state.join("check-run.json"));
    assert_eq!(check.reports.history, state.join("check-history.jsonl"));
    assert_eq!(assert_matches_schema(&check.reports.json).kind, RunKind::Check);
    let optimize = assert_matches_schema(&state.join(report::JSON_FILE));
    assert_eq!((optimize.run_id.as_str(), optimize.kind), (r.run_id.as_str(), RunKind::Optimize));
    let md = std::fs::read_to_string(state.join(report::MARKDOWN_FILE)).unwrap();
    assert!(md.contains("cargo xtask optimize") && !md.contains("cargo xtask check"), "{md}");
    let runs = history::read(&state.join(report::HISTORY_FILE)).unwrap().entries;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert!(runs.iter().all(|e| e.command.starts_with("cargo xtask optimize")));
    assert!(runs.iter().all(|e| !e.total.is_zero()), "{runs:#?}");
    let checks = history::read(&check.reports.history).unwrap().entries;
    assert_eq!(checks.len(), 1);

    // The metrics say which command's runs they count, and which runs the cache served:
    // a quantile over the runs that did work is not pulled down by the cached one.
    let prom = report::prometheus::render(&optimize, &runs).unwrap();
    for cached in ["none", "all"] {
        let count = format!(
            "pipeline_duration_seconds_count{{command=\"optimize\",cached=\"{cached}\"}} 1"
        );
        assert!(prom.contains(&count), "{count} in\n{prom}");
    }
}
