//! JUnit XML of a run's tests, built with quick-junit (the data model and serializer
//! cargo-nextest writes its own JUnit with): nextest's own file read back, suites built
//! from libtest's human output (`cargo test`, doctests), and suites an earlier run
//! recorded, merged into one report. Stable libtest prints no per-test durations, so
//! its suites' `time` is measured here from when their lines arrived.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8Path;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

/// The suites of one `cargo test` (or `cargo test --doc`) run, built from its output
/// lines as they arrive: one suite per test binary and per doctest run, failure output
/// attached to its test case, each suite timed from its `Running` line to its
/// `test result:` line.
#[derive(Debug, Default)]
pub struct LibtestSuites {
    suites: Vec<Suite>,
    /// Which test a `---- name stdout ----` block belongs to while reading it.
    capturing: Option<(usize, usize)>,
    /// Where `cargo test` ran: suites are named by package and target from the test
    /// binaries' dep-info files, as nextest names them.
    dir: Option<camino::Utf8PathBuf>,
}

#[derive(Debug)]
struct Suite {
    name: String,
    started: Option<Duration>,
    time: Option<Duration>,
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
    /// With the reason `#[ignore = "…"]` gave.
    Ignored(Option<String>),
}

impl LibtestSuites {
    /// The suites of a `cargo test` that runs in `dir` (where its test binaries' dep-info
    /// files name their packages); `None` names suites by the binary's file instead.
    pub fn in_dir(dir: Option<&Utf8Path>) -> LibtestSuites {
        LibtestSuites { dir: dir.map(ToOwned::to_owned), ..LibtestSuites::default() }
    }

    /// Takes one line of output that arrived `at` (any clock, as long as it is the same
    /// for every line); `None` when the time is unknown (a saved log).
    pub fn observe(&mut self, line: &str, at: Option<Duration>) {
        let plain = crate::record::strip_ansi(line);
        let trimmed = plain.trim();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            let name = crate::orchestrator::libtest_binary_id(rest, self.dir.as_deref());
            self.start_suite(name, at);
            return;
        }
        if let Some(rest) = trimmed.strip_prefix("Doc-tests ") {
            self.start_suite(format!("{rest}::doctest"), at);
            return;
        }
        if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----").or_else(|| r.strip_suffix(" stderr ----")))
        {
            self.capturing =
                self.suites.iter().enumerate().rev().find_map(|(si, s)| {
                    s.cases.iter().position(|c| c.name == name).map(|ci| (si, ci))
                });
            return;
        }
        if trimmed.starts_with("test result:") {
            if let (Some(suite), Some(at)) = (self.suites.last_mut(), at)
                && let Some(started) = suite.started
            {
                suite.time = Some(at.saturating_sub(started));
            }
            self.capturing = None;
            return;
        }
        if trimmed == "failures:" {
            self.capturing = None;
            return;
        }
        if let Some((name, outcome)) = parse_test_line(trimmed) {
            if self.suites.is_empty() {
                self.start_suite("tests".into(), at);
            }
            let suite = self.suites.last_mut().expect("a suite was just started");
            suite.cases.push(Case { name: name.to_string(), outcome, output: String::new() });
            return;
        }
        if let Some((si, ci)) = self.capturing {
            let out = &mut self.suites[si].cases[ci].output;
            out.push_str(&plain);
            out.push('\n');
        }
    }

    fn start_suite(&mut self, name: String, at: Option<Duration>) {
        self.suites.push(Suite { name, started: at, time: None, cases: Vec::new() });
        self.capturing = None;
    }

    /// The suites as JUnit: ignored tests are `skipped`, a failure's message is the
    /// line that says where it panicked.
    pub fn into_suites(self) -> Vec<TestSuite> {
        self.suites.into_iter().map(Suite::into_junit).collect()
    }
}

impl Suite {
    fn into_junit(self) -> TestSuite {
        let mut suite = TestSuite::new(self.name.as_str());
        if let Some(t) = self.time {
            suite.set_time(t);
        }
        for c in self.cases {
            let status = match c.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Ignored(reason) => {
                    let mut s = TestCaseStatus::skipped();
                    if let Some(r) = reason {
                        s.set_message(r);
                    }
                    s
                }
                Outcome::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    let message = c
                        .output
                        .lines()
                        .find(|l| l.contains("panicked at"))
                        .map(|l| l.trim().to_string())
                        .unwrap_or_else(|| "test failed".into());
                    s.set_message(message).set_description(c.output.trim_end());
                    s
                }
            };
            let mut case = TestCase::new(c.name.as_str(), status);
            case.set_classname(self.name.as_str());
            suite.add_test_case(case);
        }
        suite
    }
}

/// `test a::b ... ok`, `... FAILED`, `... ignored` (optionally `, reason`).
fn parse_test_line(line: &str) -> Option<(&str, Outcome)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let outcome = match result {
        "ok" => Outcome::Passed,
        "FAILED" => Outcome::Failed,
        "ignored" => Outcome::Ignored(None),
        r => Outcome::Ignored(Some(r.strip_prefix("ignored, ")?.to_string())),
    };
    Some((name, outcome))
}

/// Converts the output of `cargo test` (stdout and stderr interleaved, as a terminal or
/// a CI log shows them) into a JUnit XML document: one `testsuite` per test binary or
/// doctest run, failure output attached to its test case. A saved log has no times.
pub fn from_libtest_output(output: &str) -> String {
    from_libtest_output_in(output, None)
}

/// [`from_libtest_output`] of a `cargo test` that ran in `dir`, whose test binaries (and
/// their dep-info files) are still there: suites are named as nextest names its test
/// binaries (`pkg::it`), so two packages' `tests/it.rs` never share a suite.
pub fn from_libtest_output_in(output: &str, dir: Option<&Utf8Path>) -> String {
    let mut s = LibtestSuites::in_dir(dir);
    for line in output.lines() {
        s.observe(line, None);
    }
    render("cargo test", s.into_suites(), None)
}

/// The suites of a JUnit document (nextest's, or one recorded by an earlier run).
pub fn parse_suites(xml: &str) -> Result<Vec<TestSuite>, String> {
    Report::deserialize_from_str(xml).map(|r| r.test_suites).map_err(|e| e.to_string())
}

/// Suites grouped by the package they test: a suite is named by its test binary as
/// nextest names it (`pkg`, `pkg::it`, `pkg::bin/name`), so the package comes first.
pub fn by_package(suites: Vec<TestSuite>) -> BTreeMap<String, Vec<TestSuite>> {
    let mut out: BTreeMap<String, Vec<TestSuite>> = BTreeMap::new();
    for s in suites {
        let package = s.name.as_str().split("::").next().unwrap_or_default().to_string();
        out.entry(package).or_default().push(s);
    }
    out
}

/// One JUnit document of `suites` (the totals are counted from them), with the run's
/// time where known.
pub fn render(name: &str, suites: Vec<TestSuite>, time: Option<Duration>) -> String {
    let mut report = Report::new(name);
    report.add_test_suites(suites);
    if let Some(t) = time {
        report.set_time(t);
    }
    // Serializing into a String fails only on a writer error, which a String never has.
    report.to_string().unwrap_or_default()
}

/// Suites of the same name (a test binary whose tests ran on several shards) become one:
/// their cases together, the counts added up, the times summed, the earliest timestamp.
/// Suites keep the order in which their names first appear.
pub fn merge_by_name(suites: impl IntoIterator<Item = TestSuite>) -> Vec<TestSuite> {
    let mut out: Vec<TestSuite> = Vec::new();
    for suite in suites {
        let Some(same) = out.iter_mut().find(|s| s.name == suite.name) else {
            out.push(suite);
            continue;
        };
        // `add_test_cases` counts each case it adds into tests, failures, errors, skipped.
        same.add_test_cases(suite.test_cases);
        same.time = match (same.time, suite.time) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        same.timestamp = match (same.timestamp, suite.timestamp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for p in suite.properties {
            if !same.properties.contains(&p) {
                same.properties.push(p);
            }
        }
    }
    out
}
