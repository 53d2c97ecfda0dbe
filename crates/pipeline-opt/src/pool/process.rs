//! The process backend: servers as child processes of the supervisor, no container
//! engine needed. Finds the binaries, runs PostgreSQL as an unprivileged user when we
//! are root, caches one `initdb` output and copies it per instance (to tmpfs), and ties
//! every server to the supervisor's life with `PR_SET_PDEATHSIG`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::files::{self, io_err};
use super::{PoolError, ServiceSpec};
use crate::config::{Auth, ServiceKind};

/// The user that runs PostgreSQL when the supervisor is root (PostgreSQL refuses root).
pub(crate) const POOL_USER: &str = "pipeline-opt-pool";

/// Finds `program` on PATH or where Debian, Ubuntu and source builds put it
/// (`/usr/lib/postgresql/<version>/bin`, newest version first).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    dirs.extend(versions);
    dirs.extend(
        ["/usr/local/pgsql/bin", "/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from),
    );
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

fn require_program(program: &str, package: &str) -> Result<PathBuf, PoolError> {
    find_program(program).ok_or_else(|| PoolError::MissingProgram {
        program: program.into(),
        searched: "/usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, /usr/sbin, /usr/bin".into(),
        package: package.into(),
    })
}

/// The PostgreSQL binaries of one installation (`initdb` and `postgres` side by side, so
/// a template is never started by a server of another version).
pub(crate) struct PgBin {
    pub postgres: PathBuf,
    pub initdb: PathBuf,
    pub major: String,
}

pub(crate) fn pg_bin() -> Result<PgBin, PoolError> {
    let initdb = require_program("initdb", "postgresql")?;
    // Resolve symlinks such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb.
    let initdb = fs::canonicalize(&initdb).unwrap_or(initdb);
    let postgres = initdb.with_file_name("postgres");
    if !postgres.is_file() {
        return Err(PoolError::MissingProgram {
            program: "postgres".into(),
            searched: initdb.parent().unwrap_or(Path::new("/")).display().to_string(),
            package: "postgresql".into(),
        });
    }
    let out =
        Command::new(&postgres).arg("--version").output().map_err(io_err("run", &postgres))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .unwrap_or("unknown")
        .to_string();
    Ok(PgBin { postgres, initdb, major })
}

pub(crate) fn redis_bin() -> Result<PathBuf, PoolError> {
    require_program("redis-server", "redis-server")
}

/// The uid and gid that servers needing a non-root user run as; `None` when we are not
/// root (they run as us).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

pub(crate) fn unprivileged_user() -> Result<Option<RunAs>, PoolError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    if let Some(user) = lookup_user(POOL_USER) {
        return Ok(Some(user));
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell"])
        .arg(if Path::new("/usr/sbin/nologin").exists() {
            "/usr/sbin/nologin"
        } else {
            "/bin/false"
        })
        .arg(POOL_USER)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        // Another supervisor created it at the same moment.
        Ok(_) if lookup_user(POOL_USER).is_some() => {}
        Ok(o) => {
            return Err(PoolError::User {
                message: format!(
                    "`useradd {POOL_USER}` failed: {}; create the user yourself",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            });
        }
        Err(e) => {
            return Err(PoolError::User {
                message: format!(
                    "could not run `useradd` ({e}); create the user `{POOL_USER}` yourself"
                ),
            });
        }
    }
    lookup_user(POOL_USER).map(Some).ok_or_else(|| PoolError::User {
        message: format!("`{POOL_USER}` is missing after useradd"),
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some(RunAs { uid: f[2].parse().ok()?, gid: f[3].parse().ok()? })
        } else {
            None
        }
    })
}

fn chown(path: &Path, run_as: Option<RunAs>) -> Result<(), PoolError> {
    if let Some(u) = run_as {
        std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid)).map_err(io_err("chown", path))?;
    }
    Ok(())
}

fn chown_tree(path: &Path, run_as: Option<RunAs>) -> Result<(), PoolError> {
    chown(path, run_as)?;
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path).map_err(io_err("read", path))?.flatten() {
            chown_tree(&entry.path(), run_as)?;
        }
    }
    Ok(())
}

/// Copies a directory tree with permissions, owned by `run_as`.
pub(crate) fn copy_tree(src: &Path, dst: &Path, run_as: Option<RunAs>) -> Result<(), PoolError> {
    fs::create_dir(dst).map_err(io_err("create directory", dst))?;
    let mode = fs::metadata(src).map_err(io_err("read", src))?.permissions();
    fs::set_permissions(dst, mode).map_err(io_err("set permissions of", dst))?;
    chown(dst, run_as)?;
    for entry in fs::read_dir(src).map_err(io_err("read", src))?.flatten() {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().map_err(io_err("read", &from))?;
        if kind.is_dir() {
            copy_tree(&from, &to, run_as)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("read", &from))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_err("write", &to))?;
            chown(&to, run_as)?;
        } else {
            fs::copy(&from, &to).map_err(io_err("copy", &from))?;
            chown(&to, run_as)?;
        }
    }
    Ok(())
}

/// The cached `initdb` output for this PostgreSQL version: `(data dir, password)`.
/// Made once (about a second) under a lock, so concurrent pools share one.
pub(crate) fn postgres_template(
    cache: &Path,
    bin: &PgBin,
    run_as: Option<RunAs>,
) -> Result<(PathBuf, String), PoolError> {
    // `-w1`: the layout of the cached template (1 MB WAL segments); bump it when the
    // initdb flags change so that old caches are not reused.
    let dir = cache.join(format!("postgres-{}-w1t", bin.major));
    let data = dir.join("data");
    let password_file = dir.join("password");
    let read_done = || -> Option<(PathBuf, String)> {
        dir.join("complete").exists().then_some(())?;
        let pw = fs::read_to_string(&password_file).ok()?;
        Some((data.clone(), pw.trim().to_string()))
    };
    if let Some(done) = read_done() {
        return Ok(done);
    }
    files::create_dir(cache)?;
    let lock_path = cache.join("template.lock");
    let lock = fs::File::create(&lock_path).map_err(io_err("create", &lock_path))?;
    lock.lock().map_err(io_err("lock", &lock_path))?;
    if let Some(done) = read_done() {
        return Ok(done);
    }
    let _ = fs::remove_dir_all(&dir);
    // initdb runs as the pool user, which may not traverse the cache's parents (a home
    // directory): it works in a fresh temp dir that we then copy into the cache.
    let scratch = tempfile::Builder::new()
        .prefix("pipeline-opt-initdb")
        .tempdir()
        .map_err(io_err("create a temp dir in", &std::env::temp_dir()))?;
    chown(scratch.path(), run_as)?;
    let password = files::random_hex(16);
    let pwfile = scratch.path().join("pw");
    fs::write(&pwfile, &password).map_err(io_err("write", &pwfile))?;
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", &pwfile))?;
    chown(&pwfile, run_as)?;
    let scratch_data = scratch.path().join("data");
    let mut cmd = Command::new(&bin.initdb);
    cmd.arg("-D")
        .arg(&scratch_data)
        .args(["-U", "pool", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        // The supervisor's own connections use the private socket directory (mode 0700)
        // without a password round: cheaper refills; TCP, what leases use, needs one.
        .arg("--auth-local=trust")
        // 1 MB WAL segments instead of 16 MB: every instance copies the template, and
        // the WAL was most of its bytes.
        .arg("--wal-segsize=1")
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(scratch.path())
        .env_remove(super::SUPERVISE_ENV);
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
    }
    let out = cmd.output().map_err(io_err("run", &bin.initdb))?;
    if !out.status.success() {
        return Err(PoolError::ServiceStart {
            service: "postgres".into(),
            message: format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            log: scratch_data,
        });
    }
    let staging = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    files::create_dir(&staging)?;
    copy_tree(&scratch_data, &staging.join("data"), None)?;
    fs::write(staging.join("password"), &password).map_err(io_err("write", &staging))?;
    fs::set_permissions(staging.join("password"), fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", &staging))?;
    fs::write(staging.join("complete"), "").map_err(io_err("write", &staging))?;
    fs::rename(&staging, &dir).map_err(io_err("move into place", &dir))?;
    read_done().ok_or_else(|| PoolError::ServiceStart {
        service: "postgres".into(),
        message: "the template cache is incomplete after initdb".into(),
        log: dir.clone(),
    })
}

/// A private directory for one instance, owned by `run_as`.
pub(crate) fn instance_dir(
    root: &Path,
    name: &str,
    run_as: Option<RunAs>,
) -> Result<PathBuf, PoolError> {
    files::create_dir(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", root))?;
    let dir = root.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).map_err(io_err("create directory", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", &dir))?;
    chown(&dir, run_as)?;
    Ok(dir)
}

/// Prepares a PostgreSQL data dir from the template: `(data dir, socket dir)`.
pub(crate) fn postgres_instance(
    template: &Path,
    dir: &Path,
    run_as: Option<RunAs>,
) -> Result<(PathBuf, PathBuf), PoolError> {
    let data = dir.join("data");
    copy_tree(template, &data, run_as)?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod", &data))?;
    let sock = dir.join("sock");
    fs::create_dir(&sock).map_err(io_err("create directory", &sock))?;
    chown_tree(&sock, run_as)?;
    Ok((data, sock))
}

/// `postgres` on `port`, its sockets in the private `sock` (the supervisor's) and in the
/// service's `socket-dir`, with the service's settings after the pool's own (the last
/// `-c` of a name wins).
pub(crate) fn postgres_command(
    bin: &PgBin,
    data: &Path,
    sock: &Path,
    port: u16,
    spec: &ServiceSpec,
) -> Command {
    let mut cmd = Command::new(&bin.postgres);
    let mut sockets = sock.as_os_str().to_os_string();
    if let Some(dir) = &spec.socket_dir {
        sockets.push(",");
        sockets.push(dir);
    }
    cmd.arg("-D").arg(data).arg("-p").arg(port.to_string()).arg("-k").arg(sockets);
    // Throwaway test data: durability buys nothing and costs every commit and clone.
    for setting in [
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "max_connections=200",
        "shared_buffers=32MB",
        // Matches the template's 1 MB segments (the default assumes 16 MB).
        "min_wal_size=4MB",
        "max_wal_size=64MB",
        "logging_collector=off",
        "log_checkpoints=off",
        // Dynamic shared memory in the data dir, not as /dev/shm/PostgreSQL.* files that
        // a killed server would leave behind.
        "dynamic_shared_memory_type=mmap",
        "log_min_messages=warning",
    ] {
        cmd.arg("-c").arg(setting);
    }
    for (key, value) in &spec.settings {
        cmd.arg("-c").arg(format!("{key}={value}"));
    }
    cmd
}

/// Writes the instance's `pg_hba.conf` when the service asks for other than the
/// template's (trusted private socket, password on TCP). `trust`: no password anywhere.
/// A public socket directory: the pool's role only by peer authentication as the
/// supervisor's own OS user, everyone else with a password, since `local` lines cannot
/// tell the private socket from the public one.
pub(crate) fn write_hba(data: &Path, spec: &ServiceSpec) -> Result<(), PoolError> {
    let hba = match (spec.auth, &spec.socket_dir) {
        (Auth::Password, None) => return Ok(()),
        (Auth::Trust, _) => "local all all trust\nhost all all 127.0.0.1/32 trust\n".to_string(),
        (Auth::Password, Some(_)) => {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            let me = user_name(uid).ok_or_else(|| PoolError::User {
                message: format!(
                    "uid {uid} has no name in /etc/passwd, which a `socket-dir` needs (the pool's role logs in by peer authentication)"
                ),
            })?;
            let ident = data.join("pg_ident.conf");
            fs::write(&ident, format!("supervisor {me} pool\n"))
                .map_err(io_err("write", &ident))?;
            "local all pool peer map=supervisor\nlocal all all scram-sha-256\n\
             host all all 127.0.0.1/32 scram-sha-256\n"
                .to_string()
        }
    };
    let path = data.join("pg_hba.conf");
    fs::write(&path, hba).map_err(io_err("write", &path))
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// Extensions of the PostgreSQL contrib package (`apt-get install postgresql-contrib`);
/// any other comes in a package of its own.
const CONTRIB: &[&str] = &[
    "adminpack",
    "amcheck",
    "autoinc",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "dict_int",
    "dict_xsyn",
    "earthdistance",
    "file_fdw",
    "fuzzystrmatch",
    "hstore",
    "insert_username",
    "intagg",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "moddatetime",
    "old_snapshot",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_surgery",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgcrypto",
    "pgrowlocks",
    "pgstattuple",
    "postgres_fdw",
    "refint",
    "seg",
    "sslinfo",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
    "xml2",
];

/// Where this installation keeps its extensions' control files: beside the binaries in a
/// source build, under `/usr/share/postgresql/<major>` on Debian.
fn extension_dir(bin: &PgBin) -> Option<PathBuf> {
    let prefix = bin.postgres.parent()?.parent()?;
    [
        prefix.join("share/postgresql/extension"),
        prefix.join("share/extension"),
        PathBuf::from(format!("/usr/share/postgresql/{}/extension", bin.major)),
    ]
    .into_iter()
    .find(|d| d.is_dir())
}

/// Whether the PostgreSQL installation the pool would use has extension `name`: `None`
/// when there is none, or its extension directory is not where the pool looks.
pub fn extension_installed(name: &str) -> Option<bool> {
    let dir = extension_dir(&pg_bin().ok()?)?;
    Some(dir.join(format!("{name}.control")).is_file())
}

/// What a PostgreSQL service needs on this machine beyond the server, checked before
/// the supervisor starts so that the error is the first and only line: its extensions
/// installed, its socket directory present.
pub(crate) fn check_postgres_needs(spec: &ServiceSpec) -> Result<(), PoolError> {
    if spec.kind != ServiceKind::Postgres {
        return Ok(());
    }
    if let Some(dir) = &spec.socket_dir {
        let problem = |problem: &str| PoolError::SocketDir {
            service: spec.name.clone(),
            dir: dir.clone(),
            problem: problem.into(),
        };
        if !dir.is_dir() {
            return Err(problem("is not a directory"));
        }
        // A socket's path must fit in sun_path (108 bytes): `<dir>/.s.PGSQL.65535`.
        if dir.as_os_str().len() + 17 > 107 {
            return Err(problem("is too long a path for a Unix socket"));
        }
    }
    if spec.extensions.is_empty() {
        return Ok(());
    }
    let bin = pg_bin()?;
    // Without a known directory, CREATE EXTENSION reports what is missing.
    let Some(dir) = extension_dir(&bin) else { return Ok(()) };
    for extension in &spec.extensions {
        if !dir.join(format!("{extension}.control")).is_file() {
            let package = if CONTRIB.contains(&extension.as_str()) {
                "the contrib modules (Debian: `apt-get install postgresql-contrib`)".to_string()
            } else {
                format!(
                    "the package that provides it (Debian: `postgresql-{}-{extension}` or similar)",
                    bin.major
                )
            };
            return Err(PoolError::MissingExtension {
                service: spec.name.clone(),
                extension: extension.clone(),
                major: bin.major.clone(),
                dir,
                package,
            });
        }
    }
    Ok(())
}

/// `redis-server` with a private config file (the password stays off the command line).
/// `password`: `None` for no password (`auth = "trust"`; loopback only all the same).
pub(crate) fn redis_command(
    bin: &Path,
    dir: &Path,
    port: u16,
    password: Option<&str>,
    databases: usize,
) -> Result<Command, PoolError> {
    let conf = dir.join("redis.conf");
    let requirepass = password.map(|p| format!("requirepass {p}\n")).unwrap_or_default();
    let text = format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\n\
         databases {databases}\n{requirepass}dir {}\ndaemonize no\nlogfile \"\"\n",
        dir.display()
    );
    fs::write(&conf, text).map_err(io_err("write", &conf))?;
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", &conf))?;
    let mut cmd = Command::new(bin);
    cmd.arg(&conf);
    Ok(cmd)
}

/// Spawns a server: its own process group (so `clean` can stop it with its children),
/// output to `log`, killed by the kernel when the spawning thread (the supervisor's
/// main thread) exits.
pub(crate) fn spawn_server(
    mut cmd: Command,
    cwd: &Path,
    log: &Path,
    run_as: Option<RunAs>,
) -> Result<Child, PoolError> {
    let out =
        fs::OpenOptions::new().create(true).append(true).open(log).map_err(io_err("open", log))?;
    let err = out.try_clone().map_err(io_err("open", log))?;
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env_remove(super::SUPERVISE_ENV)
        .process_group(0);
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
    }
    // SAFETY: the closure calls only async-signal-safe functions (prctl, getppid). It
    // runs after the uid change, which would otherwise clear the death signal.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            // Linux only; elsewhere the supervisor's instances outlive a killed
            // supervisor until `pool clean` (README, Platforms).
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let program = PathBuf::from(cmd.get_program());
    cmd.spawn().map_err(io_err("start", &program))
}

/// A free loopback port, chosen by the kernel. Another process may take it before the
/// server binds it; the supervisor then retries with a new one.
pub(crate) fn free_port() -> Result<u16, PoolError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(io_err("bind a port on", Path::new("127.0.0.1")))?;
    Ok(l.local_addr().map_err(io_err("bind a port on", Path::new("127.0.0.1")))?.port())
}

/// Whether a fixed port can be bound (nothing listens there).
pub(crate) fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
