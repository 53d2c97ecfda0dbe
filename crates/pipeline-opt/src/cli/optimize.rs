//! `cargo xtask optimize` and `cargo xtask check`: flags to
//! [`crate::OptimizeOptions`] (the library draws the live view of the run), and
//! the exit code the library decided.

use crate::optimize::OptimizeOutcome;
use crate::report::progress::ProgressMode;
use crate::targets::Gate;
use crate::{OptimizeOptions, run_fast_validation, run_optimized_pipeline};
use anyhow::Result;

use super::utf8;

impl super::flags::Optimize {
    pub(crate) fn run(self) -> Result<i32> {
        crate::process::install_signal_handlers_for_command();
        let gate = self.gate.as_deref().map(str::parse::<Gate>).transpose()?;
        let shards = match self.shards {
            None if self.shards_dir.is_some() => {
                anyhow::bail!("--shards-dir needs --shards N: add --shards 2 (or more)")
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
            shards,
            ..cli_defaults()
        };
        let outcome = run_optimized_pipeline(&options, &mut |_| {})?;
        if self.explain {
            print_explanations(&outcome.record);
        }
        for note in &outcome.record.notes {
            if note.starts_with(crate::optimize::VERIFY_CACHE_NOTE) {
                eprintln!("error: {note}");
            }
        }
        Ok(finish(&outcome))
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
        Ok(finish(&outcome))
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
        let options =
            OptimizeOptions { manifest_path: utf8(self.manifest_path.as_ref())?, ..cli_defaults() };
        let outcome = crate::optimize::merge_shards(&dirs, &options)?;
        if let Some(sh) = &outcome.record.shards {
            let balance = sh.balance.map(|b| format!("{b:.2}")).unwrap_or_else(|| "-".into());
            eprintln!("{} shards, balance (slowest / mean) {balance}", sh.shards.len());
        }
        for note in &outcome.record.notes {
            if note.contains("ran on no shard") || note.contains("ran on more than one shard") {
                eprintln!("error: {note}");
            }
        }
        Ok(finish(&outcome))
    }
}

impl super::flags::Check {
    pub(crate) fn run(self) -> Result<i32> {
        crate::process::install_signal_handlers_for_command();
        let options = OptimizeOptions {
            manifest_path: utf8(self.manifest_path.as_ref())?,
            cargo: cargo_args!(self),
            report: utf8(self.report.as_ref())?,
            json: utf8(self.json.as_ref())?,
            ..cli_defaults()
        };
        let outcome = run_fast_validation(&options, &mut |_| {})?;
        Ok(finish(&outcome))
    }
}

/// The xtask owns its process: it handles Ctrl-C itself, becomes a subreaper, times
/// crates through its own binary as RUSTC_WRAPPER, and shows progress on stdout (live
/// bars on a terminal, plain lines otherwise).
fn cli_defaults() -> OptimizeOptions {
    OptimizeOptions {
        progress: Some(ProgressMode::detect()),
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

fn finish(outcome: &OptimizeOutcome) -> i32 {
    // Workflow commands are read from stdout, and only GitHub Actions reads them.
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        out!("{}", outcome.reports.annotations);
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
    if crate::process::received_signal().is_some() {
        // The signal came while the reports were written: the record stands as it
        // was, but the command was interrupted.
        return crate::exit::INTERRUPTED;
    }
    outcome.exit_code
}
