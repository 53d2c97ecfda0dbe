//! PostgreSQL refills off the lease path: a few worker threads, each with its own open
//! admin connection, clone databases from the template ahead of demand (each checked with
//! `SELECT 1`) and drop returned ones when no clone is wanted. Clones run concurrently
//! because one `CREATE DATABASE … FILE_COPY` mostly copies files on one core and waits
//! on checkpoints that concurrent clones share.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::RefillStats;

/// Returned databases kept before drops run even while clones are wanted (each is a few
/// MB of tmpfs): drops beyond this share the workers with clones.
pub(crate) const MAX_DROP_BACKLOG: usize = 32;

/// Where the supervisor's own connections go: the private socket directory when there
/// is one (trusted, no password round), else TCP with the password.
#[derive(Debug, Clone)]
pub(crate) struct PgAddr {
    pub socket_dir: Option<PathBuf>,
    pub port: u16,
    pub password: String,
}

impl PgAddr {
    pub fn connect(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        match &self.socket_dir {
            Some(dir) => config.host_path(dir),
            None => config.host("127.0.0.1").password(&self.password),
        };
        config
            .port(self.port)
            .user("pool")
            .dbname(db)
            .connect_timeout(Duration::from_secs(2))
            .connect(postgres::NoTls)
    }
}

#[derive(Default)]
struct State {
    /// How many checked databases to keep on hand (not yet offered).
    want: usize,
    /// Checked databases, oldest first.
    spares: VecDeque<String>,
    cloning: usize,
    to_drop: VecDeque<String>,
    next_id: u64,
    stop: bool,
    /// The last failure, until the next success; the first fill fails on it.
    error: Option<String>,
    stats: RefillStats,
}

struct Shared {
    state: Mutex<State>,
    /// Workers wait on it for work; the service thread for new spares.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Job {
    Clone(String),
    Drop(String),
}

/// The refill workers of one PostgreSQL server generation.
pub(crate) struct Refill {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Refill {
    /// Starts `workers` threads cloning `pool_template` into `pool_<generation>_<n>`.
    pub fn start(addr: PgAddr, generation: u32, workers: usize, want: usize) -> Refill {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { want, ..State::default() }),
            changed: Condvar::new(),
        });
        let workers = (0..workers.max(1))
            .map(|_| {
                let shared = Arc::clone(&shared);
                let addr = addr.clone();
                std::thread::spawn(move || work(&shared, &addr, generation))
            })
            .collect();
        Refill { shared, workers }
    }

    /// How many checked databases to keep on hand.
    pub fn set_want(&self, want: usize) {
        let mut state = self.shared.lock();
        if state.want != want {
            state.want = want;
            self.shared.changed.notify_all();
        }
    }

    /// A checked database, never handed out before; `None` when none is on hand yet.
    pub fn take(&self) -> Option<String> {
        let mut state = self.shared.lock();
        let db = state.spares.pop_front();
        if db.is_none() {
            state.stats.empty_ticks += 1;
        } else {
            // One fewer on hand: a worker may clone the next.
            self.shared.changed.notify_all();
        }
        db
    }

    /// A returned database: dropped when no clone is wanted (or the backlog is long).
    pub fn retire(&self, db: String) {
        self.shared.lock().to_drop.push_back(db);
        self.shared.changed.notify_all();
    }

    /// Waits until `n` checked databases are on hand; fails on the first error.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.spares.len() >= n {
                return Ok(());
            }
            if let Some(e) = &state.error {
                return Err(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("fewer than {n} databases were cloned within {timeout:?}"));
            }
            state =
                self.shared.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Sleeps up to `pause`, waking early when a new database is on hand.
    pub fn wait_change(&self, pause: Duration) {
        let state = self.shared.lock();
        let spares = state.spares.len();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(state, pause, |s| s.spares.len() == spares && !s.stop);
    }

    pub fn stats(&self) -> RefillStats {
        self.shared.lock().stats
    }

    /// Stops the workers (an operation in progress finishes or fails first) and returns
    /// the statistics.
    pub fn stop(mut self) -> RefillStats {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.stats()
    }
}

impl Drop for Refill {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
    }
}

fn next_job(shared: &Shared, generation: u32) -> Option<Job> {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return None;
        }
        let clone_wanted = state.spares.len() + state.cloning < state.want;
        // Clones first, so that no lease waits behind a drop; but never let returned
        // databases pile up in memory without bound.
        if state.to_drop.len() >= MAX_DROP_BACKLOG || (!clone_wanted && !state.to_drop.is_empty()) {
            let db = state.to_drop.pop_front().expect("checked non-empty");
            return Some(Job::Drop(db));
        }
        if clone_wanted {
            state.cloning += 1;
            let db = format!("pool_{generation}_{}", state.next_id);
            state.next_id += 1;
            return Some(Job::Clone(db));
        }
        state = shared
            .changed
            .wait_timeout(state, Duration::from_millis(200))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn work(shared: &Shared, addr: &PgAddr, generation: u32) {
    let mut admin: Option<postgres::Client> = None;
    while let Some(job) = next_job(shared, generation) {
        let result = run(&mut admin, addr, &job, shared);
        let mut state = shared.lock();
        if let Job::Clone(_) = job {
            state.cloning -= 1;
        }
        match result {
            Ok(()) => {
                if let Job::Clone(db) = job {
                    state.spares.push_back(db);
                }
                state.error = None;
            }
            Err(e) => {
                let what = match &job {
                    Job::Clone(db) => format!("cloning the template into {db}"),
                    Job::Drop(db) => format!("dropping the returned database {db}"),
                };
                if let Job::Clone(db) = job {
                    // It may exist half-checked: never offer it, drop it.
                    state.to_drop.push_back(db);
                }
                // The server may have died: reconnect on the next job; the service
                // thread notices the death and replaces the server and this refill.
                admin = None;
                state.error = Some(format!("{what} failed: {e}"));
                drop(state);
                shared.changed.notify_all();
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        }
        drop(state);
        shared.changed.notify_all();
    }
}

fn run(
    admin: &mut Option<postgres::Client>,
    addr: &PgAddr,
    job: &Job,
    shared: &Shared,
) -> Result<(), postgres::Error> {
    if admin.is_none() {
        *admin = Some(addr.connect("postgres")?);
    }
    let client = admin.as_mut().expect("just connected");
    match job {
        Job::Clone(db) => {
            let start = Instant::now();
            client.batch_execute(&format!(
                "CREATE DATABASE \"{db}\" TEMPLATE pool_template STRATEGY FILE_COPY"
            ))?;
            let cloned = start.elapsed();
            // The check's connection also builds the new database's relation cache file,
            // so the test's own first connection does not pay for it.
            let mut check = addr.connect(db)?;
            check.simple_query("SELECT 1")?;
            drop(check);
            let mut state = shared.lock();
            state.stats.clones += 1;
            state.stats.clone_ms += cloned.as_secs_f64() * 1e3;
            state.stats.check_ms += (start.elapsed() - cloned).as_secs_f64() * 1e3;
        }
        Job::Drop(db) => {
            let start = Instant::now();
            client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))?;
            let mut state = shared.lock();
            state.stats.drops += 1;
            state.stats.drop_ms += start.elapsed().as_secs_f64() * 1e3;
        }
    }
    Ok(())
}
