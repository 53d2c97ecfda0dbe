//! Fingerprinting a workspace of 10,000 source files (100 crates of 100 files), warm:
//! the stat cache is on disk from an earlier run, so the measured part is loading it,
//! listing and stat-ing every file, reading dep-info, hashing nothing new, and saving
//! it again. The target is under 200 ms.

use std::time::{Duration, SystemTime};

use camino::Utf8Path;
use criterion::Criterion;
use pipeline_opt::cache::Fingerprinter;
use pipeline_opt::cache::store::Store;
use pipeline_opt::config::Config;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::plan::StageCommand;
use pipeline_opt::toolchain::Toolchain;
use pipeline_opt::workspace::Workspace;

pub fn fingerprint_10k_files(c: &mut Criterion) {
    if !crate::selected("fingerprint") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Utf8Path::from_path(dir.path()).expect("utf-8 temp dir");
    let crates = (0..100)
        .map(|i| {
            let mut c = FixtureCrate::new(format!("k{i}"));
            if i > 0 {
                c = c.dep(format!("k{}", i - 1));
            }
            // src/lib.rs plus 99 modules: 100 files a crate.
            for m in 0..99 {
                c = c.file(format!("src/m{m}.rs"), format!("pub fn f{m}() -> u64 {{ {m} }}\n"));
            }
            c
        })
        .collect();
    let manifest = FixtureWorkspace::new(crates).write(root).expect("fixture written");
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .exec()
        .expect("cargo metadata on the synthetic workspace");
    // Files written this second are not trusted by the stat cache (same-tick writes);
    // a real warm run sees files that were written earlier.
    let past = SystemTime::now() - Duration::from_secs(3600);
    for e in walk(root) {
        std::fs::File::options().write(true).open(&e).unwrap().set_modified(past).unwrap();
    }
    let ws = Workspace::from_metadata(&metadata);
    let toolchain = Toolchain::parse("rustc 1.95.0\nrelease: 1.95.0\nhost: x86_64\n");
    let config = Config::default();
    let command =
        StageCommand::argv("cargo", vec!["build".into(), "--workspace".into()], ws.root.clone());
    let all: Vec<usize> = (0..ws.packages.len()).collect();
    let state = ws.state_dir(&config);
    let target_dirs = vec![ws.target_dir.clone()];

    let run = || {
        let mut store = Store::open(&state, |_| {}).unwrap();
        let hasher = store.load_hasher();
        let mut fp = Fingerprinter::new(&ws, &toolchain, &config, &target_dirs, hasher);
        let f = fp.fingerprint(&all, true, &command);
        let hasher = fp.into_hasher();
        store.save_hasher(&hasher).unwrap();
        (f, hasher.rehashed)
    };
    let (cold, rehashed) = run();
    assert!(cold.inputs.len() >= 10_000, "{} inputs", cold.inputs.len());
    assert!(rehashed >= 10_000);

    let mut group = c.benchmark_group("fingerprint");
    group.sample_size(20);
    group.bench_function("workspace_10k_files_warm", |b| {
        b.iter(|| {
            let (f, rehashed) = run();
            assert_eq!(rehashed, 0, "a warm run re-reads no file");
            f
        })
    });
    group.finish();
}

fn walk(root: &Utf8Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.as_std_path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}
