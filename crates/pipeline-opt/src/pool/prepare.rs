//! What a PostgreSQL service's template is prepared from (extensions, `setup-sql` as a
//! file or a directory of files, a `setup-command` such as `sqlx migrate run`), and the
//! fingerprint of those inputs under which the prepared data directory is cached across
//! runs (`<template cache>/prepared-<fingerprint>`), so migrations run once, not once per
//! run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::files::io_err;
use super::{PoolError, ServiceSpec};
use crate::config::{ServiceKind, render_template};

/// Bumped when what a prepared template holds changes shape, so old caches are not used.
const PREPARED_LAYOUT: &str = "prepared-v1";

/// Whether the service has anything to prepare beyond an empty template database.
pub(crate) fn has_setup(spec: &ServiceSpec) -> bool {
    !spec.extensions.is_empty()
        || spec.setup_sql.is_some()
        || !spec.setup_command.is_empty()
        || spec.template1
}

/// The `setup-sql` files in the order they are applied: the file itself, or what a
/// directory holds, in the order of the names: its `*.sql` files but `*.down.sql`
/// (sqlx's migrations, reversible or not) and the `up.sql` of its subdirectories
/// (diesel's `migrations/<version>_<name>/up.sql`).
pub(crate) fn setup_sql_files(spec: &ServiceSpec) -> Result<Vec<PathBuf>, PoolError> {
    let Some(path) = &spec.setup_sql else { return Ok(Vec::new()) };
    let sql_err =
        |source| PoolError::SetupSql { service: spec.name.clone(), path: path.clone(), source };
    if !std::fs::metadata(path).map_err(sql_err)?.is_dir() {
        return Ok(vec![path.clone()]);
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(path).map_err(sql_err)?.flatten().map(|e| e.path()).collect();
    entries.sort();
    let files: Vec<PathBuf> = entries
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            if p.is_dir() {
                let up = p.join("up.sql");
                return up.is_file().then_some(up);
            }
            (name.ends_with(".sql") && !name.ends_with(".down.sql")).then_some(p)
        })
        .collect();
    if files.is_empty() {
        return Err(sql_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the directory holds no *.sql file and no <dir>/up.sql; add one or point `setup-sql` at a file",
        )));
    }
    Ok(files)
}

/// The fingerprint of everything the prepared template is made from, or `None` when it
/// cannot be known: a `setup-command` without `setup-inputs` may read anything.
pub(crate) fn fingerprint(
    spec: &ServiceSpec,
    base_template: &Path,
) -> Result<Option<String>, PoolError> {
    if !spec.setup_command.is_empty() && spec.setup_inputs.is_empty() {
        return Ok(None);
    }
    let mut h = blake3::Hasher::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("layout", PREPARED_LAYOUT.as_bytes());
    // The base template's directory names the PostgreSQL major and initdb's flags.
    field("base", base_template.as_os_str().as_encoded_bytes());
    field("user", spec.user.as_deref().unwrap_or("pool").as_bytes());
    field("template1", &[u8::from(spec.template1)]);
    for e in &spec.extensions {
        field("extension", e.as_bytes());
    }
    for file in setup_sql_files(spec)? {
        let text = std::fs::read(&file).map_err(|source| PoolError::SetupSql {
            service: spec.name.clone(),
            path: file.clone(),
            source,
        })?;
        field("sql", &text);
    }
    for arg in &spec.setup_command {
        field("command", arg.as_bytes());
    }
    for input in &spec.setup_inputs {
        // Relative to the root: a checkout moved elsewhere keeps its cache.
        let named = input.strip_prefix(&spec.root).unwrap_or(input);
        field("input", named.as_os_str().as_encoded_bytes());
        let mut entries: Vec<_> =
            walkdir::WalkDir::new(input).sort_by_file_name().into_iter().flatten().collect();
        entries.retain(|e| e.file_type().is_file());
        if entries.is_empty() {
            field("missing", b"");
        }
        for entry in entries {
            let rel = entry.path().strip_prefix(input).unwrap_or(entry.path());
            field("file", rel.as_os_str().as_encoded_bytes());
            let bytes = std::fs::read(entry.path()).map_err(io_err("read", entry.path()))?;
            field("content", &bytes);
        }
    }
    Ok(Some(h.finalize().to_hex()[..24].to_string()))
}

/// How long a prepared template no run used stays in the cache.
const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Marks the prepared template in `dir` as used now, so [`prune`] keeps it.
pub(crate) fn mark_used(dir: &Path) {
    let complete = dir.join("complete");
    if let Ok(f) = std::fs::File::options().write(true).open(&complete) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the prepared templates in `cache` that no run used for a week: every change
/// of the migrations makes a new one, of some tens of MB.
pub(crate) fn prune(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("prepared-") || !entry.path().is_dir() {
            continue;
        }
        let age = std::fs::metadata(entry.path().join("complete"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > UNUSED_FOR) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs the service's `setup-command` from the workspace root against the template
/// database whose URL is `url`: the arguments' placeholders and the service's `env`
/// variables name that database, and `DATABASE_URL` does unless `env` sets it. Its
/// output goes to `log`; a failure names the command, its exit and its last lines.
pub(crate) fn run_setup_command(
    spec: &ServiceSpec,
    url: &str,
    log: &Path,
) -> Result<(), PoolError> {
    let values = super::runner::slot_values(url, ServiceKind::Postgres, Some("pool_template"));
    let render = |t: &str| render_template(t, spec.kind, &values);
    let shown = spec.setup_command.join(" ");
    let fail = |status: String, tail: String| PoolError::SetupCommand {
        service: spec.name.clone(),
        failure: format!("`{shown}`, failed ({status}); its last lines: {tail}"),
        log: log.to_path_buf(),
    };
    let args: Vec<String> = spec
        .setup_command
        .iter()
        .map(|a| render(a))
        .collect::<Result<_, _>>()
        .map_err(|m| fail("not started".into(), m))?;
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    if !spec.env.contains_key("DATABASE_URL") {
        cmd.env("DATABASE_URL", url);
    }
    for (var, template) in &spec.env {
        cmd.env(var, render(template).map_err(|m| fail("not started".into(), m))?);
    }
    let mut child = super::process::spawn_server(cmd, &spec.root, log, None)
        .map_err(|e| fail("not started".into(), format!("{e}; is it installed and on PATH?")))?;
    // A migration that hangs would hold the pool's start for ever: `up`'s own timeout
    // ends the supervisor, and with it (PR_SET_PDEATHSIG) this command.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail("not waited for".into(), e.to_string())),
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    Err(fail(status.to_string(), if tail.is_empty() { "(no output)".into() } else { tail }))
}
