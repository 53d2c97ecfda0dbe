//! Issue #14, under faults: state on disk that holds any value, names that must not
//! reach the file system or the Prometheus text as they are. Real runs on generated
//! fixtures.

use camino::Utf8PathBuf;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
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
