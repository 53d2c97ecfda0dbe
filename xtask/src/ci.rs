//! `cargo xtask ci`: this workspace's own checks and tests, exactly as CI runs them.
//! It installs what the tests need when it is missing (cargo-nextest, and the services
//! and browser that later test modules use), so a fresh machine passes.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

impl crate::flags::Ci {
    pub(crate) fn run(self, sh: &Shell) -> Result<i32> {
        let root = project_root();
        let sh = sh.with_current_dir(&root);
        ensure_nextest(&sh)?;
        ensure_pool_services(&sh)?;
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
}

fn ensure_nextest(sh: &Shell) -> Result<()> {
    if cmd!(sh, "cargo nextest --version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    cmd!(sh, "cargo install cargo-nextest --locked")
        .run_echo()
        .context("cargo-nextest is missing and could not be installed: install it with `cargo install cargo-nextest --locked`")
}

// --- services for the pool's tests (issue 6) -------------------------------------------

/// The pool's tests start real PostgreSQL and Redis servers, and under `CI=true` a
/// missing server is a test failure, so a fresh machine gets them from the system
/// packages here. `apt-get update` runs at most once, and only when something is missing.
fn ensure_pool_services(sh: &Shell) -> Result<()> {
    let missing: Vec<&str> = [("postgresql", "initdb"), ("redis-server", "redis-server")]
        .into_iter()
        .filter(|(_, program)| pipeline_opt::pool::find_program(program).is_none())
        .map(|(package, _)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    let hint = || {
        format!(
            "PostgreSQL or Redis is missing and could not be installed: install them with `apt-get install {packages}`"
        )
    };
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
