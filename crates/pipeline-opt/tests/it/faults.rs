//! Issue #14, under faults: state on disk that holds any value, names that must not
//! reach the file system or the Prometheus text as they are. Real runs on generated
//! fixtures.

use camino::Utf8PathBuf;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::report::history::HistoryEntry;
use pipeline_opt::report::prometheus;
use pipeline_opt::{OptimizeOptions, exit, run_optimized_pipeline};

fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    (dir, path)
}

/// A workspace whose plan is two custom stages, one after the other, and no cargo stage.
fn two_custom_stages() -> FixtureWorkspace {
    FixtureWorkspace::new(vec![FixtureCrate::new("a")]).config(
        "disable = [\"fetch\", \"build\", \"test\", \"doctest\", \"bench-build\"]\n\
         [stages.first]\ncommand = [\"true\"]\nuses-build-dir = false\n\
         [stages.second]\ncommand = [\"true\"]\ndepends-on = [\"first\"]\nuses-build-dir = false\n",
    )
}

/// #14.4: a history line whose stage times add up beyond `Duration::MAX` made every
/// later run panic in the longest-chain sum (and so never trim the line away). The
/// sum saturates: the run passes and its own line is appended.
#[test]
fn huge_stage_times_in_the_history_do_not_stop_the_next_run() {
    let (_t, dir) = temp();
    let manifest = two_custom_stages().write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions {
        manifest_path: Some(manifest.clone()),
        no_cache: true,
        ..OptimizeOptions::default()
    };
    let first = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(first.exit_code, exit::OK, "{:#?}", first.record.stages);
    let history = dir.join("ws/target/pipeline-opt/history.jsonl");
    let text = std::fs::read_to_string(&history).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    for id in ["first", "second"] {
        line["stages"][id]["wall"] = serde_json::json!(1.5e19);
    }
    std::fs::write(&history, format!("{line}\n")).unwrap();
    let second = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(second.exit_code, exit::OK, "{:#?}", second.record.stages);
    let lines = std::fs::read_to_string(&history).unwrap().lines().count();
    assert_eq!(lines, 2, "the second run appended its line");
}

/// #14.7: a stage id holding `"` and a newline (a run.json or history line from disk;
/// the config refuses such names since #14.6) stays inside its label value: no metric
/// line of its own, and `promtool check metrics` accepts the text.
#[test]
fn prometheus_label_values_are_escaped() {
    let (_t, dir) = temp();
    let manifest = two_custom_stages().write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions {
        manifest_path: Some(manifest),
        no_cache: true,
        ..OptimizeOptions::default()
    };
    let mut record = run_optimized_pipeline(&options, &mut |_| {}).unwrap().record;
    record.stages[0].id = "x\"} 1\ninjected_metric{a=\"b\\".into();
    let history = [HistoryEntry::from_record(&record)];
    let text = prometheus::render(&record, &history).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("injected_metric")), "{text}");
    assert!(text.contains(r#"stage="x\"} 1\ninjected_metric{a=\"b\\""#), "{text}");
    let promtool = std::process::Command::new("promtool").arg("--version").output();
    if !promtool.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "promtool is missing under CI");
        eprintln!("SKIPPED: promtool is not installed; `cargo xtask ci` installs it");
        return;
    }
    let path = dir.join("pipeline.prom");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// #14.2: a library caller that runs twice with `handle_signals` (no command-wide
/// handlers): a SIGINT that ended or came after the first run does not mark the second,
/// all-cached run as interrupted.
#[test]
fn a_signal_from_an_earlier_run_does_not_interrupt_the_next() {
    let (_t, dir) = temp();
    // `check` alone, which the stage cache serves on the second run.
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")])
        .config("disable = [\"fetch\", \"build\", \"test\", \"doctest\", \"bench-build\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let options = OptimizeOptions {
        manifest_path: Some(manifest),
        handle_signals: true,
        ..OptimizeOptions::default()
    };
    let first = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    assert_eq!(first.exit_code, exit::OK, "{:#?}", first.record.stages);
    // The first run left its handler installed; this process is the test's own.
    // SAFETY: raising a signal whose handler only stores atomics.
    assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
    let second = run_optimized_pipeline(&options, &mut |_| {}).unwrap();
    let cached = second
        .record
        .stages
        .iter()
        .all(|s| matches!(s.status, pipeline_opt::record::StageStatus::Cached { .. }));
    assert!(cached, "{:#?}", second.record.stages);
    assert_eq!(second.exit_code, exit::OK, "{:#?}", second.record.notes);
}
