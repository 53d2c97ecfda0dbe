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
