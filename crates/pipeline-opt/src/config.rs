//! `[workspace.metadata.pipeline-opt]` (or a root package's `[package.metadata.pipeline-opt]`,
//! or `pipeline-opt.toml`): performance targets, stages to disable or add, services and
//! cache settings. No config at all means defaults; an unknown key or a bad value is an
//! error that names the key and the fix; a config in two places is an error naming both.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Deserializer, Serialize};

/// The table path users write, for error messages.
pub const TABLE: &str = "workspace.metadata.pipeline-opt";
/// The root package's table, where single-package projects keep their settings.
pub const PACKAGE_TABLE: &str = "package.metadata.pipeline-opt";
/// The config file at the workspace root, for projects that keep it out of Cargo.toml.
pub const CONFIG_FILE: &str = "pipeline-opt.toml";

/// Where a config was read from; its keys are named after it in error messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConfigPlace {
    /// `[workspace.metadata.pipeline-opt]` in the root `Cargo.toml`.
    #[default]
    WorkspaceMetadata,
    /// `[package.metadata.pipeline-opt]` of the root package.
    PackageMetadata,
    /// `pipeline-opt.toml` at the workspace root, its keys at the top level.
    File,
}

impl ConfigPlace {
    /// The full name of `path` (`services.db.size`) as the user wrote it in this place.
    pub fn key(self, path: &str) -> String {
        match (self, path) {
            (ConfigPlace::WorkspaceMetadata, "") => TABLE.to_string(),
            (ConfigPlace::PackageMetadata, "") => PACKAGE_TABLE.to_string(),
            (ConfigPlace::File, "") => "(top level)".to_string(),
            (ConfigPlace::WorkspaceMetadata, p) => format!("{TABLE}.{p}"),
            (ConfigPlace::PackageMetadata, p) => format!("{PACKAGE_TABLE}.{p}"),
            (ConfigPlace::File, p) => p.to_string(),
        }
    }

    /// The file the place is in, relative to the workspace root.
    pub fn file(self) -> &'static str {
        match self {
            ConfigPlace::WorkspaceMetadata | ConfigPlace::PackageMetadata => "Cargo.toml",
            ConfigPlace::File => CONFIG_FILE,
        }
    }

    /// The table `path` (`stages`) as a user finds it: `[workspace.metadata.pipeline-opt.stages]`,
    /// or `[stages] in pipeline-opt.toml`.
    pub fn table(self, path: &str) -> String {
        match (self, path) {
            (ConfigPlace::File, "") => CONFIG_FILE.to_string(),
            (ConfigPlace::File, p) => format!("[{p}] in {CONFIG_FILE}"),
            _ => format!("[{}]", self.key(path)),
        }
    }

    /// An unknown stage named at `path` (`disable`) of this place.
    pub fn unknown_stage(self, path: &str, stage: &str, known: String) -> ConfigError {
        ConfigError::UnknownStage {
            key: self.key(path),
            file: self.file(),
            stage: stage.into(),
            known,
        }
    }

    /// The place as a user finds it: `[workspace.metadata.pipeline-opt] in Cargo.toml`.
    pub fn describe(self) -> String {
        match self {
            ConfigPlace::File => CONFIG_FILE.to_string(),
            _ => format!("[{}] in Cargo.toml", self.key("")),
        }
    }
}

/// Ids of the stages the planner can produce by itself. Here, below the planner,
/// because the config refuses them as custom stage names.
pub const BUILTIN_STAGES: &[&str] = &[
    "fetch",
    "build",
    "check",
    "test",
    // `optimize --shards`: the test stage's place, archiving instead of running.
    "test-archive",
    "custom-tests",
    "doctest",
    "bench-build",
    "clippy",
    "fmt",
    "doc",
    "services",
];

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
    /// How bench targets are proven: `dev` (compiled by the dev build, the default),
    /// `check` (also type-checked in the bench profile) or `build` (a full
    /// `cargo bench --no-run`, as a naive CI does).
    #[serde(default)]
    pub bench_proof: BenchProof,
    /// What runs the unit and integration tests: `nextest` (the default, when
    /// installed: a process per test, retries for flaky ones) or `cargo` (`cargo test`:
    /// each binary's tests as threads of one process, far cheaper for thousands of
    /// tiny tests).
    #[serde(default)]
    pub test_runner: TestRunner,
    /// Incremental compilation for the plan's cargo stages: `auto` (the default) turns
    /// it off when the `CI` environment variable is set and `CARGO_INCREMENTAL` is not,
    /// `off` always, `on` leaves cargo's own default.
    #[serde(default)]
    pub incremental: Incremental,
    /// A compile cache shared between machines and runs: `redis://HOST:PORT` runs every
    /// cargo stage's rustc under sccache with that Redis as its backend, `gha` with the
    /// GitHub Actions cache (in a workflow's job), incremental compilation off
    /// (docs/scale-out.md). `optimize --compile-cache URL` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<String>,
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
    /// Environment variables by stage id, set on that stage's command only: e.g.
    /// `build = { SQLX_OFFLINE = "true" }`, so a build never needs a database that only
    /// the tests get.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    /// Where this config was read from (not a key of its own).
    #[serde(skip)]
    pub place: ConfigPlace,
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
    /// The dev build compiles and links the benches too (`--all-targets`); no
    /// bench-profile stage. Cheapest where dependencies are heavy: no second
    /// dependency graph is compiled or checked.
    #[default]
    Dev,
    /// Also type-check the benches in the bench profile, in a build directory of its own.
    Check,
    /// `cargo bench --no-run`, as a naive CI does.
    Build,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TestRunner {
    /// cargo-nextest when it is installed, `cargo test` otherwise.
    #[default]
    Nextest,
    /// `cargo test`, even where cargo-nextest is installed.
    Cargo,
}

/// Whether the plan's cargo stages compile incrementally. A CI job starts from a cold
/// build directory and usually throws it away, so the incremental data it writes is
/// pure cost there.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Incremental {
    #[default]
    Auto,
    On,
    Off,
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
    /// For `kind = "postgres"`: how many checked databases the pool keeps cloned ahead
    /// beyond the `size` it offers, so that a burst of leases never waits for a clone
    /// (default: `size`; each costs a few MB of tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare: Option<usize>,
    /// For `kind = "command"`: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// SQL applied once to the PostgreSQL template database: a file, or a directory of
    /// migrations applied in the order of their names (`*.sql` but `*.down.sql`, and
    /// `<dir>/up.sql`: sqlx's and diesel's layouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_sql: Option<Utf8PathBuf>,
    /// PostgreSQL: a program and its arguments run once against the template database
    /// after `setup-sql`, from the workspace root, with the service's `env` variables
    /// (and `DATABASE_URL`) naming it: a migration tool such as `sqlx migrate run`.
    /// Placeholders as in `env` may appear in the arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_command: Vec<String>,
    /// PostgreSQL: the files and directories (relative to the workspace root) that
    /// `setup-command` reads. Their contents are part of the prepared template's
    /// fingerprint; without them a template made by a command is never reused across
    /// runs, since nothing would tell that its migrations changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_inputs: Vec<Utf8PathBuf>,
    /// PostgreSQL: make `template1` a copy of the prepared template too, so that
    /// databases the tests create themselves (`mode = "server"`, `#[sqlx::test]`) start
    /// migrated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub template1: bool,
    /// A fixed loopback port (default: a free one). A fixed port that is in use is an
    /// error, never silently replaced; a command service with a fixed port has size 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `kind = "command"`: how the pool knows an instance is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyProbe>,
    /// PostgreSQL: the role lease URLs connect as, a superuser (default `pool`), for
    /// tests that expect a name such as `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// PostgreSQL and Redis: a fixed password (default: a random one per server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PostgreSQL and Redis: `password` (the default) or `trust`, no password at all on
    /// loopback.
    #[serde(default, skip_serializing_if = "Auth::is_password")]
    pub auth: Auth,
    /// PostgreSQL: a database of this name on the server, cloned from the prepared
    /// template once the server starts, for tests that connect by a fixed name. Leases
    /// are still fresh clones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// PostgreSQL: server settings, each passed as `-c key=value` after the pool's own.
    #[serde(
        default,
        deserialize_with = "settings_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub settings: BTreeMap<String, String>,
    /// PostgreSQL: extensions created in the template, so every database has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// PostgreSQL: a directory (relative to the workspace root) where the server also
    /// listens on a Unix socket, for tests that connect with `host=/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_dir: Option<Utf8PathBuf>,
    /// The variables the tests read, by name, as templates of the leased instance:
    /// `DATABASE_URL = "postgres://{user}:{password}@{host}:{port}/{db}"` or `"{url}"`.
    /// Every test process of the test stages gets a lease of its own through them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// PostgreSQL: what `env` points at. `database` (the default): a fresh database per
    /// test process. `server`: the server's maintenance database `postgres` as a
    /// superuser, shared by every test process, for suites that create their own
    /// databases (sqlx's `#[sqlx::test]`).
    #[serde(default, skip_serializing_if = "ServiceMode::is_database")]
    pub mode: ServiceMode,
}

/// What a PostgreSQL service's `env` variables give each test process.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceMode {
    /// A database of its own, cloned from the prepared template.
    #[default]
    Database,
    /// The whole server: a superuser connection to the maintenance database.
    Server,
}

impl ServiceMode {
    fn is_database(&self) -> bool {
        *self == ServiceMode::Database
    }
}

impl ServiceConfig {
    /// A service of `kind` with every other key at its default.
    pub fn new(kind: ServiceKind) -> ServiceConfig {
        ServiceConfig {
            kind,
            size: 1,
            spare: None,
            command: Vec::new(),
            setup_sql: None,
            setup_command: Vec::new(),
            setup_inputs: Vec::new(),
            template1: false,
            port: None,
            ready: None,
            user: None,
            password: None,
            auth: Auth::Password,
            database: None,
            settings: BTreeMap::new(),
            extensions: Vec::new(),
            socket_dir: None,
            env: BTreeMap::new(),
            mode: ServiceMode::Database,
        }
    }
}

/// A part of a service's `env` template: text as written, or a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePart<'a> {
    Text(&'a str),
    Placeholder(Placeholder),
}

/// What a placeholder of an `env` template stands for, filled from the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The lease's whole URL (`postgres://…`, `redis://…`, `127.0.0.1:<port>`).
    Url,
    User,
    Password,
    Host,
    Port,
    /// The database name (PostgreSQL) or number (Redis).
    Db,
}

impl Placeholder {
    const ALL: [(&'static str, Placeholder); 6] = [
        ("url", Placeholder::Url),
        ("user", Placeholder::User),
        ("password", Placeholder::Password),
        ("host", Placeholder::Host),
        ("port", Placeholder::Port),
        ("db", Placeholder::Db),
    ];

    /// The placeholders a lease of `kind` fills.
    pub fn for_kind(kind: ServiceKind) -> &'static [Placeholder] {
        use Placeholder::*;
        match kind {
            ServiceKind::Postgres => &[Url, User, Password, Host, Port, Db],
            ServiceKind::Redis => &[Url, Password, Host, Port, Db],
            ServiceKind::Command => &[Url, Host, Port],
        }
    }

    pub fn name(self) -> &'static str {
        Placeholder::ALL.iter().find(|(_, p)| *p == self).map(|(n, _)| *n).unwrap_or("")
    }
}

/// Splits an `env` template into text and placeholders; `{{` and `}}` stand for braces.
/// The error names what is wrong and the placeholders that `kind` fills.
pub fn parse_template(template: &str, kind: ServiceKind) -> Result<Vec<TemplatePart<'_>>, String> {
    let known = || {
        Placeholder::for_kind(kind)
            .iter()
            .map(|p| format!("{{{}}}", p.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(i) = rest.find(['{', '}']) else {
            parts.push(TemplatePart::Text(rest));
            break;
        };
        if i > 0 {
            parts.push(TemplatePart::Text(&rest[..i]));
        }
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            parts.push(TemplatePart::Text(&tail[..1]));
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!(
                "a `}}` without its `{{`; write `}}}}` for a brace, or use one of {}",
                known()
            ));
        }
        let Some(end) = tail.find('}') else {
            return Err(format!(
                "a `{{` without its `}}`; write `{{{{` for a brace, or use one of {}",
                known()
            ));
        };
        let name = &tail[1..end];
        let placeholder = Placeholder::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p);
        match placeholder {
            Some(p) if Placeholder::for_kind(kind).contains(&p) => {
                parts.push(TemplatePart::Placeholder(p))
            }
            _ => {
                return Err(format!(
                    "unknown placeholder `{{{}}}` for a service of kind \"{}\"; use {}",
                    name.escape_debug(),
                    kind.name(),
                    known()
                ));
            }
        }
        rest = &tail[end + 1..];
    }
    Ok(parts)
}

/// How clients of a PostgreSQL or Redis service authenticate.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// A password: the configured one, or a random one per server.
    #[default]
    Password,
    /// None: anyone who can reach the server's loopback port (or its socket) gets in.
    Trust,
}

impl Auth {
    fn is_password(&self) -> bool {
        *self == Auth::Password
    }
}

/// PostgreSQL settings the pool owns: the server listens on loopback only, on the port
/// and socket directories the pool manages.
const POOL_OWNED_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "the pool listens on 127.0.0.1 only"),
    ("port", "set the service's `port` instead"),
    ("unix_socket_directories", "set the service's `socket-dir` instead"),
];

/// Database names every server already has, or the pool's own template.
const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1", "pool_template"];

/// Whether `name` is 1 to 63 characters of a-z, 0-9 and `extra`, starting with a letter
/// or `_` unless `leading_digit`: a name that needs no quoting wherever it goes.
fn simple_name(name: &str, extra: &str, leading_digit: bool) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c);
    let first_ok = |c: char| c.is_ascii_lowercase() || c == '_' || leading_digit && allowed(c);
    name.len() <= 63 && name.chars().next().is_some_and(first_ok) && name.chars().all(allowed)
}

/// A lower-case SQL identifier (roles, databases).
fn plain_identifier(name: &str) -> bool {
    simple_name(name, "_", false)
}

/// How a command service shows it is ready; exactly one field is set. `{port}` in the
/// service's command and in a probe command is replaced by the instance's port.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadyProbe {
    /// The instance accepts TCP connections on its `{port}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// This command exits with status 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The instance printed a line containing this text (stdout or stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_line: Option<String>,
}

fn one() -> usize {
    1
}

/// Defined with the lease protocol, which slot files carry it in.
pub use pipeline_opt_lease::ServiceKind;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// Where the state directory lives (default `<target-dir>/pipeline-opt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<Utf8PathBuf>,
    /// Most bytes the cache and the extra target directories of the plan may use, e.g.
    /// `"5GiB"`; the oldest entries and directories go first when it is exceeded.
    #[serde(default, deserialize_with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Further environment variables that every stage fingerprint includes (variables
    /// read at run time by tests, for example).
    #[serde(default)]
    pub env: Vec<String>,
    /// Globs (relative to the workspace root) of further files every cacheable stage's
    /// fingerprint includes, e.g. git-ignored test data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Globs (relative to the workspace root) of files no fingerprint includes, for
    /// finer reuse than the conservative default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid `{key}` in {file}: {message}")]
    Invalid { key: String, file: &'static str, message: String },
    #[error("could not read {path}: {message}")]
    Unreadable { path: Utf8PathBuf, message: String },
    #[error(
        "the pipeline-opt config is in two places, {first} and {second}; keep it in one of them (they are not merged)"
    )]
    TwoPlaces { first: String, second: String },
    #[error("unknown stage `{stage}` in `{key}` in {file}; known stages: {known}")]
    UnknownStage { key: String, file: &'static str, stage: String, known: String },
    /// `stages` names the table the custom stages are in (see [`ConfigPlace::table`]).
    #[error(
        "stages depend on each other in a cycle: {cycle}; remove one `depends-on` entry in {stages}"
    )]
    Cycle { cycle: String, stages: String },
}

impl Config {
    /// Reads the config from `[workspace.metadata]` as cargo_metadata reports it.
    pub fn from_workspace_metadata(metadata: &serde_json::Value) -> Result<Config, ConfigError> {
        match metadata.get("pipeline-opt") {
            Some(table) => Config::from_table(table, ConfigPlace::WorkspaceMetadata),
            None => Ok(Config::default()),
        }
    }

    /// Reads the config from whichever place holds it: `[workspace.metadata.pipeline-opt]`,
    /// the root package's `[package.metadata.pipeline-opt]` (`null` when there is no root
    /// package) or `pipeline-opt.toml` in `root`. None means defaults; two or more are an
    /// error naming them, since a silent merge or precedence would hide half of them.
    pub fn load(
        workspace_metadata: &serde_json::Value,
        root_package_metadata: &serde_json::Value,
        root: &camino::Utf8Path,
    ) -> Result<Config, ConfigError> {
        let file = root.join(CONFIG_FILE);
        let file_table = match std::fs::read_to_string(&file) {
            Ok(text) => Some(parse_config_file(&text).map_err(|message| {
                ConfigError::Unreadable { path: file.clone(), message: one_line(&message) }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::Unreadable { path: file, message: e.to_string() });
            }
        };
        let found: Vec<(ConfigPlace, &serde_json::Value)> = [
            (ConfigPlace::WorkspaceMetadata, workspace_metadata.get("pipeline-opt")),
            (ConfigPlace::PackageMetadata, root_package_metadata.get("pipeline-opt")),
            (ConfigPlace::File, file_table.as_ref()),
        ]
        .into_iter()
        .filter_map(|(place, table)| Some((place, table?)))
        .collect();
        match found.as_slice() {
            [] => Ok(Config::default()),
            [(place, table)] => Config::from_table(table, *place),
            [(first, _), (second, _), ..] => {
                Err(ConfigError::TwoPlaces { first: first.describe(), second: second.describe() })
            }
        }
    }

    /// Reads the config from its table, `place` naming the keys in errors.
    pub fn from_table(
        table: &serde_json::Value,
        place: ConfigPlace,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = serde_path_to_error::deserialize(table).map_err(|err| {
            let path = err.path().to_string();
            let key = place.key(if path == "." { "" } else { &path });
            let message = err.into_inner().to_string();
            // Keys and values come from the manifest as they are: a key holding a
            // newline would split the one-line error.
            ConfigError::Invalid {
                key: one_line(&key),
                file: place.file(),
                message: one_line(&message),
            }
        })?;
        config.place = place;
        config.validate()?;
        Ok(config)
    }

    /// An error about `path` (relative to the config's table) in this config's place.
    fn invalid(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.place.key(path),
            file: self.place.file(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, stage) in &self.stages {
            // A stage's name becomes its log file's name and a Prometheus label value:
            // `../../x` wrote above the workspace, a `/` lost the log.
            if !valid_stage_name(name) {
                return Err(self.invalid(
                    "stages",
                    format!(
                        "stage name \"{}\" is not allowed; use 1 to {MAX_STAGE_NAME} characters from a-z A-Z 0-9 - _, starting with a letter or digit",
                        name.escape_debug()
                    ),
                ));
            }
            if stage.command.is_empty() || stage.command[0].trim().is_empty() {
                return Err(self.invalid(
                    &format!("stages.{name}.command"),
                    "the command is empty; give the program and its arguments as a list, e.g. [\"cargo\", \"doc\"]",
                ));
            }
            if BUILTIN_STAGES.contains(&name.as_str()) {
                return Err(self.invalid(
                    &format!("stages.{name}"),
                    format!("`{name}` is a built-in stage; give the custom stage another name"),
                ));
            }
        }
        for (stage, vars) in &self.env {
            for (name, value) in vars {
                // What a process environment cannot hold: an `=` or NUL in the name
                // would set another variable, a NUL in the value would cut it short.
                if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                    return Err(self.invalid(
                        &format!("env.{stage}"),
                        format!(
                            "\"{}\" is not a variable an environment can hold; use a name without `=` and text without NUL characters",
                            name.escape_debug()
                        ),
                    ));
                }
            }
        }
        for (name, service) in &self.services {
            let invalid = |field: &str, message: &str| {
                self.invalid(&format!("services.{name}.{field}"), message)
            };
            if service.size == 0 {
                return Err(invalid("size", "the size must be at least 1"));
            }
            if service.kind == ServiceKind::Command && service.command.is_empty() {
                return Err(invalid(
                    "command",
                    "a service of kind \"command\" needs a command list",
                ));
            }
            if service.kind != ServiceKind::Command && !service.command.is_empty() {
                return Err(invalid(
                    "command",
                    "only services of kind \"command\" take a command; remove it",
                ));
            }
            if service.spare.is_some() && service.kind != ServiceKind::Postgres {
                return Err(invalid(
                    "spare",
                    "only services of kind \"postgres\" keep spare databases; remove it",
                ));
            }
            if service.setup_sql.is_some() && service.kind != ServiceKind::Postgres {
                return Err(invalid(
                    "setup-sql",
                    "only services of kind \"postgres\" take setup SQL; remove it",
                ));
            }
            if service.port == Some(0) {
                return Err(invalid(
                    "port",
                    "port 0 is not a port; leave `port` out to let the pool choose a free one",
                ));
            }
            self.validate_service_settings(name, service)?;
            self.validate_service_env(name, service)?;
            match (&service.ready, service.kind) {
                (None, ServiceKind::Command) => {
                    return Err(invalid(
                        "ready",
                        "a service of kind \"command\" needs a readiness probe: ready = { tcp = true }, { command = [...] } or { log-line = \"...\" }",
                    ));
                }
                (Some(_), ServiceKind::Postgres | ServiceKind::Redis) => {
                    return Err(invalid(
                        "ready",
                        "PostgreSQL and Redis are probed by the pool itself; remove `ready`",
                    ));
                }
                (Some(probe), _) => {
                    let set = usize::from(probe.tcp)
                        + usize::from(!probe.command.is_empty())
                        + usize::from(probe.log_line.is_some());
                    if set != 1 {
                        return Err(invalid(
                            "ready",
                            "set exactly one of `tcp = true`, `command = [...]` or `log-line = \"...\"`",
                        ));
                    }
                }
                (None, _) => {}
            }
            if service.kind == ServiceKind::Command && service.port.is_some() && service.size > 1 {
                return Err(invalid(
                    "port",
                    "a command service with a fixed port can only have size 1; remove `port` or set `size = 1`",
                ));
            }
        }
        self.validate_cache_globs()
    }

    /// The keys that give a PostgreSQL or Redis server the credentials and settings a
    /// project's tests expect.
    fn validate_service_settings(
        &self,
        name: &str,
        service: &ServiceConfig,
    ) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| {
            self.invalid(&format!("services.{name}.{field}"), message)
        };
        let postgres = service.kind == ServiceKind::Postgres;
        let only_postgres = |field: &str, set: bool| {
            (set && !postgres).then(|| {
                invalid(
                    field,
                    format!("only services of kind \"postgres\" take `{field}`; remove it"),
                )
            })
        };
        let postgres_only = [
            only_postgres("user", service.user.is_some()),
            only_postgres("database", service.database.is_some()),
            only_postgres("settings", !service.settings.is_empty()),
            only_postgres("extensions", !service.extensions.is_empty()),
            only_postgres("socket-dir", service.socket_dir.is_some()),
            only_postgres("mode", service.mode != ServiceMode::Database),
            only_postgres("setup-command", !service.setup_command.is_empty()),
            only_postgres("setup-inputs", !service.setup_inputs.is_empty()),
            only_postgres("template1", service.template1),
        ];
        if let Some(err) = postgres_only.into_iter().flatten().next() {
            return Err(err);
        }
        if !service.setup_inputs.is_empty() && service.setup_command.is_empty() {
            return Err(invalid(
                "setup-inputs",
                "`setup-inputs` name what `setup-command` reads; add the command or remove them"
                    .into(),
            ));
        }
        if let Some(program) = service.setup_command.first()
            && program.trim().is_empty()
        {
            return Err(invalid(
                "setup-command",
                "the first element is the program to run; name it, e.g. [\"sqlx\", \"migrate\", \"run\"]".into(),
            ));
        }
        for arg in &service.setup_command {
            if arg.contains('\0') {
                return Err(invalid(
                    "setup-command",
                    "an argument holds a NUL character; remove it".into(),
                ));
            }
            parse_template(arg, service.kind)
                .map_err(|message| invalid("setup-command", message))?;
        }
        for input in &service.setup_inputs {
            if input.is_absolute() || input.components().any(|c| c.as_str() == "..") {
                return Err(invalid(
                    "setup-inputs",
                    format!(
                        "`{input}` is not inside the workspace; give a path relative to the workspace root"
                    ),
                ));
            }
        }
        if service.kind == ServiceKind::Command
            && (service.password.is_some() || service.auth != Auth::Password)
        {
            let field = if service.password.is_some() { "password" } else { "auth" };
            return Err(invalid(
                field,
                format!(
                    "only services of kind \"postgres\" and \"redis\" take `{field}`; remove it"
                ),
            ));
        }
        if let Some(user) = &service.user
            && !plain_identifier(user)
        {
            return Err(invalid(
                "user",
                format!(
                    "`{}` is not a role name the pool accepts; use 1 to 63 of a-z 0-9 _, starting with a letter or _",
                    user.escape_debug()
                ),
            ));
        }
        if let Some(password) = &service.password {
            if service.auth == Auth::Trust {
                return Err(invalid(
                    "password",
                    "with auth = \"trust\" no password is asked; remove `password` or `auth`"
                        .into(),
                ));
            }
            let url_safe =
                |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
            if password.is_empty() || password.len() > 128 || !password.chars().all(url_safe) {
                return Err(invalid(
                    "password",
                    "use 1 to 128 of A-Z a-z 0-9 . _ ~ - (it goes into URLs as it is), or leave it out for a random one".into(),
                ));
            }
        }
        if let Some(db) = &service.database {
            if !plain_identifier(db) {
                return Err(invalid(
                    "database",
                    format!(
                        "`{}` is not a database name the pool accepts; use 1 to 63 of a-z 0-9 _, starting with a letter or _",
                        db.escape_debug()
                    ),
                ));
            }
            if RESERVED_DATABASES.contains(&db.as_str()) {
                return Err(invalid(
                    "database",
                    format!(
                        "`{db}` is a database every server has or the pool's own; name another"
                    ),
                ));
            }
        }
        for (key, value) in &service.settings {
            let key_ok = simple_name(key, "_.", false);
            if !key_ok {
                return Err(invalid(
                    "settings",
                    format!(
                        "`{}` is not a PostgreSQL setting name; use a-z 0-9 _ . as in postgresql.conf",
                        key.escape_debug()
                    ),
                ));
            }
            if let Some((_, fix)) = POOL_OWNED_SETTINGS.iter().find(|(k, _)| k == key) {
                return Err(invalid(
                    &format!("settings.{key}"),
                    format!("the pool sets `{key}` itself; {fix}"),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(invalid(
                    &format!("settings.{key}"),
                    "the value holds a control character; write it on one line".into(),
                ));
            }
        }
        for extension in &service.extensions {
            let ok = simple_name(extension, "_-", true);
            if !ok {
                return Err(invalid(
                    "extensions",
                    format!(
                        "`{}` is not an extension name; use a-z 0-9 _ - as in CREATE EXTENSION",
                        extension.escape_debug()
                    ),
                ));
            }
        }
        if let Some(dir) = &service.socket_dir
            && (dir.as_str().is_empty()
                || dir.as_str().contains([',', '"', '\''])
                || dir.as_str().chars().any(char::is_control))
        {
            return Err(invalid(
                "socket-dir",
                "give a directory path without commas or quotes (PostgreSQL splits the list at commas)".into(),
            ));
        }
        Ok(())
    }

    /// The variables a service's leases are given to the tests as: names an environment
    /// can hold, templates with only the placeholders the kind fills.
    fn validate_service_env(&self, name: &str, service: &ServiceConfig) -> Result<(), ConfigError> {
        if service.mode == ServiceMode::Server && service.env.is_empty() {
            return Err(self.invalid(
                &format!("services.{name}.mode"),
                "mode = \"server\" gives the tests the server through `env`; add `env = { DATABASE_URL = \"{url}\" }` or remove `mode`",
            ));
        }
        for (var, template) in &service.env {
            let key = format!("services.{name}.env.{var}");
            if !valid_env_name(var) {
                return Err(self.invalid(
                    &format!("services.{name}.env"),
                    format!(
                        "\"{}\" is not a variable name a test can read; use A-Z a-z 0-9 _, not starting with a digit",
                        var.escape_debug()
                    ),
                ));
            }
            if template.contains('\0') {
                return Err(self.invalid(&key, "the template holds a NUL character; remove it"));
            }
            parse_template(template, service.kind)
                .map_err(|message| self.invalid(&key, message))?;
        }
        Ok(())
    }

    fn validate_cache_globs(&self) -> Result<(), ConfigError> {
        for (field, globs) in [("inputs", &self.cache.inputs), ("exclude", &self.cache.exclude)] {
            for (i, g) in globs.iter().enumerate() {
                check_glob(g)
                    .map_err(|message| self.invalid(&format!("cache.{field}[{i}]"), message))?;
            }
        }
        Ok(())
    }
}

/// Why `pattern` is not a glob the cache settings accept: relative to the workspace
/// root, `/`-separated, with `*` (within a path component), `**` (any number of
/// components) and `?` as the only wildcards.
fn check_glob(pattern: &str) -> Result<(), String> {
    let fix = "write a path relative to the workspace root, with `*`, `**` and `?` as wildcards, e.g. \"testdata/**\"";
    if pattern.trim().is_empty() {
        return Err(format!("the glob is empty; {fix}"));
    }
    if pattern.starts_with('/') || pattern.contains('\\') {
        return Err(format!("`{pattern}` is not relative to the workspace root; {fix}"));
    }
    if pattern.split('/').any(|c| c == "..") {
        return Err(format!("`{pattern}` leaves the workspace root (`..`); {fix}"));
    }
    if let Some(c) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}' | '!')) {
        return Err(format!("`{pattern}`: `{c}` is not supported; {fix}"));
    }
    if pattern.split('/').any(|c| c.contains("**") && c != "**") {
        return Err(format!("`{pattern}`: `**` must be a whole path component; {fix}"));
    }
    Ok(())
}

/// Whether `path` (relative to the workspace root, `/`-separated) matches a glob that
/// `check_glob` accepted. A pattern naming a directory matches everything under it.
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    fn components(pat: &[&str], path: &[&str]) -> bool {
        match (pat.first(), path.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(&"**"), _) => {
                components(&pat[1..], path) || (!path.is_empty() && components(pat, &path[1..]))
            }
            (Some(_), None) => false,
            (Some(p), Some(c)) => {
                component(p.as_bytes(), c.as_bytes()) && components(&pat[1..], &path[1..])
            }
        }
    }
    fn component(p: &[u8], c: &[u8]) -> bool {
        match (p.first(), c.first()) {
            (None, None) => true,
            (Some(b'*'), _) => component(&p[1..], c) || (!c.is_empty() && component(p, &c[1..])),
            (Some(b'?'), Some(_)) => component(&p[1..], &c[1..]),
            (Some(a), Some(b)) if a == b => component(&p[1..], &c[1..]),
            _ => false,
        }
    }
    let pat: Vec<&str> =
        pattern.trim_end_matches('/').split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let path: Vec<&str> = path.split('/').collect();
    // A directory pattern covers its contents: `testdata` is `testdata/**`.
    (1..=path.len()).any(|n| components(&pat, &path[..n]))
}

/// `template` with its placeholders filled by `value`; the template was checked by
/// [`parse_template`] when the config was read.
pub fn render_template(
    template: &str,
    kind: ServiceKind,
    value: impl Fn(Placeholder) -> String,
) -> Result<String, String> {
    Ok(parse_template(template, kind)?
        .into_iter()
        .map(|part| match part {
            TemplatePart::Text(t) => t.to_string(),
            TemplatePart::Placeholder(p) => value(p),
        })
        .collect())
}

/// Whether `name` is a portable environment variable name: what `DATABASE_URL`,
/// `PG__HOST` and their like are made of.
fn valid_env_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The longest custom stage name.
pub const MAX_STAGE_NAME: usize = 64;

/// Whether `name` can name a custom stage: ASCII letters, digits, `-` and `_`, starting
/// with a letter or digit, so that it is a safe file name and label value as it is.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_STAGE_NAME
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The range every duration in the config must fall in: a timeout or target beyond it
/// would overflow the clock arithmetic of a run (`Instant + timeout`), and no CI stage
/// is meant to run for longer.
pub const DURATION_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(30 * 24 * 3600));

/// `pipeline-opt.toml` as the JSON value cargo would report for the same table in
/// `Cargo.toml`, so both are read by the same code; the error says where the syntax broke.
fn parse_config_file(text: &str) -> Result<serde_json::Value, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
        match line {
            Some(line) => format!("line {line}: {}; fix the TOML syntax", e.message().trim()),
            None => format!("{}; fix the TOML syntax", e.message().trim()),
        }
    })?;
    serde_json::to_value(table).map_err(|e| e.to_string())
}

/// `s` with control characters (newlines, tabs, escapes) written as Rust escapes.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write it like \"45s\" or \"2m 30s\"")
    })?;
    let (min, max) = DURATION_RANGE;
    if d < min || d > max {
        return Err(format!("`{s}` is out of range; give a duration between 1ms and 30days"));
    }
    Ok(d)
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

/// Server settings as `key = value` with a string, a number or a boolean value, kept as
/// the text PostgreSQL reads after `-c key=`.
fn settings_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => if b { "on" } else { "off" }.to_string(),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "setting `{k}`: give a string, a number or a boolean"
                    )));
                }
            };
            Ok((k, text))
        })
        .collect()
}

/// Parses a byte size such as `5GiB`, `500 MB` or `1024`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let bad =
        || format!("`{s}` is not a size; write it like \"5GiB\", \"500MB\" or \"1024\" (bytes)");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    Ok((n * mult) as u64)
}

fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_bytes(&s).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_globs_match_paths_and_directories() {
        let cases = [
            ("testdata/**", "testdata/a/b.txt", true),
            ("testdata", "testdata/x.txt", true),
            ("*.md", "README.md", true),
            ("*.md", "docs/a.md", false),
            ("**/*.md", "docs/a.md", true),
            ("docs/?.md", "docs/a.md", true),
            ("docs/?.md", "docs/ab.md", false),
            ("crates/*/fixtures", "crates/foo/fixtures/x", true),
            ("testdata/**", "testdatax/a", false),
        ];
        for (pattern, path, expect) in cases {
            assert_eq!(glob_matches(pattern, path), expect, "{pattern} on {path}");
        }
        assert!(check_glob("/abs").unwrap_err().contains("not relative"));
        assert!(check_glob("../x").unwrap_err().contains("leaves the workspace root"));
        assert!(check_glob("a/[ab]").unwrap_err().contains("not supported"));
        assert!(check_glob("a**").unwrap_err().contains("whole path component"));
        assert!(check_glob("").unwrap_err().contains("empty"));
    }
}
