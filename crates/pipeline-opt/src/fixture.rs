//! Generated fixture workspaces: real Cargo workspaces with path dependencies only, so
//! tests and benchmarks run real cargo on them without the network. Shapes: a chain, a
//! diamond, a wide graph; crates can carry tests, doctests, benches, nightly-only
//! targets and extra files.

use std::fmt::Write as _;
use std::io;

use camino::{Utf8Path, Utf8PathBuf};

#[derive(Debug, Clone, Default)]
pub struct FixtureCrate {
    pub name: String,
    pub deps: Vec<String>,
    pub dev_deps: Vec<String>,
    /// `src/lib.rs`; `None` writes a default that sums the dependencies' `value()`.
    pub lib: Option<String>,
    /// Extra integration tests: `tests/<name>.rs`.
    pub tests: Vec<(String, String)>,
    /// Bench targets: `benches/<name>.rs`, declared with `harness = false`.
    pub benches: Vec<(String, String)>,
    /// Binaries: `src/bin/<name>.rs`.
    pub bins: Vec<(String, String)>,
    /// Any other file, by path relative to the crate directory.
    pub files: Vec<(String, String)>,
    /// Extra lines appended to the crate's `Cargo.toml`.
    pub manifest_extra: String,
}

impl FixtureCrate {
    pub fn new(name: impl Into<String>) -> FixtureCrate {
        FixtureCrate { name: name.into(), ..FixtureCrate::default() }
    }

    pub fn dep(mut self, name: impl Into<String>) -> FixtureCrate {
        self.deps.push(name.into());
        self
    }

    pub fn dev_dep(mut self, name: impl Into<String>) -> FixtureCrate {
        self.dev_deps.push(name.into());
        self
    }

    pub fn lib(mut self, src: impl Into<String>) -> FixtureCrate {
        self.lib = Some(src.into());
        self
    }

    pub fn test(mut self, name: impl Into<String>, src: impl Into<String>) -> FixtureCrate {
        self.tests.push((name.into(), src.into()));
        self
    }

    pub fn bench(mut self, name: impl Into<String>, src: impl Into<String>) -> FixtureCrate {
        self.benches.push((name.into(), src.into()));
        self
    }

    pub fn bin(mut self, name: impl Into<String>, src: impl Into<String>) -> FixtureCrate {
        self.bins.push((name.into(), src.into()));
        self
    }

    pub fn file(mut self, path: impl Into<String>, contents: impl Into<String>) -> FixtureCrate {
        self.files.push((path.into(), contents.into()));
        self
    }

    fn ident(&self) -> String {
        self.name.replace('-', "_")
    }

    fn default_lib(&self) -> String {
        let ident = self.ident();
        let mut sum = String::from("1");
        for d in &self.deps {
            write!(sum, " + {}::value()", d.replace('-', "_")).unwrap();
        }
        format!(
            "//! Fixture crate `{name}`.\n\n\
             /// One plus the values of this crate's dependencies.\n\
             ///\n\
             /// ```\n\
             /// assert!({ident}::value() >= 1);\n\
             /// ```\n\
             pub fn value() -> u64 {{\n    {sum}\n}}\n\n\
             #[cfg(test)]\n\
             mod tests {{\n    #[test]\n    fn value_is_positive() {{\n        assert!(super::value() >= 1);\n    }}\n}}\n",
            name = self.name
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct FixtureWorkspace {
    pub crates: Vec<FixtureCrate>,
    /// TOML body of `[workspace.metadata.pipeline-opt]`; table headers in it are
    /// relative to that table (`[stages.lint]` is written as
    /// `[workspace.metadata.pipeline-opt.stages.lint]`).
    pub config: Option<String>,
    /// With a TOML body, the root manifest is also a package (`root`, an empty lib: the
    /// shape of a single-package project) whose `[package.metadata.pipeline-opt]` is this
    /// body, table headers relative to it as in `config`.
    pub package_config: Option<String>,
    /// Files at the workspace root, by relative path (`rust-toolchain.toml`, ...).
    pub files: Vec<(String, String)>,
    /// TOML appended to the root manifest as written (`[profile.test]`, ...).
    pub root_manifest_extra: String,
}

impl FixtureWorkspace {
    pub fn new(crates: Vec<FixtureCrate>) -> FixtureWorkspace {
        FixtureWorkspace { crates, ..FixtureWorkspace::default() }
    }

    /// `c0 <- c1 <- ... <- c{n-1}`: each crate depends on the one before.
    pub fn chain(n: usize) -> FixtureWorkspace {
        let crates = (0..n)
            .map(|i| {
                let c = FixtureCrate::new(format!("c{i}"));
                if i == 0 { c } else { c.dep(format!("c{}", i - 1)) }
            })
            .collect();
        FixtureWorkspace::new(crates)
    }

    /// `base <- left, right <- top`.
    pub fn diamond() -> FixtureWorkspace {
        FixtureWorkspace::new(vec![
            FixtureCrate::new("base"),
            FixtureCrate::new("left").dep("base"),
            FixtureCrate::new("right").dep("base"),
            FixtureCrate::new("top").dep("left").dep("right"),
        ])
    }

    /// One `core` crate, `n - 2` leaves depending on it, and an `app` depending on all.
    pub fn wide(n: usize) -> FixtureWorkspace {
        assert!(n >= 3, "a wide fixture needs at least 3 crates");
        let mut crates = vec![FixtureCrate::new("core")];
        let mut app = FixtureCrate::new("app");
        for i in 0..n - 2 {
            crates.push(FixtureCrate::new(format!("leaf{i}")).dep("core"));
            app = app.dep(format!("leaf{i}"));
        }
        crates.push(app);
        FixtureWorkspace::new(crates)
    }

    /// A layered synthetic graph of `n` crates, each depending on up to `fan_in` crates
    /// of the layer below: the shape of a large real workspace, for benchmarks.
    pub fn layered(n: usize, width: usize, fan_in: usize) -> FixtureWorkspace {
        let crates = (0..n)
            .map(|i| {
                let layer = i / width.max(1);
                let mut c = FixtureCrate::new(format!("s{i}"));
                if layer > 0 {
                    let below = (layer - 1) * width;
                    for k in 0..fan_in.min(width) {
                        c = c.dep(format!("s{}", below + (i + k) % width));
                    }
                }
                c
            })
            .collect();
        FixtureWorkspace::new(crates)
    }

    pub fn config(mut self, toml_body: impl Into<String>) -> FixtureWorkspace {
        self.config = Some(toml_body.into());
        self
    }

    pub fn file(
        mut self,
        path: impl Into<String>,
        contents: impl Into<String>,
    ) -> FixtureWorkspace {
        self.files.push((path.into(), contents.into()));
        self
    }

    /// Writes the workspace under `dir` and returns the root manifest's path.
    pub fn write(&self, dir: &Utf8Path) -> io::Result<Utf8PathBuf> {
        std::fs::create_dir_all(dir)?;
        let members: Vec<String> =
            self.crates.iter().map(|c| format!("\"crates/{}\"", c.name)).collect();
        let mut root =
            format!("[workspace]\nmembers = [{}]\nresolver = \"2\"\n", members.join(", "));
        if let Some(config) = &self.config {
            push_table(&mut root, "workspace.metadata.pipeline-opt", config);
        }
        if let Some(config) = &self.package_config {
            root.push_str(
                "\n[package]\nname = \"root\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n",
            );
            push_table(&mut root, "package.metadata.pipeline-opt", config);
            write_file(&dir.join("src/lib.rs"), "")?;
        }
        if !self.root_manifest_extra.is_empty() {
            root.push('\n');
            root.push_str(&self.root_manifest_extra);
        }
        let manifest = dir.join("Cargo.toml");
        std::fs::write(&manifest, root)?;
        for (path, contents) in &self.files {
            write_file(&dir.join(path), contents)?;
        }
        for c in &self.crates {
            let cdir = dir.join("crates").join(&c.name);
            let mut m = format!(
                "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n",
                c.name
            );
            for d in &c.deps {
                writeln!(m, "{d} = {{ path = \"../{d}\" }}").unwrap();
            }
            m.push_str("\n[dev-dependencies]\n");
            for d in &c.dev_deps {
                writeln!(m, "{d} = {{ path = \"../{d}\" }}").unwrap();
            }
            for (name, _) in &c.benches {
                write!(m, "\n[[bench]]\nname = \"{name}\"\nharness = false\n").unwrap();
            }
            if !c.manifest_extra.is_empty() {
                write!(m, "\n{}\n", c.manifest_extra).unwrap();
            }
            write_file(&cdir.join("Cargo.toml"), &m)?;
            let lib = c.lib.clone().unwrap_or_else(|| c.default_lib());
            write_file(&cdir.join("src/lib.rs"), &lib)?;
            for (name, src) in &c.tests {
                write_file(&cdir.join(format!("tests/{name}.rs")), src)?;
            }
            for (name, src) in &c.benches {
                write_file(&cdir.join(format!("benches/{name}.rs")), src)?;
            }
            for (name, src) in &c.bins {
                write_file(&cdir.join(format!("src/bin/{name}.rs")), src)?;
            }
            for (path, contents) in &c.files {
                write_file(&cdir.join(path), contents)?;
            }
        }
        Ok(manifest)
    }
}

/// Appends `[table]` with `body`, whose table headers are relative to it.
fn push_table(manifest: &mut String, table: &str, body: &str) {
    writeln!(manifest, "\n[{table}]").unwrap();
    for line in body.lines() {
        match line.trim_start().strip_prefix('[') {
            Some(rest) if !rest.starts_with('[') => writeln!(manifest, "[{table}.{rest}").unwrap(),
            _ => writeln!(manifest, "{line}").unwrap(),
        }
    }
}

fn write_file(path: &Utf8Path, contents: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)
}

/// A library of `n` plain functions with iterator chains, for a compile time that advice
/// thresholds take seriously: 200 took 2.2 s of a fresh debug compile
/// (`CARGO_INCREMENTAL=0 cargo build`) on this project's 2-core machine under a load of 9.
pub fn slow_lib_source(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "pub fn f{i}(x: u64) -> u64 {{\n    let v: Vec<u64> = (0..x).map(|k| k.wrapping_mul({i}) ^ (k >> 3)).filter(|k| k % 7 != {m}).collect();\n    v.iter().fold({i}, |a, b| a.rotate_left(5) ^ b)\n}}\n",
                m = i % 7
            )
        })
        .collect()
}

/// An `app` crate that builds two versions of one package: `dup` 0.1.0 and 0.2.0, path
/// packages written under `dir/vendor`, outside the workspace, which must be written to
/// `dir/ws` (the crate's paths to them are relative). Duplicate-version advice needs it.
pub fn duplicate_versions_app(dir: &Utf8Path) -> io::Result<FixtureCrate> {
    for (folder, version) in [("dup-one", "0.1.0"), ("dup-two", "0.2.0")] {
        let d = dir.join("vendor").join(folder);
        std::fs::create_dir_all(d.join("src"))?;
        std::fs::write(
            d.join("Cargo.toml"),
            format!("[package]\nname = \"dup\"\nversion = \"{version}\"\nedition = \"2021\"\n"),
        )?;
        std::fs::write(d.join("src/lib.rs"), slow_lib_source(200))?;
    }
    let mut app = FixtureCrate::new("app");
    app.manifest_extra =
        "[dependencies.dup1]\npackage = \"dup\"\npath = \"../../../vendor/dup-one\"\n\n\
         [dependencies.dup2]\npackage = \"dup\"\npath = \"../../../vendor/dup-two\"\n"
            .into();
    Ok(app)
}

/// A synthetic test inventory of `tests` tests spread over `binaries` binaries, with
/// long names and heavy-tailed durations (Pareto, α = 1.2: most tests take a few
/// milliseconds, a few take seconds, none more than 5 s), one sample each; the same
/// every call. For the shard planner's tests and benchmark.
pub fn shard_inventory(
    tests: usize,
    binaries: usize,
) -> (crate::shard::Inventory, crate::shard::Durations) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut inv = crate::shard::Inventory::default();
    let mut durations = crate::shard::Durations::default();
    for b in 0..binaries.max(1) {
        let binary_id = format!("crate_{b:03}::integration_suite_{b:03}");
        let count = tests / binaries.max(1) + usize::from(b < tests % binaries.max(1));
        let mut names: Vec<String> = (0..count)
            .map(|i| {
                format!(
                    "module_{:02}::scenario::case_{i:05}_checks_a_long_descriptive_name",
                    i % 50
                )
            })
            .collect();
        names.sort();
        for name in &names {
            let secs = (0.002 * next().powf(-1.0 / 1.2)).min(5.0);
            durations.add(
                crate::shard::test_key(&binary_id, name),
                std::time::Duration::from_secs_f64(secs),
            );
        }
        inv.binaries.push(crate::shard::InventoryBinary { binary_id, tests: names });
    }
    (inv, durations)
}

/// A workspace of `crates` crates whose integration test `sleeps` holds
/// `tests_per_crate` tests that sleep for heavy-tailed durations (Pareto, α = 1.2),
/// scaled so that they add up to about `total` with none longer than `cap`; the same
/// every call. Sleeping tests do not compete for cores, so N shards on one machine
/// behave as N machines. Returns the workspace and each test's sleep by its nextest key
/// (`binary_id test_name`). For the shard-balance experiment.
pub fn sleeping_tests_workspace(
    crates: usize,
    tests_per_crate: usize,
    total: std::time::Duration,
    cap: std::time::Duration,
) -> (FixtureWorkspace, Vec<(String, std::time::Duration)>) {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let n = crates.max(1) * tests_per_crate.max(1);
    let mut secs: Vec<f64> = (0..n).map(|_| next().powf(-1.0 / 1.2)).collect();
    let (total, cap) = (total.as_secs_f64(), cap.as_secs_f64());
    // Scale to the total, cap, and again: capping takes from the total.
    for _ in 0..20 {
        let sum: f64 = secs.iter().sum();
        secs.iter_mut().for_each(|s| *s = (*s * total / sum).min(cap));
    }
    let mut sleeps = Vec::new();
    let crates = (0..crates.max(1))
        .map(|c| {
            let name = format!("s{c}");
            let mut src = String::new();
            for t in 0..tests_per_crate.max(1) {
                let ms = (secs[c * tests_per_crate.max(1) + t] * 1000.0).round().max(1.0) as u64;
                writeln!(
                    src,
                    "#[test]\nfn t{t:03}() {{\n    std::thread::sleep(std::time::Duration::from_millis({ms}));\n}}"
                )
                .expect("a String takes any write");
                sleeps.push((
                    format!("{name}::sleeps t{t:03}"),
                    std::time::Duration::from_millis(ms),
                ));
            }
            FixtureCrate::new(name).lib("").test("sleeps", src)
        })
        .collect();
    (FixtureWorkspace::new(crates), sleeps)
}
