//! `cargo xtask report --from RUN.json`: a saved run record renders the same reports
//! as the run that wrote it, with cargo absent and the workspace gone, and a missing or
//! corrupt record is one clean error.

use camino::Utf8Path;
use pipeline_opt::fixture::FixtureWorkspace;

use super::{assert_clean_error, temp, xtask, xtask_command};

/// The report files a run of `optimize` writes into its state directory.
const REPORTS: [&str; 3] = ["pipeline-optimization-report.md", "run.json", "report.html"];

/// A workspace whose member builds two versions of `dup`, so the markdown carries a
/// duplicate-versions recommendation, which needs the resolved graph that only
/// `cargo metadata` knew.
fn write_duplicate_versions_workspace(dir: &Utf8Path) -> camino::Utf8PathBuf {
    let app = pipeline_opt::fixture::duplicate_versions_app(dir).unwrap();
    FixtureWorkspace::new(vec![app])
        .config("disable = [\"bench-build\", \"doctest\"]")
        .write(&dir.join("ws"))
        .unwrap()
}

/// A real run, then its run.json alone (the workspace deleted, PATH without cargo)
/// rendered again: every report file is byte for byte the one the run wrote.
#[test]
fn cli_report_renders_a_saved_run_offline_byte_identical() {
    let (_t, dir) = temp();
    let manifest = write_duplicate_versions_workspace(&dir);
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let state = dir.join("ws/target/pipeline-opt");
    let saved = dir.join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    for name in REPORTS {
        std::fs::copy(state.join(name), saved.join(name)).unwrap();
    }
    let md = std::fs::read_to_string(saved.join(REPORTS[0])).unwrap();
    assert!(md.contains("`dup` was built at 2 versions"), "{md}");
    std::fs::remove_dir_all(dir.join("ws")).unwrap();
    std::fs::remove_dir_all(dir.join("vendor")).unwrap();

    let empty_path = dir.join("no-tools");
    std::fs::create_dir_all(&empty_path).unwrap();
    let rendered = dir.join("rendered");
    let out = xtask_command(&[
        "report",
        "--from",
        saved.join("run.json").as_str(),
        "--out",
        rendered.as_str(),
    ])
    .env("PATH", &empty_path)
    .env_remove("CARGO_HOME")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for name in REPORTS {
        let ours = std::fs::read(rendered.join(name)).unwrap();
        let run = std::fs::read(saved.join(name)).unwrap();
        assert!(ours == run, "{name} differs from the run's:\n{}", String::from_utf8_lossy(&ours));
    }
}

/// A missing record and one that is not a run record each end in one `error:` line
/// naming the file, with exit 1.
#[test]
fn cli_report_of_a_missing_or_corrupt_record_is_a_clean_error() {
    let (_t, dir) = temp();
    let missing = dir.join("missing.json");
    let out = xtask(&["report", "--from", missing.as_str(), "--out", dir.join("out").as_str()]);
    assert_clean_error(&out, 1, &format!("cannot read the run record {missing}"));
    let corrupt = dir.join("corrupt.json");
    std::fs::write(&corrupt, "{\"schema_version\": 2, \"run_id\": ").unwrap();
    let out = xtask(&["report", "--from", corrupt.as_str(), "--out", dir.join("out").as_str()]);
    assert_clean_error(&out, 1, &format!("{corrupt} is not a run record"));
    assert!(!dir.join("out").exists(), "nothing is written for a bad record");
}
