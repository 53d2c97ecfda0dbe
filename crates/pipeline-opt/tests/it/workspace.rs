//! The workspace model on generated fixtures: levels, reverse dependencies, critical
//! path, nightly-only targets, and clear errors for broken input.

use std::collections::BTreeMap;

use expect_test::{Expect, expect};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::toolchain::Toolchain;
use pipeline_opt::workspace::{WeightSource, Workspace};

use crate::support::Fixture;

/// Renders levels, every package's reverse dependencies and the critical path, so one
/// snapshot shows the whole graph model.
#[track_caller]
fn check_graph(ws: &FixtureWorkspace, measured: &[(&str, f64)], expect: Expect) {
    let fx = Fixture::write(ws);
    let w = fx.load();
    let name = |i: usize| w.packages[i].name.clone();
    let mut out = String::new();
    for (n, level) in w.levels().iter().enumerate() {
        let names: Vec<String> = level.iter().map(|&i| name(i)).collect();
        out.push_str(&format!("level {n}: {}\n", names.join(" ")));
    }
    for (i, p) in w.packages.iter().enumerate() {
        let r: Vec<String> = w.reverse_deps(i).into_iter().map(name).collect();
        out.push_str(&format!("rdeps {}: {}\n", p.name, r.join(" ")));
    }
    let measured: BTreeMap<String, f64> =
        measured.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let cp = w.critical_path(&measured);
    out.push_str(&format!(
        "critical path ({:?}): {}\n",
        cp.weight_source,
        cp.packages.join(" -> ")
    ));
    expect.assert_eq(&out);
}

#[test]
fn chain_is_one_package_per_level() {
    check_graph(
        &FixtureWorkspace::chain(4),
        &[],
        expect![[r#"
            level 0: c0
            level 1: c1
            level 2: c2
            level 3: c3
            rdeps c0: c0 c1 c2 c3
            rdeps c1: c1 c2 c3
            rdeps c2: c2 c3
            rdeps c3: c3
            critical path (SourceBytes): c0 -> c1 -> c2 -> c3
        "#]],
    );
}

#[test]
fn diamond_critical_path_follows_measured_times() {
    let measured = [("base", 1.0), ("left", 1.0), ("right", 9.0), ("top", 1.0)];
    check_graph(
        &FixtureWorkspace::diamond(),
        &measured,
        expect![[r#"
            level 0: base
            level 1: left right
            level 2: top
            rdeps base: base left right top
            rdeps left: left top
            rdeps right: right top
            rdeps top: top
            critical path (MeasuredSeconds): base -> right -> top
        "#]],
    );
}

#[test]
fn critical_path_falls_back_to_source_size_when_a_package_was_not_measured() {
    let mut ws = FixtureWorkspace::diamond();
    // `left` carries far more source than `right`.
    ws.crates[1].files.push(("src/big.rs".into(), "// padding\n".repeat(2000)));
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let measured: BTreeMap<String, f64> = [("right".to_string(), 100.0)].into();
    let cp = w.critical_path(&measured);
    assert_eq!(cp.weight_source, WeightSource::SourceBytes);
    assert_eq!(cp.packages, ["base", "left", "top"]);
}

#[test]
fn wide_graph_of_fifty_crates_has_three_levels() {
    let fx = Fixture::write(&FixtureWorkspace::wide(50));
    let w = fx.load();
    let levels = w.levels();
    let sizes: Vec<usize> = levels.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, 48, 1]);
    let core = w.package("core").unwrap();
    assert_eq!(w.reverse_deps(core).len(), 50);
    let leaf = w.package("leaf7").unwrap();
    let names: Vec<&str> =
        w.reverse_deps(leaf).into_iter().map(|i| w.packages[i].name.as_str()).collect();
    assert_eq!(names, ["app", "leaf7"]);
    assert_eq!(w.critical_path(&BTreeMap::new()).packages.len(), 3);
}

#[test]
fn dev_dependencies_do_not_order_builds_but_count_as_affected() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("util"),
        FixtureCrate::new("testkit"),
        FixtureCrate::new("app").dep("util").dev_dep("testkit"),
    ]);
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let app = w.package("app").unwrap();
    let testkit = w.package("testkit").unwrap();
    assert_eq!(w.packages[app].dev_deps, [testkit]);
    // testkit and util can build side by side; app waits only for util.
    let levels: Vec<Vec<&str>> = w
        .levels()
        .iter()
        .map(|l| l.iter().map(|&i| w.packages[i].name.as_str()).collect())
        .collect();
    assert_eq!(levels, [vec!["testkit", "util"], vec!["app"]]);
    let affected: Vec<&str> =
        w.reverse_deps(testkit).into_iter().map(|i| w.packages[i].name.as_str()).collect();
    assert_eq!(affected, ["app", "testkit"]);
}

#[test]
fn targets_of_every_kind_are_modelled() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("tool")
            .bin("tool-cli", "fn main() {}\n")
            .test("smoke", "#[test]\nfn ok() {}\n")
            .bench("speed", "fn main() {}\n")
            .file("examples/demo.rs", "fn main() {}\n"),
    ]);
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let mut kinds: Vec<String> =
        w.packages[0].targets.iter().map(|t| format!("{:?}:{}", t.kind, t.name)).collect();
    kinds.sort();
    assert_eq!(kinds, ["Bench:speed", "Bin:tool-cli", "Example:demo", "Lib:tool", "Test:smoke"]);
}

#[test]
fn nightly_only_targets_are_found_and_only_unbuildable_on_stable() {
    let ws = FixtureWorkspace::new(vec![
        FixtureCrate::new("fast")
            .bench("nightly_bench", "#![feature(test)]\nextern crate test;\nfn main() {}\n")
            .bench("stable_bench", "// #![feature(commented_out)]\nfn main() {}\n"),
    ]);
    let fx = Fixture::write(&ws);
    let w = fx.load();
    let stable =
        Toolchain::parse("rustc 1.95.0\nrelease: 1.95.0\nhost: x86_64-unknown-linux-gnu\n");
    let nightly = Toolchain::parse("rustc 1.97.0-nightly\nrelease: 1.97.0-nightly\nhost: x\n");
    let names: Vec<String> = w
        .unbuildable_targets(&stable)
        .into_iter()
        .map(|(p, t)| format!("{}/{} {:?}", p.name, t.name, t.nightly_features))
        .collect();
    assert_eq!(names, [r#"fast/nightly_bench ["test"]"#]);
    assert!(w.unbuildable_targets(&nightly).is_empty());
}

#[test]
fn feature_gates_are_read_from_inner_attributes_only() {
    let src = "//! docs\n#![feature(test, portable_simd)]\n#![allow(dead_code)]\n// #![feature(nope)]\n#[feature(not_inner)]\nfn main() {}\n";
    assert_eq!(pipeline_opt::workspace::feature_gates(src), ["test", "portable_simd"]);
}

#[test]
fn broken_manifest_is_a_one_line_error() {
    let fx = Fixture::write(&FixtureWorkspace::chain(2));
    std::fs::write(fx.root.join("crates/c1/Cargo.toml"), "[package\nname = \"c1\"\n").unwrap();
    let err = Workspace::load(Some(&fx.manifest)).unwrap_err().to_string();
    assert!(err.starts_with("`cargo metadata` failed for "), "{err}");
    assert!(err.contains("crates/c1/Cargo.toml"), "names the broken file: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn missing_manifest_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = camino::Utf8Path::from_path(dir.path()).unwrap().join("Cargo.toml");
    let err = Workspace::load(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("pass --manifest-path"), "{err}");
}

#[test]
fn this_project_loads_with_its_own_members() {
    let manifest = camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let w = Workspace::load(Some(&manifest)).unwrap();
    let names: Vec<&str> = w.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["pipeline-opt", "pipeline-opt-benches", "pipeline-opt-lease", "xtask"]);
    let lib = w.package("pipeline-opt").unwrap();
    let dependents: Vec<&str> =
        w.reverse_deps(lib).into_iter().map(|i| w.packages[i].name.as_str()).collect();
    assert_eq!(dependents, ["pipeline-opt", "pipeline-opt-benches", "xtask"]);
    assert!(w.resolved);
}

#[test]
fn missing_path_dependency_error_carries_its_causes() {
    let fx = Fixture::write(&FixtureWorkspace::new(vec![FixtureCrate::new("app").dep("gone")]));
    let err = Workspace::load(Some(&fx.manifest)).unwrap_err().to_string();
    assert!(err.contains("failed to load manifest for dependency `gone`"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}
