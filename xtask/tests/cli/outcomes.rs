//! Test outcomes and verdicts that say what happened: a test is named with its binary,
//! `cargo test` never makes a failure "flaky", and targets fail a run or annotate it
//! only under the `--gate` in force, whose limit the result lines name.

use std::process::{Command, Output};

use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use super::{record, temp};

fn xtask(args: &[&str]) -> Command {
    let mut c = super::xtask_command(args);
    // Annotations go to this test's stdout, never to a real job's summary.
    c.env_remove("GITHUB_STEP_SUMMARY").env("GITHUB_ACTIONS", "true");
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `test-runner = "cargo"`: `same` fails in `a`'s `tests/it.rs` and passes in `b`'s.
/// cargo test never retries, so this is one failure, named with its binary, and
/// nothing is flaky (it was reported as "failed, then passed on retry").
#[test]
fn cli_same_named_tests_in_two_binaries_are_two_tests() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("a").test("it", "#[test] fn same() { assert_eq!(1, 2, \"a breaks\") }\n"),
        FixtureCrate::new("b").test("it", "#[test] fn same() {}\n"),
    ])
    .config("test-runner = \"cargo\"\ndisable = [\"bench-build\", \"doctest\"]");
    let root = dir.join("ws");
    let manifest = ws.write(&root).unwrap();
    let (json, report) = (dir.join("run.json"), dir.join("report.md"));
    let out = xtask(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    let r = record(&json);
    let test = r.stages.iter().find(|s| s.id == "test").unwrap();
    assert_eq!(test.failed_tests, ["a::it same"], "{test:#?}");
    assert!(test.flaky_tests.is_empty(), "{test:#?}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("a::it same") && !md.contains("passed on retry"), "{md}");

    // The run's JUnit keeps the two binaries apart too, and so does the same output
    // converted from the saved log.
    let log = std::fs::read_to_string(test.log_path.as_ref().unwrap()).unwrap();
    let from_log = pipeline_opt::report::junit::from_libtest_output_in(&log, Some(&root));
    let junit = root.join("target/pipeline-opt/junit.xml");
    for xml in [std::fs::read_to_string(&junit).unwrap(), from_log] {
        assert!(
            xml.contains(
                r#"<testsuite name="a::it" tests="1" skipped="0" errors="0" failures="1""#
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<testsuite name="b::it" tests="1" skipped="0" errors="0" failures="0""#
            ),
            "{xml}"
        );
    }
}

/// A run over its (100 ms) required target passes without `--gate` and annotates no
/// error; with `--gate 1ms` it exits 101 and every line names that gate, not the
/// required target.
#[test]
fn cli_targets_judge_only_under_the_gate_in_force() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")])
        .config("disable = [\"bench-build\", \"doctest\"]\n[targets]\nrequired = \"100ms\"");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let args = ["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()];
    let out = xtask(&args).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(record(&json).total.as_secs_f64() >= 0.1, "the first run takes over 100 ms");
    assert!(!all.contains("::error") && !all.contains("::warning"), "{all}");
    assert!(all.contains("no --gate; required 0.1 s: missed"), "{all}");

    // An edit, so that the gated run builds and tests again.
    let lib = dir.join("ws/crates/a/src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{src}\n// edited\n")).unwrap();
    let out = xtask(&[&args[..], &["--gate", "1ms"]].concat()).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(101), "{all}");
    assert!(all.contains("(gate 1ms: missed)"), "the result line: {all}");
    assert!(all.contains("::error title=gate missed::"), "{all}");
    assert!(all.contains("gate 1ms missed: total"), "{all}");
    let gate = record(&json).verdict.gate.expect("the gate is in the record");
    assert!(!gate.met, "{gate:?}");
}

/// Under `--gate required`, a missed per-stage target fails the run (exit 101) although
/// the total is well under the required 60 s: the result line must say the gate was
/// missed, and why, where it said "gate required (60.0 s): met".
#[test]
fn cli_result_line_names_a_missed_stage_target_of_the_gate() {
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")])
        .config("disable = [\"bench-build\", \"doctest\"]\n[targets.stages]\nbuild = \"1ms\"");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let json = dir.join("run.json");
    let args = ["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()];
    let out = xtask(&[&args[..], &["--gate", "required"]].concat()).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(101), "{all}");
    let r = record(&json);
    assert!(r.total.as_secs_f64() < 60.0 && !r.verdict.gate.unwrap().met, "{all}");
    assert!(!all.contains("(gate required (60.0 s): met)"), "the result line: {all}");
    assert!(
        all.contains("(gate required (60.0 s): missed: stage build over its 1ms target)"),
        "the result line: {all}"
    );
    assert!(all.contains(", stage build over its 1ms target (exit 101)"), "{all}");
    // The report's stage table shows the target as set, not rounded to "0.0 s".
    let md = dir.join("ws/target/pipeline-opt/pipeline-optimization-report.md");
    let md = std::fs::read_to_string(md).unwrap();
    let build_row = md.lines().find(|l| l.starts_with("| `build` |")).unwrap_or_default();
    assert!(build_row.contains("| 1ms |"), "{build_row}");
}
