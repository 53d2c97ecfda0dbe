//! `cargo xtask flamegraph TEST`: one test of a real fixture run under real `perf record`,
//! its stacks folded and drawn into an SVG that the last run's HTML report links; a test
//! that does not exist and a missing perf are one clean error each.

use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use super::{assert_clean_error, record, temp, xtask, xtask_command};

/// A library whose unit test spends about 0.8 s of CPU time in one named function:
/// CPU time, read from the thread's schedstat, not wall time, so a loaded machine
/// stretches the test instead of shrinking what perf can sample.
const LIB: &str = r#"
#[inline(never)]
pub fn spin_here(rounds: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

fn cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

#[cfg(test)]
mod tests {
    #[test]
    fn burns_cpu() {
        let start = super::cpu_ns();
        let mut n = 0;
        while super::cpu_ns() - start < 800_000_000 {
            n ^= super::spin_here(1_000_000);
        }
        assert!(n != 1);
    }
}
"#;

fn perf_installed() -> bool {
    std::process::Command::new("perf").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn cli_flamegraph_of_a_slow_test_is_linked_from_the_html_report() {
    if !perf_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "perf is missing under CI=true: `cargo xtask ci` installs linux-perf"
        );
        eprintln!("note: perf is not installed; this test needs it (apt-get install linux-perf)");
        return;
    }
    let (_t, dir) = temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app").lib(LIB)])
        .config("disable = [\"bench-build\", \"doctest\"]");
    let manifest = ws.write(&dir.join("ws")).unwrap();
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let out =
        xtask(&["flamegraph", "app", "tests::burns_cpu", "--manifest-path", manifest.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let state = dir.join("ws/target/pipeline-opt");
    let svg = state.join("flamegraphs/app_tests__burns_cpu.svg");
    let drawn = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{svg}: {e}\n{stderr}"));
    assert!(
        drawn.starts_with("<?xml") && drawn.contains("<svg"),
        "{}",
        &drawn[..200.min(drawn.len())]
    );
    // The test's own function is in the stacks: symbols and call stacks both worked.
    assert!(drawn.contains("spin_here"), "the flame graph lacks spin_here");
    let r = record(&state.join("run.json"));
    assert_eq!(r.flamegraphs.len(), 1, "{:#?}", r.flamegraphs);
    assert_eq!(r.flamegraphs[0].svg, "flamegraphs/app_tests__burns_cpu.svg");
    // About the 0.8 s of CPU the test spins (sampling loses a little).
    let cpu = r.flamegraphs[0].cpu.as_secs_f64();
    assert!((0.4..30.0).contains(&cpu), "{:#?}", r.flamegraphs);
    let html = std::fs::read_to_string(state.join("report.html")).unwrap();
    assert!(html.contains("<a href=\"flamegraphs/app_tests__burns_cpu.svg\">"), "{html}");
    let md = std::fs::read_to_string(state.join("pipeline-optimization-report.md")).unwrap();
    assert!(md.contains("(flamegraphs/app_tests__burns_cpu.svg)"), "{md}");
    // Nothing compiled again for it: the same plan, shim and settings as optimize.
    assert!(!stderr.contains("compiled app"), "{stderr}");

    let out =
        xtask(&["flamegraph", "app tests::no_such_test", "--manifest-path", manifest.as_str()]);
    assert_clean_error(&out, 1, "no test matched `app tests::no_such_test`");
}

#[test]
fn cli_flamegraph_without_perf_names_the_package() {
    let (_t, dir) = temp();
    let manifest =
        FixtureWorkspace::new(vec![FixtureCrate::new("app")]).write(&dir.join("ws")).unwrap();
    // cargo's directory only: no perf on this PATH.
    let cargo_dir = std::env::var("CARGO_HOME")
        .map(|h| format!("{h}/bin"))
        .unwrap_or_else(|_| format!("{}/.cargo/bin", std::env::var("HOME").unwrap()));
    let out = xtask_command(&["flamegraph", "app t", "--manifest-path", manifest.as_str()])
        .env("PATH", cargo_dir)
        .output()
        .unwrap();
    assert_clean_error(&out, 1, "perf is not installed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("apt-get install linux-perf"));
}
