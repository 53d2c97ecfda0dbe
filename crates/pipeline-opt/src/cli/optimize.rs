//! `cargo xtask optimize` and `cargo xtask check`: flags to
//! [`crate::OptimizeOptions`] (the library draws the live view of the run), and
//! the exit code the library decided.

use crate::optimize::OptimizeOutcome;
use crate::record::{Event, MESSAGE_FORMAT_VERSION};
use crate::report::progress::ProgressMode;
use crate::targets::Gate;
use crate::{OptimizeOptions, run_fast_validation, run_optimized_pipeline};
use anyhow::Result;

use super::utf8;
use super::values::{ColorChoice, MessageFormat};

/// How a run is shown, from `-v`, `-q`, `--color` and `--message-format`.
#[derive(Debug, Clone, Copy)]
struct Output {
    /// Every stage's output lines on stderr, `[stage] line`.
    verbose: bool,
    /// Nothing but errors (and the exit code): no live view, no report paths.
    quiet: bool,
    /// The run's events as JSON lines on stdout, and nothing else there.
    json: bool,
    progress: Option<ProgressMode>,
}

impl Output {
    /// `None` (after a usage error on stderr) for `-v` with `-q`, which xflags cannot
    /// declare as exclusive.
    fn new(
        verbose: bool,
        quiet: bool,
        color: Option<ColorChoice>,
        format: Option<MessageFormat>,
    ) -> Option<Output> {
        if verbose && quiet {
            eprintln!("error: -v and -q contradict each other; pass one of them");
            return None;
        }
        let json = format == Some(MessageFormat::Json);
        let progress = (!quiet && !json).then(|| progress_mode(color));
        Some(Output { verbose: verbose && !json, quiet, json, progress })
    }

    /// What a command without -v, -q, --color or --message-format shows.
    fn plain() -> Output {
        Output { verbose: false, quiet: false, json: false, progress: Some(progress_mode(None)) }
    }

    /// Shows one event as asked: a JSON line, or the stage's output line under `-v`
    /// (the live view, if any, draws the rest itself).
    fn event(&self, ev: &Event) {
        if self.json {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                version: u32,
                #[serde(flatten)]
                event: &'a Event,
            }
            if let Ok(line) =
                serde_json::to_string(&Line { version: MESSAGE_FORMAT_VERSION, event: ev })
            {
                outln!("{line}");
            }
        } else if self.verbose
            && let Event::StageOutput { id, line } = ev
        {
            eprintln!("[{id}] {line}");
        }
    }
}

/// The live view or plain lines: `--color always` draws the live view on a terminal
/// even under `CI` or `NO_COLOR`, `never` prints plain lines; without the flag (or with
/// `auto`), `CARGO_TERM_COLOR` decides as it does for cargo, then `NO_COLOR` and `CI`.
fn progress_mode(color: Option<ColorChoice>) -> ProgressMode {
    use std::io::IsTerminal as _;
    let color = match color {
        Some(ColorChoice::Auto) | None => match std::env::var("CARGO_TERM_COLOR").as_deref() {
            Ok("always") => ColorChoice::Always,
            Ok("never") => ColorChoice::Never,
            _ => ColorChoice::Auto,
        },
        Some(c) => c,
    };
    match color {
        ColorChoice::Always if std::io::stdout().is_terminal() => ProgressMode::Live,
        ColorChoice::Always | ColorChoice::Never => ProgressMode::Plain,
        ColorChoice::Auto => ProgressMode::detect(),
    }
}

impl super::flags::Optimize {
    pub(crate) fn run(self) -> Result<i32> {
        crate::process::install_signal_handlers_for_command();
        let gate = self.gate.as_deref().map(str::parse::<Gate>).transpose()?;
        let Some(output) = Output::new(self.verbose, self.quiet, self.color, self.message_format)
        else {
            return Ok(crate::exit::USAGE);
        };
        let shards = match self.shards {
            None if self.shards_dir.is_some() => {
                anyhow::bail!("--shards-dir needs --shards N: add --shards 2 (or more)")
            }
            None if self.local => {
                anyhow::bail!("--local needs --shards N: add --shards 2 (or more)")
            }
            None => None,
            Some(n) => Some(crate::scale::Shards {
                count: std::num::NonZeroUsize::new(n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--shards 0 splits the tests over no machine: use --shards 1 or more"
                    )
                })?,
                dir: utf8(self.shards_dir.as_ref())?,
            }),
        };
        let options = OptimizeOptions {
            manifest_path: utf8(self.manifest_path.as_ref())?,
            cargo: cargo_args!(self),
            strict: self.strict,
            keep_going: self.keep_going,
            jobs: self.jobs,
            gate,
            report: utf8(self.report.as_ref())?,
            json: utf8(self.json.as_ref())?,
            prometheus: utf8(self.prometheus.as_ref())?,
            against_naive: self.against_naive,
            retries: 2,
            since: self.since,
            explore: self.explore,
            no_cache: self.no_cache,
            verify_cache: self.verify_cache,
            progress: output.progress,
            shards,
            compile_cache: self.compile_cache,
            ..cli_defaults()
        };
        let outcome = if self.local {
            crate::optimize::run_local_shards(&options, &mut |ev| output.event(ev))?
        } else {
            run_optimized_pipeline(&options, &mut |ev| output.event(ev))?
        };
        if self.local
            && let Some(sh) = &outcome.record.shards
        {
            print_shards_summary(sh);
        }
        if self.explain {
            print_explanations(&outcome.record);
        }
        for note in &outcome.record.notes {
            if note.starts_with(crate::optimize::VERIFY_CACHE_NOTE) {
                eprintln!("error: {note}");
            }
        }
        Ok(finish(&outcome, output))
    }
}

impl super::flags::Run {
    /// `shard run`: the shard's stage as the orchestrator runs any stage, with the rustc
    /// shim on, so the record's compile units show that nothing compiled.
    pub(crate) fn run(self) -> Result<i32> {
        crate::process::install_signal_handlers_for_command();
        let shard = crate::scale::ShardRunOptions {
            plan: utf8(Some(&self.plan))?.expect("given"),
            shard: self.shard,
            out: utf8(self.out.as_ref())?,
        };
        let options =
            OptimizeOptions { manifest_path: utf8(self.manifest_path.as_ref())?, ..cli_defaults() };
        let outcome = crate::optimize::run_shard(&shard, &options, &mut |_| {})?;
        Ok(finish(&outcome, Output::plain()))
    }
}

impl super::flags::Merge {
    pub(crate) fn run(self) -> Result<i32> {
        let dirs = self
            .dirs
            .iter()
            .map(|d| utf8(Some(d)).map(|d| d.expect("given")))
            .collect::<Result<Vec<_>>>()?;
        if dirs.is_empty() {
            anyhow::bail!(
                "shard merge needs directories: pass the artifact directory of `optimize --shards` and each shard's"
            );
        }
        let options = OptimizeOptions {
            manifest_path: utf8(self.manifest_path.as_ref())?,
            prometheus: utf8(self.prometheus.as_ref())?,
            ..cli_defaults()
        };
        let outcome = crate::optimize::merge_shards(&dirs, &options)?;
        if let Some(sh) = &outcome.record.shards {
            print_shards_summary(sh);
        }
        for note in &outcome.record.notes {
            if note.contains("ran on no shard") || note.contains("ran on more than one shard") {
                eprintln!("error: {note}");
            }
        }
        Ok(finish(&outcome, Output::plain()))
    }
}

/// One line per shard (tests, predicted and measured test time, wall) and the balance.
fn print_shards_summary(sh: &crate::record::ShardsSummary) {
    for s in &sh.shards {
        let predicted =
            s.predicted.map(|p| format!("{:.2}s", p.as_secs_f64())).unwrap_or_else(|| "-".into());
        eprintln!(
            "shard {}: {} tests, predicted {predicted}, test time {:.2}s, wall {:.2}s",
            s.index,
            s.tests,
            s.test_time.as_secs_f64(),
            s.wall.as_secs_f64()
        );
    }
    let balance = sh.balance.map(|b| format!("{b:.2}")).unwrap_or_else(|| "-".into());
    eprintln!("{} shards, balance (slowest / mean) {balance}", sh.shards.len());
}

impl super::flags::Check {
    pub(crate) fn run(self) -> Result<i32> {
        crate::process::install_signal_handlers_for_command();
        let Some(output) = Output::new(self.verbose, self.quiet, self.color, self.message_format)
        else {
            return Ok(crate::exit::USAGE);
        };
        let options = OptimizeOptions {
            manifest_path: utf8(self.manifest_path.as_ref())?,
            cargo: cargo_args!(self),
            report: utf8(self.report.as_ref())?,
            json: utf8(self.json.as_ref())?,
            progress: output.progress,
            ..cli_defaults()
        };
        let outcome = run_fast_validation(&options, &mut |ev| output.event(ev))?;
        Ok(finish(&outcome, output))
    }
}

impl super::flags::Flamegraph {
    pub(crate) fn run(self) -> Result<i32> {
        crate::process::install_signal_handlers_for_command();
        let options = crate::flamegraph::FlameGraphOptions {
            optimize: OptimizeOptions {
                manifest_path: utf8(self.manifest_path.as_ref())?,
                cargo: cargo_args!(self),
                ..cli_defaults()
            },
            test: match self.test {
                Some(test) => format!("{} {test}", self.binary_or_test),
                None => self.binary_or_test,
            },
            frequency: self.frequency.unwrap_or(crate::flamegraph::DEFAULT_FREQUENCY).max(1),
        };
        let drawn = crate::flamegraph::flamegraph(&options, &mut |_| {})?;
        eprintln!("flame graph: {} ({:.2} s of CPU)", drawn.svg, drawn.cpu.as_secs_f64());
        match &drawn.linked_from {
            Some(html) => eprintln!("linked from: {html}"),
            None => eprintln!("no report of an earlier run to link it from: run `optimize` first"),
        }
        Ok(crate::exit::OK)
    }
}

/// The xtask owns its process: it handles Ctrl-C itself, becomes a subreaper, times
/// crates through its own binary as RUSTC_WRAPPER; how it shows the run is [`Output`]'s.
fn cli_defaults() -> OptimizeOptions {
    OptimizeOptions {
        rustc_shim: true,
        handle_signals: true,
        subreaper: true,
        ..OptimizeOptions::default()
    }
}

/// `--explain`: why each stage ran, or which run it was cached from.
fn print_explanations(record: &crate::record::RunRecord) {
    if record.cache.is_empty() {
        eprintln!("explain: the stage cache was not used in this run");
    }
    for (stage, why) in &record.cache {
        eprintln!("explain: {stage}: {why}");
    }
}

fn finish(outcome: &OptimizeOutcome, output: Output) -> i32 {
    let exit_code = exit_code(outcome);
    // Workflow commands are read from stdout, and only GitHub Actions reads them; under
    // `--message-format json` stdout holds JSON lines only.
    if !output.json && std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        out!("{}", outcome.reports.annotations);
    }
    if output.json {
        #[derive(serde::Serialize)]
        struct Reports<'a> {
            version: u32,
            event: &'static str,
            markdown: &'a camino::Utf8Path,
            json: &'a camino::Utf8Path,
            html: &'a camino::Utf8Path,
            junit: Option<&'a camino::Utf8Path>,
            exit_code: i32,
        }
        let r = &outcome.reports;
        let last = Reports {
            version: MESSAGE_FORMAT_VERSION,
            event: "reports",
            markdown: &r.markdown,
            json: &r.json,
            html: &r.html,
            junit: r.junit.as_deref(),
            exit_code,
        };
        if let Ok(line) = serde_json::to_string(&last) {
            outln!("{line}");
        }
    }
    if output.quiet {
        return exit_code;
    }
    let r = &outcome.record;
    if let Some(n) = &r.naive {
        eprintln!(
            "naive sequence: {:.1}s, optimized: {:.1}s, ratio {:.2}",
            n.naive_total.as_secs_f64(),
            n.optimized_total.as_secs_f64(),
            n.ratio
        );
        if let Some(why) = n.not_comparable(r.outcome) {
            eprintln!("  the ratio is not a comparison: {why}");
        }
        for p in &n.only_naive_proves {
            eprintln!("  only the naive sequence proves: {p}");
        }
    }
    if let Some(e) = &r.explore {
        eprintln!("{}", crate::report::explore::render_markdown(e));
    }
    eprintln!("report: {}", outcome.reports.markdown);
    eprintln!("json: {}", outcome.reports.json);
    eprintln!("timeline: {}", outcome.reports.html);
    if let Some(junit) = &outcome.reports.junit {
        eprintln!("junit: {junit}");
    }
    if let Some(gate) = r.verdict.gate.as_ref().filter(|g| !g.met) {
        let stages = r.verdict.missed_stages(gate.gate);
        eprintln!(
            "{} missed: total {:.1}s{}{stages} (exit {})",
            gate.describe(),
            r.total.as_secs_f64(),
            if stages.is_empty() { "" } else { ", " },
            outcome.exit_code
        );
    }
    exit_code
}

fn exit_code(outcome: &OptimizeOutcome) -> i32 {
    if crate::process::received_signal().is_some() {
        // The signal came while the reports were written: the record stands as it
        // was, but the command was interrupted.
        return crate::exit::INTERRUPTED;
    }
    outcome.exit_code
}
