//! `cargo xtask bench-compare REF`: parses the flags into library options, prints the
//! progress and the table, writes the requested markdown/JSON and returns the gate's
//! exit code. The comparison itself lives in `crate::bench`.

use crate::bench::{self, BenchCompareOptions, output};
use anyhow::{Context, Result};

use super::{flags, utf8};

impl flags::BenchCompare {
    pub(crate) fn run(self) -> Result<i32> {
        let defaults = BenchCompareOptions::default();
        let options = BenchCompareOptions {
            manifest_path: utf8(self.manifest_path.as_ref())?,
            git_ref: self.git_ref,
            threshold: match &self.threshold {
                Some(t) => bench::parse_threshold(t)?,
                None => defaults.threshold,
            },
            filter: self.filter,
            rounds: self.rounds.unwrap_or(defaults.rounds),
            warm_up: match &self.warm_up {
                Some(d) => bench::parse_duration("--warm-up", d)?,
                None => defaults.warm_up,
            },
            measurement: match &self.measurement_time {
                Some(d) => bench::parse_duration("--measurement-time", d)?,
                None => defaults.measurement,
            },
            save_baseline: self.save_baseline,
            baseline: self.baseline,
            handle_signals: true,
            ..defaults
        };
        let comparison = match bench::bench_compare(&options, &mut |line| eprintln!("  {line}")) {
            Ok(c) => c,
            // Ctrl-C is not an error of the input: 130, like `optimize`.
            Err(e @ bench::BenchCompareError::Interrupted { .. }) => {
                eprintln!("bench-compare: {e}");
                return Ok(e.exit_code());
            }
            Err(e) => return Err(e.into()),
        };
        out!("{}", output::render_terminal(&comparison));
        let markdown = output::render_markdown(&comparison);
        if let Some(path) = &self.markdown {
            std::fs::write(path, &markdown)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.json {
            std::fs::write(path, output::render_json(&comparison))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        // In GitHub Actions the table also lands on the run's summary page.
        if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&summary)
                .context("appending to $GITHUB_STEP_SUMMARY")?;
            f.write_all(markdown.as_bytes())?;
        }
        Ok(comparison.exit_code())
    }
}
