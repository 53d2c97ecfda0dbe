//! The test runners' settings of a run and where each came from: the user's
//! environment, the workspace's nextest config (`.config/nextest.toml`, the profile
//! nextest will select), or the tool's default. What the user set always wins; the tool
//! only fills in what was left unset, and the report names the source of every value.

use camino::{Utf8Path, Utf8PathBuf};

use crate::cargo_config;
pub use crate::record::{SettingSource, TestSetting};
use crate::toolchain::passed_env;

/// Where nextest looks for a workspace's config, relative to the workspace root.
pub const NEXTEST_CONFIG: &str = ".config/nextest.toml";

/// What a run's test stages get, resolved once before the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestSettings {
    /// The user fixed nextest's test threads (`NEXTEST_TEST_THREADS` or `test-threads`
    /// in the selected profile): the tool must not set `NEXTEST_TEST_THREADS`.
    pub nextest_threads_set: bool,
    /// The user set `RUST_TEST_THREADS` (environment, or `[env]` in a cargo config): the
    /// tool must not set it.
    pub libtest_threads_set: bool,
    /// The user set nextest's retries (`NEXTEST_RETRIES` or `retries` in the profile):
    /// the tool passes no retries of its own. (A per-test override's `retries` needs no
    /// flag: the tool's come in a tool config, which nextest ranks below overrides.)
    pub nextest_retries_set: bool,
    /// The selected profile sets `fail-fast`: the tool drops its `--no-fail-fast`.
    pub nextest_fail_fast_set: bool,
    /// Where nextest writes JUnit when the selected profile (or one it inherits from) of
    /// the user's config sets `junit.path`: `<store.dir>/<profile>/<path>`, the store
    /// being `target/nextest` under the workspace root unless `[store] dir` moves it.
    /// That setting outranks the tool config's, so the run reads the file from there.
    pub nextest_junit: Option<Utf8PathBuf>,
    pub settings: Vec<TestSetting>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestSettingsError {
    #[error(
        "cannot read the nextest config {path}: {message}; fix it (`cargo nextest show-config test-groups` checks it) or remove it"
    )]
    NextestConfig { path: Utf8PathBuf, message: String },
}

impl TestSettings {
    /// Only the user's environment: what an embedding program that starts the
    /// orchestrator itself gets unless it resolves more.
    pub fn from_env() -> TestSettings {
        TestSettings {
            nextest_threads_set: passed_env("NEXTEST_TEST_THREADS").is_some(),
            libtest_threads_set: passed_env("RUST_TEST_THREADS").is_some(),
            nextest_retries_set: passed_env("NEXTEST_RETRIES").is_some(),
            nextest_fail_fast_set: false,
            nextest_junit: None,
            settings: Vec::new(),
        }
    }

    /// Resolves the settings of a run in `root` whose plan runs nextest and/or libtest
    /// (`cargo test`) stages, the way nextest itself does: environment first, then the
    /// selected profile (`NEXTEST_PROFILE`, else `default`), then the default profile.
    pub fn resolve(
        root: &Utf8Path,
        nextest: bool,
        libtest: bool,
    ) -> Result<TestSettings, TestSettingsError> {
        let mut s = TestSettings::from_env();
        let env = |name: &str| passed_env(name).map(|v| v.to_string_lossy().into_owned());
        let user = |setting: &str, var: &str, value: String| TestSetting {
            setting: setting.into(),
            value,
            source: SettingSource::UserEnv,
            origin: var.into(),
        };
        if nextest {
            let config = NextestConfig::load(root)?;
            let profile = env("NEXTEST_PROFILE");
            let selected = profile.clone().unwrap_or_else(|| "default".into());
            s.settings.push(match &profile {
                Some(p) => user("nextest profile", "NEXTEST_PROFILE", p.clone()),
                None => TestSetting {
                    setting: "nextest profile".into(),
                    value: "default".into(),
                    source: SettingSource::ToolDefault,
                    origin: "nextest's default profile".into(),
                },
            });
            let from_config = |key: &str| {
                config.lookup(&selected, key).map(|(table, value)| TestSetting {
                    setting: String::new(),
                    value,
                    source: SettingSource::NextestConfig,
                    origin: format!("{NEXTEST_CONFIG} [{table}]"),
                })
            };
            let threads = match env("NEXTEST_TEST_THREADS") {
                Some(v) => user("nextest test threads", "NEXTEST_TEST_THREADS", v),
                None => match from_config("test-threads") {
                    Some(t) => TestSetting { setting: "nextest test threads".into(), ..t },
                    None => TestSetting {
                        setting: "nextest test threads".into(),
                        value: "the run's cores".into(),
                        source: SettingSource::ToolDefault,
                        origin: "NEXTEST_TEST_THREADS set by pipeline-opt".into(),
                    },
                },
            };
            s.nextest_threads_set = threads.source != SettingSource::ToolDefault;
            s.settings.push(threads);
            let retries = match env("NEXTEST_RETRIES") {
                Some(v) => user("nextest retries", "NEXTEST_RETRIES", v),
                None => match from_config("retries") {
                    Some(t) => TestSetting { setting: "nextest retries".into(), ..t },
                    None => TestSetting {
                        setting: "nextest retries".into(),
                        value: "as --retries".into(),
                        source: SettingSource::ToolDefault,
                        origin: "pipeline-opt's nextest tool config, below the workspace's config and its per-test overrides".into(),
                    },
                },
            };
            s.nextest_retries_set = retries.source != SettingSource::ToolDefault;
            s.settings.push(retries);
            let fail_fast = match from_config("fail-fast") {
                Some(t) => TestSetting { setting: "nextest fail-fast".into(), ..t },
                None => TestSetting {
                    setting: "nextest fail-fast".into(),
                    value: "false".into(),
                    source: SettingSource::ToolDefault,
                    origin: "`--no-fail-fast` passed by pipeline-opt".into(),
                },
            };
            s.nextest_fail_fast_set = fail_fast.source != SettingSource::ToolDefault;
            s.settings.push(fail_fast);
            if let Some((_, path)) = config.lookup(&selected, "junit.path") {
                let store = match config.store.get("dir").and_then(|d| d.as_str()) {
                    Some(d) => root.join(d),
                    None => root.join("target/nextest"),
                };
                s.nextest_junit = Some(store.join(&selected).join(path));
            }
        }
        if libtest {
            let threads = match env("RUST_TEST_THREADS") {
                Some(v) => user("libtest threads", "RUST_TEST_THREADS", v),
                None => match cargo_config_env(root, "RUST_TEST_THREADS") {
                    Some((file, value)) => TestSetting {
                        setting: "libtest threads".into(),
                        value,
                        source: SettingSource::CargoConfig,
                        origin: format!("{file} [env]"),
                    },
                    None => TestSetting {
                        setting: "libtest threads".into(),
                        value: "a share of the run's cores".into(),
                        source: SettingSource::ToolDefault,
                        origin: "RUST_TEST_THREADS set by pipeline-opt".into(),
                    },
                },
            };
            s.libtest_threads_set = threads.source != SettingSource::ToolDefault;
            s.settings.push(threads);
        }
        Ok(s)
    }
}

/// The parallelism the user gave cargo: `CARGO_BUILD_JOBS`, else `[build] jobs` of the
/// nearest cargo config (cargo's own order), as a count of jobs (a negative value is
/// that many fewer than `cores`, as cargo reads it), with where it came from. The run's
/// jobserver, which cargo takes in place of its own, must not hand out more tokens.
pub fn user_build_jobs(root: &Utf8Path, cores: usize) -> Option<(usize, String)> {
    let jobs = |v: i64| {
        let n = if v < 0 { cores as i64 + v } else { v };
        usize::try_from(n.max(1)).ok()
    };
    if let Some(v) = std::env::var("CARGO_BUILD_JOBS").ok().and_then(|v| v.trim().parse().ok()) {
        return jobs(v).map(|n| (n, "CARGO_BUILD_JOBS".to_string()));
    }
    cargo_config::tables(root).find_map(|(file, doc)| {
        let v = doc.get("build")?.get("jobs")?.as_integer()?;
        let shown = cargo_config::shown(root, &file);
        jobs(v).map(|n| (n, format!("build.jobs in {shown}")))
    })
}

/// `name` in the `[env]` of the cargo config files cargo reads for a run in `root`, the
/// nearest first: `.cargo/config` and `.cargo/config.toml` in `root` and each directory
/// above it, then in `$CARGO_HOME`; with the file that set it (relative to `root` when
/// inside it). cargo gives that value to the tests unless the variable is already set,
/// so the tool must not set it. A file that does not parse is cargo's error to report.
fn cargo_config_env(root: &Utf8Path, name: &str) -> Option<(Utf8PathBuf, String)> {
    for (file, doc) in cargo_config::tables(root) {
        let value = match doc.get("env").and_then(|e| e.get(name)) {
            Some(toml::Value::String(v)) => v.clone(),
            // `{ value = "1", force = true }`
            Some(toml::Value::Table(t)) => match t.get("value") {
                Some(toml::Value::String(v)) => v.clone(),
                _ => continue,
            },
            _ => continue,
        };
        return Some((cargo_config::shown(root, &file), value));
    }
    None
}

/// The parts of a nextest config the tool must not override: the profiles.
#[derive(Debug, Default)]
struct NextestConfig {
    profiles: toml::Table,
    /// `[store]`: where nextest keeps its output, JUnit files included.
    store: toml::Table,
}

impl NextestConfig {
    fn load(root: &Utf8Path) -> Result<NextestConfig, TestSettingsError> {
        let path = root.join(NEXTEST_CONFIG);
        let err =
            |message: String| TestSettingsError::NextestConfig { path: path.clone(), message };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(err(e.to_string())),
        };
        let doc: toml::Table =
            text.parse().map_err(|e: toml::de::Error| err(e.message().to_string()))?;
        let profiles = match doc.get("profile") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err(err("`profile` is not a table".into())),
        };
        let store = doc.get("store").and_then(|v| v.as_table()).cloned().unwrap_or_default();
        Ok(NextestConfig { profiles, store })
    }

    /// `key` (dotted for a nested table: `junit.path`) in `profile`, else in the
    /// profiles it inherits from (`inherits`, then `default`), with the table that set it.
    fn lookup(&self, profile: &str, key: &str) -> Option<(String, String)> {
        let mut name = profile.to_string();
        // A bounded walk: an `inherits` cycle is nextest's error to report.
        for _ in 0..8 {
            let table = self.profiles.get(&name).and_then(|v| v.as_table());
            let value = table.and_then(|t| {
                let mut parts = key.split('.');
                let mut v = t.get(parts.next()?)?;
                for part in parts {
                    v = v.get(part)?;
                }
                Some(v)
            });
            if let Some(v) = value {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return Some((format!("profile.{name}"), value));
            }
            if name == "default" {
                return None;
            }
            name = table
                .and_then(|t| t.get("inherits"))
                .and_then(|v| v.as_str())
                .unwrap_or("default")
                .to_string();
        }
        None
    }
}

/// `value (source: origin)` for the reports.
pub fn describe(s: &TestSetting) -> String {
    let source = match s.source {
        SettingSource::UserEnv => "user environment",
        SettingSource::NextestConfig => "nextest config",
        SettingSource::CargoConfig => "cargo config",
        SettingSource::ToolDefault => "tool default",
    };
    format!("{} {} ({source}: {})", s.setting, s.value, s.origin)
}

#[cfg(test)]
mod tests {
    use super::NextestConfig;

    /// The nearest cargo config wins, and `[env]` values may be tables with `force`.
    #[test]
    fn cargo_config_env_takes_the_nearest_file_and_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        let root = camino::Utf8Path::from_path(dir.path()).unwrap();
        let member = root.join("ws");
        for (d, body) in [
            (root.join(".cargo"), "[env]\nRUST_TEST_THREADS = \"4\"\nOTHER = \"x\"\n"),
            (member.join(".cargo"), "[env]\nRUST_TEST_THREADS = { value = \"1\", force = true }\n"),
        ] {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("config.toml"), body).unwrap();
        }
        let get = |name: &str| super::cargo_config_env(&member, name);
        assert_eq!(get("RUST_TEST_THREADS"), Some((".cargo/config.toml".into(), "1".into())));
        assert_eq!(get("OTHER"), Some((root.join(".cargo/config.toml"), "x".into())));
    }

    #[test]
    fn profiles_inherit_from_default_and_named_parents() {
        let profiles = r#"
            [default]
            test-threads = 1
            [ci]
            retries = 3
            junit = { path = "ci.xml" }
            [nightly]
            inherits = "ci"
            test-threads = "num-cpus"
        "#
        .parse()
        .unwrap();
        let c = NextestConfig { profiles, store: toml::Table::new() };
        let get = |p: &str, k: &str| c.lookup(p, k);
        assert_eq!(get("ci", "test-threads"), Some(("profile.default".into(), "1".into())));
        assert_eq!(get("nightly", "retries"), Some(("profile.ci".into(), "3".into())));
        assert_eq!(
            get("nightly", "test-threads"),
            Some(("profile.nightly".into(), "num-cpus".into()))
        );
        assert_eq!(get("default", "retries"), None);
        assert_eq!(get("nightly", "junit.path"), Some(("profile.ci".into(), "ci.xml".into())));
        assert_eq!(get("default", "junit.path"), None);
    }
}
