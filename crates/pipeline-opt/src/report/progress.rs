//! Live progress of a run in the terminal: one line per stage (running, done, cached,
//! failed; elapsed against its target; compile units so far), drawn with indicatif.
//! Without a terminal, or under `NO_COLOR` or `CI`, it prints plain lines instead.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::record::{Event, RunOutcome, StageMetrics, StageStatus, TestCounts};
use crate::report::secs;
use crate::report::text::{outcome_text, status_text};
use crate::targets::PerformanceTargets;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Redrawn bars with colour: stdout is a terminal and nobody asked for plain text.
    Live,
    /// One line per event, no escape codes: logs, pipes, `NO_COLOR`, CI.
    Plain,
}

impl ProgressMode {
    /// Live when stdout is a terminal and neither `NO_COLOR` (any non-empty value, per
    /// no-color.org) nor `CI` (other than `false`/`0`) is set.
    pub fn detect() -> ProgressMode {
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        if std::io::stdout().is_terminal() && !set("NO_COLOR") && !ci {
            ProgressMode::Live
        } else {
            ProgressMode::Plain
        }
    }
}

/// Consumes [`Event`]s and shows them. Create it before the run starts, feed it every
/// event, and drop it (or call [`ProgressReporter::finish`]) at the end.
pub struct ProgressReporter {
    mode: ProgressMode,
    targets: PerformanceTargets,
    /// The `--gate` in force: the result line judges the run by it.
    gate: Option<crate::targets::Gate>,
    /// When the command started: the first run's total counts from here.
    command_start: Option<std::time::Instant>,
    /// The run's finished stages, whose targets the gate judges too.
    finished_stages: Vec<StageMetrics>,
    out: Box<dyn Write + Send>,
    multi: Option<MultiProgress>,
    total_bar: Option<ProgressBar>,
    bars: BTreeMap<String, ProgressBar>,
    /// Compile units finished per stage.
    units: BTreeMap<String, usize>,
    /// Units that a stage's tests compiled in cargo runs of their own, and their
    /// compile time, per stage.
    by_tests: BTreeMap<String, (usize, Duration)>,
    /// Tests passed, failed and skipped per stage, as the runner's summary counts them.
    test_counts: BTreeMap<String, TestCounts>,
    /// Tests (and retries) finished per stage.
    tests_done: BTreeMap<String, usize>,
    /// The machine's cores, for the CPU share on the total line, as the run reports them
    /// (none before its [`Event::RunStarted`], and no CPU sample comes before it).
    cores: usize,
    /// The latest time any event carried: cached and skipped stages, which never ran,
    /// are reported at this time so plain lines stay in order.
    now: Duration,
}

impl std::fmt::Debug for ProgressReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressReporter").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl ProgressReporter {
    /// A reporter on stdout in `mode` (see [`ProgressMode::detect`]).
    pub fn new(mode: ProgressMode, targets: &PerformanceTargets) -> ProgressReporter {
        let mut r = ProgressReporter {
            mode,
            targets: targets.clone(),
            gate: None,
            command_start: None,
            finished_stages: Vec::new(),
            out: Box::new(std::io::stdout()),
            multi: None,
            total_bar: None,
            bars: BTreeMap::new(),
            units: BTreeMap::new(),
            by_tests: BTreeMap::new(),
            test_counts: BTreeMap::new(),
            tests_done: BTreeMap::new(),
            cores: 0,
            now: Duration::ZERO,
        };
        if mode == ProgressMode::Live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let total = multi.add(ProgressBar::new_spinner());
            total.set_style(style("{spinner:.cyan} {prefix:.bold:12} {elapsed:>4} {msg}"));
            total.set_prefix("pipeline");
            total.set_message(format!(
                "required {}, stretch {}",
                secs(targets.required),
                secs(targets.stretch)
            ));
            total.enable_steady_tick(Duration::from_millis(100));
            r.total_bar = Some(total);
            r.multi = Some(multi);
        }
        r
    }

    /// A plain-text reporter writing to `out` (tests, log files).
    pub fn plain_to(out: Box<dyn Write + Send>, targets: &PerformanceTargets) -> ProgressReporter {
        let mut r = ProgressReporter::new(ProgressMode::Plain, targets);
        r.out = out;
        r
    }

    /// Judges the run by `gate` in its result line (none: the targets are shown as
    /// information).
    pub fn with_gate(mut self, gate: Option<crate::targets::Gate>) -> ProgressReporter {
        self.gate = gate;
        self
    }

    /// Counts the total of the (first) run from `start`, the command's start, as the
    /// run record does: planning and fingerprints are time the user waits too.
    pub fn since(mut self, start: std::time::Instant) -> ProgressReporter {
        self.command_start = Some(start);
        self
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::RunStarted { cores, .. } => self.cores = *cores,
            Event::StageStarted { id, at } => {
                self.now = self.now.max(*at);
                self.started(id, *at)
            }
            Event::StageOutput { id, line } => {
                if let Some(found) = TestCounts::in_line(line) {
                    self.test_counts.entry(id.clone()).or_default().add(found);
                }
            }
            Event::CpuSampled(c) => {
                if let Some(bar) = &self.total_bar {
                    let t = &self.targets;
                    bar.set_message(format!(
                        "required {}, stretch {}, CPU {:.0}% of {} cores",
                        secs(t.required),
                        secs(t.stretch),
                        100.0 * c.busy,
                        self.cores
                    ));
                }
            }
            Event::TestFinished(t) => {
                let n = {
                    let n = self.tests_done.entry(t.stage.clone()).or_default();
                    *n += 1;
                    *n
                };
                if let Some(bar) = self.bars.get(&t.stage) {
                    bar.set_message(format!(
                        "{}{n} test(s) finished, last {} ({})",
                        self.target_text(&t.stage),
                        t.name,
                        secs(t.duration)
                    ));
                }
            }
            Event::CrateCompiled(c) => {
                self.now = self.now.max(c.end);
                let n = {
                    let n = self.units.entry(c.stage.clone()).or_default();
                    *n += 1;
                    *n
                };
                let d = c.end.saturating_sub(c.start);
                match self.bars.get(&c.stage) {
                    Some(bar) => bar.set_message(format!(
                        "{}{n} units compiled, last {} ({})",
                        self.target_text(&c.stage),
                        c.package,
                        secs(d)
                    )),
                    None => self.line(&format!(
                        "[{:>7}] {}: compiled {} ({} `{}`) in {}, {n} units so far",
                        secs(c.end),
                        c.stage,
                        c.package,
                        c.kind,
                        c.target,
                        secs(d)
                    )),
                }
            }
            Event::CompiledByTests(c) => {
                let (n, time) = self.by_tests.entry(c.stage.clone()).or_default();
                *n += 1;
                *time += c.end.saturating_sub(c.start);
            }
            Event::StageFinished(m) => self.finished(m),
            Event::RunFinished { outcome, total } => self.run_finished(*outcome, *total),
        }
    }

    fn target_text(&self, id: &str) -> String {
        self.targets.stages.get(id).map(|t| format!("target {}, ", secs(*t))).unwrap_or_default()
    }

    fn started(&mut self, id: &str, at: Duration) {
        match &self.multi {
            Some(_) => {
                let bar = self.add_bar();
                bar.set_style(style("{spinner:.green} {prefix:12} {elapsed:>4} {msg}"));
                bar.set_prefix(id.to_string());
                bar.set_message(format!("{}running", self.target_text(id)));
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bars.insert(id.to_string(), bar);
            }
            None => {
                let target = self.target_text(id);
                let target = target.trim_end_matches(", ");
                let suffix = if target.is_empty() { String::new() } else { format!(" ({target})") };
                self.line(&format!("[{:>7}] {id}: started{suffix}", secs(at)));
            }
        }
    }

    fn finished(&mut self, m: &StageMetrics) {
        self.finished_stages.push(m.clone());
        let mut text = status_text(&m.status);
        let ran = matches!(
            m.status,
            StageStatus::Succeeded | StageStatus::Failed | StageStatus::TimedOut
        );
        if ran {
            text.push_str(&format!(" in {}", secs(m.wall)));
            if let Some(t) = self.targets.stages.get(&m.id) {
                let verdict = if m.wall < *t { "met" } else { "missed" };
                text.push_str(&format!(" (target {}: {verdict})", secs(*t)));
            }
        }
        if let Some(code) = m.exit_code.filter(|c| *c != 0) {
            text.push_str(&format!(", exit code {code}"));
        }
        if let Some(n) = self.units.get(&m.id) {
            text.push_str(&format!(", {n} units compiled"));
        }
        if let Some((n, time)) = self.by_tests.get(&m.id) {
            text.push_str(&format!(
                ", {n} units compiled by tests in {} (not the workspace's)",
                secs(*time)
            ));
        }
        if let Some(c) = self.test_counts.get(&m.id) {
            text.push_str(&format!(", tests: {}", c.text()));
        }
        if !m.failed_tests.is_empty() {
            text.push_str(&format!(", failed: {}", m.failed_tests.join(", ")));
        }
        // A stage that never started: why, on the line itself.
        if let (StageStatus::Failed, None, Some(why)) = (&m.status, m.exit_code, m.tail.first())
            && why.starts_with("could not start")
        {
            text.push_str(&format!(": {why}"));
        }
        // Where to read why it failed; a success needs no log.
        if let (true, Some(log)) = (ran && m.status != StageStatus::Succeeded, &m.log_path) {
            text.push_str(&format!(", log {log}"));
        }
        match (&self.multi, self.bars.remove(&m.id)) {
            (Some(_), Some(bar)) => {
                let mark = match m.status {
                    StageStatus::Succeeded => "✔",
                    StageStatus::Cached { .. } => "↺",
                    StageStatus::Skipped { .. } | StageStatus::Cancelled => "-",
                    _ => "✘",
                };
                bar.set_style(style(&format!("{mark} {{prefix:12}} {{msg}}")));
                bar.finish_with_message(text);
            }
            (Some(_), None) => {
                // Cached and skipped stages never start: show them as finished lines.
                let bar = self.add_bar();
                bar.set_style(style("  {prefix:12} {msg}"));
                bar.set_prefix(m.id.clone());
                bar.finish_with_message(text);
            }
            (None, _) => {
                let at = if ran { m.start + m.wall } else { self.now };
                self.now = self.now.max(at);
                self.line(&format!("[{:>7}] {}: {text}", secs(at), m.id))
            }
        }
    }

    /// A new line above the run's total, or below everything once the run finished (the
    /// naive sequence of `--against-naive` runs after ours).
    fn add_bar(&self) -> ProgressBar {
        let multi = self.multi.as_ref().expect("live mode has a MultiProgress");
        match &self.total_bar {
            Some(total) => multi.insert_before(total, ProgressBar::new_spinner()),
            None => multi.add(ProgressBar::new_spinner()),
        }
    }

    fn run_finished(&mut self, outcome: RunOutcome, total: Duration) {
        // A next run on this reporter (the naive sequence) counts from its own start.
        self.now = Duration::ZERO;
        let total = self.command_start.take().map_or(total, |s| total.max(s.elapsed()));
        let t = &self.targets;
        let verdict = |limit: Duration| if total < limit { "met" } else { "missed" };
        // The record's verdict, from the same total and stages.
        let v = t.verdict(total, &std::mem::take(&mut self.finished_stages));
        let judged = match self.gate {
            Some(gate) => {
                let check = v.check(gate);
                match v.missed_stages(gate) {
                    why if check.met || why.is_empty() => {
                        format!(
                            "{}: {}",
                            check.describe(),
                            if check.met { "met" } else { "missed" }
                        )
                    }
                    why => format!("{}: missed: {why}", check.describe()),
                }
            }
            None => format!(
                "no --gate; required {}: {}, stretch {}: {}",
                secs(t.required),
                verdict(t.required),
                secs(t.stretch),
                verdict(t.stretch)
            ),
        };
        let mut text = format!("run {} in {} ({judged})", outcome_text(outcome), secs(total));
        // The run's tests over all its stages; the next run (the naive sequence)
        // counts its own.
        let counts = std::mem::take(&mut self.test_counts);
        if !counts.is_empty() {
            let all = counts.values().fold(TestCounts::default(), |mut all, c| {
                all.passed += c.passed;
                all.failed += c.failed;
                all.skipped += c.skipped;
                all
            });
            text.push_str(&format!("; tests: {}", all.text()));
        }
        match self.total_bar.take() {
            Some(bar) => {
                bar.set_style(style("{prefix:.bold:12} {msg}"));
                bar.finish_with_message(text);
            }
            None if self.multi.is_some() => {
                let bar = self.add_bar();
                bar.set_style(style("{prefix:.bold:12} {msg}"));
                bar.set_prefix("run");
                bar.finish_with_message(text);
            }
            None => self.line(&text),
        }
    }

    /// A line of its own (work after the run, such as `--explore`): printed above the
    /// bars in live mode so it does not tear them.
    pub fn note(&mut self, text: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => self.line(text),
        }
    }

    /// Stops every bar still drawing (a run that ended without `RunFinished`).
    pub fn finish(&mut self) {
        for (_, bar) in std::mem::take(&mut self.bars) {
            bar.abandon();
        }
        if let Some(bar) = self.total_bar.take() {
            bar.abandon();
        }
        let _ = self.out.flush();
    }

    fn line(&mut self, text: &str) {
        // A closed pipe must not kill the run; progress is only a view.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("the progress templates are valid")
}
