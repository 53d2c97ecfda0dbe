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

/// With cargo-nextest absent (a PATH of cargo and rustc only, an empty CARGO_HOME),
/// the record keeps that fact and the advice to install it rests on it, not on the
/// wording of the plan's note.
#[test]
fn cli_without_nextest_the_record_keeps_the_fact_and_the_advice_follows() {
    let (_t, dir) = temp();
    let manifest = FixtureWorkspace::chain(1)
        .config("disable = [\"bench-build\", \"doctest\"]")
        .write(&dir.join("ws"))
        .unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["cargo", "rustc"] {
        let found = which_on_path(tool).unwrap_or_else(|| panic!("{tool} is on PATH"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    let path = format!("{bin}:/usr/bin:/bin");
    for d in std::env::split_paths(&path) {
        assert!(!d.join("cargo-nextest").exists(), "{} holds cargo-nextest", d.display());
    }
    let home = std::env::var("HOME").unwrap();
    let out = xtask_command(&["optimize", "--manifest-path", manifest.as_str()])
        .env("PATH", &path)
        .env("CARGO_HOME", dir.join("cargo-home"))
        .env("RUSTUP_HOME", std::env::var("RUSTUP_HOME").unwrap_or(format!("{home}/.rustup")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let state = dir.join("ws/target/pipeline-opt");
    let run = super::record(&state.join("run.json"));
    assert!(run.workspace_facts.nextest_missing, "the record says nextest was missing");
    let test = run.stages.iter().find(|s| s.id == "test").expect("a test stage");
    assert_eq!(test.kind, pipeline_opt::record::CommandKind::CargoTest);
    let md = std::fs::read_to_string(state.join("pipeline-optimization-report.md")).unwrap();
    assert!(md.contains("(nextest-missing)"), "{md}");
    // A real run lies at or above its lower bound, and the report says by how much.
    let bound = run.lower_bound.expect("stages ran, so the run has a lower bound");
    assert!(bound.bound() <= run.total, "{bound:?} above the run's {:?}", run.total);
    assert_eq!(bound.chain_stages.last().map(String::as_str), Some("test"), "{bound:?}");
    assert!(md.contains("Lower bound: "), "{md}");
}

/// The first `tool` on this process's PATH, resolved through symlinks no further.
fn which_on_path(tool: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(tool)).find(|p| p.exists())
}
