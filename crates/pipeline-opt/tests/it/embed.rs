//! A program that embeds the engine with `default-features = false, features = ["cli"]`,
//! as a user's xtask for a workspace without services would: it builds without the
//! PostgreSQL and Redis clients, and a workspace that declares such a service gets a
//! one-line error naming the feature to enable, before anything starts.

use std::process::{Command, Output};

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

/// `cargo ARGS` on the embedding crate, offline, without the cargo variables of this
/// test run, in the target directory `cli::cli_init_xtask_*` builds a user's xtask in
/// (kept between runs): with the same lock file and profile, the registry crates both
/// build alike are compiled once.
fn cargo(root: &Utf8Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(root);
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        cmd.env_remove(var);
    }
    let target = Utf8Path::new(env!("CARGO_TARGET_TMPDIR")).join("init-xtask-target");
    cmd.env("CARGO_NET_OFFLINE", "true").env("CARGO_TARGET_DIR", target);
    cmd
}

#[track_caller]
fn success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The embedding crate: the engine's command line and nothing else, the engine without
/// its default features.
fn write_embedding_crate(root: &Utf8Path) {
    let engine = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"lean-embed\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\npipeline-opt = {{ path = \"{engine}\", default-features = false, features = [\"cli\"] }}\n\n\
             [workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("src/main.rs"),
        "fn main() -> std::process::ExitCode {\n    pipeline_opt::run_helper_modes_if_requested();\n    pipeline_opt::cli::main()\n}\n",
    )
    .unwrap();
    // The versions this crate is tested with, resolved offline from the registry cache.
    std::fs::copy(Utf8Path::new(engine).join("../../Cargo.lock"), root.join("Cargo.lock")).unwrap();
}

#[test]
fn embed_without_default_features_builds_no_client_and_names_the_feature() {
    if std::env::var_os("PIPELINE_OPT_SLOW_TESTS").is_none() {
        eprintln!("embed: skipped (it compiles the engine once more; PIPELINE_OPT_SLOW_TESTS=1)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().join("embed")).unwrap();
    write_embedding_crate(&root);

    let tree =
        success(&cargo(&root, &["tree", "-e", "normal", "--prefix", "none"]).output().unwrap());
    assert!(tree.contains("pipeline-opt v0.0.0"), "{tree}");
    let clients: Vec<&str> = tree
        .lines()
        .filter(|l| ["postgres", "redis", "tokio"].iter().any(|c| l.contains(&format!("{c} v"))))
        .collect();
    assert!(clients.is_empty(), "clients in the lean build: {clients:?}");

    let out = cargo(&root, &["build", "--quiet", "--message-format", "json"]).output().unwrap();
    let messages = success(&out);
    let exe = messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| m["executable"].as_str().map(String::from))
        .expect("cargo names the built binary");

    // A workspace whose tests would lease a PostgreSQL database.
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("app")])
        .config("disable = [\"bench-build\", \"doctest\"]\n[services.db]\nkind = \"postgres\"\n");
    let manifest = ws.write(&Utf8PathBuf::from_path_buf(dir.path().join("ws")).unwrap()).unwrap();
    for args in [&["pool", "up"][..], &["optimize"][..]] {
        let mut cmd = Command::new(&exe);
        cmd.args(args).args(["--manifest-path", manifest.as_str()]);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            "error: service `db` is postgres but this build of pipeline-opt has no postgres client; \
             build it with the `postgres` feature (`features = [\"postgres\"]` on the pipeline-opt \
             dependency) or remove the service",
            "{args:?}"
        );
    }
    // Refused before anything started: no build ran, no pool was made.
    let target = Utf8Path::new(manifest.parent().unwrap()).join("target");
    assert!(!target.join("debug").exists(), "a stage ran");
    assert!(!target.join("pipeline-opt/pool/run").exists(), "a pool was started");
}
