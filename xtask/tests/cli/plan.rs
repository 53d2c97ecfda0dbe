//! `cargo xtask plan` on fixtures and on this workspace.

use camino::Utf8Path;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use crate::{assert_clean_error, xtask};

fn fixture(ws: &FixtureWorkspace) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = ws.write(Utf8Path::from_path(dir.path()).unwrap()).unwrap();
    (dir, manifest.to_string())
}

#[test]
fn json_and_text_describe_the_same_stages() {
    let (_dir, manifest) = fixture(&FixtureWorkspace::diamond());
    let text = xtask(&["plan", "--manifest-path", &manifest]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8(text.stdout).unwrap();
    let json = xtask(&["plan", "--manifest-path", &manifest, "--format", "json"]);
    assert!(json.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let stages = plan["stages"].as_array().unwrap();
    let ids: Vec<&str> = stages.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fetch", "build", "test", "doctest"]);
    for id in &ids {
        assert!(text.contains(&format!("stage {id}\n")), "text lists {id}:\n{text}");
    }
    assert_eq!(plan["dropped"][0]["id"], "check");
    assert_eq!(stages[1]["depends_on"][0], "fetch");
}

#[test]
fn plan_of_this_workspace_succeeds() {
    let out = xtask(&["plan"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stage build") && text.contains("stage test"), "{text}");
    assert!(
        text.contains("bench-build: bench-proof = \"dev\""),
        "benches go with the build: {text}"
    );
}

#[test]
fn broken_manifest_exits_1_with_one_line() {
    let (dir, manifest) = fixture(&FixtureWorkspace::chain(2));
    std::fs::write(dir.path().join("crates/c0/Cargo.toml"), "[package\n").unwrap();
    let out = xtask(&["plan", "--manifest-path", &manifest]);
    assert_clean_error(&out, 1, "crates/c0/Cargo.toml");
}

#[test]
fn bad_config_exits_1_naming_the_key() {
    let ws = FixtureWorkspace::chain(1).config("stage-timeout = \"soon\"");
    let (_dir, manifest) = fixture(&ws);
    let out = xtask(&["plan", "--manifest-path", &manifest]);
    assert_clean_error(&out, 1, "workspace.metadata.pipeline-opt.stage-timeout");
}

#[test]
fn unknown_stage_in_config_exits_1() {
    let ws = FixtureWorkspace::new(vec![FixtureCrate::new("a")]).config("disable = [\"lint\"]");
    let (_dir, manifest) = fixture(&ws);
    let out = xtask(&["plan", "--manifest-path", &manifest]);
    assert_clean_error(&out, 1, "unknown stage `lint`");
}

#[test]
fn missing_manifest_exits_1() {
    let out = xtask(&["plan", "--manifest-path", "/nonexistent/Cargo.toml"]);
    assert_clean_error(&out, 1, "pass --manifest-path");
}

#[test]
fn unknown_format_is_a_usage_error() {
    let out = xtask(&["plan", "--format", "yaml"]);
    assert_clean_error(&out, 2, "use `text` or `json`");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = xtask(&["plan", "--frobnicate"]);
    assert_clean_error(&out, 2, "--frobnicate");
}
