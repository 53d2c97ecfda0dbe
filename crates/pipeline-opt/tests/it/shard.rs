//! The sharding planner: data-driven snapshots of plans (balance, escaping, tests new
//! since the history, binaries larger than a shard's share, the slice fallback), the
//! argument limits on a 10,000-test inventory, the inventory read from nextest's JSON,
//! and the filtersets run by real nextest on a real archive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use expect_test::{Expect, expect};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::shard::{
    Durations, Inventory, InventoryBinary, MAX_ARG_BYTES, Selection, ShardOptions, ShardPlan,
    plan_shards, test_key,
};

use crate::support::Fixture;

fn inventory(binaries: &[(&str, &[&str])]) -> Inventory {
    Inventory {
        binaries: binaries
            .iter()
            .map(|(id, tests)| InventoryBinary {
                binary_id: id.to_string(),
                tests: tests.iter().map(|t| t.to_string()).collect(),
            })
            .collect(),
    }
}

/// `("binary test", seconds)`, one sample each.
fn history(samples: &[(&str, f64)]) -> Durations {
    let mut d = Durations::default();
    for (key, secs) in samples {
        d.add(*key, Duration::from_secs_f64(*secs));
    }
    d
}

fn options(shards: usize) -> ShardOptions {
    ShardOptions::new(NonZeroUsize::new(shards).expect("at least one shard"))
}

fn render(plan: &ShardPlan) -> String {
    let mut o = plan.render_text();
    for s in &plan.shards {
        writeln!(o, "shard {} args: {:?}", s.index, s.selection.args()).unwrap();
        for (binary, tests) in &s.tests {
            writeln!(o, "  {binary}: {}", tests.join(" | ")).unwrap();
        }
    }
    o
}

/// Every test of `inv` is in exactly one shard of `plan`.
#[track_caller]
fn assert_covers_once(inv: &Inventory, plan: &ShardPlan) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for s in &plan.shards {
        for (b, tests) in &s.tests {
            for t in tests {
                *seen.entry(test_key(b, t)).or_default() += 1;
            }
        }
    }
    let expected: BTreeMap<String, usize> = inv.keys().map(|k| (k, 1)).collect();
    assert_eq!(seen, expected, "every test in exactly one shard");
}

#[track_caller]
fn check(inv: &[(&str, &[&str])], hist: &[(&str, f64)], opts: ShardOptions, expect: Expect) {
    let inv = inventory(inv);
    let plan = plan_shards(&inv, &history(hist), &opts);
    assert_covers_once(&inv, &plan);
    assert_eq!(plan, plan_shards(&inv, &history(hist), &opts), "the same inputs, the same plan");
    expect.assert_eq(&render(&plan));
}

#[test]
fn shard_longest_first_onto_the_least_loaded() {
    check(
        &[("a", &["t1", "t2", "t3", "t4"]), ("b", &["u1", "u2"])],
        &[("a t1", 8.0), ("a t2", 4.0), ("a t3", 3.0), ("a t4", 3.0), ("b u1", 1.0), ("b u2", 1.0)],
        options(2),
        expect![[r#"
            6 tests on 2 shards by measured durations (6 with their own history)
            shard 1: 3 tests, predicted 10.00 s
            shard 2: 3 tests, predicted 10.00 s
            predicted balance (slowest / mean): 1.000
            shard 1 args: ["-E", "(binary_id(=a) & (test(=t1))) | (binary_id(=b) & (test(=u1) | test(=u2)))"]
              a: t1
              b: u1 | u2
            shard 2 args: ["-E", "(binary_id(=a) & (test(=t2) | test(=t3) | test(=t4)))"]
              a: t2 | t3 | t4
        "#]],
    );
}

#[test]
fn shard_names_with_parens_commas_and_paths_are_escaped() {
    check(
        &[
            ("app::bin/tool", &["odd::name(with)paren", "a,comma"]),
            ("app::it", &["sp ace", "back\\slash", "mod::x"]),
        ],
        &[
            ("app::bin/tool odd::name(with)paren", 5.0),
            ("app::bin/tool a,comma", 5.0),
            ("app::it sp ace", 4.0),
            ("app::it back\\slash", 3.0),
            ("app::it mod::x", 3.0),
        ],
        options(2),
        expect![[r#"
            5 tests on 2 shards by measured durations (5 with their own history)
            shard 1: 2 tests, predicted 9.00 s
            shard 2: 3 tests, predicted 11.00 s
            predicted balance (slowest / mean): 1.100
            shard 1 args: ["-E", "(binary_id(=app::bin\\/tool) & (test(=a\\,comma))) | (binary_id(=app::it) & (test(=sp\\u{20}ace)))"]
              app::bin/tool: a,comma
              app::it: sp ace
            shard 2 args: ["-E", "(binary_id(=app::bin\\/tool) & (test(=odd::name(with\\)paren))) | (binary_id(=app::it) & (test(=back\\\\slash) | test(=mod::x)))"]
              app::bin/tool: odd::name(with)paren
              app::it: back\slash | mod::x
        "#]],
    );
}

#[test]
fn shard_a_test_new_since_the_history_runs_weighed_as_its_binarys_median() {
    // `a new` has no history: it weighs a's median (2 s), not the global one (2.5 s), so
    // the shards are predicted 7 s each; and it lands in a shard although the history
    // never saw it.
    check(
        &[("a", &["new", "old1", "old2", "old3"]), ("b", &["slow"])],
        &[("a old1", 1.0), ("a old2", 2.0), ("a old3", 3.0), ("b slow", 6.0)],
        options(2),
        expect![[r#"
            5 tests on 2 shards by measured durations (4 with their own history)
            shard 1: 2 tests, predicted 7.00 s
            shard 2: 3 tests, predicted 7.00 s
            predicted balance (slowest / mean): 1.000
            shard 1 args: ["-E", "(binary_id(=a) & (test(=old1))) | (binary_id(=b) & (test(=slow)))"]
              a: old1
              b: slow
            shard 2 args: ["-E", "(binary_id(=a) & (test(=new) | test(=old2) | test(=old3)))"]
              a: new | old2 | old3
        "#]],
    );
}

#[test]
fn shard_small_binaries_stay_whole_and_a_binary_bigger_than_a_share_is_split() {
    // `big` (12 s) is more than a shard's share (8 s): split. The ten 0.1-s binaries are
    // each under a tenth of the share: one `binary_id(=…)` each.
    let small: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let mut inv: Vec<(&str, &[&str])> = vec![("big", &["b1", "b2", "b3", "b4"])];
    let mut hist: Vec<(String, f64)> =
        ["b1", "b2", "b3", "b4"].iter().map(|t| (format!("big {t}"), 3.0)).collect();
    for s in &small {
        inv.push((s.as_str(), &["only"]));
        hist.push((format!("{s} only"), 0.1));
    }
    let hist: Vec<(&str, f64)> = hist.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    check(
        &inv,
        &hist,
        options(2),
        expect![[r#"
            14 tests on 2 shards by measured durations (14 with their own history)
            shard 1: 7 tests, predicted 6.50 s
            shard 2: 7 tests, predicted 6.50 s
            predicted balance (slowest / mean): 1.000
            shard 1 args: ["-E", "(binary_id(=big) & (test(=b1) | test(=b3))) | binary_id(=s0) | binary_id(=s2) | binary_id(=s4) | binary_id(=s6) | binary_id(=s8)"]
              big: b1 | b3
              s0: only
              s2: only
              s4: only
              s6: only
              s8: only
            shard 2 args: ["-E", "(binary_id(=big) & (test(=b2) | test(=b4))) | binary_id(=s1) | binary_id(=s3) | binary_id(=s5) | binary_id(=s7) | binary_id(=s9)"]
              big: b2 | b4
              s1: only
              s3: only
              s5: only
              s7: only
              s9: only
        "#]],
    );
}

#[test]
fn shard_without_history_falls_back_to_nextest_slice() {
    check(
        &[("a", &["t1", "t2", "t3"]), ("b", &["u1"])],
        &[("gone t9", 1.0)],
        options(3),
        expect![[r#"
            4 tests on 3 shards by nextest's --partition slice: the history has no duration for any test of the archive
            shard 1: 2 tests, predicted unknown
            shard 2: 1 tests, predicted unknown
            shard 3: 1 tests, predicted unknown
            shard 1 args: ["--partition", "slice:1/3"]
              a: t1
              b: u1
            shard 2 args: ["--partition", "slice:2/3"]
              a: t2
            shard 3 args: ["--partition", "slice:3/3"]
              a: t3
        "#]],
    );
}

#[test]
fn shard_more_shards_than_tests_leaves_a_shard_with_none() {
    check(
        &[("a", &["t1"])],
        &[("a t1", 1.0)],
        options(2),
        expect![[r#"
            1 tests on 2 shards by measured durations (1 with their own history)
            shard 1: 1 tests, predicted 1.00 s
            shard 2: 0 tests, predicted 0.00 s
            predicted balance (slowest / mean): 2.000
            shard 1 args: ["-E", "(binary_id(=a) & (test(=t1)))"]
              a: t1
            shard 2 args: ["-E", "none()"]
        "#]],
    );
}

#[test]
fn shard_a_long_filterset_is_packed_into_several_args_then_falls_back() {
    let inv: &[(&str, &[&str])] = &[("a", &["t1", "t2", "t3", "t4"])];
    let hist = &[("a t1", 1.0), ("a t2", 1.0), ("a t3", 1.0), ("a t4", 1.0)];
    // One shard, 40 bytes an argument: `a` (all of the share) is split into its tests,
    // and one term fits in an argument, so the shard takes four `-E`.
    let mut opts = options(1);
    opts.max_arg_bytes = 40;
    check(
        inv,
        hist,
        opts.clone(),
        expect![[r#"
            4 tests on 1 shards by measured durations (4 with their own history)
            shard 1: 4 tests, predicted 4.00 s
            predicted balance (slowest / mean): 1.000
            shard 1 args: ["-E", "(binary_id(=a) & (test(=t1)))", "-E", "(binary_id(=a) & (test(=t2)))", "-E", "(binary_id(=a) & (test(=t3)))", "-E", "(binary_id(=a) & (test(=t4)))"]
              a: t1 | t2 | t3 | t4
        "#]],
    );
    // Two shards, 50 bytes: a binary's tests share one term while it fits.
    opts.shards = NonZeroUsize::new(2).unwrap();
    opts.max_arg_bytes = 50;
    check(
        inv,
        hist,
        opts.clone(),
        expect![[r#"
            4 tests on 2 shards by measured durations (4 with their own history)
            shard 1: 2 tests, predicted 2.00 s
            shard 2: 2 tests, predicted 2.00 s
            predicted balance (slowest / mean): 1.000
            shard 1 args: ["-E", "(binary_id(=a) & (test(=t1) | test(=t3)))"]
              a: t1 | t3
            shard 2 args: ["-E", "(binary_id(=a) & (test(=t2) | test(=t4)))"]
              a: t2 | t4
        "#]],
    );
    // A shard may carry 30 bytes of filtersets in all: no plan by durations fits.
    opts.max_shard_bytes = 30;
    check(
        inv,
        hist,
        opts,
        expect![[r#"
            4 tests on 2 shards by nextest's --partition slice: the shards' filtersets would not fit on a command line
            shard 1: 2 tests, predicted 2.00 s
            shard 2: 2 tests, predicted 2.00 s
            predicted balance (slowest / mean): 1.000
            shard 1 args: ["--partition", "slice:1/2"]
              a: t1 | t3
            shard 2 args: ["--partition", "slice:2/2"]
              a: t2 | t4
        "#]],
    );
}

/// 10,000 tests in 40 binaries with heavy-tailed durations (a few seconds-long tests,
/// most a few milliseconds), long names: every argument fits, every test is in one
/// shard, and the slowest shard is within 10 % of the mean.
#[test]
fn shard_ten_thousand_tests_fit_the_argument_limit_and_balance() {
    let (inv, hist) = pipeline_opt::fixture::shard_inventory(10_000, 40);
    for n in [2, 4, 8] {
        let plan = plan_shards(&inv, &hist, &options(n));
        assert_eq!(plan.fallback, None, "N={n}: planned by durations");
        assert_covers_once(&inv, &plan);
        for s in &plan.shards {
            let Selection::Filtersets { filtersets } = &s.selection else { unreachable!() };
            for f in filtersets {
                assert!(f.len() <= MAX_ARG_BYTES, "N={n} shard {}: {} bytes", s.index, f.len());
            }
        }
        let balance = plan.predicted_balance().expect("predicted");
        assert!(balance <= 1.10, "N={n}: predicted balance {balance:.3}");
    }
}

#[test]
fn shard_inventory_reads_nextest_list_json() {
    let json = r#"{
      "rust-build-meta": {}, "test-count": 4,
      "rust-suites": {
        "a": {"binary-id": "a", "status": "listed", "testcases": {
          "tests::one": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}},
          "tests::slow": {"kind": "test", "ignored": true,
                          "filter-match": {"status": "mismatch", "reason": "ignored"}}}},
        "a::weird": {"binary-id": "a::weird", "status": "listed", "testcases": {
          "a,comma": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}}}},
        "b::bin/x": {"binary-id": "b::bin/x", "status": "skipped"}
      }
    }"#;
    let inv = Inventory::from_nextest_list_json(json).expect("parses");
    assert_eq!(inv, inventory(&[("a", &["tests::one"]), ("a::weird", &["a,comma"])]));
    let err = Inventory::from_nextest_list_json("Finished `test` profile").unwrap_err();
    expect![[r#"the test list is not the JSON of `cargo nextest list --message-format json` (expected value at line 1 column 1): list the archive with that command"#]]
        .assert_eq(&err.to_string());
}

/// A test binary with its own harness, speaking libtest's `--list` / `--exact`
/// protocol, so that its tests can have names no Rust function can.
const ODD_HARNESS: &str = r#"
const NAMES: &[&str] = &["odd::name(with)paren", "a,comma", "sp ace", "back\\slash", "plain"];
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for n in NAMES { println!("{n}: test"); }
        }
        return;
    }
    let name = args.iter().find(|a| !a.starts_with("--")).expect("a test name");
    assert!(NAMES.contains(&name.as_str()), "unknown test {name}");
}
"#;

/// The plan's filtersets, run by real nextest from a real archive, select every test
/// once across the shards, names with `)`, `,`, spaces and backslashes included.
#[test]
fn shard_filtersets_select_each_test_once_in_real_nextest() {
    let mut odd = FixtureCrate::new("odd")
        .lib("#[cfg(test)]\nmod tests {\n    #[test]\n    fn one() {}\n    #[test]\n    fn two() {}\n}\n")
        .test("weird", ODD_HARNESS)
        .bin("tool", "fn main() {}\n#[test]\nfn in_bin() {}\n");
    odd.manifest_extra = "[[test]]\nname = \"weird\"\nharness = false\n".into();
    let ws = FixtureWorkspace::new(vec![odd]);
    let fx = Fixture::write(&ws);
    let archive = fx.root.join("tests.tar.zst");
    let sh = xshell::Shell::new().unwrap();
    let manifest = &fx.manifest;
    let run = |cmd: xshell::Cmd| {
        let out = pipeline_opt::toolchain::clean_command(&cmd).output().expect("cargo runs");
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(xshell::cmd!(
        sh,
        "cargo nextest archive --manifest-path {manifest} --archive-file {archive}"
    ));
    let list = run(xshell::cmd!(
        sh,
        "cargo nextest list --manifest-path {manifest} --archive-file {archive} --message-format json"
    ));
    let inv = Inventory::from_nextest_list_json(&list).expect("nextest's JSON");
    assert_eq!(inv.test_count(), 8, "{inv:?}");
    let mut hist = Durations::default();
    for (i, key) in inv.keys().enumerate() {
        hist.add(key, Duration::from_millis(10 * (i as u64 + 1)));
    }
    let plan = plan_shards(&inv, &hist, &options(3));
    assert_eq!(plan.fallback, None);
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for s in &plan.shards {
        let args = s.selection.args();
        let out = pipeline_opt::toolchain::clean_command(&xshell::cmd!(
            sh,
            "cargo nextest run --manifest-path {manifest} --archive-file {archive} --no-tests=pass --no-fail-fast {args...}"
        ))
        .output()
        .expect("nextest runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "shard {}: {stderr}", s.index);
        let mut this: Vec<String> = Vec::new();
        for line in stderr.lines() {
            let l = line.trim();
            if let Some((_, rest)) = l.strip_prefix("PASS [").and_then(|r| r.split_once("] ")) {
                let name = rest.trim().split_once(") ").map(|(_, n)| n).unwrap_or(rest.trim());
                this.push(name.to_string());
                *ran.entry(name.to_string()).or_default() += 1;
            }
        }
        let mut planned: Vec<String> =
            s.tests.iter().flat_map(|(b, ts)| ts.iter().map(|t| test_key(b, t))).collect();
        planned.sort();
        this.sort();
        assert_eq!(this, planned, "shard {} ran what the plan gave it", s.index);
    }
    let expected: BTreeMap<String, usize> = inv.keys().map(|k| (k, 1)).collect();
    assert_eq!(ran, expected);
}

/// `cargo pipeline-opt ARGS` in `dir`, the built binary found on PATH by cargo.
fn pipeline_opt(dir: &camino::Utf8Path, args: &[&str]) -> std::process::Output {
    let bin = camino::Utf8Path::new(env!("CARGO_BIN_EXE_cargo-pipeline-opt"));
    let path = std::env::join_paths(
        std::iter::once(bin.parent().unwrap().as_std_path().to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let sh = xshell::Shell::new().unwrap();
    let mut cmd = pipeline_opt::toolchain::clean_command(
        &xshell::cmd!(sh, "cargo pipeline-opt {args...}").env("PATH", path),
    );
    cmd.current_dir(dir);
    cmd.output().expect("cargo runs")
}

/// A fixture whose tests all land in the archive: two crates with unit tests and an
/// integration test each.
fn two_crates_with_tests() -> FixtureWorkspace {
    let mut ws = FixtureWorkspace::chain(2);
    for c in &mut ws.crates {
        *c = c.clone().test("it", "#[test]\nfn first() {}\n#[test]\nfn second() {}\n");
    }
    ws
}

/// `optimize --shards 2` after a plain run: the test stage is an archive (no test runs
/// on the build machine), and the artifact directory holds the archive, the run record
/// and a plan by the durations the plain run measured that covers every test of the
/// archive once; then `shard run` of each shard runs exactly its tests, compiling
/// nothing, with nextest's JUnit.
#[test]
fn shard_optimize_archives_the_tests_and_plans_by_the_history() {
    let fx = Fixture::write(&two_crates_with_tests());
    let out = pipeline_opt(&fx.root, &["optimize"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = fx.root.join("artifacts");
    // The user's --json copy does not take the record away from beside the archive,
    // where `shard merge` reads it (before the fix it went only to --json).
    let mine = fx.root.join("mine.json");
    let args = ["optimize", "--shards", "2", "--shards-dir", dir.as_str(), "--json", mine.as_str()];
    let out = pipeline_opt(&fx.root, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(dir.join("tests.tar.zst").is_file(), "{stderr}");
    assert!(mine.is_file(), "{stderr}");

    let record: pipeline_opt::record::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("build-run.json")).unwrap())
            .expect("the run record");
    let ids: Vec<&str> = record.stages.iter().map(|s| s.id.as_str()).collect();
    assert!(ids.contains(&"test-archive") && !ids.contains(&"test"), "{ids:?}");
    assert!(record.tests.is_empty(), "no test ran on the build machine: {:?}", record.tests);

    let plan: ShardPlan =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shard-plan.json")).unwrap())
            .expect("the shard plan");
    assert_eq!(plan.fallback, None, "planned by the plain run's durations: {stderr}");
    assert_eq!(plan.shards.len(), 2);
    // c0 and c1: 2 unit tests each (`value` and the dependency sum), 2 in each `it`.
    let planned: Vec<String> = plan
        .shards
        .iter()
        .flat_map(|s| s.tests.iter().flat_map(|(b, ts)| ts.iter().map(|t| test_key(b, t))))
        .collect();
    let mut unique = planned.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(planned.len(), unique.len(), "no test in two shards: {planned:?}");
    assert_eq!(planned.len(), plan.tests, "{planned:?}");
    assert!(planned.iter().any(|t| t == "c1::it second"), "{planned:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tests on 2 shards by measured durations"), "{stdout}");

    // Each shard from the archive: the tests the plan gave it, each once, with nextest's
    // own durations and JUnit, and not one rustc invocation.
    let mut ran: Vec<String> = Vec::new();
    for s in &plan.shards {
        let k = s.index.to_string();
        let plan_path = dir.join("shard-plan.json");
        let out =
            pipeline_opt(&fx.root, &["shard", "run", "--plan", plan_path.as_str(), "--shard", &k]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shard_dir = dir.join(format!("shard-{k}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "shard {k}: {stderr}\n{}\n{:?}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(shard_dir.join("run.json"))
        );
        let record: pipeline_opt::record::RunRecord =
            serde_json::from_str(&std::fs::read_to_string(shard_dir.join("run.json")).unwrap())
                .expect("the shard's run record");
        assert!(record.crates.is_empty(), "shard {k} compiled: {:?}", record.crates);
        assert!(record.compiled_by_tests.is_empty(), "shard {k}: {:?}", record.compiled_by_tests);
        let mut names: Vec<String> = record.tests.iter().map(|t| t.name.clone()).collect();
        names.sort();
        let mut expected: Vec<String> =
            s.tests.iter().flat_map(|(b, ts)| ts.iter().map(|t| test_key(b, t))).collect();
        expected.sort();
        assert_eq!(names, expected, "shard {k} ran its tests");
        let junit = std::fs::read_to_string(shard_dir.join("junit.xml")).expect("nextest's JUnit");
        assert!(junit.contains("<testsuites"), "{junit}");
        ran.extend(names);
    }
    ran.sort();
    assert_eq!(ran, unique, "every test of the archive ran once across the shards");

    // A merge without shard 2: exit 100 naming its tests.
    let history = fx.root.join("target/pipeline-opt/history.jsonl");
    let lines_before = std::fs::read_to_string(&history).unwrap().lines().count();
    let shard = |k: usize| dir.join(format!("shard-{k}"));
    let out = pipeline_opt(&fx.root, &["shard", "merge", dir.as_str(), shard(1).as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(100), "{stderr}");
    let shard2_test = {
        let (b, ts) = plan.shards[1].tests.iter().next().expect("shard 2 has tests");
        test_key(b, &ts[0])
    };
    assert!(stderr.contains("ran on no shard") && stderr.contains(&shard2_test), "{stderr}");

    // Both shards: one record with the build's stages and both shards', every test, the
    // shards predicted against measured, shown in the report; the durations in history.
    let out = pipeline_opt(
        &fx.root,
        &["shard", "merge", dir.as_str(), shard(1).as_str(), shard(2).as_str()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let merged: pipeline_opt::record::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("merged-run.json")).unwrap())
            .expect("the merged record");
    assert_eq!(merged.schema_version, pipeline_opt::record::SCHEMA_VERSION);
    let ids: Vec<&str> = merged.stages.iter().map(|s| s.id.as_str()).collect();
    assert!(ids.contains(&"test-archive") && ids.contains(&"shard-1") && ids.contains(&"shard-2"));
    assert_eq!(merged.tests.len(), plan.tests);
    let summary = merged.shards.as_ref().expect("the shards");
    assert_eq!(summary.shards.iter().map(|s| s.index).collect::<Vec<_>>(), [1, 2]);
    assert!(summary.balance.is_some_and(|b| b >= 1.0), "{summary:?}");
    assert!(summary.prediction_error.is_some(), "{summary:?}");
    let report = std::fs::read_to_string(
        fx.root.join("target/pipeline-opt/pipeline-optimization-report.md"),
    )
    .unwrap();
    assert!(report.contains("## Shards") && report.contains("Split by durations"), "{report}");
    let h = pipeline_opt::report::history::read(&history).unwrap();
    // The failed merge is a run too (its record says which tests went missing).
    assert_eq!(h.entries.len(), lines_before + 2);
    assert_eq!(h.entries.last().unwrap().tests.len(), plan.tests);
}

/// Bad `--shards` values and a missing shard plan stop before anything runs, with a
/// one-line error naming the fix.
#[test]
fn shard_optimize_rejects_zero_shards_and_a_dir_without_shards() {
    let fx = Fixture::write(&FixtureWorkspace::chain(1));
    for (args, expected) in [
        (&["optimize", "--shards", "0"][..], "use --shards 1 or more"),
        (&["optimize", "--shards-dir", "x"][..], "--shards-dir needs --shards N"),
        (&["optimize", "--local"][..], "--local needs --shards N"),
        (
            &["shard", "run", "--plan", "missing/shard-plan.json", "--shard", "1"][..],
            "could not read the shard plan missing/shard-plan.json",
        ),
    ] {
        let out = pipeline_opt(&fx.root, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(!fx.root.join("target").exists(), "{args:?}: nothing ran");
    }
    // The shards' copies each need a target directory of their own.
    let shared = fx.root.join("shared-target");
    let args = ["optimize", "--shards", "2", "--local"];
    let out = pipeline_opt_with(&fx.root, &args, &[("CARGO_TARGET_DIR", shared.as_str())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unset CARGO_TARGET_DIR"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!shared.exists() && !fx.root.join("target").exists(), "nothing ran");
}

/// The tests of a `--local` fixture: one that passes only when its runtime
/// `CARGO_MANIFEST_DIR` is not the one baked in at build time (the shard ran against a
/// copy of the checkout at another path) and no `CARGO_TARGET_DIR` reaches it (tests
/// that run cargo themselves would build into it: 28 of this workspace's own tests
/// failed so under `--local`), and one that fails when asked.
const LOCAL_TESTS: &str = r#"#[test]
fn runs_at_another_path() {
    let now = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    assert_ne!(now, env!("CARGO_MANIFEST_DIR"), "the shard runs against a copy");
    assert!(std::path::Path::new(&now).join("Cargo.toml").is_file(), "{now}");
    assert_eq!(std::env::var_os("CARGO_TARGET_DIR"), None, "the tool's target dir leaked");
}
#[test]
fn fails_when_asked() {
    assert!(std::env::var_os("LOCAL_SHARD_FAIL").is_none(), "asked to fail");
}
"#;

/// `cargo pipeline-opt ARGS` in `dir` with `envs` set.
fn pipeline_opt_with(
    dir: &camino::Utf8Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    run_program(camino::Utf8Path::new(env!("CARGO_BIN_EXE_cargo-pipeline-opt")), dir, args, envs)
}

fn run_program(
    bin: &camino::Utf8Path,
    dir: &camino::Utf8Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    let sh = xshell::Shell::new().unwrap();
    let mut cmd = pipeline_opt::toolchain::clean_command(&xshell::cmd!(sh, "{bin} {args...}"));
    cmd.current_dir(dir).envs(envs.iter().copied());
    cmd.output().expect("pipeline-opt runs")
}

/// `optimize --shards 2 --local`: the build, two shard processes against copies of the
/// checkout at other paths, and the merge, in one command whose exit code is the merged
/// run's: 0, then (planned by the first run's durations) 100 when a test fails on one
/// shard. One report shows both shards; the scratch copies are gone afterwards.
#[test]
fn shard_local_runs_the_build_the_shards_and_the_merge() {
    let mut ws = two_crates_with_tests();
    ws.crates[0] = ws.crates[0].clone().test("local", LOCAL_TESTS);
    let fx = Fixture::write(&ws);
    let tmp = fx.root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let args = ["optimize", "--shards", "2", "--local"];
    let out = pipeline_opt_with(&fx.root, &args, &[("TMPDIR", tmp.as_str())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let dir = fx.root.join("target/pipeline-opt/shards");
    let merged: pipeline_opt::record::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("merged-run.json")).unwrap())
            .expect("the merged record");
    let ids: Vec<&str> = merged.stages.iter().map(|s| s.id.as_str()).collect();
    assert!(
        ids.contains(&"test-archive") && ids.contains(&"shard-1") && ids.contains(&"shard-2"),
        "{ids:?}"
    );
    let names: Vec<&str> = merged.tests.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"c0::local runs_at_another_path"), "{names:?}");
    assert_eq!(merged.tests.len(), 8, "{names:?}");
    assert_eq!(merged.shards.as_ref().map(|s| s.shards.len()), Some(2));
    assert!(stderr.contains("shard 1: ") && stderr.contains("2 shards, balance"), "{stderr}");
    assert!(stderr.contains("shard logs: "), "{stderr}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the checkout copies are removed");
    // One JUnit file: every test once (the build machine's doctests too), one suite per
    // test binary however it was split.
    let xml = std::fs::read_to_string(fx.root.join("target/pipeline-opt/junit.xml")).unwrap();
    let suites = pipeline_opt::report::junit::parse_suites(&xml).unwrap();
    let mut suite_names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
    let cases: usize = suites.iter().map(|s| s.test_cases.len()).sum();
    assert_eq!(cases, 10, "{xml}");
    suite_names.sort();
    assert_eq!(
        suite_names,
        ["c0", "c0::doctest", "c0::it", "c0::local", "c1", "c1::doctest", "c1::it"],
        "{xml}"
    );
    assert!(stderr.contains("junit: "), "{stderr}");

    let out =
        pipeline_opt_with(&fx.root, &args, &[("TMPDIR", tmp.as_str()), ("LOCAL_SHARD_FAIL", "1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(100), "{stderr}");
    let plan: ShardPlan =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shard-plan.json")).unwrap())
            .unwrap();
    assert_eq!(plan.fallback, None, "planned by the first run's merged durations");
    let merged: pipeline_opt::record::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("merged-run.json")).unwrap())
            .unwrap();
    assert_eq!(merged.outcome, pipeline_opt::record::RunOutcome::StageFailed);
    let failed: Vec<&str> =
        merged.tests.iter().filter(|t| !t.passed).map(|t| t.name.as_str()).collect();
    assert_eq!(failed, ["c0::local fails_when_asked"], "{stderr}");
    assert_eq!(merged.tests.len(), 8);
    let html = std::fs::read_to_string(fx.root.join("target/pipeline-opt/report.html")).unwrap();
    assert!(html.contains("shard-1") && html.contains("shard-2"), "both shards on the timeline");
}

/// Ctrl-C (SIGINT to the command) while a shard's test hangs: exit 130, and no process
/// of the shard phase survives, the hung test's `sleep` in its own process group included.
#[test]
fn shard_local_ctrl_c_leaves_no_shard_process() {
    let mut ws = two_crates_with_tests();
    ws.crates[0] = ws.crates[0].clone().test(
        "h",
        "use std::os::unix::process::CommandExt;\n\
         #[test] fn hangs() {\n\
             std::process::Command::new(\"sleep\").arg(\"600\").process_group(0).spawn().unwrap();\n\
             loop { std::thread::sleep(std::time::Duration::from_secs(1)); }\n\
         }\n",
    );
    let fx = Fixture::write(&ws);
    let bin = camino::Utf8Path::new(env!("CARGO_BIN_EXE_cargo-pipeline-opt"));
    let sh = xshell::Shell::new().unwrap();
    let mut cmd = pipeline_opt::toolchain::clean_command(&xshell::cmd!(
        sh,
        "{bin} optimize --shards 2 --local"
    ));
    cmd.current_dir(&fx.root).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let child_pid = child.id().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    // The hung test, found by its name and the runs it belongs to: the outer run's ids
    // are `<time>-<pid>-<n>` with our child's pid.
    let outer = loop {
        assert!(std::time::Instant::now() < deadline, "the hung test never started");
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if !String::from_utf8_lossy(&cmdline).contains("hangs") {
                return None;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env = String::from_utf8_lossy(&env).into_owned();
            let runs = env.split('\0').find_map(|v| v.strip_prefix("PIPELINE_OPT_RUNS="))?;
            runs.split(':').find(|id| id.split('-').nth(1) == Some(&*child_pid)).map(String::from)
        });
        if let Some(id) = found {
            break id;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!pipeline_opt::process::marked_processes(&outer, None).is_empty());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let left = pipeline_opt::process::marked_processes(&outer, None);
    assert!(left.is_empty(), "processes of the shard phase {outer} survived: {left:?}");
}

/// `ci-workflow --shards auto`: 40 tests of 3 s split as far as the slowest shard plus two
/// jobs' overhead keeps falling by more than 5 %; with an overhead larger than the tests
/// themselves, one job; with no durations at all, one job and the reason.
#[test]
fn shard_count_auto_weighs_the_tests_against_the_job_overhead() {
    use pipeline_opt::shard::choose_shard_count;
    let mut d = Durations::default();
    for t in 0..40 {
        d.add(format!("b t{t:02}"), Duration::from_secs(3));
    }
    let max = NonZeroUsize::new(16).unwrap();
    let cheap = choose_shard_count(&d, Duration::from_secs(10), max);
    // 14 shards: ceil(40 / 14) = 3 tests, 9 s, plus 2 × 10 s; 16 gives the same 29 s.
    assert_eq!(cheap.count, 14, "{cheap:?}");
    assert_eq!(cheap.predicted[0], (1, Duration::from_secs(120)));
    assert_eq!(cheap.predicted[13], (14, Duration::from_secs(29)));
    assert!(
        cheap.reason.starts_with("14 shards: the tests take 120.0 s in one job"),
        "{}",
        cheap.reason
    );
    let dear = choose_shard_count(&d, Duration::from_secs(100), max);
    assert_eq!(dear.count, 1, "{dear:?}");
    assert!(dear.reason.starts_with("1 job: the tests take 120.0 s"), "{}", dear.reason);
    let none = choose_shard_count(&Durations::default(), Duration::from_secs(1), max);
    assert_eq!(none.count, 1);
    assert!(none.reason.contains("no test durations"), "{}", none.reason);
}

/// `--local` when the build stage replaces the running program, as cargo relinks a
/// workspace's own xtask that `cargo xtask` built with other features: the shards still
/// start (before the fix each failed in 0.0 s, `could not start … (deleted)`).
#[test]
fn shard_local_starts_the_shards_when_the_build_replaced_the_running_program() {
    use std::os::unix::fs::MetadataExt;
    let mut ws = two_crates_with_tests();
    ws.crates[0] = ws.crates[0].clone().file(
        "build.rs",
        r#"fn main() {
    println!("cargo:rerun-if-env-changed=REPLACE_TOOL");
    if let Ok(tool) = std::env::var("REPLACE_TOOL") {
        let new = format!("{tool}.new");
        std::fs::copy(&tool, &new).unwrap();
        std::fs::rename(&new, &tool).unwrap();
    }
}
"#,
    );
    let fx = Fixture::write(&ws);
    let tool = fx.root.join("bin/cargo-pipeline-opt");
    std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cargo-pipeline-opt"), &tool).unwrap();
    let before = std::fs::metadata(&tool).unwrap().ino();
    let tmp = fx.root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = run_program(
        &tool,
        &fx.root,
        &["optimize", "--shards", "2", "--local"],
        &[("TMPDIR", tmp.as_str()), ("REPLACE_TOOL", tool.as_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(std::fs::metadata(&tool).unwrap().ino(), before, "the build replaced the program");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("could not start"), "{stderr}");
    assert!(stderr.contains("2 shards, balance"), "{stderr}");
}
