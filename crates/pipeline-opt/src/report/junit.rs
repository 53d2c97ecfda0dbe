//! JUnit XML from libtest's human output, for the `cargo test` fallback when nextest
//! (which writes JUnit itself) is not installed. Stable libtest prints pass, fail and
//! ignore per test but no durations, so the XML has no `time` attributes.

use std::fmt::Write as _;

use crate::report::html::esc;

#[derive(Debug, Default)]
struct Suite {
    name: String,
    cases: Vec<Case>,
}

#[derive(Debug)]
struct Case {
    name: String,
    outcome: Outcome,
    output: String,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Passed,
    Failed,
    Ignored,
}

/// Converts the output of `cargo test` (stdout and stderr interleaved, as a terminal or
/// a CI log shows them) into a JUnit XML document: one `testsuite` per test binary or
/// doctest run, failure output attached to its test case.
pub fn from_libtest_output(output: &str) -> String {
    from_libtest_output_in(output, None)
}

/// [`from_libtest_output`] of a `cargo test` that ran in `dir`, whose test binaries (and
/// their dep-info files) are still there: suites are named by package and target.
pub fn from_libtest_output_in(output: &str, dir: Option<&camino::Utf8Path>) -> String {
    let mut suites: Vec<Suite> = Vec::new();
    // Which test a `---- name stdout ----` block belongs to while reading it.
    let mut capturing: Option<(usize, usize)> = None;
    for line in output.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            suites.push(Suite { name: suite_name(rest, dir), cases: Vec::new() });
            capturing = None;
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("Doc-tests ") {
            suites.push(Suite { name: format!("doc-tests {rest}"), cases: Vec::new() });
            capturing = None;
            continue;
        }
        if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----").or_else(|| r.strip_suffix(" stderr ----")))
        {
            capturing =
                suites.iter().enumerate().rev().find_map(|(si, s)| {
                    s.cases.iter().position(|c| c.name == name).map(|ci| (si, ci))
                });
            continue;
        }
        if trimmed == "failures:" || trimmed.starts_with("test result:") {
            capturing = None;
            continue;
        }
        if let Some((name, outcome)) = parse_test_line(trimmed) {
            if suites.is_empty() {
                suites.push(Suite { name: "tests".into(), cases: Vec::new() });
            }
            let suite = suites.last_mut().unwrap();
            suite.cases.push(Case { name: name.to_string(), outcome, output: String::new() });
            continue;
        }
        if let Some((si, ci)) = capturing {
            let out = &mut suites[si].cases[ci].output;
            out.push_str(line);
            out.push('\n');
        }
    }
    render(&suites)
}

/// `test a::b ... ok`, `... FAILED`, `... ignored` (optionally `, reason`).
fn parse_test_line(line: &str) -> Option<(&str, Outcome)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let outcome = match result {
        "ok" => Outcome::Passed,
        "FAILED" => Outcome::Failed,
        r if r == "ignored" || r.starts_with("ignored, ") => Outcome::Ignored,
        _ => return None,
    };
    Some((name, outcome))
}

/// `unittests src/lib.rs (target/debug/deps/foo-0123abcd)` → `foo unittests src/lib.rs`,
/// with the binary named as nextest names it (`pkg::it`) where its dep-info file is
/// found from `dir`: the hash changes with every build and would make reports of two
/// runs incomparable, and two packages' `tests/it.rs` must not share a suite.
fn suite_name(running: &str, dir: Option<&camino::Utf8Path>) -> String {
    let Some((what, _)) = running.rsplit_once(" (") else { return running.to_string() };
    let binary = crate::orchestrator::libtest_binary_id(running, dir);
    format!("{binary} {what}")
}

fn render(suites: &[Suite]) -> String {
    let count =
        |o: Outcome| suites.iter().flat_map(|s| &s.cases).filter(|c| c.outcome == o).count();
    let total: usize = suites.iter().map(|s| s.cases.len()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    writeln!(
        x,
        r#"<testsuites name="cargo test" tests="{total}" failures="{}" errors="0" skipped="{}">"#,
        count(Outcome::Failed),
        count(Outcome::Ignored)
    )
    .unwrap();
    for s in suites {
        let failures = s.cases.iter().filter(|c| c.outcome == Outcome::Failed).count();
        let skipped = s.cases.iter().filter(|c| c.outcome == Outcome::Ignored).count();
        writeln!(
            x,
            r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}">"#,
            esc(&s.name),
            s.cases.len()
        )
        .unwrap();
        for c in &s.cases {
            let open =
                format!(r#"    <testcase name="{}" classname="{}""#, esc(&c.name), esc(&s.name));
            match c.outcome {
                Outcome::Passed => writeln!(x, "{open}/>").unwrap(),
                Outcome::Ignored => {
                    writeln!(x, "{open}>\n      <skipped/>\n    </testcase>").unwrap()
                }
                Outcome::Failed => {
                    let message = c
                        .output
                        .lines()
                        .find(|l| l.contains("panicked at"))
                        .map(|l| l.trim().to_string())
                        .unwrap_or_else(|| "test failed".into());
                    writeln!(
                        x,
                        "{open}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        esc(&message),
                        esc(c.output.trim_end())
                    )
                    .unwrap()
                }
            }
        }
        writeln!(x, "  </testsuite>").unwrap();
    }
    x.push_str("</testsuites>\n");
    x
}
