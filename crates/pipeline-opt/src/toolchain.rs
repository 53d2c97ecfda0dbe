//! The compiler a workspace builds with, and the environment a child cargo must not
//! inherit: `cargo xtask` runs us with this workspace's `RUSTUP_TOOLCHAIN`, `CARGO`,
//! `CARGO_MANIFEST_DIR` and friends, which would override the target workspace's own
//! `rust-toolchain` file and config. The user's own settings (`NEXTEST_PROFILE`,
//! `RUST_TEST_THREADS`, ...) are not among them.

use camino::Utf8Path;
use serde::Serialize;
use xshell::{Shell, cmd};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Toolchain {
    /// `rustc -vV`'s `release:` line, e.g. `1.95.0` or `1.97.0-nightly`.
    pub release: String,
    pub host: String,
    /// The whole `rustc -vV` output: part of every fingerprint.
    pub verbose_version: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not run `rustc -vV` in {dir}: {message}; is a Rust toolchain installed?")]
pub struct ToolchainError {
    pub dir: String,
    pub message: String,
}

impl Toolchain {
    /// Asks the compiler that `dir`'s cargo would use (its toolchain file applies).
    pub fn detect(dir: &Utf8Path) -> Result<Toolchain, ToolchainError> {
        let err = |message: String| ToolchainError { dir: dir.to_string(), message };
        let sh = Shell::new().map_err(|e| err(e.to_string()))?;
        let sh = sh.with_current_dir(dir);
        let out = clean_command(&cmd!(sh, "rustc -vV")).output().map_err(|e| err(e.to_string()))?;
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(Toolchain::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    pub fn parse(verbose_version: &str) -> Toolchain {
        let field = |name: &str| {
            verbose_version
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        Toolchain {
            release: field("release:"),
            host: field("host:"),
            verbose_version: verbose_version.to_string(),
        }
    }

    /// `rustc --print cfg --target <triple>` in `dir`: the `cfg` values a cargo config's
    /// `target.'cfg(..)'` tables are matched against; empty when rustc cannot say.
    pub fn target_cfg(dir: &Utf8Path, triple: &str) -> Vec<String> {
        let Ok(sh) = Shell::new() else { return Vec::new() };
        let sh = sh.with_current_dir(dir);
        match clean_command(&cmd!(sh, "rustc --print cfg --target {triple}")).output() {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Nightly and locally built compilers accept `#![feature]`; stable and beta do not
    /// (unless `RUSTC_BOOTSTRAP` says otherwise).
    pub fn allows_feature_gates(&self) -> bool {
        self.release.contains("nightly")
            || self.release.contains("-dev")
            || std::env::var_os("RUSTC_BOOTSTRAP").is_some_and(|v| v == "1")
    }
}

/// Variables in our own environment that cargo or rustup set for *this* workspace's
/// `cargo run` and that must not leak into cargo runs on the workspace we optimise.
pub fn inherited_cargo_vars() -> Vec<String> {
    const EXACT: &[&str] = &[
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_MAKEFLAGS",
        "RUSTUP_TOOLCHAIN",
        "__CARGO_DEFAULT_LIB_METADATA",
    ];
    // Our own rustc shim's bookkeeping: a nested run (a test of the workspace being
    // optimised that runs pipeline-opt itself) must neither log into the outer run's
    // timings nor chain the outer shim, which would chain itself forever.
    const PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_BIN_EXE_", "__CARGO", "PIPELINE_OPT_RUSTC_"];
    let ours = |k: &str, v: &std::ffi::OsStr| {
        k == "RUSTC_WRAPPER"
            && std::path::Path::new(v).file_name().is_some_and(|n| n == "pipeline-opt-rustc-shim")
    };
    let in_nextest_test = inside_nextest_test();
    std::env::vars_os()
        .filter_map(|(k, v)| k.into_string().ok().map(|k| (k, v)))
        .filter(|(k, v)| {
            EXACT.contains(&k.as_str())
                || PREFIXES.iter().any(|p| k.starts_with(p))
                || ours(k, v)
                || is_nextest_var(k) && (in_nextest_test || is_nextest_per_test_var(k))
        })
        .map(|(k, _)| k)
        .collect()
}

fn is_nextest_var(name: &str) -> bool {
    name == "NEXTEST" || name.starts_with("NEXTEST_")
}

/// What nextest sets for each test process it starts (checked on cargo-nextest 0.9.143),
/// describing that test, never configuring a nextest run.
fn is_nextest_per_test_var(name: &str) -> bool {
    const PER_TEST_PREFIXES: &[&str] =
        &["NEXTEST_BIN_EXE_", "NEXTEST_LD_", "NEXTEST_DYLD_", "NEXTEST_STRESS_"];
    matches!(
        name,
        "NEXTEST"
            | "NEXTEST_RUN_ID"
            | "NEXTEST_RUN_MODE"
            | "NEXTEST_EXECUTION_MODE"
            | "NEXTEST_ATTEMPT"
            | "NEXTEST_ATTEMPT_ID"
            | "NEXTEST_TOTAL_ATTEMPTS"
            | "NEXTEST_BINARY_ID"
            | "NEXTEST_TEST_NAME"
            | "NEXTEST_TEST_PHASE"
            | "NEXTEST_TEST_GROUP"
            | "NEXTEST_TEST_GROUP_SLOT"
            | "NEXTEST_TEST_GLOBAL_SLOT"
            | "NEXTEST_VERSION"
            | "NEXTEST_REQUIRED_VERSION"
            | "NEXTEST_RECOMMENDED_VERSION"
            | "NEXTEST_WORKSPACE_ROOT"
    ) || PER_TEST_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether this process is a test that cargo-nextest started. nextest then also sets
/// `NEXTEST_PROFILE` and `NEXTEST_TEST_THREADS` to the values of *its* run, whether or
/// not anybody set them, so every `NEXTEST_*` variable here belongs to the outer run.
/// Outside a nextest test, `NEXTEST_PROFILE`, `NEXTEST_TEST_THREADS`, `NEXTEST_RETRIES`
/// and the like are the user's settings and reach the stages.
pub fn inside_nextest_test() -> bool {
    std::env::var_os("NEXTEST_EXECUTION_MODE").is_some()
        || std::env::var_os("NEXTEST_RUN_ID").is_some()
}

/// `name` as a stage started by this process sees it when the stage sets nothing itself:
/// our own value, unless [`inherited_cargo_vars`] strips it.
pub fn passed_env(name: &str) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(name)?;
    let stripped = is_nextest_var(name) && (inside_nextest_test() || is_nextest_per_test_var(name));
    (!stripped).then_some(value)
}

/// `cmd` as a `std::process::Command` without [`inherited_cargo_vars`]. xshell 0.3's
/// `Cmd::env_remove` only drops variables the `Shell` itself added, so the removal has
/// to happen on the `std` command.
pub fn clean_command(cmd: &xshell::Cmd) -> std::process::Command {
    let mut c = cmd.to_command();
    for var in inherited_cargo_vars() {
        c.env_remove(var);
    }
    c
}

#[cfg(test)]
mod tests {
    /// nextest runs each test in its own process, so changing this process's
    /// environment touches no other test.
    #[test]
    fn an_outer_runs_shim_and_its_bookkeeping_are_not_inherited() {
        // SAFETY: this test's process runs no other thread that reads the environment.
        unsafe {
            std::env::set_var(
                "RUSTC_WRAPPER",
                "/t/target/pipeline-opt/bin/pipeline-opt-rustc-shim",
            );
            std::env::set_var("PIPELINE_OPT_RUSTC_SHIM_LOG", "/t/log.jsonl");
            std::env::set_var("RUSTUP_TOOLCHAIN", "stable");
        }
        let vars = super::inherited_cargo_vars();
        for v in ["RUSTC_WRAPPER", "PIPELINE_OPT_RUSTC_SHIM_LOG", "RUSTUP_TOOLCHAIN"] {
            assert!(vars.iter().any(|x| x == v), "{v} is stripped: {vars:?}");
        }
        // A wrapper of the user's own stays.
        unsafe { std::env::set_var("RUSTC_WRAPPER", "/usr/bin/sccache") };
        assert!(!super::inherited_cargo_vars().iter().any(|x| x == "RUSTC_WRAPPER"));
    }

    /// Inside a nextest test, nextest's own NEXTEST_PROFILE and NEXTEST_TEST_THREADS
    /// describe the outer run; outside one, they are the user's and stay.
    #[test]
    fn nextest_settings_stay_unless_an_outer_nextest_set_them() {
        let stripped = |v: &str| super::inherited_cargo_vars().iter().any(|x| x == v);
        // SAFETY: as above, one test per process.
        unsafe {
            std::env::set_var("NEXTEST_PROFILE", "ci");
            std::env::set_var("NEXTEST_TEST_THREADS", "1");
            std::env::set_var("NEXTEST_RUN_ID", "0000");
            std::env::set_var("NEXTEST_EXECUTION_MODE", "process-per-test");
        }
        assert!(super::inside_nextest_test());
        for v in ["NEXTEST_PROFILE", "NEXTEST_TEST_THREADS", "NEXTEST_RUN_ID"] {
            assert!(stripped(v), "{v} belongs to the outer nextest run");
        }
        unsafe {
            std::env::remove_var("NEXTEST_RUN_ID");
            std::env::remove_var("NEXTEST_EXECUTION_MODE");
            std::env::set_var("NEXTEST_BINARY_ID", "outer::it");
        }
        assert!(!super::inside_nextest_test());
        for v in ["NEXTEST_PROFILE", "NEXTEST_TEST_THREADS"] {
            assert!(!stripped(v), "{v} is the user's");
            assert!(super::passed_env(v).is_some());
        }
        assert!(stripped("NEXTEST_BINARY_ID"));
    }
}
