//! `cargo xtask plan` on fixtures and on this workspace.

use std::collections::BTreeMap;

use camino::Utf8Path;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use crate::{assert_clean_error, record, temp, xtask};

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

/// `plan --format json` with the flags `optimize` runs with (`--since`, nextest's
/// retries) shows, stage by stage, the commands `optimize` runs, on a fixture with
/// services; only the services stage runs in-process instead of as `cargo xtask`.
#[test]
fn plan_json_is_what_optimize_runs() {
    if !crate::services::redis_installed() {
        return;
    }
    let (_guard, root) = temp();
    let ws = FixtureWorkspace::diamond().config("[services.cache]\nkind = \"redis\"\nsize = 1\n");
    let manifest = crate::cache::repo(ws, &root);
    let m = manifest.as_str();
    // `cargo metadata` writes the lock file, which must not count as a change.
    assert!(xtask(&["plan", "--manifest-path", m]).status.success());
    crate::cache::git(&root, &["add", "-A"]);
    crate::cache::git(&root, &["commit", "-q", "-m", "lock file"]);
    let lib = root.join("crates/top/src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{source}\n// changed\n")).unwrap();

    let since = ["--since", "HEAD"];
    let out = xtask(
        &[&["plan", "--manifest-path", m, "--format", "json", "--retries", "2"][..], &since]
            .concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let json = root.join("run.json");
    let out =
        xtask(&[&["optimize", "--manifest-path", m, "--json", json.as_str()][..], &since].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let record = record(&json);

    let planned: BTreeMap<&str, String> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), display(&s["command"])))
        .collect();
    let ran: BTreeMap<&str, &str> =
        record.stages.iter().map(|s| (s.id.as_str(), s.command.as_str())).collect();
    assert_eq!(planned.keys().collect::<Vec<_>>(), ran.keys().collect::<Vec<_>>());
    for (id, command) in &planned {
        if *id == "services" {
            assert!(command.ends_with(&format!("cargo xtask pool up --manifest-path {m}")));
            assert!(ran[id].ends_with(env!("CARGO_BIN_EXE_xtask")), "{}", ran[id]);
        } else {
            assert_eq!(ran[id], command, "stage {id}");
        }
    }
    let test = &planned["test"];
    for part in
        ["nextest run", "--package top", "--tool-config-file pipeline-opt:", "PIPELINE_OPT_POOL="]
    {
        assert!(test.contains(part), "{part} in {test}; notes: {}", plan["notes"]);
    }
    let dropped: Vec<(&str, &str)> = plan["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    let recorded: Vec<(&str, &str)> =
        record.dropped.iter().map(|d| (d.id.as_str(), d.reason.as_str())).collect();
    assert_eq!(dropped, recorded);
}

/// A command of the plan's JSON as a run record shows it (`StageCommand::display`).
fn display(command: &serde_json::Value) -> String {
    let quote = |s: &str| {
        let plain = s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if !s.is_empty() && plain {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let env = command["env"].as_object().unwrap();
    let env = env.iter().map(|(k, v)| format!("{k}={}", quote(v.as_str().unwrap())));
    let args = command["args"].as_array().unwrap().iter();
    let argv = std::iter::once(&command["program"]).chain(args).map(|a| quote(a.as_str().unwrap()));
    env.chain(argv).collect::<Vec<_>>().join(" ")
}

/// `--workspace` and `--exclude` go into the plan's selection as cargo takes them:
/// every cargo stage that selects packages runs `--workspace --exclude top`, the test
/// stage tests the rest; `--workspace` wins over `-p`; `-p` with `--exclude`, an
/// unknown name, or excluding every member is a one-line error naming the fix.
#[test]
fn plan_takes_workspace_and_exclude_as_cargo_does() {
    let (_dir, manifest) = fixture(&FixtureWorkspace::diamond());
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "--manifest-path", &manifest, "--format", "json"];
        args.extend(extra);
        let out = xtask(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        plan["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let args = s["command"]["args"].as_array().unwrap();
                let words: Vec<&str> = args.iter().map(|a| a.as_str().unwrap()).collect();
                (s["id"].as_str().unwrap().to_string(), words.join(" "))
            })
            .collect::<BTreeMap<String, String>>()
    };
    let excluded = plan(&["--exclude=top", "--exclude", "left"]);
    for id in ["build", "test", "doctest"] {
        let c = &excluded[id];
        assert!(c.contains("--workspace --exclude top --exclude left"), "{id}: {c}");
    }
    assert!(!excluded["fetch"].contains("--exclude"), "{}", excluded["fetch"]);
    let workspace = plan(&["--workspace", "-p", "left"]);
    assert!(workspace["build"].contains("--workspace") && !workspace["build"].contains("left"));

    let out = xtask(&["plan", "--manifest-path", &manifest, "-p", "left", "--exclude", "top"]);
    assert_clean_error(&out, 1, "--exclude applies to the whole workspace");
    let out = xtask(&["plan", "--manifest-path", &manifest, "--exclude", "nope"]);
    assert_clean_error(&out, 1, "workspace members are: ");
    let all = ["--exclude", "base", "--exclude", "left", "--exclude", "right", "--exclude", "top"];
    let mut args = vec!["plan", "--manifest-path", manifest.as_str()];
    args.extend(all);
    assert_clean_error(&xtask(&args), 1, "exclude fewer packages");
}
