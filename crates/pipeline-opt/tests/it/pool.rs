//! The service pool against real PostgreSQL and Redis servers: isolation between
//! concurrent processes, slots freed by dead holders, dead servers replaced, `down`
//! leaving nothing behind, and clear errors. Multi-process tests re-run this test
//! binary with `POOL_TEST_ROLE` set, which makes `pool_child_entry_point` act as a child.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pipeline_opt::config::{Config, ServiceConfig, ServiceKind};
use pipeline_opt::pool::{self, ContainerPool, LeaseError, PoolOptions};

const ROLE: &str = "POOL_TEST_ROLE";

/// Whether the servers are installed. Under `CI=true` a missing one fails the test
/// (`cargo xtask ci` installs them); elsewhere the test says loudly that it did not run.
fn servers_installed() -> bool {
    let missing: Vec<&str> = ["initdb", "redis-server"]
        .into_iter()
        .filter(|p| pool::find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{missing:?} not installed; `cargo xtask ci` installs them");
    }
    eprintln!("NOT RUN: {missing:?} not installed (install postgresql and redis-server)");
    false
}

fn service(kind: ServiceKind, size: usize) -> ServiceConfig {
    ServiceConfig { size, ..ServiceConfig::new(kind) }
}

/// A pool in a temp dir that stops with the test (and with this process, if it dies).
struct TestPool {
    pool: ContainerPool,
    _dir: tempfile::TempDir,
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let _ = self.pool.down();
    }
}

fn options() -> PoolOptions {
    PoolOptions {
        supervisor_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_pipeline-opt-pool"))),
        owner: Some(std::process::id()),
        template_cache: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pool-template")),
        ..PoolOptions::default()
    }
}

fn start(services: &[(&str, ServiceConfig)]) -> TestPool {
    let dir = tempfile::tempdir().unwrap();
    let pool = ContainerPool::at(&dir.path().join("pool"));
    let services: BTreeMap<String, ServiceConfig> =
        services.iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
    pool.up(dir.path(), &services, &options()).unwrap_or_else(|e| panic!("pool up: {e}"));
    TestPool { pool, _dir: dir }
}

fn child(role: &str, pool: &TestPool) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "pool::pool_child_entry_point", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(pool::POOL_ENV, pool.pool.dir())
        .env(pool::TIMEOUT_ENV, "20s")
        .stdin(Stdio::null());
    c
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Not a test of its own: the body of the child processes that other tests spawn.
#[test]
fn pool_child_entry_point() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let me = std::process::id().to_string();
    match role.as_str() {
        "isolate" => {
            let pg = pool::lease("postgres").unwrap();
            let rd = pool::lease("redis").unwrap();
            println!("start {}", now_nanos());
            let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).unwrap();
            // A fresh database: a reused one would already have the table.
            db.batch_execute("CREATE TABLE t (v text)").unwrap();
            db.execute("INSERT INTO t VALUES ($1)", &[&me]).unwrap();
            let mut r = redis::Client::open(rd.url()).unwrap().get_connection().unwrap();
            let size: i64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
            assert_eq!(size, 0, "a leased Redis database starts empty");
            redis::cmd("SET").arg("owner").arg(&me).query::<()>(&mut r).unwrap();
            std::thread::sleep(Duration::from_millis(150));
            let rows: Vec<String> =
                db.query("SELECT v FROM t", &[]).unwrap().iter().map(|r| r.get(0)).collect();
            assert_eq!(rows, vec![me.clone()], "another process's rows leaked in");
            let owner: String = redis::cmd("GET").arg("owner").query(&mut r).unwrap();
            assert_eq!(owner, me, "another process's keys leaked in");
            println!("end {}", now_nanos());
            println!("db {}", pg.database().unwrap());
        }
        "runner" => {
            // Started by the lease runner: the variables are set, the lease is held.
            let url = std::env::var("REDIS_URL").expect("REDIS_URL is set");
            let mut r = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
            redis::cmd("SET").arg("k").arg("v").query::<()>(&mut r).unwrap();
            println!("port {}", std::env::var("REDIS_PORT").unwrap());
            std::io::stdout().flush().unwrap();
            let wait = std::env::var("RUNNER_CHILD_WAIT").unwrap();
            while !Path::new(&wait).exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::process::exit(3);
        }
        "hold" => {
            let pg = pool::lease("postgres").unwrap();
            println!("leased {}", pg.database().unwrap());
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown {ROLE} `{other}`"),
    }
}

#[test]
fn eight_processes_share_a_pool_of_two_in_isolation() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[
        ("postgres", service(ServiceKind::Postgres, 2)),
        ("redis", service(ServiceKind::Redis, 2)),
    ]);
    let children: Vec<_> = (0..8)
        .map(|_| {
            child("isolate", &pool).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut intervals = Vec::new();
    let mut databases = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |name: &str| -> String {
            // libtest prints `test ... ` without a newline before the child's first line.
            let line = stdout.lines().find_map(|l| l.split_once(name).map(|(_, rest)| rest));
            line.unwrap_or_else(|| panic!("no `{name}` line in the child's output:\n{stdout}"))
                .trim()
                .to_string()
        };
        intervals.push((
            field("start ").parse::<u128>().unwrap(),
            field("end ").parse::<u128>().unwrap(),
        ));
        databases.push(field("db "));
    }
    // Never more than two holders at once: the pool has two slots.
    let most = intervals
        .iter()
        .map(|(s, _)| intervals.iter().filter(|(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap();
    assert!(most <= 2, "{most} leases overlapped in a pool of 2");
    databases.sort();
    databases.dedup();
    assert_eq!(databases.len(), 8, "a returned database was handed out again");
}

#[test]
fn a_killed_holder_frees_its_slot() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[("postgres", service(ServiceKind::Postgres, 1))]);
    let mut holder = child("hold", &pool).stdout(Stdio::piped()).spawn().unwrap();
    // The test harness prints its own lines first.
    let held = BufReader::new(holder.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("leased ").map(|(_, d)| d.trim().to_string()))
        .expect("the holder leased");
    // The only slot is taken.
    let err = pool.pool.lease("postgres", Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, LeaseError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("raise `size`"), "{err}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let start = Instant::now();
    let lease = pool.pool.lease("postgres", Duration::from_secs(10)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    assert_ne!(lease.database().unwrap(), held, "the dead holder's database was reused");
    let mut db = postgres::Client::connect(lease.url(), postgres::NoTls).unwrap();
    db.simple_query("SELECT 1").unwrap();
}

#[test]
fn a_killed_server_is_replaced_at_the_next_lease() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[
        ("postgres", service(ServiceKind::Postgres, 2)),
        ("redis", service(ServiceKind::Redis, 1)),
    ]);
    for name in ["postgres", "redis"] {
        let old = pool.pool.lease(name, Duration::from_secs(5)).unwrap();
        let old_pid = old.server_pid().unwrap();
        drop(old);
        // SAFETY: a server process this test's pool started.
        unsafe { libc::kill(old_pid as i32, libc::SIGKILL) };
        // The signal is delivered asynchronously: wait until the server is gone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while running(old_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The supervisor's own bound on a server's start: under a loaded machine (shards
        // of this suite side by side) a restart has taken more than 20 s.
        let lease = pool.pool.lease(name, Duration::from_secs(60)).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(pool.pool.dir().join("run/supervisor.log"));
            panic!("{name}: {e}\nsupervisor log:\n{}", log.unwrap_or_default())
        });
        assert_ne!(lease.server_pid().unwrap(), old_pid, "{name}: the dead server was leased");
        match name {
            "postgres" => {
                let mut db = postgres::Client::connect(lease.url(), postgres::NoTls).unwrap();
                db.simple_query("SELECT 1").unwrap();
            }
            _ => {
                let mut r = redis::Client::open(lease.url()).unwrap().get_connection().unwrap();
                let pong: String = redis::cmd("PING").query(&mut r).unwrap();
                assert_eq!(pong, "PONG");
            }
        }
    }
    // The status file follows within a few milliseconds.
    let deadline = Instant::now() + Duration::from_secs(2);
    while pool.pool.status().services["postgres"].generation != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.pool.status().services["postgres"].generation, 2);
}

/// A replacement that fails to start is tried again (backing off), never given up on:
/// the service serves again as soon as a server can start.
#[test]
fn a_replacement_that_fails_to_start_is_retried() {
    if !servers_installed() {
        return;
    }
    let redis = pool::find_program("redis-server").unwrap().display().to_string();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("fail-the-next-start");
    // `sh -c SCRIPT $0 $1 $2`: fails once (exit 3) while the marker exists.
    let script = r#"if [ -e "$0" ]; then rm -f "$0"; exit 3; fi; exec "$1" --port "$2" --bind 127.0.0.1 --save """#;
    let mut flaky = service(ServiceKind::Command, 1);
    flaky.command = ["sh", "-c", script, &marker.display().to_string(), &redis, "{port}"]
        .map(String::from)
        .to_vec();
    flaky.ready = Some(serde_json::from_str(r#"{"tcp": true}"#).unwrap());
    let pool = start(&[("flaky", flaky)]);
    let old = pool.pool.lease("flaky", Duration::from_secs(5)).unwrap();
    let old_pid = old.server_pid().unwrap();
    drop(old);
    std::fs::write(&marker, "").unwrap();
    // SAFETY: a server process this test's pool started.
    unsafe { libc::kill(old_pid as i32, libc::SIGKILL) };
    // The signal is delivered asynchronously: a lease before the server is gone could
    // take its slot (with four shards of this suite side by side, one did).
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(old_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let log = || std::fs::read_to_string(pool.pool.dir().join("run/supervisor.log"));
    let lease = pool
        .pool
        .lease("flaky", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nsupervisor log:\n{}", log().unwrap_or_default()));
    assert_ne!(lease.server_pid().unwrap(), old_pid, "the dead server was leased");
    assert!(!marker.exists(), "the replacement that fails never ran");
    let mut r =
        redis::Client::open(format!("redis://{}", lease.url())).unwrap().get_connection().unwrap();
    let pong: String = redis::cmd("PING").query(&mut r).unwrap();
    assert_eq!(pong, "PONG");
    let log = log().unwrap();
    assert!(log.contains("after 1 failed restart(s): retrying"), "{log}");
}

fn pids_of(pool: &ContainerPool) -> Vec<u32> {
    let status = pool.status();
    let mut pids: Vec<u32> =
        status.services.values().flat_map(|s| s.servers.iter().filter_map(|v| v.pid)).collect();
    pids.extend(status.supervisor.map(|s| s.pid));
    pids
}

/// A process is gone when /proc no longer has it or it is a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(") ").next().and_then(|r| r.split(' ').nth(1)) == Some(&parent.to_string())
            })
        })
        .collect()
}

#[test]
fn down_leaves_no_server_process() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[
        ("postgres", service(ServiceKind::Postgres, 1)),
        ("redis", service(ServiceKind::Redis, 1)),
    ]);
    let mut pids = pids_of(&pool.pool);
    assert_eq!(pids.len(), 3, "two servers and the supervisor: {pids:?}");
    // PostgreSQL's own processes (checkpointer, backends, ...) must go too.
    let children: Vec<u32> = pids.iter().flat_map(|p| children_of(*p)).collect();
    assert!(!children.is_empty(), "PostgreSQL runs helper processes");
    pids.extend(children);
    let report = pool.pool.down().unwrap();
    assert!(report.supervisor_stopped);
    let left: Vec<String> = pids
        .iter()
        .copied()
        .filter(|p| running(*p))
        .map(|p| {
            format!(
                "{p} {}",
                std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default()
            )
        })
        .collect();
    assert!(left.is_empty(), "still running after down: {left:?} (all: {pids:?})");
    let err = pool.pool.lease("postgres", Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("no pool supervisor runs"), "{err}");
}

#[test]
fn a_crashed_supervisor_takes_its_servers_along() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[
        ("postgres", service(ServiceKind::Postgres, 1)),
        ("redis", service(ServiceKind::Redis, 1)),
    ]);
    let status = pool.pool.status();
    let supervisor = status.supervisor.unwrap().pid;
    let servers: Vec<u32> = pids_of(&pool.pool).into_iter().filter(|p| *p != supervisor).collect();
    assert_eq!(servers.len(), 2, "one PostgreSQL and one Redis server: {servers:?}");
    // SAFETY: the supervisor this test started.
    unsafe { libc::kill(supervisor as i32, libc::SIGKILL) };
    // SIGKILL is delivered asynchronously, and the supervisor's threads exit one by one:
    // the service thread that spawned the servers can be gone (firing their
    // PR_SET_PDEATHSIG) while the main thread still holds the pool lock. Wait for the
    // whole supervisor (a zombie has released its files), then give its servers 2 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(supervisor) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!running(supervisor), "the supervisor survived SIGKILL for 5 s");
    let deadline = Instant::now() + Duration::from_secs(2);
    while servers.iter().any(|p| running(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<u32> = servers.iter().copied().filter(|p| running(*p)).collect();
    assert!(left.is_empty(), "servers outlived their supervisor by 2 s: {left:?}");
    // `clean` removes what the crash left on disk and reports nothing alive to stop.
    let report = pool.pool.clean().unwrap();
    assert_eq!(report.running_supervisor, None);
    assert!(!pool.pool.dir().join("run").exists());
}

#[test]
fn setup_sql_is_applied_to_every_leased_database() {
    if !servers_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schema.sql"),
        "CREATE TABLE users (name text); INSERT INTO users VALUES ('seed');",
    )
    .unwrap();
    let mut pg = service(ServiceKind::Postgres, 2);
    pg.setup_sql = Some("schema.sql".into());
    let services = BTreeMap::from([("db".to_string(), pg)]);
    let pool = ContainerPool::at(&dir.path().join("pool"));
    pool.up(dir.path(), &services, &options()).unwrap();
    let _guard = TestPool { pool: pool.clone(), _dir: tempfile::tempdir().unwrap() };
    for _ in 0..3 {
        let lease = pool.lease("db", Duration::from_secs(10)).unwrap();
        let mut db = postgres::Client::connect(lease.url(), postgres::NoTls).unwrap();
        let n: i64 = db.query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
        assert_eq!(n, 1, "each lease sees exactly the seed row");
        db.execute("INSERT INTO users VALUES ('mine')", &[]).unwrap();
    }
}

/// `psql` beside the server binaries, as a stand-in migration tool.
fn psql() -> String {
    pool::find_program("psql").expect("psql comes with the PostgreSQL client").display().to_string()
}

fn count_rows(url: &str, sql: &str) -> i64 {
    pg_connect(url).unwrap().query_one(sql, &[]).unwrap().get(0)
}

/// A database of its own, made with plain `CREATE DATABASE` (so from `template1`), as a
/// suite that creates its own databases does; returns its URL.
fn create_database(lease_url: &str, name: &str) -> String {
    pg_connect(lease_url).unwrap().batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (server, _) = lease_url.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

#[test]
fn setup_sql_files_and_a_setup_command_prepare_the_template_once_until_they_change() {
    if !servers_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("schema")).unwrap();
    // Applied by name, not by the order they were written in: 0002 needs 0001's table.
    std::fs::write(root.join("schema/0002_rows.sql"), "INSERT INTO a VALUES ('second');").unwrap();
    std::fs::write(
        root.join("schema/0001_table.sql"),
        "CREATE TABLE a (v text); INSERT INTO a VALUES ('first');",
    )
    .unwrap();
    std::fs::write(root.join("schema/notes.txt"), "not SQL: never applied").unwrap();
    // sqlx's reversible migrations: the up half only.
    std::fs::write(root.join("schema/0003_rev.up.sql"), "INSERT INTO a VALUES ('third');").unwrap();
    std::fs::write(root.join("schema/0003_rev.down.sql"), "DROP TABLE a;").unwrap();
    // diesel's layout: <version>_<name>/up.sql, after 0003 by name.
    std::fs::create_dir(root.join("schema/0004_diesel")).unwrap();
    std::fs::write(root.join("schema/0004_diesel/up.sql"), "INSERT INTO a VALUES ('fourth');")
        .unwrap();
    std::fs::write(root.join("schema/0004_diesel/down.sql"), "DROP TABLE a;").unwrap();
    std::fs::create_dir(root.join("migrations")).unwrap();
    let seed = root.join("migrations/seed.sql");
    let write_seed = |tag: &str| {
        std::fs::write(
            &seed,
            format!("\\getenv dburl DATABASE_URL\nINSERT INTO a SELECT '{tag} ' || current_database() || ' ' || (:'dburl' LIKE '%/pool_template');\n"),
        )
        .unwrap()
    };
    write_seed("seed");
    let runs_log = root.join("runs.log");
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.setup_sql = Some("schema".into());
    pg.setup_command = [
        &psql(),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-L",
        runs_log.to_str().unwrap(),
        "-f",
        "migrations/seed.sql",
        "{url}",
    ]
    .map(String::from)
    .to_vec();
    pg.setup_inputs = vec!["migrations".into()];
    pg.template1 = true;
    let services = BTreeMap::from([("db".to_string(), pg)]);
    let cache = tempfile::tempdir().unwrap();
    let options = PoolOptions { template_cache: Some(cache.path().to_path_buf()), ..options() };
    let pool = ContainerPool::at(&root.join("pool"));
    let _guard = TestPool { pool: pool.clone(), _dir: tempfile::tempdir().unwrap() };
    let command_runs =
        || std::fs::read_to_string(&runs_log).unwrap_or_default().matches("QUERY").count();
    let rows = |expect_tag: &str| {
        let lease = pool.lease("db", Duration::from_secs(10)).unwrap();
        let mut db = pg_connect(lease.url()).unwrap();
        // In the order written: the files by name, then the command.
        let got: Vec<String> =
            db.query("SELECT v FROM a", &[]).unwrap().iter().map(|r| r.get(0)).collect();
        let tagged = format!("{expect_tag} pool_template true");
        assert_eq!(
            got,
            ["first", "second", "third", "fourth", tagged.as_str()],
            "the lease's database"
        );
        // template1 was prepared too: a database the suite makes itself is migrated.
        let own = create_database(lease.url(), &format!("own_{}", expect_tag.replace(' ', "_")));
        assert_eq!(count_rows(&own, "SELECT count(*) FROM a"), 5, "a CREATE DATABASE of the suite");
    };

    pool.up(root, &services, &options).unwrap_or_else(|e| panic!("pool up: {e}"));
    assert_eq!(command_runs(), 1, "the setup command ran once");
    rows("seed");
    pool.down().unwrap();

    // A new run with the same inputs starts from the prepared template: no command.
    pool.up(root, &services, &options).unwrap_or_else(|e| panic!("pool up: {e}"));
    assert_eq!(command_runs(), 1, "the prepared template was reused");
    rows("seed");
    pool.down().unwrap();

    // A changed input is a new fingerprint: prepared again.
    write_seed("changed");
    pool.up(root, &services, &options).unwrap_or_else(|e| panic!("pool up: {e}"));
    assert_eq!(command_runs(), 2, "a changed migration ran");
    rows("changed");
}

#[test]
fn a_failing_setup_command_names_itself_its_exit_and_its_last_lines() {
    if !servers_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.setup_command =
        [&psql(), "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT no_such_column", "{url}"]
            .map(String::from)
            .to_vec();
    let services = BTreeMap::from([("db".to_string(), pg)]);
    let pool = ContainerPool::at(&dir.path().join("pool"));
    let err = pool.up(dir.path(), &services, &options()).unwrap_err();
    let _ = pool.down();
    let message = err.to_string();
    let expect = format!(
        "the `setup-command` of service `db`, `{} -X -v ON_ERROR_STOP=1 -c SELECT no_such_column {{url}}`, failed (exit status: 1); its last lines: ",
        psql()
    );
    assert!(message.contains(&expect), "{message}");
    assert!(message.contains("column \"no_such_column\" does not exist"), "{message}");
    assert!(message.contains("fix the command or its migrations"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn leases_in_a_row_from_a_small_pool_get_distinct_clean_databases() {
    if !servers_installed() {
        return;
    }
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.spare = Some(2);
    let pool = start(&[("postgres", pg)]);
    // More leases than the pool ever holds at once (1 offered + 2 spare), back to back,
    // so most come from clones made while the earlier ones were in use or returned.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..12 {
        let lease = pool.pool.lease("postgres", Duration::from_secs(10)).unwrap();
        let name = lease.database().unwrap().to_string();
        assert!(seen.insert(name.clone()), "lease {i} got {name} again");
        let mut db = postgres::Client::connect(lease.url(), postgres::NoTls).unwrap();
        let leftovers: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'mark'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(leftovers, 0, "lease {i} ({name}) saw an earlier lease's table");
        db.batch_execute("CREATE TABLE mark (lease int); INSERT INTO mark VALUES (1)").unwrap();
    }
    // Returned databases are dropped, never offered again: the server keeps only the
    // template, the offered one, the spares and not-yet-dropped returned ones, none of
    // which is offered.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = pool.pool.status();
        let refill = status.services["postgres"].refill.unwrap_or_default();
        if refill.drops >= 12 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let refill =
        status.services["postgres"].refill.expect("a PostgreSQL service reports its refill");
    assert_eq!(refill.drops, 12, "every returned database is dropped: {refill}");
    // The 12 leased plus the one on offer now.
    assert!(refill.clones > 12, "{refill}");
    let ready = std::fs::read_dir(pool.pool.dir().join("run/slots/postgres/ready")).unwrap();
    for entry in ready.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!seen.contains(&name), "returned database {name} is offered again");
    }
}

#[test]
fn a_command_service_is_probed_and_leased() {
    if !servers_installed() {
        return;
    }
    let redis = pool::find_program("redis-server").unwrap().display().to_string();
    let command = |ready: &str| {
        let mut s = service(ServiceKind::Command, 2);
        s.command = [&redis, "--port", "{port}", "--bind", "127.0.0.1", "--save", ""]
            .map(String::from)
            .to_vec();
        s.ready = Some(serde_json::from_str(ready).unwrap());
        s
    };
    let pool = start(&[
        ("by-tcp", command(r#"{"tcp": true}"#)),
        ("by-log", command(r#"{"log-line": "Ready to accept connections"}"#)),
    ]);
    for name in ["by-tcp", "by-log"] {
        let a = pool.pool.lease(name, Duration::from_secs(5)).unwrap();
        let b = pool.pool.lease(name, Duration::from_secs(5)).unwrap();
        assert_ne!(a.port(), b.port(), "two instances");
        let mut r =
            redis::Client::open(format!("redis://{}", a.url())).unwrap().get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut r).unwrap();
        assert_eq!(pong, "PONG");
    }
}

#[test]
fn a_fixed_port_in_use_is_a_clear_error() {
    if !servers_installed() {
        return;
    }
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    for kind in [ServiceKind::Redis, ServiceKind::Postgres] {
        let mut server = service(kind, 1);
        server.port = Some(port);
        let dir = tempfile::tempdir().unwrap();
        let pool = ContainerPool::at(&dir.path().join("pool"));
        let services = BTreeMap::from([("cache".to_string(), server)]);
        let err = pool.up(dir.path(), &services, &options()).unwrap_err();
        let _ = pool.down();
        let message = err.to_string();
        assert!(
            message.contains(&format!("port {port} of service `cache` is already in use")),
            "{message}"
        );
        assert!(message.contains("remove `port`"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}

/// Containers only when asked for by name: no engine that answers, no build with the
/// `docker` feature, makes the pool choose them on its own.
#[test]
fn containers_are_never_chosen_unless_asked_for_by_name() {
    use pipeline_opt::pool::{Backend, DOCKER_EXPERIMENTAL, choose_backend};
    for requested in [None, Some(""), Some("process"), Some(" process ")] {
        for docker_built in [false, true] {
            let choice = choose_backend(requested, docker_built, || {
                panic!("the engine was asked although {requested:?} asks for no containers")
            })
            .unwrap();
            assert_eq!(
                choice.backend,
                Backend::Process,
                "{requested:?}, built with docker: {docker_built}"
            );
            assert!(choice.warnings.is_empty());
        }
    }
    let chosen = choose_backend(Some("docker"), true, || true).unwrap();
    assert_eq!(chosen.backend, Backend::Docker);
    assert_eq!(chosen.warnings, [DOCKER_EXPERIMENTAL], "selecting it always warns");
    assert!(DOCKER_EXPERIMENTAL.starts_with("the Docker backend is experimental"));
    let err = |requested, built, answers| {
        choose_backend(Some(requested), built, || answers).unwrap_err().to_string()
    };
    assert_eq!(
        err("docker", false, true),
        "PIPELINE_OPT_POOL_BACKEND=docker asks for the Docker backend, which this binary was built without; build it with `--features docker`, or unset PIPELINE_OPT_POOL_BACKEND to run services as processes"
    );
    assert!(err("docker", true, false).contains("no container engine answered `docker info`"));
    assert_eq!(
        err("podman", true, true),
        "PIPELINE_OPT_POOL_BACKEND=podman is not a backend; use `process` (the default) or `docker` (experimental)"
    );
}

#[test]
fn leasing_without_a_pool_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = pool::lease_from(dir.path(), "postgres", Duration::from_millis(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no pool supervisor runs at {}; start one with `cargo xtask pool up` (it prints the PIPELINE_OPT_POOL to export)",
            dir.path().display()
        )
    );
}

#[test]
fn an_unknown_service_is_a_clear_error() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[("redis", service(ServiceKind::Redis, 1))]);
    let err = pool.pool.lease("postgres", Duration::from_millis(10)).unwrap_err();
    assert!(err.to_string().contains("has no service `postgres`; its services: redis"), "{err}");
}

#[track_caller]
fn check_config_error(services: serde_json::Value, expect: &str) {
    let metadata = serde_json::json!({ "pipeline-opt": { "services": services } });
    let err = Config::from_workspace_metadata(&metadata).unwrap_err();
    assert_eq!(err.to_string(), expect);
}

#[test]
fn bad_service_config_is_a_clear_error() {
    check_config_error(
        serde_json::json!({ "db": { "kind": "mysql" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.kind` in Cargo.toml: unknown variant `mysql`, expected one of `postgres`, `redis`, `command`",
    );
    check_config_error(
        serde_json::json!({ "web": { "kind": "command", "command": ["./server"] } }),
        "invalid `workspace.metadata.pipeline-opt.services.web.ready` in Cargo.toml: a service of kind \"command\" needs a readiness probe: ready = { tcp = true }, { command = [...] } or { log-line = \"...\" }",
    );
    check_config_error(
        serde_json::json!({ "web": { "kind": "command", "command": ["./server"], "ready": { "tcp": true, "log-line": "up" } } }),
        "invalid `workspace.metadata.pipeline-opt.services.web.ready` in Cargo.toml: set exactly one of `tcp = true`, `command = [...]` or `log-line = \"...\"`",
    );
    check_config_error(
        serde_json::json!({ "web": { "kind": "command", "command": ["./s"], "ready": { "port": 80 } } }),
        "invalid `workspace.metadata.pipeline-opt.services.web.ready.port` in Cargo.toml: unknown field `port`, expected one of `tcp`, `command`, `log-line`",
    );
    check_config_error(
        serde_json::json!({ "cache": { "kind": "redis", "setup-sql": "x.sql" } }),
        "invalid `workspace.metadata.pipeline-opt.services.cache.setup-sql` in Cargo.toml: only services of kind \"postgres\" take setup SQL; remove it",
    );
    check_config_error(
        serde_json::json!({ "cache": { "kind": "redis", "spare": 2 } }),
        "invalid `workspace.metadata.pipeline-opt.services.cache.spare` in Cargo.toml: only services of kind \"postgres\" keep spare databases; remove it",
    );
    check_config_error(
        serde_json::json!({ "cache": { "kind": "redis", "user": "postgres" } }),
        "invalid `workspace.metadata.pipeline-opt.services.cache.user` in Cargo.toml: only services of kind \"postgres\" take `user`; remove it",
    );
    check_config_error(
        serde_json::json!({ "api": { "kind": "command", "command": ["x"], "ready": { "tcp": true }, "password": "p" } }),
        "invalid `workspace.metadata.pipeline-opt.services.api.password` in Cargo.toml: only services of kind \"postgres\" and \"redis\" take `password`; remove it",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "auth": "trust", "password": "p" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.password` in Cargo.toml: with auth = \"trust\" no password is asked; remove `password` or `auth`",
    );
    check_config_error(
        serde_json::json!({ "cache": { "kind": "redis", "setup-command": ["sqlx", "migrate", "run"] } }),
        "invalid `workspace.metadata.pipeline-opt.services.cache.setup-command` in Cargo.toml: only services of kind \"postgres\" take `setup-command`; remove it",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "setup-inputs": ["migrations"] } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.setup-inputs` in Cargo.toml: `setup-inputs` name what `setup-command` reads; add the command or remove them",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "setup-command": ["diesel", "migration", "run", "--database-url", "{uri}"] } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.setup-command` in Cargo.toml: unknown placeholder `{uri}` for a service of kind \"postgres\"; use {url}, {user}, {password}, {host}, {port}, {db}",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "setup-command": ["sqlx"], "setup-inputs": ["../elsewhere"] } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.setup-inputs` in Cargo.toml: `../elsewhere` is not inside the workspace; give a path relative to the workspace root",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "auth": "none" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.auth` in Cargo.toml: unknown variant `none`, expected `password` or `trust`",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "password": "p@ss word" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.password` in Cargo.toml: use 1 to 128 of A-Z a-z 0-9 . _ ~ - (it goes into URLs as it is), or leave it out for a random one",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "user": "Robert'); DROP" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.user` in Cargo.toml: `Robert\\'); DROP` is not a role name the pool accepts; use 1 to 63 of a-z 0-9 _, starting with a letter or _",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "database": "template1" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.database` in Cargo.toml: `template1` is a database every server has or the pool's own; name another",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "settings": { "port": 5432 } } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.settings.port` in Cargo.toml: the pool sets `port` itself; set the service's `port` instead",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "settings": { "shared_preload_libraries": ["a"] } } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.settings` in Cargo.toml: setting `shared_preload_libraries`: give a string, a number or a boolean",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "extensions": ["pg crypto"] } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.extensions` in Cargo.toml: `pg crypto` is not an extension name; use a-z 0-9 _ - as in CREATE EXTENSION",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "socket-dir": "/tmp/a,b" } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.socket-dir` in Cargo.toml: give a directory path without commas or quotes (PostgreSQL splits the list at commas)",
    );
    check_config_error(
        serde_json::json!({ "db": { "kind": "postgres", "port": 70000 } }),
        "invalid `workspace.metadata.pipeline-opt.services.db.port` in Cargo.toml: invalid value: integer `70000`, expected u16",
    );
}

#[test]
fn the_plan_starts_services_beside_compilation_and_tests_wait_for_them() {
    use pipeline_opt::fixture::FixtureWorkspace;
    use pipeline_opt::plan::{PlanOptions, StageKind, plan};
    let dir = tempfile::tempdir().unwrap();
    let root = camino::Utf8Path::from_path(dir.path()).unwrap();
    let mut fixture = FixtureWorkspace::chain(1);
    fixture.config = Some("services.db = { kind = \"postgres\", size = 2 }\n".into());
    let manifest = fixture.write(root).unwrap();
    let workspace = pipeline_opt::workspace::Workspace::load(Some(&manifest)).unwrap();
    let config = Config::from_workspace_metadata(&workspace.metadata).unwrap();
    let plan = plan(&workspace, &config, &PlanOptions::default()).unwrap();
    let services = plan.stages.iter().find(|s| s.id == "services").expect("a services stage");
    assert_eq!(services.kind, StageKind::Services);
    assert!(services.depends_on.is_empty(), "it starts with the first stage");
    assert!(!services.cpu_heavy);
    assert_eq!(&services.command.args()[..3], ["xtask", "pool", "up"]);
    let test = plan.stages.iter().find(|s| s.id == "test").unwrap();
    assert!(test.depends_on.contains(&"services".to_string()));
    let pool_dir = workspace.state_dir(&config).join("pool");
    assert_eq!(test.command.env.get(pool::POOL_ENV), Some(&pool_dir.to_string()));
}

/// The password in a lease URL (`postgres://pool:PASSWORD@…`).
fn url_password(url: &str) -> String {
    let rest = url.split_once("://pool:").expect("a URL with a password").1;
    rest.split_once('@').unwrap().0.to_string()
}

#[test]
fn every_postgres_server_has_its_own_password() {
    if !servers_installed() {
        return;
    }
    // Two pools one after the other, from the same cached initdb template.
    let mut passwords = Vec::new();
    for _ in 0..2 {
        let pool = start(&[("postgres", service(ServiceKind::Postgres, 1))]);
        let lease = pool.pool.lease("postgres", Duration::from_secs(10)).unwrap();
        let mut db = postgres::Client::connect(lease.url(), postgres::NoTls).unwrap();
        db.simple_query("SELECT 1").unwrap();
        passwords.push(url_password(lease.url()));
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pool-template");
    let template: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("password")).ok())
        .map(|p| p.trim().to_string())
        .collect();
    assert!(!template.is_empty(), "the template cache holds its password in {cache:?}");
    assert_ne!(passwords[0], passwords[1], "a password survived `pool down`");
    for p in &passwords {
        assert!(!template.contains(p), "a server kept the template's password {p}");
    }
}

/// A port nothing listens on now (the kernel's choice, released at once).
fn unused_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

fn pg_connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(url, postgres::NoTls)
}

#[test]
fn configured_user_password_database_port_and_settings_are_what_tests_get() {
    if !servers_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.sql"), "CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), token bytea DEFAULT gen_random_bytes(8));").unwrap();
    let port = unused_port();
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.user = Some("postgres".into());
    pg.password = Some("postgres".into());
    pg.database = Some("app_test".into());
    pg.port = Some(port);
    pg.setup_sql = Some("schema.sql".into());
    pg.extensions = vec!["pgcrypto".into()];
    pg.settings = BTreeMap::from([
        ("max_connections".to_string(), "57".to_string()),
        ("wal_level".to_string(), "logical".to_string()),
    ]);
    let pool = ContainerPool::at(&dir.path().join("pool"));
    let _guard = TestPool { pool: pool.clone(), _dir: tempfile::tempdir().unwrap() };
    pool.up(dir.path(), &BTreeMap::from([("db".to_string(), pg)]), &options())
        .unwrap_or_else(|e| panic!("pool up: {e}"));

    // The URL a project hard-codes, written by hand, not taken from a lease.
    let mut db = pg_connect(&format!("postgres://postgres:postgres@127.0.0.1:{port}/app_test"))
        .expect("the configured user, password, port and database accept a connection");
    let row = db.query_one("SELECT current_user::text, current_database()::text", &[]).unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("postgres".into(), "app_test".into())
    );
    let superuser: String = db.query_one("SHOW is_superuser", &[]).unwrap().get(0);
    assert_eq!(superuser, "on", "the configured user can create databases and roles");
    let show = |db: &mut postgres::Client, setting: &str| -> String {
        db.query_one(&format!("SHOW {setting}"), &[]).unwrap().get(0)
    };
    assert_eq!(show(&mut db, "max_connections"), "57");
    assert_eq!(show(&mut db, "wal_level"), "logical");
    // The extension exists in the named database (the setup SQL used it, too).
    db.execute("INSERT INTO users DEFAULT VALUES", &[]).unwrap();
    let digest: Vec<u8> = db.query_one("SELECT digest('x', 'sha256')", &[]).unwrap().get(0);
    assert_eq!(digest.len(), 32);
    // A wrong password is refused: the password is really asked for.
    let refused = pg_connect(&format!("postgres://postgres:wrong@127.0.0.1:{port}/app_test"));
    assert!(refused.is_err(), "a wrong password was accepted");

    // Leases use the same credentials and port, on a fresh clone with the extension.
    let lease = pool.lease("db", Duration::from_secs(10)).unwrap();
    assert_eq!(lease.port(), port);
    assert!(lease.url().starts_with(&format!("postgres://postgres:postgres@127.0.0.1:{port}/")));
    let mut leased = pg_connect(lease.url()).unwrap();
    let n: i64 = leased.query_one("SELECT count(*) FROM users", &[]).unwrap().get(0);
    assert_eq!(n, 0, "a lease is a clone of the template, not of app_test");
    let ext: i64 = leased
        .query_one("SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'", &[])
        .unwrap()
        .get(0);
    assert_eq!(ext, 1);
}

#[test]
fn trust_auth_and_fixed_passwords_on_loopback() {
    if !servers_installed() {
        return;
    }
    let (pg_port, trusted_redis_port, redis_port) = (unused_port(), unused_port(), unused_port());
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.auth = pipeline_opt::config::Auth::Trust;
    pg.user = Some("postgres".into());
    pg.port = Some(pg_port);
    let mut trusted = service(ServiceKind::Redis, 1);
    trusted.auth = pipeline_opt::config::Auth::Trust;
    trusted.port = Some(trusted_redis_port);
    let mut secret = service(ServiceKind::Redis, 1);
    secret.password = Some("s3cret".into());
    secret.port = Some(redis_port);
    let pool = start(&[("db", pg), ("cache", trusted), ("locked", secret)]);

    let mut db = pg_connect(&format!("postgres://postgres@127.0.0.1:{pg_port}/postgres"))
        .expect("trust needs no password");
    db.simple_query("SELECT 1").unwrap();
    let lease = pool.pool.lease("db", Duration::from_secs(10)).unwrap();
    assert!(lease.url().starts_with(&format!("postgres://postgres@127.0.0.1:{pg_port}/")));
    pg_connect(lease.url()).unwrap().simple_query("SELECT 1").unwrap();

    let ping = |url: String| -> redis::RedisResult<String> {
        let mut con = redis::Client::open(url)?.get_connection()?;
        redis::cmd("PING").query(&mut con)
    };
    assert_eq!(ping(format!("redis://127.0.0.1:{trusted_redis_port}/0")).unwrap(), "PONG");
    let lease = pool.pool.lease("cache", Duration::from_secs(10)).unwrap();
    assert!(lease.url().starts_with(&format!("redis://127.0.0.1:{trusted_redis_port}/")));
    assert_eq!(ping(lease.url().to_string()).unwrap(), "PONG");
    assert_eq!(ping(format!("redis://:s3cret@127.0.0.1:{redis_port}/0")).unwrap(), "PONG");
    let err = ping(format!("redis://127.0.0.1:{redis_port}/0")).unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

#[test]
fn a_socket_dir_serves_the_configured_user_with_its_password() {
    if !servers_installed() {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sockets.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .unwrap();
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.user = Some("app".into());
    pg.password = Some("app-pw".into());
    pg.socket_dir = Some(camino::Utf8PathBuf::from_path_buf(sockets.path().to_path_buf()).unwrap());
    let pool = start(&[("db", pg)]);
    let port = pool.pool.lease("db", Duration::from_secs(10)).unwrap().port();
    let socket = |password: &str| {
        postgres::Config::new()
            .host_path(sockets.path())
            .port(port)
            .user("app")
            .password(password)
            .dbname("postgres")
            .connect(postgres::NoTls)
    };
    assert!(sockets.path().join(format!(".s.PGSQL.{port}")).exists(), "no socket in the directory");
    socket("app-pw")
        .expect("the socket accepts the user with its password")
        .simple_query("SELECT 1")
        .unwrap();
    assert!(socket("wrong").is_err(), "the public socket let a wrong password in");
}

#[test]
fn a_missing_extension_or_socket_dir_is_a_one_line_error_before_anything_starts() {
    if !servers_installed() {
        return;
    }
    let up = |pg: ServiceConfig| {
        let dir = tempfile::tempdir().unwrap();
        let pool = ContainerPool::at(&dir.path().join("pool"));
        let err = pool.up(dir.path(), &BTreeMap::from([("db".to_string(), pg)]), &options());
        let message = err.expect_err("up fails").to_string();
        // Nothing was started, so nothing is left to stop.
        assert!(!pool.dir().join("run/supervisor.pid").exists());
        assert!(!message.contains('\n'), "{message}");
        message
    };
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.extensions = vec!["pgcrypto".into(), "postgis".into()];
    let message = up(pg);
    assert!(
        message.starts_with("extension `postgis` of service `db` is not installed for PostgreSQL "),
        "{message}"
    );
    assert!(
        message.contains("install the package that provides it (Debian: `postgresql-"),
        "{message}"
    );
    let mut pg = service(ServiceKind::Postgres, 1);
    pg.socket_dir = Some("no/such/dir".into());
    let message = up(pg);
    assert!(message.contains("the `socket-dir` of service `db`"), "{message}");
    assert!(
        message
            .ends_with("/no/such/dir, is not a directory; create it or set another `socket-dir`"),
        "{message}"
    );
}

/// The lease runner as cargo starts it: `RUNNER --pipeline-opt-lease-runner … -- TEST ARGS`.
/// The two ways a runner is built: the small `pipeline-opt-lease-runner` (`no_main`)
/// and a binary that links more (here the supervisor's), as the whole command line does.
const RUNNERS: [&str; 2] =
    [env!("CARGO_BIN_EXE_pipeline-opt-lease-runner"), env!("CARGO_BIN_EXE_pipeline-opt-pool")];

fn lease_runner_exe(exe: &str, pool: &TestPool, service: &str, test: &[&str]) -> Command {
    let mut c = Command::new(exe);
    c.args([pipeline_opt::plan::LEASE_RUNNER_ARG, "--lease", service])
        .args(["--env", "REDIS_URL={url}", "--env", "REDIS_PORT={port}", "--"])
        .args(test)
        .env(pool::POOL_ENV, pool.pool.dir())
        .env(pool::TIMEOUT_ENV, "5s")
        .stdin(Stdio::null());
    c
}

fn leased(pool: &TestPool, service: &str) -> (usize, usize) {
    let s = &pool.pool.status().services[service];
    (s.ready, s.leased)
}

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lease runner (#17.1) gives the test it runs the variables of a lease it holds
/// exactly as long as the test lives: leased while the test runs, returned once it
/// exits, by its exit or by a signal; the test's exit status and the signal that killed
/// it are what the runner's starter sees, since the test is that very process.
#[test]
fn the_lease_runner_holds_a_lease_for_the_tests_life_and_passes_its_end_on() {
    if !servers_installed() {
        return;
    }
    let pool = start(&[("redis", service(ServiceKind::Redis, 1))]);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let test = [
        exe.to_str().unwrap(),
        "--exact",
        "pool::pool_child_entry_point",
        "--nocapture",
        "--test-threads=1",
    ];
    for (round, (exe, by_signal)) in
        RUNNERS.iter().flat_map(|e| [(e, false), (e, true)]).enumerate()
    {
        let wait = dir.path().join(format!("go-{round}"));
        let mut child = lease_runner_exe(exe, &pool, "redis", &test)
            .env(ROLE, "runner")
            .env("RUNNER_CHILD_WAIT", &wait)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // libtest prints `test NAME ... ` before the test's own output, on one line.
        while !line.contains("port ") {
            line.clear();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "the test printed its port");
        }
        let port: u16 = line.rsplit("port ").next().unwrap().trim().parse().unwrap();
        assert_eq!(port, pool.pool.status().services["redis"].servers[0].port);
        assert_eq!(leased(&pool, "redis"), (0, 1), "leased while the test runs");
        let status = if by_signal {
            child.kill().unwrap();
            child.wait().unwrap()
        } else {
            std::fs::write(&wait, "").unwrap();
            child.wait().unwrap()
        };
        use std::os::unix::process::ExitStatusExt;
        if by_signal {
            assert_eq!(status.signal(), Some(9), "{status:?}");
        } else {
            assert_eq!(status.code(), Some(3), "{status:?}");
        }
        wait_for("the lease to come back", || leased(&pool, "redis") == (1, 0));
    }
    // A service the pool does not have: one line naming it, exit 1, and no test run.
    for exe in RUNNERS {
        let out = lease_runner_exe(exe, &pool, "nope", &["/bin/true"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("has no service `nope`"), "{stderr}");
    }
}
