//! The `--explore` section of the reports: what each profile-setting variant measured,
//! as kept in the run record, and its markdown rendering against the baseline.

use std::fmt::Write as _;
use std::time::Duration;

pub use crate::record::{Exploration, ExploredVariant};
use crate::report::secs;

impl Exploration {
    /// The variant that saved the most wall time against the baseline, with the saving;
    /// `None` when no variant beat it.
    pub fn best_saving(&self) -> Option<(&ExploredVariant, Duration)> {
        self.best_by(|v| v.wall)
    }

    /// The same for CPU time, the steadier measure on a loaded machine.
    pub fn best_cpu_saving(&self) -> Option<(&ExploredVariant, Duration)> {
        self.best_by(|v| v.cpu)
    }

    fn best_by(
        &self,
        time: impl Fn(&ExploredVariant) -> Option<Duration>,
    ) -> Option<(&ExploredVariant, Duration)> {
        let base = time(self.variants.first()?)?;
        self.variants
            .iter()
            .skip(1)
            .filter_map(|v| Some((v, base.checked_sub(time(v)?)?)))
            .filter(|(_, saved)| !saved.is_zero())
            .max_by_key(|(_, saved)| *saved)
    }
}

/// `+1.2 s (+15%)`: what `value` saves against `base` (negative: it costs more).
fn saving(value: Option<Duration>, base: Option<Duration>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if !b.is_zero() => {
            let saved = b.as_secs_f64() - v.as_secs_f64();
            format!("{saved:+.1} s ({:+.0}%)", 100.0 * saved / b.as_secs_f64())
        }
        _ => "-".into(),
    }
}

fn opt(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "-".into())
}

/// A markdown section: each variant's best wall and CPU time and its savings against the
/// baseline (the first variant).
pub fn render_markdown(e: &Exploration) -> String {
    let mut o = String::new();
    writeln!(o, "## Explored settings\n").unwrap();
    writeln!(
        o,
        "`{}` from an empty target directory, once per variant and round ({} round(s), \
         interleaved); best wall time and least CPU time of the rounds:\n",
        e.command, e.rounds
    )
    .unwrap();
    writeln!(o, "| variant | wall | saved (wall) | CPU | saved (CPU) |").unwrap();
    writeln!(o, "| --- | ---: | ---: | ---: | ---: |").unwrap();
    let (base_wall, base_cpu) = e.variants.first().map(|b| (b.wall, b.cpu)).unwrap_or((None, None));
    for (i, v) in e.variants.iter().enumerate() {
        if let (Some(err), 0) = (&v.error, v.rounds_ok) {
            writeln!(o, "| {} | failed | {} | | |", v.name, err.replace('|', "\\|")).unwrap();
            continue;
        }
        let (sw, sc) = if i == 0 {
            ("".to_string(), "".to_string())
        } else {
            (saving(v.wall, base_wall), saving(v.cpu, base_cpu))
        };
        writeln!(o, "| {} | {} | {sw} | {} | {sc} |", v.name, opt(v.wall), opt(v.cpu)).unwrap();
    }
    let set_with = |v: &ExploredVariant| {
        v.env.iter().map(|(k, val)| format!("`{k}={val}`")).collect::<Vec<_>>().join(" ")
    };
    o.push('\n');
    for (what, best) in [("wall-time", e.best_saving()), ("CPU-time", e.best_cpu_saving())] {
        match best {
            Some((v, saved)) => writeln!(
                o,
                "- The largest measured {what} saving: `{}` ({}), set with {}.",
                v.name,
                secs(saved),
                set_with(v)
            )
            .unwrap(),
            None => writeln!(o, "- No variant saved {what} against the baseline.").unwrap(),
        }
    }
    writeln!(
        o,
        "\nCold builds on a shared machine are noisy, wall time most: trust the CPU column \
         more, and rerun (more rounds) before acting on a difference of a few percent."
    )
    .unwrap();
    o
}
