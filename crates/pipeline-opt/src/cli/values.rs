//! The closed sets of values the command line takes (`plan --format`, the `pool` and
//! `cache` actions, `ci-workflow --services`), parsed by xflags through `FromStr`, so a value outside the set is a
//! usage error (exit 2) that names the values there are.

use std::str::FromStr;

/// `plan --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for PlanFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown --format `{s}`: use `text` or `json`")),
        }
    }
}

/// `pool ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolAction {
    Up,
    Status,
    Down,
    Clean,
}

impl FromStr for PoolAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "up" => Ok(Self::Up),
            "status" => Ok(Self::Status),
            "down" => Ok(Self::Down),
            "clean" => Ok(Self::Clean),
            _ => Err(format!("unknown pool action `{s}`: use `up`, `status`, `down` or `clean`")),
        }
    }
}

/// `cache ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAction {
    Status,
    Clean,
}

impl FromStr for CacheAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "status" => Ok(Self::Status),
            "clean" => Ok(Self::Clean),
            _ => Err(format!("unknown cache action `{s}`: use `status` or `clean`")),
        }
    }
}

/// `ci-workflow --services`: which services the workflow installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Services {
    /// PostgreSQL and Redis as far as the workspace's config declares them.
    #[default]
    Auto,
    All,
    None,
}

impl FromStr for Services {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown --services `{s}`: use `auto`, `all` or `none`")),
        }
    }
}

/// `--color`: whether the tool's own terminal output may use colour and redraw (cargo's
/// values). Without the flag, `CARGO_TERM_COLOR` decides as it does for cargo, then
/// `NO_COLOR`, then whether stdout is a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl FromStr for ColorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(format!("unknown --color `{s}`: use `auto`, `always` or `never`")),
        }
    }
}

/// `--message-format`: the run as people read it, or its events as JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for MessageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown --message-format `{s}`: use `human` or `json`")),
        }
    }
}

/// `ci-workflow --shards`: a number of shard jobs, or `auto` (chosen from the history's
/// test durations and the measured per-job overhead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    Auto,
    Count(usize),
}

impl FromStr for ShardCount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            _ => match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Count(n)),
                _ => Err(format!(
                    "unknown --shards `{s}`: use a number of jobs (1 or more) or `auto`"
                )),
            },
        }
    }
}
