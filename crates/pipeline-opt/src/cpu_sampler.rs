//! The machine's CPU utilisation, read from `/proc/stat` while a run goes on, for the
//! record's `cpu_samples` and the timeline. Apart from the orchestrator, which only
//! calls it, so the parsing is tested on its own.

use std::time::Duration;

use crate::record::CpuSample;

/// How often the orchestrator samples CPU utilisation: fine enough to see a link step
/// or a serial test binary, coarse enough to cost nothing (one read of `/proc/stat`).
pub const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Reads `/proc/stat` and turns the change of its first (all-cores) line between two
/// reads into a [`CpuSample`].
#[derive(Debug, Clone)]
pub struct CpuSampler {
    last: (u64, u64),
}

impl CpuSampler {
    /// `None` where `/proc/stat` cannot be read (not Linux): the record then has no
    /// samples and the timeline says so.
    pub fn new() -> Option<CpuSampler> {
        Some(CpuSampler { last: read_proc_stat()? })
    }

    /// The utilisation since the previous call (or since [`CpuSampler::new`]).
    pub fn sample(&mut self, at: Duration) -> Option<CpuSample> {
        let now = read_proc_stat()?;
        let (busy, total) = (now.0.saturating_sub(self.last.0), now.1.saturating_sub(self.last.1));
        self.last = now;
        (total > 0).then(|| CpuSample { at, busy: (busy as f64 / total as f64).clamp(0.0, 1.0) })
    }
}

/// (busy, total) jiffies of all cores: `cpu user nice system idle iowait irq softirq
/// steal ...`; idle and iowait are the idle ones. Guest time is already in user.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_and_total() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        // busy = user + nice + system + irq + softirq + steal; idle + iowait are not.
        assert_eq!(parse_proc_stat(text), Some((160, 1000)));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }
}
