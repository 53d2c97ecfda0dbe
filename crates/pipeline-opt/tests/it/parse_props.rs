//! Issue #14, the parsers of what a user or a crash can leave behind, under generated
//! input (proptest): the config table, history lines and cache record files. None may
//! panic; a bad config is a one-line error naming the table; a bad history line is
//! skipped with a warning; a bad cache file is a miss with a warning. Cases per property:
//! `PROPTEST_CASES` (default 256), so CI stays bounded and a longer hunt is one variable
//! away.

use camino::Utf8Path;
use pipeline_opt::cache::store::{self, Store};
use pipeline_opt::config::Config;
use pipeline_opt::report::history;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Keys the config, history and cache files really use, so that generated tables reach
/// past the first unknown-key error; plus arbitrary ones.
const KEYS: &[&str] = &[
    "targets",
    "required",
    "stretch",
    "stages",
    "disable",
    "enable",
    "bench-proof",
    "test-runner",
    "incremental",
    "stage-timeout",
    "services",
    "cache",
    "dir",
    "budget",
    "env",
    "command",
    "depends-on",
    "timeout",
    "uses-build-dir",
    "kind",
    "size",
    "spare",
    "setup-sql",
    "port",
    "ready",
    "tcp",
    "log-line",
    "postgres",
    "redis",
    "build",
    "test",
    "schema_version",
    "run_id",
    "started_at",
    "outcome",
    "total",
    "required_met",
    "stretch_met",
    "status",
    "wall",
    "records",
    "key",
    "recorded_at",
    "digest",
    "fingerprint",
];

/// Strings that mean something to some key, and some that should not.
const WORDS: &[&str] = &[
    "45s",
    "2m 30s",
    "300000000000y",
    "0s",
    "1ns",
    "soon",
    "5GiB",
    "1e400",
    "-1",
    "",
    ".",
    "..",
    "../../x",
    "a/b",
    "a\nb",
    "a\"b",
    "dev",
    "check",
    "build",
    "nextest",
    "cargo",
    "auto",
    "on",
    "off",
    "postgres",
    "redis",
    "command",
    "succeeded",
    "cached",
    "interrupted",
    "fetch",
    "test",
    "doctest",
    "clippy",
    "é",
    "\u{0}",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => prop::sample::select(WORDS).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(WORDS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// JSON trees up to a few levels deep, shaped like TOML tables.
fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid history line with every number replaced by a generated one.
fn history_line() -> impl Strategy<Value = String> {
    (scalar(), scalar(), scalar(), tree(), prop::sample::select(WORDS)).prop_map(
        |(total, wall, schema, stages, status)| {
            let mut entry = json!({
                "schema_version": schema, "run_id": "r", "started_at": "t",
                "command": "optimize", "outcome": "succeeded", "total": total,
                "required_met": true, "stretch_met": true,
                "stages": { "build": { "status": status, "wall": wall } },
            });
            if stages.is_object() {
                entry["stages"]["extra"] = stages;
            }
            entry.to_string()
        },
    )
}

/// Bytes of a cache record file: JSON of the right shape with generated fields, garbage,
/// or a valid-looking file cut short.
fn record_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        tree().prop_map(|records| {
            json!({ "schema_version": store::CACHE_SCHEMA_VERSION, "records": records })
                .to_string()
                .into_bytes()
        }),
        (tree(), any::<prop::sample::Index>()).prop_map(|(t, cut)| {
            let text = json!({ "schema_version": store::CACHE_SCHEMA_VERSION, "records": [t] })
                .to_string();
            text.as_bytes()[..cut.index(text.len() + 1)].to_vec()
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

proptest! {
    #[test]
    fn config_never_panics_and_errors_are_one_line(table in tree()) {
        let metadata = json!({ "pipeline-opt": table });
        if let Err(e) = Config::from_workspace_metadata(&metadata) {
            let message = e.to_string();
            prop_assert!(!message.trim().is_empty());
            prop_assert!(!message.contains('\n'), "more than one line: {message:?}");
            prop_assert!(
                message.contains("workspace.metadata.pipeline-opt") || message.contains("stage"),
                "the error names neither the table nor a stage: {message}"
            );
        }
    }

    #[test]
    fn history_lines_never_panic_and_bad_ones_are_skipped_with_a_warning(
        lines in prop::collection::vec(
            prop_oneof![history_line(), any::<String>()], 0..6)
    ) {
        let text = lines.join("\n");
        let h = history::parse(&text);
        let non_empty = text.lines().filter(|l| !l.trim().is_empty()).count();
        prop_assert_eq!(h.entries.len() + h.warnings.len(), non_empty);
        // What every later run and `history` do with what was read.
        let _ = h.expected_walls();
        let _ = history::render_trend(&h);
        let _ = history::to_csv(&h.entries);
        let _ = history::fastest_growing(&h.entries);
    }
}

proptest! {
    // File I/O per case: fewer cases by default.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn cache_record_files_never_panic_and_bad_ones_are_misses(bytes in record_file()) {
        let dir = tempfile::tempdir().unwrap();
        let state = Utf8Path::from_path(dir.path()).unwrap();
        std::fs::create_dir_all(state.join("cache/stages")).unwrap();
        std::fs::write(state.join("cache/stages/build.json"), &bytes).unwrap();
        let mut store = Store::open(&state.into(), |_| {}).unwrap();
        match store.stage_records("build") {
            // Only a well-formed file of the right shape gives records.
            Ok(_) => prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok()),
            Err(why) => {
                prop_assert!(!why.is_empty());
                prop_assert!(
                    store.warnings.iter().any(|w| w.contains("build.json"))
                        || why.contains("schema version"),
                    "no warning for an unusable record file: {why}"
                );
            }
        }
    }
}

/// Found by `config_never_panics_and_errors_are_one_line`: an unknown key holding a
/// newline split the error over two lines. Control characters are written as escapes.
#[test]
fn a_key_with_a_newline_keeps_the_error_on_one_line() {
    let metadata = json!({ "pipeline-opt": { "targets": { "a\nb": "1s" } } });
    let err = Config::from_workspace_metadata(&metadata).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid `workspace.metadata.pipeline-opt.targets.a\\nb` in Cargo.toml: unknown field `a\\nb`, expected one of `required`, `stretch`, `stages`"
    );
}
