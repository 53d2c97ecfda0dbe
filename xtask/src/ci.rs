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
        ensure_report_tools(&sh)?;
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

// --- Tools of the report tests (issue 8) ------------------------------------------
// The HTML timeline is rendered in headless Chromium and the Prometheus output and the
// documented alerting rule are checked with promtool. Under CI=true those tests fail
// when the tool is missing, so CI installs both from Debian packages here.

/// Debian package that provides each tool the report tests run.
const REPORT_TOOLS: &[(&str, &str)] = &[("chromium", "chromium"), ("promtool", "prometheus")];

fn ensure_report_tools(sh: &Shell) -> Result<()> {
    let missing: Vec<&str> = REPORT_TOOLS
        .iter()
        .filter(|(tool, _)| {
            !cmd!(sh, "{tool} --version").output().is_ok_and(|o| o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = format!("install them with `apt-get install {}`", missing.join(" "));
    cmd!(sh, "apt-get update")
        .run_echo()
        .with_context(|| format!("apt-get update failed: {hint}"))?;
    let packages = &missing;
    cmd!(sh, "apt-get install -y --no-install-recommends {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run_echo()
        .with_context(|| format!("the report tests need {missing:?}: {hint}"))
}

fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
