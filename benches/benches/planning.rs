//! Workspace model and planning on a synthetic 1000-crate workspace. `cargo metadata`
//! runs once in setup: the measured part is everything after metadata is loaded.

use camino::Utf8Path;
use criterion::Criterion;
use pipeline_opt::config::Config;
use pipeline_opt::fixture::FixtureWorkspace;
use pipeline_opt::plan::{PlanOptions, plan};
use pipeline_opt::toolchain::Toolchain;
use pipeline_opt::workspace::Workspace;

pub fn workspace_model_and_plan(c: &mut Criterion) {
    if !crate::selected("workspace_1000_crates") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Utf8Path::from_path(dir.path()).expect("utf-8 temp dir");
    // 20 layers of 50 crates, each depending on 3 crates of the layer below.
    let manifest = FixtureWorkspace::layered(1000, 50, 3).write(root).expect("fixture written");
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .exec()
        .expect("cargo metadata on the synthetic workspace");
    let toolchain = Toolchain::parse("rustc 1.95.0\nrelease: 1.95.0\nhost: x86_64\n");
    let options = PlanOptions { toolchain: Some(toolchain), nextest: true, ..Default::default() };

    let mut group = c.benchmark_group("workspace_1000_crates");
    group.bench_function("model_from_metadata", |b| b.iter(|| Workspace::from_metadata(&metadata)));
    let ws = Workspace::from_metadata(&metadata);
    assert_eq!(ws.packages.len(), 1000);
    group.bench_function("levels_and_critical_path", |b| {
        b.iter(|| (ws.levels(), ws.critical_path(&Default::default())))
    });
    group.bench_function("plan", |b| b.iter(|| plan(&ws, &Config::default(), &options).unwrap()));
    group.bench_function("model_and_plan", |b| {
        b.iter(|| {
            let ws = Workspace::from_metadata(&metadata);
            plan(&ws, &Config::default(), &options).unwrap()
        })
    });
    group.finish();
}
