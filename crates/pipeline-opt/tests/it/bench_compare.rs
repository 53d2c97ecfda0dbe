//! `bench-compare` end to end: real git repositories made here, real criterion bench
//! binaries (criterion from the local registry, offline), tiny measurement times. The
//! threshold is wide (50%) where a test needs identical code to come out unchanged, so
//! the verdicts do not depend on how busy the machine is.

use std::process::Command;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::bench::{
    BenchCompareOptions, Comparison, ProblemKind, Side, Verdict, bench_compare, output,
};
use pipeline_opt::exit;
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

/// All fixtures share one target dir so criterion is compiled once, not per test (the
/// quality experiment has its own, `bench-compare-fixtures`, built with the real release
/// profile).
fn shared_target() -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-compare-tests")
}

/// The fixtures' `cargo bench` profile: opt-level 1 without debug info compiles the
/// criterion bench binaries about twice as fast as release's opt-level 3 on this
/// machine, and the code they time is still optimised, timed by real criterion runs.
/// In `.cargo/config.toml`, which is committed, so the base worktree builds the same way.
const FAST_BENCH_PROFILE: &str =
    "[profile.bench]\nopt-level = 1\ndebug = false\nincremental = false\n";

const LIB: &str = "pub fn work(n: u64) -> u64 {\n    let mut acc = 0u64;\n    for i in 0..n {\n        acc = acc.wrapping_mul(31).wrapping_add(i ^ (acc >> 3));\n    }\n    acc\n}\n";

/// A bench file with one criterion benchmark per `(name, iterations)`.
fn bench_src(benches: &[(&str, u64)]) -> String {
    let mut body = String::new();
    for (name, n) in benches {
        body.push_str(&format!(
            "    c.bench_function(\"{name}\", |b| b.iter(|| fx::work(std::hint::black_box({n}))));\n"
        ));
    }
    format!(
        "use criterion::{{Criterion, criterion_group, criterion_main}};\n\n\
         fn benches(c: &mut Criterion) {{\n{body}}}\n\n\
         criterion_group!(g, benches);\ncriterion_main!(g);\n"
    )
}

struct Repo {
    _tmp: tempfile::TempDir,
    root: Utf8PathBuf,
    package: String,
}

impl Repo {
    /// A git repository on branch `main` whose one commit holds a workspace with the
    /// bench targets `benches` (name, source). `package` must differ between tests:
    /// cargo gives same-named path packages the same artifact names, and the fixtures
    /// share a target dir.
    fn new(package: &str, benches: &[(&str, String)]) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let base = Utf8Path::from_path(tmp.path()).unwrap().to_owned();
        let root = base.join("repo");
        let mut krate = FixtureCrate::new(package).lib(LIB);
        krate.manifest_extra = "[lib]\nname = \"fx\"\n\n[dev-dependencies.criterion]\nversion = \"0.8\"\ndefault-features = false\n".into();
        for (name, src) in benches {
            krate = krate.bench(*name, src.clone());
        }
        let config = format!(
            "[build]\ntarget-dir = \"{}\"\n\n[net]\noffline = true\n\n{FAST_BENCH_PROFILE}",
            shared_target()
        );
        FixtureWorkspace::new(vec![krate])
            .config(format!("cache = {{ dir = \"{}\" }}", base.join("state")))
            .file(".cargo/config.toml", config)
            .write(&root)
            .unwrap();
        let repo = Repo { _tmp: tmp, root, package: package.to_string() };
        repo.git(&["init", "--quiet", "-b", "main"]);
        repo.commit("fixture");
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(&self.root)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
    }

    fn write_bench(&self, name: &str, src: &str) {
        let dir = self.root.join("crates").join(&self.package).join("benches");
        std::fs::write(dir.join(format!("{name}.rs")), src).unwrap();
    }

    fn options(&self, git_ref: &str) -> BenchCompareOptions {
        BenchCompareOptions {
            manifest_path: Some(self.root.join("Cargo.toml")),
            git_ref: git_ref.into(),
            threshold: 0.5,
            rounds: 3,
            warm_up: Duration::from_millis(50),
            measurement: Duration::from_millis(100),
            ..BenchCompareOptions::default()
        }
    }

    fn compare(&self, options: &BenchCompareOptions) -> Comparison {
        let started = std::time::Instant::now();
        let c = bench_compare(options, &mut |line| {
            eprintln!("{:6.1}s {line}", started.elapsed().as_secs_f64())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        // Every rendering works on every outcome.
        eprintln!("{}", output::render_terminal(&c));
        assert!(output::render_markdown(&c).contains("| benchmark |"));
        let json: serde_json::Value = serde_json::from_str(&output::render_json(&c)).unwrap();
        assert_eq!(json["version"], 1);
        c
    }
}

fn verdicts(c: &Comparison) -> Vec<(String, Verdict)> {
    c.benchmarks.iter().map(|b| (b.id.clone(), b.verdict)).collect()
}

#[test]
fn bench_compare_ref_that_does_not_exist() {
    let repo = Repo::new("fx_missing_ref", &[("speed", bench_src(&[("sum", 1000)]))]);
    let err = bench_compare(&repo.options("no-such-branch"), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("git ref `no-such-branch` not found"), "{msg}");
    assert!(msg.contains("name an existing branch, tag or commit"), "{msg}");
}

#[test]
fn bench_compare_current_branch_against_itself_is_unchanged() {
    let repo = Repo::new("fx_same_branch", &[("speed", bench_src(&[("sum", 1000)]))]);
    let c = repo.compare(&repo.options("main"));
    assert_eq!(c.base.commit.as_deref(), Some(repo.git(&["rev-parse", "HEAD"]).as_str()));
    assert_eq!(verdicts(&c), [("sum".to_string(), Verdict::Unchanged)]);
    assert_eq!(c.benchmarks[0].paired_rounds, 3);
    assert_eq!(c.exit_code(), exit::OK);
    // The worktree is reused on the next run, not re-added.
    let again = repo.compare(&repo.options("main"));
    assert_eq!(again.exit_code(), exit::OK);
}

#[test]
fn bench_compare_dirty_tree_is_the_head_side() {
    let repo = Repo::new("fx_dirty", &[("speed", bench_src(&[("sum", 1000)]))]);
    // Uncommitted: the same benchmark now does 20 times the work.
    repo.write_bench("speed", &bench_src(&[("sum", 20_000)]));
    let c = repo.compare(&repo.options("main"));
    assert_eq!(verdicts(&c), [("sum".to_string(), Verdict::Regressed)]);
    assert!(c.benchmarks[0].ratio.unwrap() > 5.0, "{:?}", c.benchmarks[0]);
    assert_eq!(c.exit_code(), exit::REGRESSION);
    assert!(output::render_markdown(&c).contains("**regressed**"));
}

#[test]
fn bench_compare_added_and_removed_benchmarks() {
    let repo =
        Repo::new("fx_added_removed", &[("speed", bench_src(&[("kept", 1000), ("old", 1000)]))]);
    repo.write_bench("speed", &bench_src(&[("kept", 1000), ("new", 1000)]));
    let c = repo.compare(&repo.options("main"));
    assert_eq!(
        verdicts(&c),
        [
            ("kept".to_string(), Verdict::Unchanged),
            ("new".to_string(), Verdict::Added),
            ("old".to_string(), Verdict::Removed)
        ]
    );
    assert_eq!(c.exit_code(), exit::OK);
}

#[test]
fn bench_compare_bench_that_panics() {
    let repo = Repo::new("fx_panics", &[("speed", bench_src(&[("sum", 1000)]))]);
    let panicking = bench_src(&[("sum", 1000)]).replace(
        "fn benches(c: &mut Criterion) {",
        "fn benches(c: &mut Criterion) {\n    c.bench_function(\"boom\", |b| b.iter(|| -> u64 { panic!(\"the fixture bench panics\") }));",
    );
    repo.write_bench("speed", &panicking);
    let c = repo.compare(&repo.options("main"));
    let problem = c.problems.iter().find(|p| p.kind == ProblemKind::Failed).expect("reported");
    assert_eq!(problem.side, Side::Head);
    // The base ran its own (committed) code, not head's binary from the seeded target
    // dir: only head panics.
    let failed: Vec<Side> =
        c.problems.iter().filter(|p| p.kind == ProblemKind::Failed).map(|p| p.side).collect();
    assert_eq!(failed, [Side::Head], "{:?}", c.problems);
    assert!(problem.message.contains("the fixture bench panics"), "{}", problem.message);
    assert_eq!(c.exit_code(), exit::ERROR);
    assert!(output::render_terminal(&c).contains("error: head side, fx_panics bench `speed`"));
}

#[test]
fn bench_compare_target_that_fails_to_build_on_base_is_reported() {
    let broken = "fn main() { let x: u32 = \"not a number\"; }\n".to_string();
    let repo =
        Repo::new("fx_base_broken", &[("speed", bench_src(&[("sum", 1000)])), ("other", broken)]);
    repo.write_bench("other", &bench_src(&[("fixed", 1000)]));
    let c = repo.compare(&repo.options("main"));
    let problem = c.problems.iter().find(|p| p.kind == ProblemKind::BuildFailed).expect("reported");
    assert_eq!((problem.side, problem.target.as_str()), (Side::Base, "other"));
    assert!(problem.message.contains("mismatched types"), "{}", problem.message);
    assert_eq!(
        verdicts(&c),
        [("fixed".to_string(), Verdict::Added), ("sum".to_string(), Verdict::Unchanged)]
    );
    // A base that does not build is a note, not a failure of the change under review.
    assert_eq!(c.exit_code(), exit::OK);
}

#[test]
fn bench_compare_saved_baseline_and_corrupted_result() {
    let repo = Repo::new("fx_baseline", &[("speed", bench_src(&[("sum", 1000)]))]);
    let name = format!("snap{}", std::process::id());
    let save = BenchCompareOptions { save_baseline: Some(name.clone()), ..repo.options("main") };
    let c = repo.compare(&save);
    assert!(
        c.notes.iter().any(|n| n.contains(&format!("criterion baseline `{name}`"))),
        "{:?}",
        c.notes
    );

    let against = BenchCompareOptions { baseline: Some(name.clone()), ..repo.options("main") };
    let c = repo.compare(&against);
    // The same code on both sides: never a change. Unchanged when the interval is narrow;
    // on a loaded machine (this suite in shards side by side) it is honestly too wide.
    let v = verdicts(&c);
    assert!(
        matches!(v.as_slice(), [(n, Verdict::Unchanged | Verdict::Inconclusive)] if n == "sum"),
        "{v:?} {:?}",
        c.problems
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);

    let sample = shared_target().join("criterion/sum").join(&name).join("sample.json");
    std::fs::write(&sample, "{\"iters\": [1.0, 2.0], \"times\": [oops").unwrap();
    let c = repo.compare(&against);
    let problem =
        c.problems.iter().find(|p| p.kind == ProblemKind::CorruptResult).expect("reported");
    assert!(problem.message.contains(sample.as_str()), "{}", problem.message);
    assert!(problem.message.contains("delete it"), "{}", problem.message);
    assert_eq!(c.exit_code(), exit::ERROR);
}
