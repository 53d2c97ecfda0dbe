//! `[workspace.metadata.pipeline-opt]`: performance targets, stages to disable or add,
//! services and cache settings. No config at all means defaults; an unknown key or a bad
//! value is an error that names the key and the fix.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Deserializer, Serialize};

/// The table path users write, for error messages.
pub const TABLE: &str = "workspace.metadata.pipeline-opt";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub targets: TargetsConfig,
    /// Built-in stages to leave out, by id (`doctest`, `bench-build`, ...).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Optional built-in stages to add: `clippy`, `fmt`, `doc`.
    #[serde(default)]
    pub enable: Vec<String>,
    /// How bench targets are proven: `check` (type-check in the bench profile, the
    /// default) or `build` (a full `cargo bench --no-run`, as a naive CI does).
    #[serde(default)]
    pub bench_proof: BenchProof,
    /// Timeout for every stage that does not set its own.
    #[serde(default, deserialize_with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub stage_timeout: Option<Duration>,
    /// Extra stages, by name.
    #[serde(default)]
    pub stages: BTreeMap<String, CustomStage>,
    /// Services that tests need, by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetsConfig {
    /// The required total (default 60 s).
    #[serde(default, deserialize_with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub required: Option<Duration>,
    /// The stretch total (default 45 s).
    #[serde(default, deserialize_with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub stretch: Option<Duration>,
    /// Per-stage targets, by stage id.
    #[serde(default, deserialize_with = "duration_map")]
    pub stages: BTreeMap<String, Duration>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BenchProof {
    #[default]
    Check,
    Build,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CustomStage {
    /// Program and arguments; never passed through a shell.
    pub command: Vec<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default, deserialize_with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Whether the command takes the workspace's build-directory lock (true for
    /// `cargo` commands unless said otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_build_dir: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    /// How many instances the pool keeps.
    #[serde(default = "one")]
    pub size: usize,
    /// For `kind = "command"`: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// SQL applied once to the PostgreSQL template database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_sql: Option<Utf8PathBuf>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    Postgres,
    Redis,
    Command,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// Where the state directory lives (default `<target-dir>/pipeline-opt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<Utf8PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid `{key}` in Cargo.toml: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown stage `{stage}` in `{key}` in Cargo.toml; known stages: {known}")]
    UnknownStage { key: String, stage: String, known: String },
    #[error(
        "stages depend on each other in a cycle: {cycle}; remove one `depends-on` entry in [{TABLE}.stages]"
    )]
    Cycle { cycle: String },
}

impl Config {
    /// Reads the config from `[workspace.metadata]` as cargo_metadata reports it.
    pub fn from_workspace_metadata(metadata: &serde_json::Value) -> Result<Config, ConfigError> {
        let Some(table) = metadata.get("pipeline-opt") else {
            return Ok(Config::default());
        };
        let config: Config = serde_path_to_error::deserialize(table).map_err(|err| {
            let path = err.path().to_string();
            let key = if path == "." { TABLE.to_string() } else { format!("{TABLE}.{path}") };
            let message = err.into_inner().to_string();
            ConfigError::Invalid { key, message }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, stage) in &self.stages {
            if stage.command.is_empty() || stage.command[0].trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("{TABLE}.stages.{name}.command"),
                    message: "the command is empty; give the program and its arguments as a list, e.g. [\"cargo\", \"doc\"]".into(),
                });
            }
            if crate::plan::BUILTIN_STAGES.contains(&name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: format!("{TABLE}.stages.{name}"),
                    message: format!(
                        "`{name}` is a built-in stage; give the custom stage another name"
                    ),
                });
            }
        }
        for (name, service) in &self.services {
            if service.size == 0 {
                return Err(ConfigError::Invalid {
                    key: format!("{TABLE}.services.{name}.size"),
                    message: "the size must be at least 1".into(),
                });
            }
            if service.kind == ServiceKind::Command && service.command.is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("{TABLE}.services.{name}.command"),
                    message: "a service of kind \"command\" needs a command list".into(),
                });
            }
        }
        Ok(())
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like \"45s\" or \"2m 30s\""))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

fn duration_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            parse_duration(&v)
                .map(|d| (k.clone(), d))
                .map_err(|e| serde::de::Error::custom(format!("stage `{k}`: {e}")))
        })
        .collect()
}
