//! Recommendations derived from measurements: a pure function of a [`RunRecord`] and the
//! facts about the workspace it saved ([`WorkspaceFacts`]: its resolved dependency graph
//! and the debug setting of its test profile). Each recommendation names its evidence.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::facts::{DebugLevel, WorkspaceFacts};
use crate::record::{CommandKind, RunRecord, StageStatus};
use crate::report::{percent, secs};

/// A compile unit on the critical path dominates when it takes this share of the run.
const CRITICAL_CRATE_SHARE: f64 = 0.25;
const CRITICAL_CRATE_MIN: Duration = Duration::from_secs(2);
/// A few tests (at most [`MAX_PER_KIND`]) dominate their stage from this share of the
/// stage's wall time together, each of them at least the second share and minimum.
const SLOW_TESTS_SHARE: f64 = 0.5;
const SLOW_TEST_SHARE_EACH: f64 = 0.2;
const SLOW_TEST_MIN: Duration = Duration::from_secs(1);
/// A compiling or testing stage that keeps fewer cores busy than this is serialized.
const LOW_CPU_SHARE: f64 = 0.5;
/// The cores a stage left unused were idle only if the machine left them idle: when its
/// sampled use over the stage reaches this share, other work (another stage of the run,
/// another program on a shared machine) had them, and splitting or overlapping more
/// would not make the stage faster.
const LOW_CPU_MACHINE_BUSY: f64 = 0.8;
/// Short stages have too little time to fill the cores; judging them is noise.
const LOW_CPU_MIN_WALL: Duration = Duration::from_secs(5);
/// Debug info is worth trimming once compiling takes this much time in a run.
const DEBUG_INFO_MIN_COMPILE: Duration = Duration::from_secs(5);
/// cargo-nextest starts a process per test. A stage that ran at least this many tests
/// at under this much wall time per test spends its time starting them.
const TINY_TESTS_MIN_COUNT: usize = 500;
const TINY_TESTS_MAX_MEAN: Duration = Duration::from_millis(20);
/// A crate's doctests are worth merging (edition 2024) from this many, taking this long
/// together: each unmerged doctest is a program compiled and linked on its own.
const MERGED_DOCTESTS_MIN_COUNT: usize = 10;
const MERGED_DOCTESTS_MIN_TIME: Duration = Duration::from_secs(5);
/// Shown at most per kind, so a report stays readable on a large workspace.
const MAX_PER_KIND: usize = 3;
/// Aligning two versions of a package is worth a user's time only when building one
/// would save at least this much compiling, and at least this share of the run: a
/// 0.1 s saving in a 40 s run is noise, not advice.
const DUPLICATE_MIN_SAVING: Duration = Duration::from_millis(250);
const DUPLICATE_MIN_SHARE: f64 = 0.01;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Stable identifier: `critical-crate`, `compiled-after-build`, `duplicate-versions`, `compiled-twice`,
    /// `slow-test`, `tiny-tests`, `merged-doctests`, `low-cpu`, `debug-line-tables`,
    /// `nextest-missing`.
    pub kind: &'static str,
    /// What to change.
    pub action: String,
    /// The measured numbers it rests on.
    pub evidence: String,
}

/// Every recommendation `record` and `ctx` support, most important kinds first.
pub fn recommend(record: &RunRecord, ctx: &WorkspaceFacts) -> Vec<Recommendation> {
    let mut out = Vec::new();
    critical_crate(record, &mut out);
    compiled_after_build(record, &mut out);
    low_cpu(record, &mut out);
    slow_test(record, &mut out);
    tiny_tests(record, &mut out);
    merged_doctests(record, ctx, &mut out);
    nextest_missing(record, ctx, &mut out);
    compiled_twice(record, ctx, &mut out);
    duplicate_versions(record, ctx, &mut out);
    debug_line_tables(record, ctx, &mut out);
    out
}

fn critical_crate(record: &RunRecord, out: &mut Vec<Recommendation>) {
    let total = record.total.as_secs_f64();
    let mut steps: Vec<_> = record
        .critical_path
        .iter()
        .filter(|s| s.kind == "crate")
        .map(|s| (s, s.end.saturating_sub(s.start)))
        .filter(|(_, d)| {
            *d >= CRITICAL_CRATE_MIN && d.as_secs_f64() >= CRITICAL_CRATE_SHARE * total
        })
        .collect();
    steps.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (step, d) in steps.into_iter().take(MAX_PER_KIND) {
        // The profiler names a unit `package (kind target)`; one splits the package.
        let package = step.name.split(" (").next().unwrap_or(&step.name);
        out.push(Recommendation {
            kind: "critical-crate",
            action: format!(
                "split `{}` into crates that compile in parallel, or reduce its generic code \
                 (non-generic inner functions) so less is compiled on the critical path",
                package
            ),
            evidence: format!(
                "`{}` compiled for {} on the critical path: {} of the {} run",
                step.name,
                secs(d),
                percent(d.as_secs_f64(), total),
                secs(record.total)
            ),
        });
    }
}

fn ran(status: &StageStatus) -> bool {
    matches!(status, StageStatus::Succeeded | StageStatus::Failed | StageStatus::TimedOut)
}

fn runs_tests(kind: CommandKind) -> bool {
    matches!(kind, CommandKind::CargoTest | CommandKind::Nextest)
}

fn low_cpu(record: &RunRecord, out: &mut Vec<Recommendation>) {
    let cores = record.cores.max(1) as f64;
    let mut found = Vec::new();
    for s in &record.stages {
        // Fetching and services wait on the network or on a daemon, not on the cores.
        let compiles = !matches!(s.kind, CommandKind::Fetch | CommandKind::Other);
        if !ran(&s.status) || !compiles || s.wall < LOW_CPU_MIN_WALL {
            continue;
        }
        let cpu = (s.cpu_user + s.cpu_system).as_secs_f64();
        let busy = cpu / s.wall.as_secs_f64();
        if busy / cores >= LOW_CPU_SHARE {
            continue;
        }
        let samples: Vec<f64> = record
            .cpu_samples
            .iter()
            .filter(|c| c.at > s.start && c.at <= s.start + s.wall)
            .map(|c| c.busy)
            .collect();
        let machine =
            (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64);
        if machine.is_some_and(|m| m >= LOW_CPU_MACHINE_BUSY) {
            continue;
        }
        let machine = match machine {
            Some(m) => format!("; the machine's cores were {} busy", percent(m, 1.0)),
            None => String::new(),
        };
        let action = if runs_tests(s.kind) {
            format!(
                "stage `{}` waits on a few long tests or binaries: split them, or run another \
                 stage beside it",
                s.id
            )
        } else {
            format!(
                "stage `{}` compiles a chain of crates one after another (see the critical \
                 path): run other stages beside it, or split the crates on the chain",
                s.id
            )
        };
        found.push((
            busy / cores,
            Recommendation {
                kind: "low-cpu",
                action,
                evidence: format!(
                    "stage `{}` kept {:.1} of {} cores busy ({}) over {} ({} of CPU time){machine}",
                    s.id,
                    busy,
                    record.cores,
                    percent(busy, cores),
                    secs(s.wall),
                    secs(s.cpu_user + s.cpu_system)
                ),
            },
        ));
    }
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.extend(found.into_iter().take(MAX_PER_KIND).map(|(_, r)| r));
}

/// A few tests dominate a stage when together they take half its wall time, each of
/// them a fifth at least: nextest runs tests side by side, so the stage lasts about as
/// long as its longest tests, however many short ones run beside them.
fn slow_test(record: &RunRecord, out: &mut Vec<Recommendation>) {
    let all = crate::report::slowest_tests(record, usize::MAX);
    let mut n = 0;
    for stage in record.stages.iter().filter(|s| ran(&s.status)) {
        let few: Vec<_> = all
            .iter()
            .filter(|t| t.stage == stage.id)
            .filter(|t| t.duration >= SLOW_TEST_MIN && t.share() >= SLOW_TEST_SHARE_EACH)
            .take(MAX_PER_KIND)
            .collect();
        let together: Duration = few.iter().map(|t| t.duration).sum();
        if few.is_empty() || together.as_secs_f64() < SLOW_TESTS_SHARE * stage.wall.as_secs_f64() {
            continue;
        }
        if n >= MAX_PER_KIND {
            break;
        }
        n += 1;
        let names = few.iter().map(|t| t.named()).collect::<Vec<_>>();
        let nextest = stage.kind == CommandKind::Nextest;
        let alone = match few[0].rerun_command(nextest) {
            Some(cmd) if few.len() == 1 => format!("; run it alone with `{cmd}`"),
            Some(cmd) => format!("; run the slowest alone with `{cmd}`"),
            None => String::new(),
        };
        let flame = format!(
            "; `{}` draws where its CPU time goes",
            flamegraph_command(&record.command, few[0].binary, few[0].test)
        );
        let each = few
            .iter()
            .map(|t| {
                format!("{} ran for {} ({})", t.named(), secs(t.duration), percent(t.share(), 1.0))
            })
            .collect::<Vec<_>>();
        out.push(Recommendation {
            kind: "slow-test",
            action: format!(
                "split {} into smaller tests (nextest runs each in its own process, so the \
                 parts run on several cores) or make {} cheaper{alone}{flame}",
                and_list(&names),
                if few.len() == 1 { "it" } else { "them" }
            ),
            evidence: format!("{} of stage `{}`'s {}", and_list(&each), stage.id, secs(stage.wall)),
        });
    }
}

/// The `flamegraph` command for a test, spelled as the run's own command was
/// (`cargo xtask …` or `cargo pipeline-opt …`, with its `--manifest-path`).
fn flamegraph_command(run_command: &str, binary: &str, test: &str) -> String {
    let words: Vec<&str> = run_command.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "optimize" || *w == "check");
    let prefix = at.map_or("cargo pipeline-opt".to_string(), |i| words[..i].join(" "));
    let manifest = words
        .windows(2)
        .find(|w| w[0] == "--manifest-path")
        .map(|w| format!(" --manifest-path {}", w[1]))
        .unwrap_or_default();
    let named = if binary.is_empty() { test.to_string() } else { format!("{binary} {test}") };
    format!("{prefix} flamegraph {named}{manifest}")
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn tiny_tests(record: &RunRecord, out: &mut Vec<Recommendation>) {
    for stage in record.stages.iter().filter(|s| s.kind == CommandKind::Nextest && ran(&s.status)) {
        let n = record.tests.iter().filter(|t| t.stage == stage.id).count();
        if n < TINY_TESTS_MIN_COUNT {
            continue;
        }
        let per_test = stage.wall.as_secs_f64() / n as f64;
        if per_test >= TINY_TESTS_MAX_MEAN.as_secs_f64() {
            continue;
        }
        out.push(Recommendation {
            kind: "tiny-tests",
            action: "try `test-runner = \"cargo\"` in `[workspace.metadata.pipeline-opt]` and \
                     compare the next run's test stage: `cargo test` runs a binary's tests as \
                     threads of one process, where cargo-nextest starts a process per test \
                     (the price: no retries of flaky tests, no per-test isolation)"
                .into(),
            evidence: format!(
                "cargo-nextest ran {n} tests in stage `{}`'s {}, {:.1} ms of wall time per test",
                stage.id,
                secs(stage.wall),
                per_test * 1000.0
            ),
        });
    }
}

/// Crates of an edition before 2024 whose doctests took long: rustdoc compiles and links
/// each of their doctests as a program of its own, where edition 2024 merges them into
/// one. Slowest first.
fn merged_doctests(record: &RunRecord, ctx: &WorkspaceFacts, out: &mut Vec<Recommendation>) {
    let mut found: Vec<(&crate::record::DoctestTiming, &String)> = record
        .doctests
        .iter()
        .filter(|d| {
            !d.merged && d.tests >= MERGED_DOCTESTS_MIN_COUNT && d.time >= MERGED_DOCTESTS_MIN_TIME
        })
        .filter_map(|d| {
            let edition = ctx.lib_editions.get(&d.crate_name)?;
            (edition.as_str() < "2024").then_some((d, edition))
        })
        .collect();
    found.sort_by_key(|d| std::cmp::Reverse(d.0.time));
    for (d, edition) in found.into_iter().take(MAX_PER_KIND) {
        out.push(Recommendation {
            kind: "merged-doctests",
            action: format!(
                "move `{}` to edition 2024 (`cargo fix --edition`, then `edition = \"2024\"`): \
                 rustdoc then compiles its doctests into one program instead of one per \
                 doctest (a doctest that must stand alone keeps its own with the \
                 `standalone_crate` attribute); docs/performance-optimization.md gives the \
                 measured gain",
                d.crate_name
            ),
            evidence: format!(
                "its {} doctests took {} in stage `{}` ({} each), each compiled and linked on \
                 its own (edition {edition})",
                d.tests,
                secs(d.time),
                d.stage,
                secs(d.time / d.tests as u32)
            ),
        });
    }
}

fn nextest_missing(record: &RunRecord, ctx: &WorkspaceFacts, out: &mut Vec<Recommendation>) {
    if !ctx.nextest_missing {
        return;
    }
    let test_time: Duration = record
        .stages
        .iter()
        .filter(|s| s.kind == CommandKind::CargoTest && ran(&s.status))
        .map(|s| s.wall)
        .sum();
    // Without a measured `cargo test` stage there is no number to rest on.
    if test_time.is_zero() {
        return;
    }
    out.push(Recommendation {
        kind: "nextest-missing",
        action: "install cargo-nextest (`cargo install cargo-nextest --locked`): it runs \
                 every test binary at once instead of one after another"
            .into(),
        evidence: format!(
            "the plan notes that cargo-nextest is not installed; `cargo test` took {} in this run",
            secs(test_time)
        ),
    });
}

/// `name@version` when the version is known: what `cargo tree -i` needs to pick one
/// package when the graph holds several versions of it (a bare name is ambiguous then).
fn package_spec(name: &str, version: &str) -> String {
    if version.is_empty() { name.to_string() } else { format!("{name}@{version}") }
}

fn compiled_twice(record: &RunRecord, ctx: &WorkspaceFacts, out: &mut Vec<Recommendation>) {
    type Unit<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);
    let mut units: BTreeMap<Unit<'_>, Vec<Duration>> = BTreeMap::new();
    for c in &record.crates {
        // A build script is compiled once and run once: two entries, one build.
        if c.kind.contains("build") {
            continue;
        }
        // Two versions of a package are two packages (`duplicate-versions`), not one
        // compiled twice.
        let key = (&*c.stage, &*c.package, &*c.version, &*c.target, &*c.kind);
        units.entry(key).or_default().push(c.end.saturating_sub(c.start));
    }
    let mut found: Vec<_> = units.into_iter().filter(|(_, times)| times.len() > 1).collect();
    found.sort_by_key(|(_, times)| std::cmp::Reverse(times.iter().sum::<Duration>()));
    for ((stage, package, version, target, kind), times) in found.into_iter().take(MAX_PER_KIND) {
        let each: Vec<String> = times.iter().map(|d| secs(*d)).collect();
        let mut evidence = format!(
            "`{package}` ({kind} `{target}`) was compiled {} times in stage `{stage}`: {}",
            times.len(),
            each.join(" + ")
        );
        let resolved = ctx
            .packages
            .iter()
            .find(|p| p.name == package && (version.is_empty() || p.version == version));
        if let Some(p) = resolved {
            evidence.push_str(&format!("; the resolve enables [{}]", p.features.join(", ")));
        }
        let spec = package_spec(package, version);
        out.push(Recommendation {
            kind: "compiled-twice",
            action: format!(
                "ask for the same features of `{package}` everywhere (e.g. in \
                 `[workspace.dependencies]`), also from build-dependencies and proc-macros; \
                 `cargo tree -e features -i {spec}` shows who asks for which"
            ),
            evidence,
        });
    }
}

/// Units compiled again after the build stage, grouped by why: each reason has its own
/// remedy. Any amount counts: the build stage exists so that nothing compiles later.
fn compiled_after_build(record: &RunRecord, out: &mut Vec<Recommendation>) {
    use crate::record::LateReason;
    let mut by_reason: BTreeMap<u8, Vec<&crate::record::LateUnit>> = BTreeMap::new();
    for u in &record.compiled_after_build {
        let key = match u.why {
            LateReason::OtherSettings { .. } => 0,
            LateReason::OtherFlags { .. } => 1,
            LateReason::InputChanged => 2,
            LateReason::NotInBuild => 3,
        };
        by_reason.entry(key).or_default().push(u);
    }
    for units in by_reason.values() {
        let first = units[0];
        let time: Duration = units.iter().map(|u| u.time).sum();
        let mut stages: Vec<&str> = units.iter().map(|u| u.stage.as_str()).collect();
        stages.dedup();
        let action = match &first.why {
            LateReason::OtherSettings { .. } => format!(
                "give stage `{}` the features, profile and target of the build stage, so that it \
                 reuses the build stage's units",
                first.stage
            ),
            LateReason::OtherFlags { .. } => format!(
                "set the same compiler flags (`RUSTFLAGS`, `env.{}` in the config) on the build \
                 stage as on `{}`",
                first.stage, first.stage
            ),
            LateReason::InputChanged => format!(
                "set the variables of `env.{}` on the build stage too (a build script or macro \
                 reads them), and do not write into the sources between the stages",
                first.stage
            ),
            LateReason::NotInBuild => format!(
                "stage `{}` compiles units the build stage does not select; please report it \
                 with the run's `run.json`",
                first.stage
            ),
        };
        out.push(Recommendation {
            kind: "compiled-after-build",
            action,
            evidence: format!(
                "{} ({} compiling) compiled again in stage {}, first `{}` ({} `{}`): {}",
                crate::report::count(units.len(), "unit", "units"),
                secs(time),
                stages.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
                first.package,
                first.kind,
                first.target,
                first.why
            ),
        });
    }
}

/// Packages built at several versions in this run, where a workspace member asks for
/// one of the versions directly (else only a dependency could align them), ranked by
/// the compile time that building one version would save: every version's units but
/// the most expensive one's.
fn duplicate_versions(record: &RunRecord, ctx: &WorkspaceFacts, out: &mut Vec<Recommendation>) {
    let mut built: BTreeMap<&str, BTreeMap<&str, Duration>> = BTreeMap::new();
    for c in record.crates.iter().filter(|c| !c.version.is_empty()) {
        *built.entry(&c.package).or_default().entry(&c.version).or_default() +=
            c.end.saturating_sub(c.start);
    }
    let mut found = Vec::new();
    for (name, versions) in built.into_iter().filter(|(_, v)| v.len() > 1) {
        let asked: Vec<&str> = versions
            .keys()
            .copied()
            .filter(|v| {
                ctx.packages.iter().any(|p| p.name == name && p.version == *v && p.member_dep)
            })
            .collect();
        if asked.is_empty() {
            continue;
        }
        let total: Duration = versions.values().sum();
        let saving = total.saturating_sub(versions.values().max().copied().unwrap_or_default());
        if saving < DUPLICATE_MIN_SAVING
            || saving.as_secs_f64() < DUPLICATE_MIN_SHARE * record.total.as_secs_f64()
        {
            continue;
        }
        found.push((saving, name, versions, asked));
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (saving, name, versions, asked) in found.into_iter().take(MAX_PER_KIND) {
        let trees: Vec<String> =
            versions.keys().map(|v| format!("`cargo tree -i {}`", package_spec(name, v))).collect();
        let each: Vec<String> =
            versions.iter().map(|(v, d)| format!("{v} ({})", secs(*d))).collect();
        out.push(Recommendation {
            kind: "duplicate-versions",
            action: format!(
                "align the version requirements on `{name}` so one version is built: the \
                 workspace asks for {} directly ({} show who needs which)",
                asked.join(" and "),
                trees.join(" and ")
            ),
            evidence: format!(
                "`{name}` was built at {} versions in this run: {}; building one would save at \
                 least {} of compiling",
                versions.len(),
                each.join(", "),
                secs(saving)
            ),
        });
    }
}

fn debug_line_tables(record: &RunRecord, ctx: &WorkspaceFacts, out: &mut Vec<Recommendation>) {
    let Some(debug) = &ctx.test_debug else { return };
    if !matches!(debug.level, DebugLevel::Full | DebugLevel::Limited) {
        return;
    }
    // Release-profile units (benches) are not built with this setting.
    let dev: Vec<_> = record
        .crates
        .iter()
        .filter(|c| {
            record
                .stages
                .iter()
                .find(|s| s.id == c.stage)
                .is_none_or(|s| !matches!(s.profile.as_deref(), Some("release" | "bench")))
        })
        .collect();
    let compile: Duration = dev.iter().map(|c| c.end.saturating_sub(c.start)).sum();
    if compile < DEBUG_INFO_MIN_COMPILE {
        return;
    }
    let mut evidence = format!(
        "{}; this run spent {} compiling {} dev/test units with it",
        debug.source,
        secs(compile),
        dev.len()
    );
    // `--explore` tried it: quote the measurement, whichever way it went.
    if let Some(e) = &record.explore
        && let Some(base) = e.variants.first()
        && let Some(tried) = e.variants.iter().find(|v| v.name.contains("line-tables-only"))
        && let (Some(bw), Some(bc), Some(tw), Some(tc)) =
            (base.wall, base.cpu, tried.wall, tried.cpu)
    {
        evidence.push_str(&format!(
            "; `--explore` measured a cold build at {} wall / {} CPU with it against {} / {} \
             without",
            secs(tw),
            secs(tc),
            secs(bw),
            secs(bc)
        ));
    }
    out.push(Recommendation {
        kind: "debug-line-tables",
        action: "set `debug = \"line-tables-only\"` in `[profile.test]` (or `[profile.dev]`): \
                 backtraces keep files and lines, and far less debug info is generated and linked"
            .into(),
        evidence,
    });
}
