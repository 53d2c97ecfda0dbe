//! Performance targets: the required total (< 60 s), the stretch total (< 45 s) and
//! per-stage targets, all overridable in config and by flags, and the verdict of a run
//! against them. `--gate` turns a missed target into exit code 101. The types are the
//! record's (a saved run keeps its targets and verdict); judging a run is done here.

use std::time::Duration;

use crate::config::TargetsConfig;
pub use crate::record::{Gate, GateCheck, PerformanceTargets, StageCheck, Verdict};
use crate::record::{StageMetrics, StageStatus};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unknown --gate `{value}`: use `required`, `stretch` or a duration such as `50s`")]
pub struct GateParseError {
    pub value: String,
}

impl std::str::FromStr for Gate {
    type Err = GateParseError;
    fn from_str(s: &str) -> Result<Gate, GateParseError> {
        match s {
            "required" => Ok(Gate::Required),
            "stretch" => Ok(Gate::Stretch),
            _ => humantime::parse_duration(s)
                .map(Gate::Custom)
                .map_err(|_| GateParseError { value: s.to_string() }),
        }
    }
}
impl PerformanceTargets {
    /// Defaults overridden by `[workspace.metadata.pipeline-opt.targets]`.
    pub fn from_config(config: &TargetsConfig) -> PerformanceTargets {
        let mut t = PerformanceTargets::default();
        if let Some(r) = config.required {
            t.required = r;
        }
        if let Some(s) = config.stretch {
            t.stretch = s;
        }
        t.stages.extend(config.stages.iter().map(|(k, v)| (k.clone(), *v)));
        t
    }

    /// How a run's total and stages measure up.
    pub fn verdict(&self, total: Duration, stages: &[StageMetrics]) -> Verdict {
        let stage_checks = stages
            .iter()
            .filter_map(|s| {
                let target = *self.stages.get(&s.id)?;
                // A stage served from the cache or never started has no time to judge.
                let ran = matches!(
                    s.status,
                    StageStatus::Succeeded | StageStatus::Failed | StageStatus::TimedOut
                );
                ran.then(|| StageCheck {
                    id: s.id.clone(),
                    target,
                    actual: s.wall,
                    met: s.wall < target,
                })
            })
            .collect();
        Verdict {
            total,
            required: self.required,
            stretch: self.stretch,
            required_met: total < self.required,
            stretch_met: total < self.stretch,
            stages: stage_checks,
            gate: None,
        }
    }
}
