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
            gate: None,
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
    /// The `--gate` the run was held to, if any: only then does a missed target fail
    /// the run (exit 101) or annotate it as an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateCheck>,
}

/// A run against its `--gate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    pub gate: Gate,
    /// The total the gate allows.
    #[serde(with = "crate::profile::secs")]
    pub limit: Duration,
    /// The total under the limit and, for `required` and `stretch`, every per-stage
    /// target met.
    pub met: bool,
}

impl GateCheck {
    /// `gate`, `required gate` or `stretch gate`: the annotation's title.
    pub fn gate_name(&self) -> &'static str {
        match self.gate {
            Gate::Required => "required gate",
            Gate::Stretch => "stretch gate",
            Gate::Custom(_) => "gate",
        }
    }

    /// `gate 1ms` (as given) or `gate required (60.0 s)`, as the result lines name it.
    pub fn describe(&self) -> String {
        let limit = format!("{:.1} s", self.limit.as_secs_f64());
        match self.gate {
            Gate::Required => format!("gate required ({limit})"),
            Gate::Stretch => format!("gate stretch ({limit})"),
            Gate::Custom(l) => format!("gate {}", humantime::format_duration(l)),
        }
    }
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

    /// The verdict of `gate`, to keep in the record.
    pub fn check(&self, gate: Gate) -> GateCheck {
        let limit = match gate {
            Gate::Required => self.required,
            Gate::Stretch => self.stretch,
            Gate::Custom(limit) => limit,
        };
        GateCheck { gate, limit, met: self.passes(gate) }
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
