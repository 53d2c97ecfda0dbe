//! Performance targets: the required total (< 60 s), the stretch total (< 45 s) and
//! per-stage targets, all overridable in config and by flags, and the verdict of a run
//! against them. `--gate` turns a missed target into exit code 101.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::TargetsConfig;
use crate::profile::{StageMetrics, StageStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceTargets {
    #[serde(with = "crate::profile::secs")]
    pub required: Duration,
    #[serde(with = "crate::profile::secs")]
    pub stretch: Duration,
    /// Per-stage targets, by stage id.
    #[serde(with = "secs_map")]
    pub stages: BTreeMap<String, Duration>,
}

impl Default for PerformanceTargets {
    fn default() -> Self {
        PerformanceTargets {
            required: Self::required().required,
            stretch: Self::stretch().stretch,
            stages: BTreeMap::new(),
        }
    }
}

/// Which total `--gate` holds a run to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    Required,
    Stretch,
    /// A total given on the command line.
    #[serde(with = "crate::profile::secs")]
    Custom(Duration),
}

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
    /// The total a CI pipeline must stay under: 60 s.
    pub fn required() -> PerformanceTargets {
        PerformanceTargets {
            required: Duration::from_secs(60),
            stretch: Duration::from_secs(45),
            stages: BTreeMap::new(),
        }
    }

    /// The total to aim for: 45 s (the required total stays 60 s).
    pub fn stretch() -> PerformanceTargets {
        Self::required()
    }

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(with = "crate::profile::secs")]
    pub total: Duration,
    #[serde(with = "crate::profile::secs")]
    pub required: Duration,
    #[serde(with = "crate::profile::secs")]
    pub stretch: Duration,
    pub required_met: bool,
    pub stretch_met: bool,
    pub stages: Vec<StageCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCheck {
    pub id: String,
    #[serde(with = "crate::profile::secs")]
    pub target: Duration,
    #[serde(with = "crate::profile::secs")]
    pub actual: Duration,
    pub met: bool,
}

impl Verdict {
    /// Whether the run passes `gate`: the total under the gate's limit and, for the
    /// configured gates, every per-stage target met.
    pub fn passes(&self, gate: Gate) -> bool {
        let stages_ok = self.stages.iter().all(|s| s.met);
        match gate {
            Gate::Required => self.required_met && stages_ok,
            Gate::Stretch => self.stretch_met && stages_ok,
            Gate::Custom(limit) => self.total < limit,
        }
    }
}

mod secs_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.as_secs_f64())))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                Duration::try_from_secs_f64(v).map(|d| (k, d)).map_err(serde::de::Error::custom)
            })
            .collect()
    }
}
