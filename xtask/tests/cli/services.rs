//! `optimize` on a workspace that declares services: the services stage starts the pool
//! beside compilation, the tests see it, and the end of the run stops it.

use camino::Utf8PathBuf;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::record::{RunRecord, StageStatus};

use crate::xtask;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then_some(cmd)
        })
        .collect()
}

/// Whether the pool finds `program`. Under `CI=true` a missing one fails the test
/// (`cargo xtask ci` installs it); elsewhere the test says loudly that it did not run.
fn installed(program: &str, package: &str) -> bool {
    if pipeline_opt::pool::find_program(program).is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is missing under CI=true: `cargo xtask ci` installs it"
    );
    eprintln!("NOT RUN: {program} is not installed (`apt-get install {package}`)");
    false
}

/// Whether redis-server is installed, which CI must have; says NOT RUN when it is not.
pub(crate) fn redis_installed() -> bool {
    installed("redis-server", "redis-server")
}

#[test]
fn services_start_beside_the_build_and_stop_with_the_run() {
    if !redis_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    // The fixture's test fails unless the pool the run started is up when it runs.
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app").test(
        "needs_pool",
        "#[test]\nfn pool_is_exported() {\n    let dir = std::env::var(\"PIPELINE_OPT_POOL\").expect(\"PIPELINE_OPT_POOL is set\");\n    let status = std::fs::read_to_string(format!(\"{dir}/run/status.json\")).expect(\"the pool reports its status\");\n    assert!(status.replace(' ', \"\").contains(\"\\\"state\\\":\\\"ready\\\"\"), \"{status}\");\n}\n",
    )])
    .config("disable = [\"bench-build\", \"doctest\"]\n[services.cache]\nkind = \"redis\"\nsize = 1\n");
    let manifest = ws.write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let record: RunRecord = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let stage = |id: &str| record.stages.iter().find(|s| s.id == id).unwrap();
    let services = stage("services");
    assert_eq!(services.status, StageStatus::Succeeded, "{:?}", services.tail);
    assert_eq!(stage("test").status, StageStatus::Succeeded);
    // Started with the build, not after it.
    assert!(services.start < stage("build").start + stage("build").wall);
    // The run stopped the pool it started: no supervisor, no process of the run left.
    let pool_dir = root.join("ws/target/pipeline-opt/pool");
    let status = pipeline_opt::pool::ContainerPool::at(pool_dir.as_std_path()).status();
    assert!(status.supervisor.is_none(), "{status:?}");
    let left = pipeline_opt::process::marked_processes(&record.run_id, None);
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(processes_mentioning(pool_dir.as_str()).is_empty());
}

/// A service configured in `pipeline-opt.toml` with the settings a project's tests
/// expect: a Redis with no password on a fixed port, which the fixture's test reaches
/// by that port alone, as a suite with a hard-coded address does, with no lease.
#[test]
fn a_hard_coded_address_reaches_a_service_configured_in_pipeline_opt_toml() {
    if !redis_installed() {
        return;
    }
    let (_dir, root) = crate::temp();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    // Raw RESP over TCP: the fixture builds offline, with no client crate. A server
    // with a password would answer -NOAUTH, a missing one refuse the connection.
    let test = format!(
        "use std::io::{{Read, Write}};\n#[test]\nfn ping() {{\n    let mut s = std::net::TcpStream::connect((\"127.0.0.1\", {port})).expect(\"redis listens on its fixed port\");\n    s.write_all(b\"PING\\r\\n\").unwrap();\n    let mut buf = [0u8; 7];\n    s.read_exact(&mut buf).unwrap();\n    assert_eq!(&buf, b\"+PONG\\r\\n\", \"{{}}\", String::from_utf8_lossy(&buf));\n}}\n"
    );
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app").test("hard_coded", test)]).file(
        "pipeline-opt.toml",
        format!(
            "disable = [\"bench-build\", \"doctest\"]\n[services.cache]\nkind = \"redis\"\nauth = \"trust\"\nport = {port}\n"
        ),
    );
    let manifest = ws.write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let record = crate::record(&json);
    let test = record.stages.iter().find(|s| s.id == "test").unwrap();
    assert_eq!(test.status, StageStatus::Succeeded, "{:?}", test.tail);
    let left = pipeline_opt::process::marked_processes(&record.run_id, None);
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn pool_up_with_a_missing_extension_is_one_line_and_starts_nothing() {
    if !installed("initdb", "postgresql") {
        return;
    }
    let (_dir, root) = crate::temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app")])
        .config("[services.db]\nkind = \"postgres\"\nextensions = [\"postgis\"]\n");
    let manifest = ws.write(&root.join("ws")).unwrap();
    let out = xtask(&["pool", "up", "--manifest-path", manifest.as_str()]);
    crate::assert_clean_error(
        &out,
        1,
        "extension `postgis` of service `db` is not installed for PostgreSQL",
    );
    let pool_dir = root.join("ws/target/pipeline-opt/pool");
    let status = pipeline_opt::pool::ContainerPool::at(pool_dir.as_std_path()).status();
    assert!(status.supervisor.is_none(), "{status:?}");
    assert!(processes_mentioning(pool_dir.as_str()).is_empty());
}

/// A test file of the fixture: tests that know nothing of pipeline-opt, only the
/// `DATABASE_URL` they read. Each creates the same table, which fails on a database
/// another test already used, and logs its database and its time span. It speaks the
/// PostgreSQL wire protocol by hand (trust authentication), so the fixture builds
/// offline with no client crate.
fn database_url_tests() -> String {
    [
        PG_WIRE,
        r#"
fn collide(name: &str) {
    let start = now();
    let (mut s, db) = connect(&std::env::var("DATABASE_URL").expect("DATABASE_URL is set"));
    query(&mut s, "CREATE TABLE shared (v int)");
    std::thread::sleep(Duration::from_millis(400));
    query(&mut s, "INSERT INTO shared VALUES (1)");
    let runner = std::env::var("USER_RUNNER").unwrap_or_default();
    let log = std::env::var("FIXTURE_LOG").unwrap();
    std::fs::write(format!("{log}/{name}"), format!("{db} {start} {} {runner}", now())).unwrap();
}

#[test]
fn first() { collide("first") }
#[test]
fn second() { collide("second") }
#[test]
fn third() { collide("third") }
#[test]
fn fourth() { collide("fourth") }
"#,
    ]
    .concat()
}

/// The PostgreSQL wire protocol, by hand: start-up with trust authentication, simple
/// queries, errors as panics.
const PG_WIRE: &str = r#"
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}

fn until_ready(s: &mut TcpStream) {
    loop {
        match message(s) {
            (b'Z', _) => return,
            (b'E', body) => panic!("server error: {}", String::from_utf8_lossy(&body)),
            (b'R', body) if body[..4] != [0, 0, 0, 0] => panic!("the server asks for a password"),
            _ => {}
        }
    }
}

/// postgres://USER@HOST:PORT/DB
fn connect(url: &str) -> (TcpStream, String) {
    let rest = url.strip_prefix("postgres://").expect("a postgres URL");
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(hostport).unwrap();
    let mut body = 196608u32.to_be_bytes().to_vec();
    for part in ["user", user, "database", db] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend(body);
    s.write_all(&startup).unwrap();
    until_ready(&mut s);
    (s, db.to_string())
}

fn query(s: &mut TcpStream, sql: &str) {
    let mut q = vec![b'Q'];
    q.extend(((sql.len() + 5) as u32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    q.push(0);
    s.write_all(&q).unwrap();
    until_ready(s);
}

fn now() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}
"#;

/// The fixture's own target runner, which the tool's must run in turn: it marks the
/// test's environment and passes the exit status on.
const USER_RUNNER: &str = r#"
fn main() {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().expect("a test binary");
    let status = std::process::Command::new(program)
        .args(args)
        .env("USER_RUNNER", "chained")
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(101));
}
"#;

/// Item 1 of #17: tests that read only `DATABASE_URL` and would collide on a shared
/// database (each creates the same table) pass under `optimize`, four at once, each in
/// a database of its own; the user's `target.'cfg(unix)'.runner` still runs; no build
/// sees the variable; nothing of the pool is left after the run.
#[test]
fn tests_reading_database_url_get_a_database_each_through_a_chained_runner() {
    if !installed("initdb", "postgresql") {
        return;
    }
    let (_dir, root) = crate::temp();
    let log = root.join("log");
    std::fs::create_dir_all(&log).unwrap();
    // A build that saw the test variables would fail here (sqlx's macros would connect).
    let build_rs = "fn main() {\n    assert!(std::env::var_os(\"DATABASE_URL\").is_none(), \"a build saw DATABASE_URL\");\n}\n";
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("app")
            .test("collide", database_url_tests())
            .bin("user-runner", USER_RUNNER)
            .file("build.rs", build_rs),
    ])
    .config(format!(
        "disable = [\"bench-build\", \"doctest\"]\n\
         [services.db]\nkind = \"postgres\"\nauth = \"trust\"\nsize = 4\n\
         env = {{ DATABASE_URL = \"postgres://{{user}}@{{host}}:{{port}}/{{db}}\" }}\n\
         [env]\ntest = {{ NEXTEST_TEST_THREADS = \"4\", FIXTURE_LOG = \"{log}\" }}\n"
    ))
    // Relative to the directory that holds `.cargo`, as cargo resolves it.
    .file(".cargo/config.toml", "[target.'cfg(unix)']\nrunner = \"target/debug/user-runner\"\n");
    let manifest = ws.write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let record = crate::record(&json);
    let test = record.stages.iter().find(|s| s.id == "test").unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{:?}", test.tail);
    let counts = record.test_counts.iter().find(|c| c.stage == "test").unwrap();
    // The four above and the fixture lib's own unit test.
    assert_eq!((counts.passed, counts.failed), (5, 0), "{:?}", test.tail);

    let mut spans = Vec::new();
    let mut databases = std::collections::BTreeSet::new();
    for name in ["first", "second", "third", "fourth"] {
        let line = std::fs::read_to_string(log.join(name)).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.get(3), Some(&"chained"), "the user's runner ran the test: {line}");
        databases.insert(f[0].to_string());
        spans.push((f[1].parse::<u128>().unwrap(), f[2].parse::<u128>().unwrap()));
    }
    assert_eq!(databases.len(), 4, "a database per test: {databases:?}");
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "tests ran at the same time: {spans:?}");

    let pool_dir = root.join("ws/target/pipeline-opt/pool");
    let status = pipeline_opt::pool::ContainerPool::at(pool_dir.as_std_path()).status();
    assert!(status.supervisor.is_none(), "{status:?}");
    let left = pipeline_opt::process::marked_processes(&record.run_id, None);
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(processes_mentioning(pool_dir.as_str()).is_empty());
}

/// Tests that make their own databases, as sqlx's `#[sqlx::test]` does: from the
/// maintenance database they create one each, then work in it.
fn server_mode_tests() -> String {
    [
        PG_WIRE,
        r#"
fn own_database(name: &str) {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let (mut admin, db) = connect(&url);
    assert_eq!(db, "postgres", "the maintenance database: {url}");
    query(&mut admin, &format!("CREATE DATABASE own_{name}"));
    let (base, _) = url.rsplit_once('/').unwrap();
    let (mut own, _) = connect(&format!("{base}/own_{name}"));
    query(&mut own, "CREATE TABLE shared (v int)");
    std::thread::sleep(Duration::from_millis(300));
    query(&mut own, "INSERT INTO shared VALUES (1)");
}

#[test]
fn first() { own_database("first") }
#[test]
fn second() { own_database("second") }
"#,
    ]
    .concat()
}

/// Item 2 of #17: with `mode = "server"` every test process gets a superuser connection
/// to the maintenance database of one shared server, and tests that create their own
/// databases there pass side by side; nothing is left after the run.
#[test]
fn mode_server_gives_tests_a_superuser_url_to_make_their_own_databases() {
    if !installed("initdb", "postgresql") {
        return;
    }
    let (_dir, root) = crate::temp();
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app").test("own", server_mode_tests())])
        .config(
            "disable = [\"bench-build\", \"doctest\"]\n\
             [services.db]\nkind = \"postgres\"\nmode = \"server\"\nuser = \"postgres\"\nauth = \"trust\"\n\
             env = { DATABASE_URL = \"postgres://{user}@{host}:{port}/{db}\" }\n\
             [env]\ntest = { NEXTEST_TEST_THREADS = \"2\" }\n",
        );
    let manifest = ws.write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let out = xtask(&["optimize", "--manifest-path", manifest.as_str(), "--json", json.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let record = crate::record(&json);
    let test = record.stages.iter().find(|s| s.id == "test").unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{:?}", test.tail);
    let counts = record.test_counts.iter().find(|c| c.stage == "test").unwrap();
    // The two above and the fixture lib's own unit test.
    assert_eq!((counts.passed, counts.failed), (3, 0), "{:?}", test.tail);
    let pool_dir = root.join("ws/target/pipeline-opt/pool");
    let status = pipeline_opt::pool::ContainerPool::at(pool_dir.as_std_path()).status();
    assert!(status.supervisor.is_none(), "{status:?}");
    let left = pipeline_opt::process::marked_processes(&record.run_id, None);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// Tests whose crate depends on `pipeline-opt-lease` alone and lease a database each
/// themselves, as a suite written against the lease API does.
fn lease_crate_tests() -> String {
    [
        PG_WIRE,
        r#"
fn own(name: &str) {
    let lease = pipeline_opt_lease::lease("db").expect("a lease from the run's pool");
    let (mut s, db) = connect(lease.url());
    assert_eq!(lease.database(), Some(db.as_str()));
    // Fails on a database another test already used.
    query(&mut s, "CREATE TABLE mine (v int)");
    std::fs::write(format!("{}/{name}", std::env::var("FIXTURE_LOG").unwrap()), db).unwrap();
}

#[test]
fn first() { own("first") }
#[test]
fn second() { own("second") }
"#,
    ]
    .concat()
}

/// #18 item 5: a test crate that depends on the small lease crate, not on the engine,
/// leases real PostgreSQL databases from the pool of a real run. Gated as slow: the
/// fixture compiles the lease crate's registry dependencies (serde, its derive, ...).
#[test]
fn a_test_crate_with_only_the_lease_crate_leases_from_the_run() {
    if std::env::var_os("PIPELINE_OPT_SLOW_TESTS").is_none() {
        eprintln!("lease crate: skipped (it compiles serde; PIPELINE_OPT_SLOW_TESTS=1)");
        return;
    }
    if !installed("initdb", "postgresql") {
        return;
    }
    let (_dir, root) = crate::temp();
    let log = root.join("log");
    std::fs::create_dir_all(&log).unwrap();
    let lease_crate = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/pipeline-opt-lease");
    let mut app = FixtureCrate::new("app").test("leases", lease_crate_tests());
    // A sub-table of the `[dev-dependencies]` the fixture writes.
    app.manifest_extra = format!("[dev-dependencies.pipeline-opt-lease]\npath = \"{lease_crate}\"");
    let ws = FixtureWorkspace::new(vec![app])
        .config(format!(
            "disable = [\"bench-build\", \"doctest\"]\n\
             [services.db]\nkind = \"postgres\"\nauth = \"trust\"\nsize = 2\n\
             [env]\ntest = {{ FIXTURE_LOG = \"{log}\" }}\n"
        ))
        // This workspace's versions, resolved offline from the registry cache.
        .file(
            "Cargo.lock",
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap(),
        );
    let manifest = ws.write(&root.join("ws")).unwrap();
    let json = root.join("run.json");
    let out = crate::xtask_command(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--json",
        json.as_str(),
    ])
    .env("CARGO_NET_OFFLINE", "true")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let record = crate::record(&json);
    let test = record.stages.iter().find(|s| s.id == "test").unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{:?}", test.tail);
    let counts = record.test_counts.iter().find(|c| c.stage == "test").unwrap();
    // The two above and the fixture lib's own unit test.
    assert_eq!((counts.passed, counts.failed), (3, 0), "{:?}", test.tail);
    let first = std::fs::read_to_string(log.join("first")).unwrap();
    let second = std::fs::read_to_string(log.join("second")).unwrap();
    assert_ne!(first, second, "a database each");
    // The engine and the clients are nowhere in the test crate's graph.
    let lock = std::fs::read_to_string(root.join("ws/Cargo.lock")).unwrap();
    for engine_only in ["\"pipeline-opt\"", "\"postgres\"", "\"redis\"", "\"cargo_metadata\""] {
        assert!(!lock.contains(&format!("name = {engine_only}")), "{engine_only} in the lock");
    }
    assert!(lock.contains("name = \"pipeline-opt-lease\""));
    let left = pipeline_opt::process::marked_processes(&record.run_id, None);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// A container engine that answers is never used unless asked for: a `docker` on PATH
/// that says yes to everything (and writes down that it was asked) is left alone by
/// `pool up`, which runs its service as a process; asking by name in a binary built
/// without the `docker` feature is a one-line error that starts nothing.
#[test]
fn an_answering_container_engine_is_never_chosen_implicitly() {
    if !redis_installed() {
        return;
    }
    let (_dir, root) = crate::temp();
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let asked = root.join("docker-was-asked");
    let docker = bin.join("docker");
    std::fs::write(&docker, format!("#!/bin/sh\necho \"$@\" >> {asked}\nexit 0\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap());
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app")])
        .config("[services.cache]\nkind = \"redis\"\n");
    let manifest = ws.write(&root.join("ws")).unwrap();
    let pool_dir = root.join("ws/target/pipeline-opt/pool");
    let pool = pipeline_opt::pool::ContainerPool::at(pool_dir.as_std_path());

    let out = crate::xtask_command(&["pool", "up", "--manifest-path", manifest.as_str()])
        .env("PATH", &path)
        .env_remove(pipeline_opt::pool::BACKEND_ENV)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = pool.status();
    let _ = pool.down();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(status.backend, Some(pipeline_opt::pool::Backend::Process), "{status:?}");
    assert!(stderr.contains("note: services run as local processes"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!asked.exists(), "the engine was asked: {}", std::fs::read_to_string(&asked).unwrap());

    let out = crate::xtask_command(&["pool", "up", "--manifest-path", manifest.as_str()])
        .env("PATH", &path)
        .env(pipeline_opt::pool::BACKEND_ENV, "docker")
        .output()
        .unwrap();
    crate::assert_clean_error(
        &out,
        1,
        "PIPELINE_OPT_POOL_BACKEND=docker asks for the Docker backend, which this binary was built without; build it with `--features docker`",
    );
    assert!(pool.status().supervisor.is_none(), "nothing started");
}
