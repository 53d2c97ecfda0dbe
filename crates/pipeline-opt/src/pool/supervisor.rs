//! The supervisor process: owns every server of one pool, keeps `size` slots per service
//! ready, resets or drops returned ones, replaces servers that die, and stops everything
//! on `down` (SIGTERM), its owner's death, or the idle timeout. Servers are spawned from
//! this process's main thread, so `PR_SET_PDEATHSIG` kills them when it exits.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::files::{self, Layout, ProcessRecord, io_err, read_json, write_json};
#[cfg(feature = "postgres")]
use super::prepare;
use super::process::{self, PgBin, RunAs};
#[cfg(feature = "postgres")]
use super::refill::{PgAddr, Refill};
use super::{
    Backend, PoolError, PoolSpec, PoolStatus, ServerStatus, ServiceSpec, ServiceStatus,
    SupervisorState,
};
use crate::config::{Auth, ReadyProbe, ServiceKind};
use pipeline_opt_lease::protocol::Slot;

/// One server process (or container), as `clean` finds it after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    pub service: String,
    pub generation: u32,
    pub process: Option<ProcessRecord>,
    pub container: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Set by the main thread once the pool ends (it stopped watching, or a start failed),
/// for the service threads; a stop signal counts too, see [`stop_requested`].
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the service threads and the main thread are to wind down: on `down`
/// (SIGTERM), SIGINT, SIGHUP, or [`STOP`].
fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst) || crate::process::received_signal().is_some()
}

macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "[pool {:?}] {}", std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH).unwrap_or_default(), format_args!($($arg)*));
    }};
}

pub(crate) fn run(dir: &Path) -> Result<(), PoolError> {
    let layout = Layout::new(dir);
    files::create_dir(&layout.run())?;
    let lock_path = layout.supervisor_lock();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        // Another `up` started a supervisor at the same moment: it serves the pool.
        Err(TryLockError::WouldBlock) => return Ok(()),
        Err(TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
    }
    let me = ProcessRecord::of(std::process::id()).expect("our own /proc entry exists");
    write_json(&layout.supervisor_pid(), &me)?;
    // `down` sends SIGTERM; in its own session the pool sees no terminal's Ctrl-C, but
    // a hang-up or a SIGINT sent by hand stops it the same way.
    crate::process::install_stop_handlers(&[
        crate::process::SIGTERM,
        crate::process::SIGINT,
        crate::process::SIGHUP,
    ]);
    let Some(spec) = read_json::<PoolSpec>(&layout.spec()) else {
        return Err(PoolError::Supervisor {
            message: "run/spec.json is missing or unreadable".into(),
            log: layout.supervisor_log(),
        });
    };
    for dir in [layout.instances(), layout.logs()] {
        files::create_dir(&dir)?;
    }
    let shared = Arc::new(Shared::default());
    write_status(&layout, &spec, me, &shared, SupervisorState::Starting, None);
    // One long-lived thread per service: a slow PostgreSQL clone or drop never delays a
    // Redis return, and each thread spawns its own servers, which PR_SET_PDEATHSIG ties
    // to that thread's life (it ends only after stopping them).
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = spec
        .services
        .iter()
        .map(|service| {
            let shared = Arc::clone(&shared);
            let mut worker =
                Supervisor::new(layout.clone(), spec.clone(), service.clone(), Arc::clone(&shared));
            let started_tx = started_tx.clone();
            std::thread::spawn(move || {
                let started = worker.start_all();
                let ok = started.is_ok();
                let _ = started_tx.send(started);
                if ok {
                    worker.work(&shared);
                }
                worker.stop_all();
            })
        })
        .collect();
    drop(started_tx);
    let mut result = Ok(());
    let mut ready = 0;
    for started in started_rx.iter().take(workers.len()) {
        if let Err(err) = started {
            result = Err(err);
            break;
        }
        ready += 1;
    }
    if result.is_ok() && ready < workers.len() {
        result = Err(PoolError::Supervisor {
            message: "a service thread panicked while starting its servers".into(),
            log: layout.supervisor_log(),
        });
    }
    if result.is_ok() {
        write_status(&layout, &spec, me, &shared, SupervisorState::Ready, None);
        log!("ready");
        watch(&layout, &spec, me, &shared);
    }
    STOP.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    match &result {
        Err(err) => {
            log!("failed: {err}");
            write_status(
                &layout,
                &spec,
                me,
                &shared,
                SupervisorState::Failed,
                Some(err.to_string()),
            );
        }
        Ok(()) => write_status(&layout, &spec, me, &shared, SupervisorState::Stopped, None),
    }
    let _ = std::fs::remove_dir_all(layout.run().join("slots"));
    let _ = std::fs::remove_file(layout.supervisor_pid());
    drop(lock);
    result
}

struct Server {
    port: u16,
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    password: String,
    child: Option<Child>,
    process: Option<ProcessRecord>,
    #[cfg_attr(not(feature = "docker"), allow(dead_code))]
    container: Option<String>,
    data_dir: Option<PathBuf>,
    /// PostgreSQL's private socket directory (process backend), for admin connections.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    socket_dir: Option<PathBuf>,
    record_path: PathBuf,
    log: PathBuf,
    start_ms: u64,
    /// When the engine last confirmed a container runs.
    #[cfg_attr(not(feature = "docker"), allow(dead_code))]
    checked: Instant,
}

enum Admin {
    None,
    #[cfg(feature = "redis")]
    Redis(Box<redis::Connection>),
}

struct Service {
    spec: ServiceSpec,
    servers: Vec<Server>,
    generation: u32,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    admin: Admin,
    /// PostgreSQL: the workers that clone databases ahead and drop returned ones.
    #[cfg(feature = "postgres")]
    refill: Option<Refill>,
    /// PostgreSQL: the cached prepared data directory its servers start from (template
    /// database, extensions, setup applied), when the setup's fingerprint is known.
    prepared: Option<PathBuf>,
    /// Restarts that failed in a row since the last good one: while non-zero the
    /// service has no working server (a failed restart may leave none, or one without
    /// its slots), so the next tick restarts it again, backing off.
    failed_restarts: u32,
    /// When the next attempt after a failed restart may run.
    retry_at: Option<Instant>,
}

/// How long to wait after the `n`th failed restart in a row: 100 ms doubling to 6.4 s,
/// so a server that cannot start is retried without a busy loop of start attempts.
fn restart_backoff(n: u32) -> Duration {
    Duration::from_millis(100) * 2u32.pow(n.saturating_sub(1).min(6))
}

/// The instance index of the server that prepares a template for the cache.
#[cfg(feature = "postgres")]
const PREPARING_INDEX: usize = 9999;

/// How many connections clone and drop PostgreSQL databases at once: a clone is mostly
/// a file copy on one core, and concurrent clones share their checkpoints. By default
/// two per core, 2 to 4: on a 2-core machine shared with other builds, 4 connections
/// kept up with a back-to-back client where 2 could not (docs/services.md).
/// `PIPELINE_OPT_POOL_REFILL_WORKERS` overrides it.
#[cfg(feature = "postgres")]
fn refill_workers() -> usize {
    std::env::var(super::REFILL_WORKERS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            (2 * std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(2, 4)
        })
}

/// The worker of one service (`services` holds exactly that one).
struct Supervisor {
    layout: Layout,
    spec: PoolSpec,
    services: Vec<Service>,
    run_as: Option<Option<RunAs>>,
    pg: Option<(PgBin, PathBuf, String)>,
    data_root: PathBuf,
    shared: Arc<Shared>,
}

impl Supervisor {
    fn new(
        layout: Layout,
        spec: PoolSpec,
        service: ServiceSpec,
        shared: Arc<Shared>,
    ) -> Supervisor {
        let data_root = files::data_root(&layout);
        let services = vec![Service {
            spec: service,
            servers: Vec::new(),
            generation: 0,
            admin: Admin::None,
            #[cfg(feature = "postgres")]
            refill: None,
            prepared: None,
            failed_restarts: 0,
            retry_at: None,
        }];
        Supervisor { layout, spec, services, run_as: None, pg: None, data_root, shared }
    }

    fn start_all(&mut self) -> Result<(), PoolError> {
        // A spec `up` wrote in a binary built with other features than this one.
        super::check_clients(self.services.iter().map(|s| (s.spec.name.as_str(), s.spec.kind)))?;
        for dir in [self.layout.instances(), self.layout.logs()] {
            files::create_dir(&dir)?;
        }
        for i in 0..self.services.len() {
            let name = self.services[i].spec.name.clone();
            for dir in
                [self.layout.ready(&name), self.layout.leased(&name), self.layout.slots_tmp(&name)]
            {
                files::create_dir(&dir)?;
            }
            self.restart(i)?;
        }
        Ok(())
    }

    /// Ticks until the pool stops.
    fn work(&mut self, shared: &Shared) {
        let mut last_activity = Instant::now();
        let mut last_publish = Instant::now();
        while !stop_requested() {
            let changed = match self.tick(0) {
                Ok(changed) => changed,
                // A server that dies mid-operation fails it; the next tick sees the
                // death and replaces the server, so one failure never ends the pool.
                Err(err) => {
                    log!("`{}`: {err}", self.services[0].spec.name);
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }
            };
            let busy = files_in(&self.layout.leased(&self.services[0].spec.name)) > 0;
            if changed || busy {
                last_activity = Instant::now();
                *shared.last_activity.lock().unwrap() = Some(last_activity);
            }
            // The refill works in the background: its numbers change without a tick.
            if changed || last_publish.elapsed() > Duration::from_millis(500) {
                shared.publish(self.service_status());
                last_publish = Instant::now();
            }
            // Poll fast while leases come and go, gently when the pool is quiet.
            let pause = match (changed, last_activity.elapsed() < Duration::from_secs(1)) {
                (true, _) => 0,
                (false, true) => 2,
                (false, false) => 10,
            };
            // A slot waiting for a clone is offered as soon as one is on hand.
            #[cfg(feature = "postgres")]
            if let Some(refill) = &self.services[0].refill
                && pause > 0
            {
                refill.wait_change(Duration::from_millis(pause));
                continue;
            }
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    /// One round for one service: replace dead servers, take back returned slots,
    /// refill. Returns whether anything changed.
    fn tick(&mut self, i: usize) -> Result<bool, PoolError> {
        let mut changed = false;
        let svc = &mut self.services[i];
        let dead = svc.failed_restarts > 0 || svc.servers.iter_mut().any(|s| !server_alive(s));
        if dead && svc.retry_at.is_none_or(|at| Instant::now() >= at) {
            let name = &svc.spec.name;
            match svc.failed_restarts {
                0 => log!("a server of `{name}` exited: replacing it"),
                n => log!("`{name}` has no working server after {n} failed restart(s): retrying"),
            }
            if let Err(err) = self.restart(i) {
                let svc = &mut self.services[i];
                svc.failed_restarts += 1;
                svc.retry_at = Some(Instant::now() + restart_backoff(svc.failed_restarts));
                return Err(err);
            }
            let svc = &mut self.services[i];
            svc.failed_restarts = 0;
            svc.retry_at = None;
            changed = true;
        }
        let name = self.services[i].spec.name.clone();
        let leased_dir = self.layout.leased(&name);
        for entry in std::fs::read_dir(&leased_dir).map_err(io_err("read", &leased_dir))?.flatten()
        {
            let path = entry.path();
            let Ok(file) = File::open(&path) else { continue };
            if file.try_lock().is_err() {
                continue; // still leased
            }
            self.take_back(i, &path, file)?;
            changed = true;
        }
        changed |= self.refill(i)?;
        Ok(changed)
    }

    fn take_back(&mut self, i: usize, path: &Path, lock: File) -> Result<(), PoolError> {
        let svc = &mut self.services[i];
        let slot: Option<Slot> = read_json(path);
        let current = slot.as_ref().is_some_and(|s| s.generation == svc.generation);
        match (svc.spec.kind, slot) {
            (ServiceKind::Postgres, Some(_slot)) if current => {
                let _ = std::fs::remove_file(path);
                // Dropped by the refill workers when no clone is wanted: a returned
                // database is never offered again.
                #[cfg(feature = "postgres")]
                if let (Some(db), Some(refill)) = (_slot.database, &svc.refill) {
                    refill.retire(db);
                }
            }
            (ServiceKind::Redis, Some(_slot)) if current => {
                #[cfg(feature = "redis")]
                if let Admin::Redis(con) = &mut svc.admin {
                    let db = _slot.database.clone().unwrap_or_default();
                    let flushed = redis::pipe()
                        .cmd("SELECT")
                        .arg(&db)
                        .cmd("FLUSHDB")
                        .cmd("SELECT")
                        .arg(0)
                        .query::<()>(con.as_mut());
                    if let Err(source) = flushed {
                        // The server may have just died; the next tick replaces it.
                        log!("FLUSHDB on `{}` failed: {source}", svc.spec.name);
                        let _ = std::fs::remove_file(path);
                        return Ok(());
                    }
                }
                let ready = self.layout.ready(&svc.spec.name).join(path.file_name().unwrap());
                std::fs::rename(path, &ready).map_err(io_err("move", path))?;
            }
            (ServiceKind::Command, Some(_)) if current => {
                let ready = self.layout.ready(&svc.spec.name).join(path.file_name().unwrap());
                std::fs::rename(path, &ready).map_err(io_err("move", path))?;
            }
            // A slot of a replaced server, or unreadable: its data went with the server.
            _ => {
                let _ = std::fs::remove_file(path);
            }
        }
        drop(lock);
        Ok(())
    }

    /// PostgreSQL: offers databases the refill workers cloned ahead until `size` slots
    /// exist (ready or leased), and tells the workers how many to keep on hand.
    #[cfg(feature = "postgres")]
    fn refill(&mut self, i: usize) -> Result<bool, PoolError> {
        let svc = &self.services[i];
        let Some(refill) = &svc.refill else { return Ok(false) };
        let name = &svc.spec.name;
        let mut missing = svc.spec.size.saturating_sub(
            files_in(&self.layout.ready(name)) + files_in(&self.layout.leased(name)),
        );
        let mut changed = false;
        while missing > 0 {
            let Some(db) = refill.take() else { break };
            let server = &svc.servers[0];
            let slot = Slot {
                service: name.clone(),
                kind: ServiceKind::Postgres,
                url: postgres_url(&svc.spec, server, &db),
                database: Some(db.clone()),
                port: server.port,
                server: server.process,
                generation: svc.generation,
            };
            publish(&self.layout, name, &db, &slot)?;
            missing -= 1;
            changed = true;
        }
        refill.set_want(svc.spec.spare + missing);
        Ok(changed)
    }

    /// Without the PostgreSQL client no service has a refill (`run` refused them).
    #[cfg(not(feature = "postgres"))]
    fn refill(&mut self, _i: usize) -> Result<bool, PoolError> {
        Ok(false)
    }

    /// (Re)starts every server of service `i` in a new generation and publishes its slots.
    fn restart(&mut self, i: usize) -> Result<(), PoolError> {
        let name = self.services[i].spec.name.clone();
        // Retire the old generation's ready slots; leased ones are dropped when returned.
        let ready_dir = self.layout.ready(&name);
        if let Ok(entries) = std::fs::read_dir(&ready_dir) {
            for e in entries.flatten() {
                if let Ok(f) = File::open(e.path())
                    && f.try_lock().is_ok()
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let old = std::mem::take(&mut self.services[i].servers);
        self.services[i].admin = Admin::None;
        // The old server's clones and returned databases go with its data directory.
        #[cfg(feature = "postgres")]
        if let Some(refill) = self.services[i].refill.take() {
            log!("`{name}` generation {} refill: {}", self.services[i].generation, refill.stop());
        }
        for s in old {
            stop_server(s);
        }
        self.services[i].generation += 1;
        let kind = self.services[i].spec.kind;
        // The cache holds a data directory: the process backend's.
        #[cfg(feature = "postgres")]
        if kind == ServiceKind::Postgres
            && self.spec.backend == Backend::Process
            && self.services[i].prepared.is_none()
            && prepare::has_setup(&self.services[i].spec)
        {
            self.services[i].prepared = self.prepared_template(i)?;
        }
        let count = if kind == ServiceKind::Command { self.services[i].spec.size } else { 1 };
        for index in 0..count {
            let server = self.start_server(i, index)?;
            self.services[i].servers.push(server);
        }
        // The status names the new servers before their slots are offered.
        self.shared.publish(self.service_status());
        let svc = &mut self.services[i];
        let generation = svc.generation;
        match kind {
            #[cfg(not(feature = "postgres"))]
            ServiceKind::Postgres => return Err(client_not_built(&svc.spec)),
            #[cfg(not(feature = "redis"))]
            ServiceKind::Redis => return Err(client_not_built(&svc.spec)),
            #[cfg(feature = "postgres")]
            ServiceKind::Postgres => {
                let server = &svc.servers[0];
                let mut admin =
                    pg_admin(server, "postgres").map_err(|source| PoolError::Postgres {
                        service: name.clone(),
                        action: "connecting".into(),
                        source,
                    })?;
                if svc.prepared.is_none() {
                    prepare_template(&svc.spec, &mut admin, server, &self.layout)?;
                }
                // `mode = "server"` hands out the maintenance database of this server.
                let server_slot = Slot {
                    service: name.clone(),
                    kind,
                    url: postgres_url(&svc.spec, server, "postgres"),
                    database: Some("postgres".into()),
                    port: server.port,
                    server: server.process,
                    generation,
                };
                let path = self.layout.server(&name);
                if let Some(parent) = path.parent() {
                    super::files::create_dir(parent)?;
                }
                write_json(&path, &server_slot)?;
                if let Some(db) = &svc.spec.database {
                    let owner = svc.spec.user.as_deref().unwrap_or("pool");
                    // Names checked by the config: a-z 0-9 _, nothing to quote.
                    admin
                        .batch_execute(&format!(
                            "CREATE DATABASE {db} TEMPLATE pool_template OWNER {owner} STRATEGY FILE_COPY"
                        ))
                        .map_err(|source| PoolError::Postgres {
                            service: name.clone(),
                            action: format!("creating the database `{db}`"),
                            source,
                        })?;
                }
                drop(admin);
                // The first `size` clones are offered before the pool reports ready; the
                // spares follow in the background.
                let refill = Refill::start(
                    server.pg_addr(),
                    generation,
                    refill_workers(),
                    svc.spec.size + svc.spec.spare,
                );
                let filled = refill.wait_for(svc.spec.size, Duration::from_secs(60));
                svc.refill = Some(refill);
                if let Err(message) = filled {
                    return Err(PoolError::Supervisor {
                        message: format!("`{name}`: {message}"),
                        log: self.layout.supervisor_log(),
                    });
                }
                self.refill(i)?;
            }
            #[cfg(feature = "redis")]
            ServiceKind::Redis => {
                let server = &svc.servers[0];
                let password = auth_password(&svc.spec, server);
                let con = redis_connect(server.port, password, 0).map_err(|source| {
                    PoolError::Redis { service: name.clone(), action: "connecting".into(), source }
                })?;
                svc.admin = Admin::Redis(Box::new(con));
                for db in 1..=svc.spec.size {
                    let slot = Slot {
                        service: name.clone(),
                        kind,
                        url: match password {
                            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/{db}", server.port),
                            None => format!("redis://127.0.0.1:{}/{db}", server.port),
                        },
                        database: Some(db.to_string()),
                        port: server.port,
                        server: server.process,
                        generation,
                    };
                    publish(&self.layout, &name, &format!("db{db}"), &slot)?;
                }
            }
            ServiceKind::Command => {
                for (index, server) in svc.servers.iter().enumerate() {
                    let slot = Slot {
                        service: name.clone(),
                        kind,
                        url: format!("127.0.0.1:{}", server.port),
                        database: None,
                        port: server.port,
                        server: server.process,
                        generation,
                    };
                    publish(&self.layout, &name, &format!("i{index}"), &slot)?;
                }
            }
        }
        Ok(())
    }

    /// The cached `initdb` output every PostgreSQL server starts from, made on first use.
    fn base_template(&mut self, run_as: Option<RunAs>) -> Result<(), PoolError> {
        if self.pg.is_none() {
            let bin = process::pg_bin()?;
            let (template, pw) =
                process::postgres_template(&self.spec.template_cache, &bin, run_as)?;
            self.pg = Some((bin, template, pw));
        }
        Ok(())
    }

    /// The prepared data directory of service `i` from the cache, made now when the
    /// cache has none for its setup's fingerprint: a server of its own started from the
    /// base template, prepared (extensions, setup SQL, setup command, `template1`),
    /// stopped cleanly (a checkpoint) and copied. `None` when the fingerprint cannot be
    /// known (a `setup-command` without `setup-inputs`): each server is prepared then.
    #[cfg(feature = "postgres")]
    fn prepared_template(&mut self, i: usize) -> Result<Option<PathBuf>, PoolError> {
        let run_as = self.run_as()?;
        self.base_template(run_as)?;
        let base = self.pg.as_ref().unwrap().1.clone();
        let spec = self.services[i].spec.clone();
        let Some(fp) = prepare::fingerprint(&spec, &base)? else {
            log!(
                "`{}`: setup-command without setup-inputs: the template is prepared anew",
                spec.name
            );
            return Ok(None);
        };
        let cache = self.spec.template_cache.clone();
        let dir = cache.join(format!("prepared-{fp}"));
        let data = dir.join("data");
        if dir.join("complete").exists() {
            log!("`{}`: prepared template {fp} from the cache", spec.name);
            prepare::mark_used(&dir);
            return Ok(Some(data));
        }
        files::create_dir(&cache)?;
        let lock_path = cache.join("prepared.lock");
        let lock = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;
        if dir.join("complete").exists() {
            return Ok(Some(data));
        }
        prepare::prune(&cache);
        let started = Instant::now();
        let server = self.start_server_on(i, PREPARING_INDEX, process::free_port()?)?;
        self.prepare_and_copy(&spec, server, &base, &dir)?;
        log!(
            "`{}`: prepared template {fp} made in {} ms",
            spec.name,
            started.elapsed().as_millis()
        );
        Ok(Some(data))
    }

    /// Prepares the template database on `server`, stops it cleanly and copies its data
    /// directory into `dir` (through a staging directory and a rename), with the base
    /// template's `pg_hba.conf`: each server writes its own.
    #[cfg(feature = "postgres")]
    fn prepare_and_copy(
        &self,
        spec: &ServiceSpec,
        mut server: Server,
        base: &Path,
        dir: &Path,
    ) -> Result<(), PoolError> {
        let result = (|| {
            let mut admin =
                pg_admin(&server, "postgres").map_err(|source| PoolError::Postgres {
                    service: spec.name.clone(),
                    action: "connecting".into(),
                    source,
                })?;
            prepare_template(spec, &mut admin, &server, &self.layout)?;
            drop(admin);
            // Fast shutdown: PostgreSQL checkpoints and exits, so the copy is consistent.
            if let Some(record) = server.process {
                crate::process::signal_process(record.pid as i32, crate::process::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while server_alive(&mut server) {
                if Instant::now() > deadline {
                    return Err(PoolError::ServiceStart {
                        service: spec.name.clone(),
                        message: "the server that prepared the template did not stop within 60 s"
                            .into(),
                        log: server.log.clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let source =
                server.data_dir.as_ref().expect("a process server has a data dir").join("data");
            let staging = dir.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            files::create_dir(&staging)?;
            process::copy_tree(&source, &staging.join("data"), None)?;
            let _ = std::fs::remove_file(staging.join("data/postmaster.pid"));
            let hba = staging.join("data/pg_hba.conf");
            std::fs::copy(base.join("pg_hba.conf"), &hba).map_err(io_err("write", &hba))?;
            std::fs::write(staging.join("complete"), "").map_err(io_err("write", &staging))?;
            let _ = std::fs::remove_dir_all(dir);
            std::fs::rename(&staging, dir).map_err(io_err("move into place", dir))
        })();
        stop_server(server);
        result
    }

    fn run_as(&mut self) -> Result<Option<RunAs>, PoolError> {
        if let Some(r) = self.run_as {
            return Ok(r);
        }
        let r = process::unprivileged_user()?;
        self.run_as = Some(r);
        Ok(r)
    }

    /// Starts one server, retrying with a new port when a chosen free port was taken
    /// before the server could bind it.
    fn start_server(&mut self, i: usize, index: usize) -> Result<Server, PoolError> {
        let spec = self.services[i].spec.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match spec.port {
                Some(port) if !process::port_free(port) => {
                    return Err(PoolError::PortInUse { service: spec.name.clone(), port });
                }
                Some(port) => port,
                None => process::free_port()?,
            };
            match self.start_server_on(i, index, port) {
                Err(PoolError::ServiceStart { message, .. })
                    if message.contains("in use") && spec.port.is_none() && attempt < 5 =>
                {
                    log!("port {port} of `{}` was taken meanwhile: retrying", spec.name);
                }
                Err(PoolError::ServiceStart { message, .. }) if message.contains("in use") => {
                    if let Some(port) = spec.port {
                        return Err(PoolError::PortInUse { service: spec.name.clone(), port });
                    }
                    return Err(PoolError::Supervisor {
                        message: format!(
                            "no free port for `{}` after {attempt} attempts",
                            spec.name
                        ),
                        log: self.layout.supervisor_log(),
                    });
                }
                other => return other,
            }
        }
    }

    fn start_server_on(&mut self, i: usize, index: usize, port: u16) -> Result<Server, PoolError> {
        let spec = self.services[i].spec.clone();
        let generation = self.services[i].generation;
        let instance = format!("{}-{generation}-{index}", spec.name);
        let log = self.layout.logs().join(format!("{instance}.log"));
        let record_path = self.layout.instances().join(format!("{instance}.json"));
        // The password asked for, else a random one per server.
        let password = spec.password.clone().unwrap_or_else(|| files::random_hex(16));
        let mut started = Instant::now();

        #[cfg(feature = "docker")]
        if self.spec.backend == Backend::Docker {
            let id =
                super::docker::start_container(&self.layout, &spec, &instance, port, &password)?;
            write_json(
                &record_path,
                &InstanceRecord {
                    service: spec.name.clone(),
                    generation,
                    process: None,
                    container: Some(id.clone()),
                    data_dir: None,
                },
            )?;
            let mut server = Server {
                port,
                password,
                child: None,
                process: None,
                container: Some(id),
                data_dir: None,
                socket_dir: None,
                record_path,
                log,
                start_ms: 0,
                checked: Instant::now(),
            };
            wait_ready(&spec, &mut server)?;
            server.start_ms = started.elapsed().as_millis() as u64;
            return Ok(server);
        }
        debug_assert_eq!(self.spec.backend, Backend::Process);

        let (cmd, data_dir, run_as, password) = match spec.kind {
            ServiceKind::Postgres => {
                let run_as = self.run_as()?;
                self.base_template(run_as)?;
                let (bin, base, _) = self.pg.as_ref().unwrap();
                let template = self.services[i].prepared.as_ref().unwrap_or(base);
                // The once-per-machine initdb is not part of a server's start time.
                started = Instant::now();
                let dir = process::instance_dir(&self.data_root, &instance, run_as)?;
                let (data, sock) = process::postgres_instance(template, &dir, run_as)?;
                process::write_hba(&data, &spec)?;
                // The template's password is on disk in the cache and shared by every
                // server made from it: each server gets its own (`set_credentials`).
                (process::postgres_command(bin, &data, &sock, port, &spec), dir, run_as, password)
            }
            ServiceKind::Redis => {
                let bin = process::redis_bin()?;
                let dir = process::instance_dir(&self.data_root, &instance, None)?;
                let requirepass = (spec.auth == Auth::Password).then_some(password.as_str());
                let cmd = process::redis_command(&bin, &dir, port, requirepass, spec.size + 1)?;
                (cmd, dir, None, password)
            }
            ServiceKind::Command => {
                let dir = process::instance_dir(&self.data_root, &instance, None)?;
                let args: Vec<String> =
                    spec.command.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
                let mut cmd = std::process::Command::new(&args[0]);
                cmd.args(&args[1..]).env("PORT", port.to_string());
                (cmd, dir, None, String::new())
            }
        };
        let child = process::spawn_server(cmd, &data_dir, &log, run_as)?;
        let record = ProcessRecord::of(child.id());
        write_json(
            &record_path,
            &InstanceRecord {
                service: spec.name.clone(),
                generation,
                process: record,
                container: None,
                data_dir: Some(data_dir.clone()),
            },
        )?;
        let mut server = Server {
            port,
            password,
            child: Some(child),
            process: record,
            container: None,
            socket_dir: (spec.kind == ServiceKind::Postgres).then(|| data_dir.join("sock")),
            data_dir: Some(data_dir),
            record_path,
            log,
            start_ms: 0,
            checked: Instant::now(),
        };
        let ready = wait_ready(&spec, &mut server);
        #[cfg(feature = "postgres")]
        let ready = ready.and_then(|()| match spec.kind {
            ServiceKind::Postgres => set_credentials(&spec, &server),
            _ => Ok(()),
        });
        if let Err(err) = ready {
            stop_server(server);
            return Err(err);
        }
        server.start_ms = started.elapsed().as_millis() as u64;
        log!(
            "`{}` server {} ready on port {port} in {} ms",
            spec.name,
            record.map_or(0, |r| r.pid),
            server.start_ms
        );
        Ok(server)
    }

    fn stop_all(&mut self) {
        for svc in &mut self.services {
            svc.admin = Admin::None;
            #[cfg(feature = "postgres")]
            if let Some(refill) = svc.refill.take() {
                log!("`{}` generation {} refill: {}", svc.spec.name, svc.generation, refill.stop());
            }
            for s in std::mem::take(&mut svc.servers) {
                stop_server(s);
            }
        }
    }

    fn service_status(&self) -> (String, ServiceStatus) {
        let s = &self.services[0];
        #[cfg(feature = "postgres")]
        let refill = s.refill.as_ref().map(Refill::stats);
        #[cfg(not(feature = "postgres"))]
        let refill = None;
        let status = ServiceStatus {
            kind: Some(s.spec.kind),
            size: s.spec.size,
            servers: s
                .servers
                .iter()
                .map(|v| ServerStatus { pid: v.process.map(|p| p.pid), port: v.port })
                .collect(),
            generation: s.generation,
            ready: 0,
            leased: 0,
            start_ms: s.servers.iter().map(|v| v.start_ms).collect(),
            refill,
        };
        (s.spec.name.clone(), status)
    }
}

/// What the service threads share with the main thread.
#[derive(Default)]
struct Shared {
    services: Mutex<BTreeMap<String, ServiceStatus>>,
    changed: AtomicBool,
    last_activity: Mutex<Option<Instant>>,
}

impl Shared {
    fn publish(&self, (name, status): (String, ServiceStatus)) {
        self.services.lock().unwrap().insert(name, status);
        self.changed.store(true, Ordering::SeqCst);
    }
}

/// The main thread while the pool serves: stop on SIGTERM, the owner's death or the
/// idle timeout; keep `status.json` current.
fn watch(layout: &Layout, spec: &PoolSpec, me: ProcessRecord, shared: &Shared) {
    let mut last_owner_check = Instant::now();
    let mut last_status = Instant::now();
    let started = Instant::now();
    loop {
        if stop_requested() {
            log!("stopping on request");
            return;
        }
        if last_owner_check.elapsed() >= Duration::from_millis(200) {
            last_owner_check = Instant::now();
            if let Some(owner) = spec.owner
                && !owner.alive()
            {
                log!("owner process {} exited: stopping", owner.pid);
                return;
            }
        }
        if let Some(idle) = spec.idle_timeout {
            let last = shared.last_activity.lock().unwrap().unwrap_or(started);
            if last.elapsed() > idle {
                log!("idle for {idle:?}: stopping");
                return;
            }
        }
        if shared.changed.swap(false, Ordering::SeqCst)
            || last_status.elapsed() > Duration::from_secs(1)
        {
            write_status(layout, spec, me, shared, SupervisorState::Ready, None);
            last_status = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_status(
    layout: &Layout,
    spec: &PoolSpec,
    me: ProcessRecord,
    shared: &Shared,
    state: SupervisorState,
    message: Option<String>,
) {
    let mut services = shared.services.lock().unwrap().clone();
    for (name, s) in services.iter_mut() {
        s.ready = files_in(&layout.ready(name));
        s.leased = files_in(&layout.leased(name));
    }
    let status =
        PoolStatus { state, message, supervisor: Some(me), backend: Some(spec.backend), services };
    if let Err(e) = write_json(&layout.status(), &status) {
        log!("could not write the status: {e}");
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Writes a slot file into `tmp/` and renames it into `ready/`, so a lease never reads
/// half a file.
fn publish(layout: &Layout, service: &str, name: &str, slot: &Slot) -> Result<(), PoolError> {
    let tmp = layout.slots_tmp(service).join(name);
    write_json(&tmp, slot)?;
    let ready = layout.ready(service).join(name);
    std::fs::rename(&tmp, &ready).map_err(io_err("publish", &ready))
}

fn server_alive(server: &mut Server) -> bool {
    if let Some(child) = &mut server.child {
        return matches!(child.try_wait(), Ok(None));
    }
    #[cfg(feature = "docker")]
    if let Some(id) = &server.container {
        // Asking the engine costs a process spawn: twice a second is enough.
        if server.checked.elapsed() < Duration::from_millis(500) {
            return true;
        }
        server.checked = Instant::now();
        return super::docker::container_alive(id);
    }
    false
}

fn stop_server(mut server: Server) {
    if let Some(record) = server.process {
        // SIGQUIT: PostgreSQL's immediate shutdown (its backends go too); Redis and most
        // commands exit on it as well. Whatever remains after the grace time is killed.
        files::stop_record(&record, crate::process::SIGQUIT, Duration::from_secs(2));
    }
    if let Some(child) = &mut server.child {
        let _ = child.kill();
        let _ = child.wait();
    }
    #[cfg(feature = "docker")]
    if let Some(id) = &server.container {
        super::docker::remove_container(id);
    }
    if let Some(dir) = &server.data_dir {
        // A PostgreSQL backend may still finish writing a file for a moment after its
        // postmaster is gone: retry until the directory is really gone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir_all(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(root) = dir.parent() {
            // Only succeeds once the last instance of the pool is gone.
            let _ = std::fs::remove_dir(root);
        }
        if dir.exists() {
            // Backends orphaned by a killed server can go on copying a clone for a while
            // (seen once under heavy load): keep the record, so that `down`'s clean
            // removes the directory later.
            log!("{} is still being written; `clean` removes it", dir.display());
            return;
        }
    }
    let _ = std::fs::remove_file(&server.record_path);
}

#[cfg(feature = "postgres")]
impl Server {
    fn pg_addr(&self) -> PgAddr {
        PgAddr {
            socket_dir: self.socket_dir.clone(),
            port: self.port,
            password: self.password.clone(),
        }
    }
}

/// The supervisor's own connection: over the private socket when there is one (no
/// password round), else over TCP with the password.
#[cfg(feature = "postgres")]
fn pg_admin(server: &Server, db: &str) -> Result<postgres::Client, postgres::Error> {
    server.pg_addr().connect(db)
}

/// Replaces the password a PostgreSQL server inherited from the cached template with
/// the server's own (random, or the one configured), over the trusted private socket,
/// before any URL with a password is written: the template's password outlives every
/// pool. The configured `user`, when there is one, is made a superuser with the same
/// password, as the postgres role of a CI service container is.
#[cfg(feature = "postgres")]
fn set_credentials(spec: &ServiceSpec, server: &Server) -> Result<(), PoolError> {
    // Hex from the kernel, or a configured one of A-Z a-z 0-9 . _ ~ - (the config
    // checks it), and a user of a-z 0-9 _: nothing to quote in SQL.
    debug_assert!(server.password.chars().all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c)));
    let password = &server.password;
    let mut sql = format!("ALTER ROLE pool PASSWORD '{password}';");
    if let Some(user) = spec.user.as_deref().filter(|u| *u != "pool") {
        // A prepared template already has the role (its setup ran as it).
        sql.push_str(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN \
             CREATE ROLE {user}; END IF; END $$; \
             ALTER ROLE {user} SUPERUSER LOGIN PASSWORD '{password}';"
        ));
    }
    pg_admin(server, "postgres").and_then(|mut c| c.batch_execute(&sql)).map_err(|e| {
        PoolError::ServiceStart {
            service: spec.name.clone(),
            message: format!("cannot set the server's credentials: {e}"),
            log: server.log.clone(),
        }
    })
}

/// The password clients give, `None` with `auth = "trust"`.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn auth_password<'a>(spec: &ServiceSpec, server: &'a Server) -> Option<&'a str> {
    (spec.auth == Auth::Password).then_some(server.password.as_str())
}

/// A lease's URL for database `db`: the configured user (or the pool's own), with the
/// server's password unless the service trusts loopback.
#[cfg(feature = "postgres")]
fn postgres_url(spec: &ServiceSpec, server: &Server, db: &str) -> String {
    let user = spec.user.as_deref().unwrap_or("pool");
    match auth_password(spec, server) {
        Some(pw) => format!("postgres://{user}:{pw}@127.0.0.1:{}/{db}", server.port),
        None => format!("postgres://{user}@127.0.0.1:{}/{db}", server.port),
    }
}

#[cfg(feature = "redis")]
fn redis_connect(
    port: u16,
    password: Option<&str>,
    db: i64,
) -> redis::RedisResult<redis::Connection> {
    let url = match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}/{db}"),
        None => format!("redis://127.0.0.1:{port}/{db}"),
    };
    let client = redis::Client::open(url)?;
    client.get_connection_with_timeout(Duration::from_secs(2))
}

/// Polls every 2 ms until the server answers a real request (a query, a PING, or the
/// command service's probe); fails fast when the process exits.
fn wait_ready(spec: &ServiceSpec, server: &mut Server) -> Result<(), PoolError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let fail = |server: &Server, message: String| PoolError::ServiceStart {
        service: spec.name.clone(),
        message,
        log: server.log.clone(),
    };
    loop {
        if !server_alive(server) {
            let tail = log_tail(&server.log);
            let in_use = tail.contains("Address already in use") || tail.contains("could not bind");
            let message = if in_use {
                format!("port {} is in use", server.port)
            } else {
                format!("it exited during start-up: {}", tail.trim())
            };
            return Err(fail(server, message));
        }
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
        let tcp = || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok();
        let ready = match spec.kind {
            #[cfg(not(feature = "postgres"))]
            ServiceKind::Postgres => return Err(client_not_built(spec)),
            #[cfg(not(feature = "redis"))]
            ServiceKind::Redis => return Err(client_not_built(spec)),
            #[cfg(feature = "postgres")]
            ServiceKind::Postgres => {
                tcp()
                    && pg_admin(server, "postgres")
                        .and_then(|mut c| c.simple_query("SELECT 1"))
                        .is_ok()
            }
            #[cfg(feature = "redis")]
            ServiceKind::Redis => {
                tcp()
                    && redis_connect(server.port, auth_password(spec, server), 0)
                        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                        .is_ok()
            }
            ServiceKind::Command => match &spec.ready {
                Some(ReadyProbe { tcp: true, .. }) => tcp(),
                Some(ReadyProbe { command, .. }) if !command.is_empty() => {
                    let args: Vec<String> = command
                        .iter()
                        .map(|a| a.replace("{port}", &server.port.to_string()))
                        .collect();
                    std::process::Command::new(&args[0])
                        .args(&args[1..])
                        .env("PORT", server.port.to_string())
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                }
                Some(ReadyProbe { log_line: Some(line), .. }) => {
                    std::fs::read_to_string(&server.log).is_ok_and(|l| l.contains(line.as_str()))
                }
                _ => tcp(),
            },
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(fail(server, "it was not ready within 60 s".into()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Creates the template database every lease is cloned from and applies the setup SQL
/// to it once. Connections to it are then refused, so clones never fail on a stray one.
#[cfg(feature = "postgres")]
fn prepare_template(
    spec: &ServiceSpec,
    admin: &mut postgres::Client,
    server: &Server,
    layout: &Layout,
) -> Result<(), PoolError> {
    let service = spec.name.as_str();
    let err = |action: &str| {
        let service = service.to_string();
        let action = action.to_string();
        move |source| PoolError::Postgres { service, action, source }
    };
    admin
        .batch_execute("CREATE DATABASE pool_template")
        .map_err(err("creating the template database"))?;
    if !spec.extensions.is_empty() {
        // Before the setup SQL, which may use them; checked to be installed by `up`.
        let sql: String = spec
            .extensions
            .iter()
            .map(|e| format!("CREATE EXTENSION IF NOT EXISTS \"{e}\";"))
            .collect();
        pg_admin(server, "pool_template")
            .and_then(|mut c| c.batch_execute(&sql))
            .map_err(err("creating the extensions"))?;
    }
    let sql_files = prepare::setup_sql_files(spec)?;
    if !sql_files.is_empty() {
        let mut c = pg_admin(server, "pool_template")
            .map_err(err("connecting to the template database"))?;
        for path in sql_files {
            let sql = std::fs::read_to_string(&path).map_err(|source| PoolError::SetupSql {
                service: service.to_string(),
                path: path.clone(),
                source,
            })?;
            c.batch_execute(&sql).map_err(err(&format!("applying {}", path.display())))?;
        }
    }
    if !spec.setup_command.is_empty() {
        let log = layout.logs().join(format!("{service}-setup.log"));
        prepare::run_setup_command(spec, &postgres_url(spec, server, "pool_template"), &log)?;
    }
    // A connection builds the database's relation cache file (`pg_internal.init`), and a
    // FILE_COPY clone copies it along, as clones of `template1` always have: then neither
    // the refill's check nor a test's first connection has to build it again.
    pg_admin(server, "pool_template")
        .and_then(|mut c| c.simple_query("SELECT 1"))
        .map_err(err("connecting to the template database"))?;
    // A clone waits in steps of 100 ms while a backend still has the template open, and
    // a closed connection's backend exits a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let open = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pool_template'", &[])
            .map_err(err("waiting for the template's connections to close"))?;
        if open.get::<_, i64>(0) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if spec.template1 {
        // Databases a suite creates itself (`CREATE DATABASE x`, `#[sqlx::test]`) are
        // cloned from `template1`: make it a copy of the prepared template.
        // One statement at a time: DROP and CREATE DATABASE refuse a transaction block.
        for sql in [
            "ALTER DATABASE template1 WITH IS_TEMPLATE false",
            "DROP DATABASE template1",
            "CREATE DATABASE template1 TEMPLATE pool_template STRATEGY FILE_COPY",
            "ALTER DATABASE template1 WITH IS_TEMPLATE true",
        ] {
            admin
                .batch_execute(sql)
                .map_err(err("making template1 a copy of the prepared template"))?;
        }
    }
    admin
        .batch_execute("ALTER DATABASE pool_template WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
        .map_err(err("sealing the template database"))?;
    Ok(())
}

/// A service of a kind whose client this build lacks: `up` and [`run`] refuse such a
/// spec first, so reaching this means a spec written by a differently built binary.
/// Each client's feature is named after its kind (`postgres`, `redis`).
#[cfg(not(all(feature = "postgres", feature = "redis")))]
fn client_not_built(spec: &ServiceSpec) -> PoolError {
    PoolError::ClientNotBuilt {
        service: spec.name.clone(),
        kind: spec.kind.name(),
        feature: spec.kind.name(),
    }
}
