//! Issue #14's bad-input corpus, kept as a test: bad configs, manifests, refs, stage
//! names and flags, each given to the real binary on a fresh fixture. Every case must
//! end with exit 1 (input) or 2 (usage), one `error:` line for exit 1 naming the key or
//! the fix, no panic, and nothing written outside the state directory (the workspace's
//! `target/`): the workspace and the working directory are compared file by file.

use std::collections::BTreeMap;
use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};

use crate::assert_clean_error;

const KEY: &str = "workspace.metadata.pipeline-opt";

/// What a case changes in a fresh two-crate fixture before running the command.
enum Setup {
    None,
    /// The body of `[workspace.metadata.pipeline-opt]`.
    Config(&'static str),
    /// The body of a root package's `[package.metadata.pipeline-opt]`.
    PackageConfig(&'static str),
    /// TOML appended to the root manifest.
    RootExtra(&'static str),
    /// A file (relative to the workspace root) replaced by this text.
    File(&'static str, &'static str),
    /// `git init` and one commit, then the config body (for `--since`, bench-compare).
    Git,
}

struct Case {
    setup: Setup,
    /// Arguments; `$M` is the fixture's manifest path.
    args: &'static [&'static str],
    code: i32,
    needle: &'static str,
}

const fn case(
    setup: Setup,
    args: &'static [&'static str],
    code: i32,
    needle: &'static str,
) -> Case {
    Case { setup, args, code, needle }
}

const OPT: &[&str] = &["optimize", "--manifest-path", "$M"];
const PLAN: &[&str] = &["plan", "--manifest-path", "$M"];

/// The corpus. Config cases run `optimize`, so that a bad config is shown to stop a run
/// before it writes anything.
fn corpus() -> Vec<Case> {
    use Setup::*;
    vec![
        // Durations and sizes.
        case(Config("stage-timeout = \"soon\""), OPT, 1, "stage-timeout"),
        case(Config("stage-timeout = \"300000000000y\""), OPT, 1, "between 1ms and 30days"),
        case(Config("stage-timeout = \"0s\""), OPT, 1, "between 1ms and 30days"),
        case(Config("stage-timeout = 5"), OPT, 1, "stage-timeout"),
        case(Config("[targets]\nrequired = \"4x\""), OPT, 1, "targets.required"),
        case(Config("[targets]\nstretch = \"-1s\""), OPT, 1, "targets.stretch"),
        case(Config("[targets.stages]\nbuild = \"nope\""), OPT, 1, "targets.stages"),
        case(Config("[targets.stages]\nbuild = \"9999999999999d\""), OPT, 1, "targets.stages"),
        case(Config("[cache]\nbudget = \"lots\""), OPT, 1, "cache.budget"),
        case(Config("[cache]\nbudget = \"5XB\""), OPT, 1, "cache.budget"),
        // Unknown keys and wrong types.
        case(Config("tragets = {}"), OPT, 1, "unknown field `tragets`"),
        case(Config("disable = \"build\""), OPT, 1, "disable"),
        case(Config("disable = [\"lint\"]"), OPT, 1, "unknown stage `lint`"),
        case(Config("enable = [\"miri\"]"), OPT, 1, "enable"),
        case(Config("bench-proof = \"fast\""), OPT, 1, "bench-proof"),
        case(Config("test-runner = \"jest\""), OPT, 1, "test-runner"),
        case(Config("incremental = \"maybe\""), OPT, 1, "incremental"),
        case(Config("[cache]\nenv = \"HOME\""), OPT, 1, "cache.env"),
        case(Config("[cache]\nunknown = 1"), OPT, 1, "cache"),
        case(RootExtra("[workspace.metadata]\npipeline-opt = 5\n"), OPT, 1, KEY),
        // The other places a config can be.
        case(PackageConfig("tragets = {}"), OPT, 1, "package.metadata.pipeline-opt.tragets"),
        case(PackageConfig("[services.db]\nkind = \"mysql\""), OPT, 1, "services.db.kind"),
        case(File("pipeline-opt.toml", "[cache]\nunknown = 1"), OPT, 1, "`cache.unknown`"),
        case(File("pipeline-opt.toml", "disable = ["), OPT, 1, "fix the TOML syntax"),
        case(Config("stage-timeout = \"\""), OPT, 1, "stage-timeout"),
        case(Config("[targets]\nrequired = \"\""), OPT, 1, "targets.required"),
        case(Config("[cache]\nbudget = -5"), OPT, 1, "cache.budget"),
        case(Config("enable = [\"clippy\", 5]"), OPT, 1, "enable"),
        // Custom stages.
        case(Config("[stages.x]\ncommand = [\"true\"]\ntimeout = \"31days\""), OPT, 1, "30days"),
        case(
            Config("[stages.x]\ncommand = [\"true\"]\ndepends-on = \"build\""),
            OPT,
            1,
            "depends-on",
        ),
        case(Config("[stages.x]\ncommand = []"), OPT, 1, "stages.x.command"),
        case(Config("[stages.x]\ncommand = [\"\"]"), OPT, 1, "stages.x.command"),
        case(Config("[stages.x]\ncommand = \"make\""), OPT, 1, "stages.x.command"),
        case(Config("[stages.build]\ncommand = [\"true\"]"), OPT, 1, "built-in stage"),
        case(Config("[stages.\"../../x\"]\ncommand = [\"true\"]"), OPT, 1, "a-z A-Z 0-9 - _"),
        case(Config("[stages.\"a/b\"]\ncommand = [\"true\"]"), OPT, 1, "a-z A-Z 0-9 - _"),
        case(Config("[stages.\"a b\"]\ncommand = [\"true\"]"), OPT, 1, "a-z A-Z 0-9 - _"),
        case(Config("[stages.\"x\\\"}\\nevil 1\"]\ncommand = [\"true\"]"), OPT, 1, "a-z A-Z"),
        case(Config("[stages.\".hidden\"]\ncommand = [\"true\"]"), OPT, 1, "a-z A-Z 0-9 - _"),
        case(Config("[stages.x]\ncommand = [\"true\"]\ndepends-on = [\"nope\"]"), OPT, 1, "nope"),
        case(
            Config(
                "[stages.a]\ncommand = [\"true\"]\ndepends-on = [\"b\"]\n[stages.b]\ncommand = [\"true\"]\ndepends-on = [\"a\"]",
            ),
            OPT,
            1,
            "cycle",
        ),
        case(
            Config("[stages.x]\ncommand = [\"true\"]\nshell = true"),
            OPT,
            1,
            "unknown field `shell`",
        ),
        case(
            Config("[stages.x]\ncommand = [\"true\"]\ntimeout = \"0s\""),
            OPT,
            1,
            "stages.x.timeout",
        ),
        case(
            Config("[stages.x]\ncommand = [\"true\"]\nuses-build-dir = \"yes\""),
            OPT,
            1,
            "uses-build-dir",
        ),
        // Services.
        case(Config("[services.db]\nkind = \"mysql\""), OPT, 1, "services.db.kind"),
        case(Config("[services.db]\nkind = \"postgres\"\nsize = 0"), OPT, 1, "services.db.size"),
        case(
            Config("[services.db]\nkind = \"postgres\"\nenv = { DATABASE_URL = \"{pass}\" }"),
            OPT,
            1,
            "services.db.env.DATABASE_URL` in Cargo.toml: unknown placeholder `{pass}`",
        ),
        case(
            Config("[services.db]\nkind = \"postgres\"\nenv = { DATABASE_URL = 5 }"),
            OPT,
            1,
            "services.db.env.DATABASE_URL",
        ),
        case(Config("[services.db]\nkind = \"postgres\"\nsize = -1"), OPT, 1, "services.db.size"),
        case(
            Config("[services.db]\nkind = \"command\"\nready = { tcp = true }"),
            OPT,
            1,
            "needs a command",
        ),
        case(
            Config("[services.db]\nkind = \"postgres\"\ncommand = [\"pg\"]"),
            OPT,
            1,
            "services.db.command",
        ),
        case(Config("[services.db]\nkind = \"redis\"\nspare = 2"), OPT, 1, "services.db.spare"),
        case(Config("[services.db]\nkind = \"redis\"\nsetup-sql = \"x.sql\""), OPT, 1, "setup-sql"),
        case(Config("[services.db]\nkind = \"redis\"\nport = 0"), OPT, 1, "services.db.port"),
        case(Config("[services.db]\nkind = \"redis\"\nport = 70000"), OPT, 1, "services.db.port"),
        case(
            Config("[services.db]\nkind = \"command\"\ncommand = [\"x\"]"),
            OPT,
            1,
            "readiness probe",
        ),
        case(
            Config("[services.db]\nkind = \"postgres\"\nready = { tcp = true }"),
            OPT,
            1,
            "remove `ready`",
        ),
        case(
            Config(
                "[services.db]\nkind = \"command\"\ncommand = [\"x\"]\nready = { tcp = true, log-line = \"up\" }",
            ),
            OPT,
            1,
            "exactly one",
        ),
        case(
            Config(
                "[services.db]\nkind = \"command\"\ncommand = [\"x\"]\nport = 9\nsize = 2\nready = { tcp = true }",
            ),
            OPT,
            1,
            "size 1",
        ),
        case(Config("[services.db]\nsize = 1"), OPT, 1, "kind"),
        case(
            Config("[services.db]\nkind = \"postgres\"\nsize = \"two\""),
            OPT,
            1,
            "services.db.size",
        ),
        // Manifests.
        case(File("crates/c0/Cargo.toml", "[package\n"), OPT, 1, "crates/c0/Cargo.toml"),
        case(File("crates/c0/Cargo.toml", ""), PLAN, 1, "Cargo.toml"),
        case(
            File("crates/c1/Cargo.toml", "[package]\nname = \"c1\"\nversion = \"x\"\n"),
            PLAN,
            1,
            "Cargo.toml",
        ),
        case(
            File("Cargo.toml", "[workspace]\nmembers = [\"crates/missing\"]\nresolver = \"2\"\n"),
            PLAN,
            1,
            "crates/missing",
        ),
        case(
            None,
            &["plan", "--manifest-path", "/nonexistent/Cargo.toml"],
            1,
            "pass --manifest-path",
        ),
        case(
            None,
            &["optimize", "--manifest-path", "/nonexistent/Cargo.toml"],
            1,
            "--manifest-path",
        ),
        case(None, &["plan", "--manifest-path", "/"], 1, "--manifest-path"),
        case(None, &["check", "--manifest-path", "/etc/hostname"], 1, "/etc/hostname"),
        // Refs.
        case(None, &["optimize", "--manifest-path", "$M", "--since", "main"], 1, "git"),
        case(
            Git,
            &["optimize", "--manifest-path", "$M", "--since", "no-such-ref"],
            1,
            "no-such-ref",
        ),
        case(Git, &["optimize", "--manifest-path", "$M", "--since", "--all"], 1, "--all"),
        case(Git, &["optimize", "--manifest-path", "$M", "--since", "HEAD~5"], 1, "HEAD~5"),
        // Flags.
        case(
            None,
            &["plan", "--manifest-path", "$M", "--format", "yaml"],
            2,
            "use `text` or `json`",
        ),
        case(None, &["optimize", "--manifest-path", "$M", "--gate", "sometimes"], 1, "sometimes"),
        case(None, &["optimize", "--manifest-path", "$M", "--jobs", "many"], 2, "--jobs"),
        case(None, &["optimize", "--frobnicate"], 2, "frobnicate"),
        case(None, &[], 2, ""),
        case(None, &["deploy"], 2, "deploy"),
        case(None, &["ci", "--frobnicate"], 2, "frobnicate"),
        case(None, &["pool", "frobnicate", "--manifest-path", "$M"], 2, "unknown pool action"),
        case(None, &["cache", "frobnicate", "--manifest-path", "$M"], 2, "frobnicate"),
        case(None, &["optimize", "--manifest-path", "$M", "--package", "nope"], 1, "nope"),
        case(None, &["plan", "--manifest-path"], 2, "manifest-path"),
        case(None, &["optimize", "--manifest-path", "$M", "--gate"], 2, "--gate"),
        case(None, &["check", "--manifest-path", "$M", "--features"], 2, "--features"),
        case(
            None,
            &["history", "--manifest-path", "/nonexistent/Cargo.toml"],
            1,
            "--manifest-path",
        ),
        case(
            None,
            &["cache", "status", "--manifest-path", "/nonexistent/Cargo.toml"],
            1,
            "--manifest-path",
        ),
        case(
            None,
            &["pool", "status", "--manifest-path", "/nonexistent/Cargo.toml"],
            1,
            "--manifest-path",
        ),
    ]
}

/// Every file under `dir` (skipping the state directory `ws/target`) with its contents.
fn snapshot(dir: &Utf8Path) -> BTreeMap<Utf8PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = Utf8PathBuf::from_path_buf(e.path()).unwrap();
            // `cargo metadata` itself writes a missing Cargo.lock, as every cargo command
            // does; the corpus is about what pipeline-opt writes.
            let by_cargo = [dir.join("ws/target"), dir.join("ws/.git"), dir.join("ws/Cargo.lock")];
            if by_cargo.contains(&path) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

fn git(ws: &Utf8Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(ws)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_input_corpus_gives_one_line_errors_and_writes_nothing() {
    let corpus = corpus();
    let mut failures = Vec::new();
    for (i, c) in corpus.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap().to_owned();
        let mut ws =
            FixtureWorkspace::new(vec![FixtureCrate::new("c0"), FixtureCrate::new("c1").dep("c0")]);
        match &c.setup {
            Setup::Config(body) => ws = ws.config(*body),
            Setup::PackageConfig(body) => ws.package_config = Some(body.to_string()),
            Setup::RootExtra(extra) => ws.root_manifest_extra = extra.to_string(),
            _ => {}
        }
        let manifest = ws.write(&root.join("ws")).unwrap();
        match &c.setup {
            Setup::File(path, text) => std::fs::write(root.join("ws").join(path), text).unwrap(),
            Setup::Git => {
                git(&root.join("ws"), &["init", "-q"]);
                git(&root.join("ws"), &["add", "."]);
                git(&root.join("ws"), &["commit", "-q", "-m", "fixture"]);
            }
            _ => {}
        }
        let cwd = root.join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        let before = snapshot(&root);
        let args: Vec<&str> =
            c.args.iter().map(|a| if *a == "$M" { manifest.as_str() } else { a }).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(&args).current_dir(&cwd);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let checked = std::panic::catch_unwind(|| assert_clean_error(&out, c.code, c.needle));
        let after = snapshot(&root);
        let written: Vec<&Utf8PathBuf> = after
            .iter()
            .filter(|(p, data)| before.get(*p) != Some(*data))
            .map(|(p, _)| p)
            .chain(before.keys().filter(|p| !after.contains_key(*p)))
            .collect();
        if checked.is_err() || !written.is_empty() {
            failures.push(format!(
                "case {i} {args:?}: exit {:?}, stderr {:?}, changed outside the state dir: {written:?}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!(
        "bad-input corpus: {} cases tried, {} passed",
        corpus.len(),
        corpus.len() - failures.len()
    );
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
}

/// `ci` is this repository's own command, added by the xtask to the library's command
/// line: `--help` lists it beside the library's commands, and `ci --help` describes it.
#[test]
fn help_lists_the_xtask_own_ci_command() {
    let out = crate::xtask(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("  optimize "), "{help}");
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("ci ") && l.contains("checks and tests")),
        "{help}"
    );
    let out = crate::xtask(&["ci", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.starts_with("Usage: pipeline-opt ci\n") && help.contains("checks and tests"),
        "{help}"
    );
}
