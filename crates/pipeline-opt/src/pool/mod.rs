//! `ContainerPool`: PostgreSQL, Redis and command services started while the code
//! compiles, owned by a supervisor process, and leased to tests in any process through
//! file locks in the pool directory. See `docs/services.md` for the protocol.
//!
//! - `up` writes the spec and starts the supervisor (or finds the running one);
//! - the supervisor (`supervisor.rs`) starts servers with a backend (`process.rs`, or
//!   `docker.rs` behind the `docker` feature), keeps ready slots, resets returned ones;
//! - tests call [`lease`]; a lease is an exclusive lock on a slot file. Leasing lives
//!   in the `pipeline-opt-lease` crate (re-exported here), which a test can depend on
//!   without this engine.
//!
//! The supervisor talks to PostgreSQL and Redis through client crates behind the
//! `postgres` and `redis` features; [`check_clients`] refuses a service whose client
//! was compiled out before anything starts.

#[cfg(feature = "docker")]
mod docker;
mod files;
#[cfg(feature = "postgres")]
mod prepare;
mod process;
#[cfg(feature = "postgres")]
mod refill;
mod runner;
mod supervisor;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Auth, Config, ReadyProbe, ServiceConfig, ServiceKind};
use crate::workspace::Workspace;
pub use files::ProcessRecord;
use files::{Layout, io_err, read_json, write_json};
pub use pipeline_opt_lease::{Lease, LeaseError, TIMEOUT_ENV, lease, lease_from};
pub use process::{extension_installed, find_program};
pub use runner::{lease_runner_if_requested, lease_values};

pub use crate::state::POOL_ENV;
/// Asks for a backend by name: `process` (the default) or `docker` (experimental, and
/// only in a binary built with the `docker` feature). Nothing else ever selects containers.
pub const BACKEND_ENV: &str = "PIPELINE_OPT_POOL_BACKEND";
/// How many connections the supervisor clones and drops PostgreSQL databases with (read
/// by the supervisor, which inherits it from `up`; default: two per core, 2 to 4).
pub const REFILL_WORKERS_ENV: &str = "PIPELINE_OPT_POOL_REFILL_WORKERS";
/// Set on a re-executed binary to make it the supervisor of the pool in this directory.
pub const SUPERVISE_ENV: &str = "PIPELINE_OPT_POOL_SUPERVISE";
/// Set on a re-executed binary to make it the `services` stage of a run: bring up the
/// pool of the workspace whose manifest this names, then exit.
pub const SERVICES_UP_ENV: &str = "PIPELINE_OPT_SERVICES_UP";
/// With [`SERVICES_UP_ENV`]: the pid of the run that owns the pool, which stops within
/// 2 s of that run's death.
pub const SERVICES_OWNER_ENV: &str = "PIPELINE_OPT_SERVICES_OWNER";

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("could not {action} {path}: {source}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(
        "service `{service}` is {kind} but this build of pipeline-opt has no {kind} client; build it with the `{feature}` feature (`features = [\"{feature}\"]` on the pipeline-opt dependency) or remove the service"
    )]
    ClientNotBuilt { service: String, kind: &'static str, feature: &'static str },
    #[error(
        "`{program}` was not found on PATH or in {searched}; install it (Debian: `apt-get install {package}`)"
    )]
    MissingProgram { program: String, searched: String, package: String },
    #[error(
        "port {port} of service `{service}` is already in use on 127.0.0.1; stop what listens there or remove `port` from [workspace.metadata.pipeline-opt.services.{service}] to let the pool choose a free port"
    )]
    PortInUse { service: String, port: u16 },
    #[error(
        "extension `{extension}` of service `{service}` is not installed for PostgreSQL {major} (no {extension}.control in {dir}); install {package}, or remove it from `extensions`"
    )]
    MissingExtension {
        service: String,
        extension: String,
        major: String,
        dir: PathBuf,
        package: String,
    },
    #[error(
        "the `socket-dir` of service `{service}`, {dir}, {problem}; create it or set another `socket-dir`"
    )]
    SocketDir { service: String, dir: PathBuf, problem: String },
    #[error("service `{service}` did not start: {message}; its log is {log}")]
    ServiceStart { service: String, message: String, log: PathBuf },
    #[error("could not prepare the unprivileged user that runs PostgreSQL: {message}")]
    User { message: String },
    #[error("the pool supervisor failed: {message} (log: {log})")]
    Supervisor { message: String, log: PathBuf },
    #[error(
        "the supervisor `{exe}` did not start within {waited:?}; a binary used as supervisor must call `pipeline_opt::pool::supervise_if_requested()` first in main (log: {log})"
    )]
    SupervisorDidNotStart { exe: PathBuf, waited: Duration, log: PathBuf },
    #[error(
        "a pool with other services already runs at {dir}; stop it with `cargo xtask pool down` first"
    )]
    DifferentServices { dir: PathBuf },
    /// `failure`: "`COMMAND`, failed (STATUS); its last lines: TAIL".
    #[error(
        "the `setup-command` of service `{service}`, {failure}; fix the command or its migrations (whole output: {log})"
    )]
    SetupCommand { service: String, failure: String, log: PathBuf },
    #[error("the setup SQL {path} of service `{service}` could not be read: {source}")]
    SetupSql {
        service: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "postgres")]
    #[error("{action} on PostgreSQL service `{service}` failed: {}", postgres_message(source))]
    Postgres {
        service: String,
        action: String,
        #[source]
        source: postgres::Error,
    },
    #[cfg(feature = "redis")]
    #[error("{action} on Redis service `{service}` failed: {source}")]
    Redis {
        service: String,
        action: String,
        #[source]
        source: redis::RedisError,
    },
    #[cfg(feature = "docker")]
    #[error("docker: {message}")]
    Docker { message: String },
    #[error("{message}")]
    Backend { message: String },
}

/// What the server said, not only `db error`: the `Display` of `postgres::Error` leaves
/// out the server's message, which is in its source.
#[cfg(feature = "postgres")]
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// One service as the supervisor runs it: the config resolved against the workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServiceSpec {
    pub name: String,
    pub kind: ServiceKind,
    pub size: usize,
    /// PostgreSQL: checked databases kept cloned ahead beyond the `size` offered ones.
    #[serde(default)]
    pub spare: usize,
    pub command: Vec<String>,
    pub setup_sql: Option<PathBuf>,
    /// PostgreSQL: a migration command run against the template, from `root`.
    #[serde(default)]
    pub setup_command: Vec<String>,
    /// What `setup_command` reads (absolute), part of the prepared template's fingerprint.
    #[serde(default)]
    pub setup_inputs: Vec<PathBuf>,
    /// The workspace root: where `setup_command` runs.
    #[serde(default)]
    pub root: PathBuf,
    /// PostgreSQL: `template1` becomes a copy of the prepared template.
    #[serde(default)]
    pub template1: bool,
    /// The `env` templates, which `setup_command` gets too, naming the template.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub port: Option<u16>,
    pub ready: Option<ReadyProbe>,
    /// PostgreSQL: the role lease URLs name (`None`: the pool's own, `pool`).
    #[serde(default)]
    pub user: Option<String>,
    /// A fixed password (`None`: a random one per server).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub auth: Auth,
    /// PostgreSQL: a database of this name, cloned from the template at start.
    #[serde(default)]
    pub database: Option<String>,
    /// PostgreSQL: `-c key=value` after the pool's own settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// PostgreSQL: extensions created in the template.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// PostgreSQL: a further Unix-socket directory, absolute.
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
}

/// Everything the supervisor needs, written to `run/spec.json` by `up`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolSpec {
    pub services: Vec<ServiceSpec>,
    pub template_cache: PathBuf,
    /// The supervisor stops within 2 s of this process's death.
    pub owner: Option<ProcessRecord>,
    #[serde(with = "crate::record::opt_secs")]
    pub idle_timeout: Option<Duration>,
    pub backend: Backend,
}

/// Which engine starts and stops the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Process,
    Docker,
}

/// How `up` starts the pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The binary re-executed as supervisor (default: the current executable, which must
    /// call [`supervise_if_requested`] first in `main`).
    pub supervisor_exe: Option<PathBuf>,
    /// Stop the pool within 2 s of this process's death (`None`: only `down` or the idle
    /// timeout stop it).
    pub owner: Option<u32>,
    /// Stop after this long without any lease (default 30 min).
    pub idle_timeout: Option<Duration>,
    /// How long `up` waits for every service to be ready.
    pub ready_timeout: Duration,
    /// Where the `initdb` template is cached (default `<pool>/template`).
    pub template_cache: Option<PathBuf>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            supervisor_exe: None,
            owner: None,
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            ready_timeout: Duration::from_secs(120),
            template_cache: None,
        }
    }
}

/// Counts and total times of the refill's SQL, in `pool status` and logged when the
/// pool stops: where a PostgreSQL lease's refill time goes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefillStats {
    pub clones: u64,
    /// Total milliseconds in `CREATE DATABASE … STRATEGY FILE_COPY`.
    pub clone_ms: f64,
    /// Total milliseconds connecting to new databases and running `SELECT 1`.
    pub check_ms: f64,
    pub drops: u64,
    /// Total milliseconds in `DROP DATABASE`.
    pub drop_ms: f64,
    /// Supervisor ticks (at most 2 ms apart) that found a slot to fill and no clone on
    /// hand: how long leases could have waited for the refill.
    pub empty_ticks: u64,
}

impl std::fmt::Display for RefillStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean = |t: f64, n: u64| t / n.max(1) as f64;
        write!(
            f,
            "{} clones (mean {:.1} ms clone + {:.1} ms check), {} drops (mean {:.1} ms), \
             {} ticks with a slot waiting for a clone",
            self.clones,
            mean(self.clone_ms, self.clones),
            mean(self.check_ms, self.clones),
            self.drops,
            mean(self.drop_ms, self.drops),
            self.empty_ticks
        )
    }
}

/// The cargo feature that builds the client a service of `kind` needs, and whether this
/// build has it (`command` services need none).
pub fn client_feature(kind: ServiceKind) -> Option<(&'static str, bool)> {
    match kind {
        ServiceKind::Postgres => Some(("postgres", cfg!(feature = "postgres"))),
        ServiceKind::Redis => Some(("redis", cfg!(feature = "redis"))),
        ServiceKind::Command => None,
    }
}

/// Refuses the first service whose client this build does not have, naming the
/// feature: before a pool starts, and before a run whose plan has a `services` stage.
pub fn check_clients<'a>(
    services: impl IntoIterator<Item = (&'a str, ServiceKind)>,
) -> Result<(), PoolError> {
    for (name, kind) in services {
        if let Some((feature, false)) = client_feature(kind) {
            return Err(PoolError::ClientNotBuilt {
                service: name.to_string(),
                kind: kind.name(),
                feature,
            });
        }
    }
    Ok(())
}

/// What the supervisor reports in `run/status.json`. Never holds credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub state: SupervisorState,
    pub message: Option<String>,
    pub supervisor: Option<ProcessRecord>,
    pub backend: Option<Backend>,
    pub services: BTreeMap<String, ServiceStatus>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupervisorState {
    #[default]
    Stopped,
    Starting,
    Ready,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub kind: Option<ServiceKind>,
    pub size: usize,
    /// Server processes (pid and port); replaced ones get a new generation.
    pub servers: Vec<ServerStatus>,
    pub generation: u32,
    /// Slots ready to lease and slots leased, counted from the slot directories.
    pub ready: usize,
    pub leased: usize,
    /// Milliseconds from spawn to ready for the current servers.
    pub start_ms: Vec<u64>,
    /// PostgreSQL: what the current server's refill did so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<RefillStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub pid: Option<u32>,
    pub port: u16,
}

/// A running pool, as `up` returns it.
#[derive(Debug)]
pub struct PoolHandle {
    pub dir: PathBuf,
    /// False when `up` found a supervisor already running.
    pub started: bool,
    pub supervisor: Option<ProcessRecord>,
    pub status: PoolStatus,
    /// Things the user should know (backend chosen and why).
    pub notes: Vec<String>,
    /// Things the user must see: printed as `warning: …` (the experimental backend).
    pub warnings: Vec<String>,
}

impl PoolHandle {
    /// The variable to export to every process that leases: `(PIPELINE_OPT_POOL, dir)`.
    pub fn env(&self) -> (&'static str, OsString) {
        (POOL_ENV, self.dir.clone().into_os_string())
    }

    /// Stops the pool (the end of a run that did not ask to keep it).
    pub fn stop(self) -> Result<DownReport, PoolError> {
        ContainerPool::at(&self.dir).down()
    }
}

/// What `down` or `clean` stopped.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DownReport {
    pub supervisor_stopped: bool,
    /// Server processes left by a crashed run that were stopped.
    pub leftovers_stopped: Vec<u32>,
    /// A supervisor that is alive and was left alone (`clean` only).
    pub running_supervisor: Option<u32>,
}

/// A pool of service instances in one directory.
#[derive(Debug, Clone)]
pub struct ContainerPool {
    dir: PathBuf,
}

/// Starts the services of `config` for `workspace` (the `services` stage): the pool
/// lives in `<state-dir>/pool`; export [`PoolHandle::env`] to the test stages.
pub fn services_up(
    workspace: &Workspace,
    config: &Config,
    options: &PoolOptions,
) -> Result<PoolHandle, PoolError> {
    let pool = ContainerPool::for_workspace(workspace, config);
    pool.up(workspace.root.as_std_path(), &config.services, options)
}

impl ContainerPool {
    pub fn at(dir: &Path) -> ContainerPool {
        ContainerPool { dir: dir.to_path_buf() }
    }

    pub fn for_workspace(workspace: &Workspace, config: &Config) -> ContainerPool {
        ContainerPool::at(workspace.state_dir(config).pool().as_std_path())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.dir)
    }

    /// Starts the supervisor, or finds the running one, and waits until every service
    /// is ready. `root` resolves relative `setup-sql` paths.
    pub fn up(
        &self,
        root: &Path,
        services: &BTreeMap<String, ServiceConfig>,
        options: &PoolOptions,
    ) -> Result<PoolHandle, PoolError> {
        check_clients(services.iter().map(|(name, s)| (name.as_str(), s.kind)))?;
        let layout = self.layout();
        files::create_dir(&self.dir)?;
        // One `up` at a time per pool: a second one waits, then finds the supervisor.
        let up_lock_path = self.dir.join("up.lock");
        let up_lock =
            std::fs::File::create(&up_lock_path).map_err(io_err("create", &up_lock_path))?;
        up_lock.lock().map_err(io_err("lock", &up_lock_path))?;
        files::create_dir(&layout.run())?;
        let BackendChoice { backend, notes, warnings } = requested_backend()?;
        let spec = PoolSpec {
            services: services
                .iter()
                .map(|(name, s)| ServiceSpec {
                    name: name.clone(),
                    kind: s.kind,
                    size: s.size,
                    spare: match s.kind {
                        ServiceKind::Postgres => s.spare.unwrap_or(s.size),
                        _ => 0,
                    },
                    command: s.command.clone(),
                    setup_sql: s.setup_sql.as_ref().map(|p| root.join(p.as_std_path())),
                    setup_command: s.setup_command.clone(),
                    setup_inputs: s
                        .setup_inputs
                        .iter()
                        .map(|p| root.join(p.as_std_path()))
                        .collect(),
                    root: root.to_path_buf(),
                    template1: s.template1,
                    env: s.env.clone(),
                    port: s.port,
                    ready: s.ready.clone(),
                    user: s.user.clone(),
                    password: s.password.clone(),
                    auth: s.auth,
                    database: s.database.clone(),
                    settings: s.settings.clone(),
                    extensions: s.extensions.clone(),
                    socket_dir: s.socket_dir.as_ref().map(|p| root.join(p.as_std_path())),
                })
                .collect(),
            template_cache: options
                .template_cache
                .clone()
                .unwrap_or_else(|| layout.default_template_cache()),
            owner: options.owner.and_then(ProcessRecord::of),
            idle_timeout: options.idle_timeout,
            backend,
        };
        for s in &spec.services {
            if let Some(path) = &s.setup_sql {
                std::fs::metadata(path).map_err(|source| PoolError::SetupSql {
                    service: s.name.clone(),
                    path: path.clone(),
                    source,
                })?;
            }
            process::check_postgres_needs(s)?;
        }

        if files::supervisor_running(&layout) {
            let running: Option<PoolSpec> = read_json(&layout.spec());
            if running.is_some_and(|r| r.services != spec.services) {
                return Err(PoolError::DifferentServices { dir: self.dir.clone() });
            }
            let status = self.wait_ready(None, options.ready_timeout, Path::new("(running)"))?;
            return Ok(PoolHandle {
                dir: self.dir.clone(),
                started: false,
                supervisor: status.supervisor,
                status,
                notes,
                warnings,
            });
        }

        // A fresh start: forget what a previous run left (its servers are stopped first).
        self.clean()?;
        files::create_dir(&layout.run())?;
        write_json(&layout.spec(), &spec)?;
        let exe = match &options.supervisor_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().map_err(io_err("find", Path::new("current exe")))?,
        };
        let log_path = layout.supervisor_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let log2 = log.try_clone().map_err(io_err("open", &log_path))?;
        let mut command = Command::new(&exe);
        command.env(SUPERVISE_ENV, &self.dir).stdin(Stdio::null()).stdout(log).stderr(log2);
        for var in crate::toolchain::inherited_cargo_vars() {
            command.env_remove(var);
        }
        // Its own session: a Ctrl-C meant for the terminal's job does not reach the
        // pool, which stops through `down`, its owner's death or the idle timeout.
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = command.spawn().map_err(io_err("start the supervisor", &exe))?;
        let status = self.wait_ready(Some((child, exe)), options.ready_timeout, &log_path)?;
        Ok(PoolHandle {
            dir: self.dir.clone(),
            started: true,
            supervisor: status.supervisor,
            status,
            notes,
            warnings,
        })
    }

    fn wait_ready(
        &self,
        mut child: Option<(std::process::Child, PathBuf)>,
        timeout: Duration,
        log: &Path,
    ) -> Result<PoolStatus, PoolError> {
        let layout = self.layout();
        let start = Instant::now();
        let mut seen_lock = false;
        loop {
            let status: Option<PoolStatus> = read_json(&layout.status());
            let running = files::supervisor_running(&layout);
            seen_lock |= running;
            if let Some(status) = status {
                match status.state {
                    SupervisorState::Ready if running => return Ok(status),
                    SupervisorState::Failed => {
                        return Err(PoolError::Supervisor {
                            message: status.message.unwrap_or_default(),
                            log: log.to_path_buf(),
                        });
                    }
                    _ => {}
                }
            }
            if let Some((c, exe)) = &mut child
                && let Ok(Some(exit)) = c.try_wait()
                && !files::supervisor_running(&layout)
            {
                let status: Option<PoolStatus> = read_json(&layout.status());
                if let Some(s) = status.filter(|s| s.state == SupervisorState::Failed) {
                    return Err(PoolError::Supervisor {
                        message: s.message.unwrap_or_default(),
                        log: log.to_path_buf(),
                    });
                }
                if !seen_lock {
                    return Err(PoolError::SupervisorDidNotStart {
                        exe: exe.clone(),
                        waited: start.elapsed(),
                        log: log.to_path_buf(),
                    });
                }
                return Err(PoolError::Supervisor {
                    message: format!("it exited ({exit}) before the services were ready"),
                    log: log.to_path_buf(),
                });
            }
            if start.elapsed() > timeout {
                if let Some((mut c, exe)) = child {
                    let _ = c.kill();
                    let _ = c.wait();
                    if !seen_lock {
                        return Err(PoolError::SupervisorDidNotStart {
                            exe,
                            waited: timeout,
                            log: log.to_path_buf(),
                        });
                    }
                }
                return Err(PoolError::Supervisor {
                    message: format!("the services were not ready within {timeout:?}"),
                    log: log.to_path_buf(),
                });
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    /// The supervisor's last report, with slot counts read from the slot directories.
    pub fn status(&self) -> PoolStatus {
        let layout = self.layout();
        if !files::supervisor_running(&layout) {
            return PoolStatus::default();
        }
        let mut status: PoolStatus = read_json(&layout.status()).unwrap_or_default();
        for (name, s) in status.services.iter_mut() {
            s.ready = count_files(&layout.ready(name));
            s.leased = count_files(&layout.leased(name));
        }
        status
    }

    /// Stops the supervisor (its servers die with it) and anything a crashed run left.
    pub fn down(&self) -> Result<DownReport, PoolError> {
        let layout = self.layout();
        let mut report = DownReport::default();
        if files::supervisor_running(&layout)
            && let Some(record) = read_json::<ProcessRecord>(&layout.supervisor_pid())
        {
            // SIGTERM: the supervisor stops its servers and exits.
            // Only a process we recorded and verified by start time.
            if record.alive() {
                crate::process::signal_process(record.pid as i32, crate::process::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while files::supervisor_running(&layout) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if files::supervisor_running(&layout) {
                files::stop_record(&record, crate::process::SIGKILL, Duration::from_secs(1));
            }
            // It frees the lock just before exiting: wait for the exit itself.
            let deadline = Instant::now() + Duration::from_secs(2);
            while record.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            report.supervisor_stopped = true;
        }
        let cleaned = self.clean()?;
        report.leftovers_stopped = cleaned.leftovers_stopped;
        Ok(report)
    }

    /// Stops server processes left by a crashed supervisor, by their pid files (checked
    /// against the kernel's start time, so no other process is touched), and removes the
    /// run state. A running supervisor is left alone.
    pub fn clean(&self) -> Result<DownReport, PoolError> {
        let layout = self.layout();
        let mut report = DownReport::default();
        if files::supervisor_running(&layout) {
            report.running_supervisor =
                read_json::<ProcessRecord>(&layout.supervisor_pid()).map(|r| r.pid);
            return Ok(report);
        }
        if let Ok(entries) = std::fs::read_dir(layout.instances()) {
            for entry in entries.flatten() {
                let Some(instance) = read_json::<supervisor::InstanceRecord>(&entry.path()) else {
                    continue;
                };
                if let Some(record) = instance.process
                    && record.alive()
                {
                    files::stop_record(&record, crate::process::SIGQUIT, Duration::from_secs(2));
                    report.leftovers_stopped.push(record.pid);
                }
                #[cfg(feature = "docker")]
                if let Some(id) = &instance.container {
                    docker::remove_container(id);
                }
                if let Some(dir) = &instance.data_dir {
                    let _ = std::fs::remove_dir_all(dir);
                    if let Some(root) = dir.parent() {
                        let _ = std::fs::remove_dir(root);
                    }
                }
            }
        }
        #[cfg(feature = "docker")]
        docker::remove_labelled(&self.dir);
        let run = layout.run();
        if run.exists() {
            std::fs::remove_dir_all(&run).map_err(io_err("remove", &run))?;
        }
        Ok(report)
    }

    /// Leases an instance of `service`, waiting up to `timeout` for a free one.
    pub fn lease(&self, service: &str, timeout: Duration) -> Result<Lease, LeaseError> {
        lease_from(&self.dir, service, timeout)
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
}

/// The backend the pool runs its servers with, as asked for in [`BACKEND_ENV`] (`None`:
/// not asked). Containers are never chosen unless asked for by name, whatever engine
/// answers: the Docker backend has never run against a real engine. `docker_built`:
/// whether this binary has the `docker` feature; `engine_answers` is asked only when
/// containers were asked for.
pub fn choose_backend(
    requested: Option<&str>,
    docker_built: bool,
    engine_answers: impl FnOnce() -> bool,
) -> Result<BackendChoice, PoolError> {
    match requested.map(str::trim) {
        None | Some("") | Some("process") => Ok(BackendChoice {
            backend: Backend::Process,
            notes: vec!["services run as local processes".into()],
            warnings: Vec::new(),
        }),
        Some("docker") if !docker_built => Err(PoolError::Backend {
            message: format!(
                "{BACKEND_ENV}=docker asks for the Docker backend, which this binary was built without; build it with `--features docker`, or unset {BACKEND_ENV} to run services as processes"
            ),
        }),
        Some("docker") if !engine_answers() => Err(PoolError::Backend {
            message: format!(
                "{BACKEND_ENV}=docker asks for containers, but no container engine answered `docker info` (PIPELINE_OPT_CONTAINER_ENGINE picks another); start one, or unset {BACKEND_ENV} to run services as processes"
            ),
        }),
        Some("docker") => Ok(BackendChoice {
            backend: Backend::Docker,
            notes: vec![format!("services run in containers ({BACKEND_ENV}=docker)")],
            warnings: vec![DOCKER_EXPERIMENTAL.into()],
        }),
        Some(other) => Err(PoolError::Backend {
            message: format!(
                "{BACKEND_ENV}={other} is not a backend; use `process` (the default) or `docker` (experimental)"
            ),
        }),
    }
}

/// What [`choose_backend`] decided, and what to tell the user about it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendChoice {
    pub backend: Backend,
    pub notes: Vec<String>,
    /// Printed as `warning: …` by every command that starts a pool this way.
    pub warnings: Vec<String>,
}

/// The warning every command prints when the Docker backend is selected.
pub const DOCKER_EXPERIMENTAL: &str = "the Docker backend is experimental: it has never run against a real container engine; its servers ignore `user`, `database`, `settings`, `extensions` and `socket-dir` (docs/services.md)";

/// The backend [`BACKEND_ENV`] asks for in this process, decided as `up` decides it.
pub fn requested_backend() -> Result<BackendChoice, PoolError> {
    let requested = std::env::var(BACKEND_ENV).ok();
    choose_backend(requested.as_deref(), cfg!(feature = "docker"), engine_available)
}

#[cfg(feature = "docker")]
fn engine_available() -> bool {
    docker::engine_available()
}

#[cfg(not(feature = "docker"))]
fn engine_available() -> bool {
    false
}

/// Makes this process the pool supervisor when it was started as one (the
/// [`SUPERVISE_ENV`] variable is set), and exits when the pool stops. Call it first in
/// `main` of any binary that starts pools, e.g. the xtask.
/// Call first thing in `main` (beside [`supervise_if_requested`]): the orchestrator
/// runs the `services` stage as this binary with [`SERVICES_UP_ENV`] set, so the stage
/// is a process like every other (its own log, timeout, cancellation) and needs no
/// `cargo xtask` in the workspace being optimised.
pub fn services_up_if_requested() {
    let Some(manifest) = std::env::var_os(SERVICES_UP_ENV) else { return };
    let owner = std::env::var(SERVICES_OWNER_ENV).ok().and_then(|p| p.parse().ok());
    let manifest = camino::Utf8PathBuf::from(manifest.to_string_lossy().into_owned());
    let result = crate::inputs::Inputs::load(Some(&manifest)).map_err(|e| e.to_string()).and_then(
        |inputs| {
            let options = PoolOptions { owner, ..PoolOptions::default() };
            services_up(&inputs.workspace, &inputs.config, &options).map_err(|e| e.to_string())
        },
    );
    let code = match result {
        Ok(handle) => {
            for warning in &handle.warnings {
                println!("warning: {warning}");
            }
            for note in &handle.notes {
                println!("note: {note}");
            }
            println!("services ready: {}", handle.dir.display());
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            1
        }
    };
    std::process::exit(code);
}

pub fn supervise_if_requested() {
    let Some(dir) = std::env::var_os(SUPERVISE_ENV) else { return };
    let code = match supervisor::run(Path::new(&dir)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("pool supervisor: error: {err}");
            1
        }
    };
    std::process::exit(code);
}
