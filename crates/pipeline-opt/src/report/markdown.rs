//! `pipeline-optimization-report.md`: totals against targets, the per-stage table, the
//! critical path, the slowest crates, test counts and the slowest tests, what each stage proved or why it was dropped,
//! failures with their output, and recommendations with their evidence.

use std::fmt::Write as _;

use crate::record::{RunOutcome, RunRecord, StageMetrics, StageStatus};
use crate::report::recommend::Recommendation;
use crate::report::text::{on_critical_path, outcome_text, status_text};
use crate::report::{limit, percent, secs};

/// How many crates the "slowest crates" table lists.
const SLOWEST_CRATES: usize = 10;

pub fn render(record: &RunRecord, recommendations: &[Recommendation]) -> String {
    let mut out = String::new();
    let o = &mut out;
    writeln!(o, "# Pipeline optimization report\n").unwrap();
    writeln!(
        o,
        "Run `{}` of `{}` in `{}`, started {}, on {} cores: **{}** in {}.\n",
        record.run_id,
        record.command,
        record.workspace_root,
        record.started_at,
        record.cores,
        outcome_text(record.outcome),
        secs(record.total)
    )
    .unwrap();
    totals(o, record);
    naive(o, record);
    shards(o, record);
    stages(o, record);
    test_settings(o, record);
    cache(o, record);
    compile_cache(o, record);
    critical_path(o, record);
    slowest_crates(o, record);
    compiled_by_tests(o, record);
    compiled_after_build(o, record);
    tests(o, record);
    doctests(o, record);
    flamegraphs(o, record);
    coverage(o, record);
    failures(o, record);
    recommend(o, recommendations);
    if let Some(e) = &record.explore {
        o.push('\n');
        o.push_str(&crate::report::explore::render_markdown(e));
    }
    out
}

/// Which test-runner value came from where: the user's, or the tool's default.
fn test_settings(o: &mut String, r: &RunRecord) {
    if r.test_settings.is_empty() {
        return;
    }
    writeln!(o, "Test settings:\n").unwrap();
    for s in &r.test_settings {
        writeln!(o, "- {}", crate::test_settings::describe(s)).unwrap();
    }
    o.push('\n');
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn totals(o: &mut String, r: &RunRecord) {
    let v = &r.verdict;
    writeln!(o, "## Totals\n").unwrap();
    writeln!(o, "| target | limit | actual | verdict |").unwrap();
    writeln!(o, "| --- | ---: | ---: | --- |").unwrap();
    writeln!(
        o,
        "| required | {} | {} | {} |",
        secs(v.required),
        secs(v.total),
        met(v.required_met)
    )
    .unwrap();
    writeln!(o, "| stretch | {} | {} | {} |", secs(v.stretch), secs(v.total), met(v.stretch_met))
        .unwrap();
    match &v.gate {
        Some(g) => writeln!(o, "\nThe run was held to the {}: {}.", g.describe(), met(g.met)),
        None => writeln!(o, "\nNo `--gate`: the targets are information, not a verdict."),
    }
    .unwrap();
    // `idle_cpu` is counted over the stages' span (cores × span − the stages' CPU), which
    // is shorter than `total` (planning and fingerprints come first): the same span here.
    let stage_cpu: f64 = r.stages.iter().map(|s| (s.cpu_user + s.cpu_system).as_secs_f64()).sum();
    let capacity = r.idle_cpu.as_secs_f64() + stage_cpu;
    write!(
        o,
        "\nCPU left idle by this run: {} of {} core-seconds ({}).",
        secs(r.idle_cpu),
        capacity.round(),
        percent(r.idle_cpu.as_secs_f64(), capacity)
    )
    .unwrap();
    // On a shared machine what the run left idle may have gone to other programs:
    // the sampled use of all processes tells.
    if !r.cpu_samples.is_empty() {
        let machine =
            r.cpu_samples.iter().map(|c| c.busy).sum::<f64>() / r.cpu_samples.len() as f64;
        write!(
            o,
            " The machine's cores were {} busy over the run (all processes, sampled every \
             250 ms), so {} of them were idle.",
            percent(machine, 1.0),
            percent(1.0 - machine, 1.0)
        )
        .unwrap();
    }
    o.push('\n');
    if let Some(text) = lower_bound_text(r) {
        writeln!(o, "\n{text}").unwrap();
    }
    if r.outcome == RunOutcome::Interrupted {
        writeln!(o, "\nThe run was interrupted: the total is the time until the interrupt.")
            .unwrap();
    }
    o.push('\n');
}

/// The run beside what it could not have beaten, and which of the two bounds binds: a
/// user then sees whether more overlap or less work is what is left.
fn lower_bound_text(r: &RunRecord) -> Option<String> {
    let b = r.lower_bound.as_ref()?;
    let bound = b.bound();
    if bound.is_zero() {
        return None;
    }
    let chain = b.chain_stages.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" → ");
    let ratio = r.total.as_secs_f64() / bound.as_secs_f64();
    let left = if ratio <= LOWER_BOUND_CLOSE {
        if b.chain >= b.cpu {
            "the chain of stages sets the time, so only a shorter chain (less work in it, or \
             its work split across stages) would make the run faster"
                .to_string()
        } else {
            "the CPU work sets the time, so only less work would make the run faster".to_string()
        }
    } else {
        format!(
            "{} above it, which better overlap (or less planning) could win back at most",
            secs(r.total.saturating_sub(bound))
        )
    };
    Some(format!(
        "Lower bound: {} (the larger of the longest chain of dependent stages at their \
         measured times, {} for {chain}, and the stages' CPU work over {} cores, {} ÷ {} = {}). \
         The run took {}, {ratio:.2}× its bound: {left}.",
        secs(bound),
        secs(b.chain),
        r.cores,
        secs(b.cpu_work),
        r.cores,
        secs(b.cpu),
        secs(r.total),
    ))
}

/// Within this factor of its lower bound a run has no overlap left to win.
const LOWER_BOUND_CLOSE: f64 = 1.1;

fn naive(o: &mut String, r: &RunRecord) {
    let Some(n) = &r.naive else { return };
    writeln!(o, "## Against the naive sequence\n").unwrap();
    writeln!(
        o,
        "Naive: {} ({}); ours: {}. Ratio ours/naive: **{:.2}**.\n",
        secs(n.naive_total),
        outcome_text(n.naive_outcome),
        secs(n.optimized_total),
        n.ratio
    )
    .unwrap();
    if let Some(why) = n.not_comparable(r.outcome) {
        writeln!(o, "**The ratio is not a comparison**: {why}.\n").unwrap();
    }
    writeln!(o, "How: {}\n", n.method).unwrap();
    writeln!(o, "| naive step | status | wall |").unwrap();
    writeln!(o, "| --- | --- | ---: |").unwrap();
    for s in &n.naive_stages {
        writeln!(o, "| `{}` | {} | {} |", s.command, status_text(&s.status), secs(s.wall)).unwrap();
    }
    o.push('\n');
    let list = |v: &[String]| {
        if v.is_empty() { "nothing".to_string() } else { v.join(", ") }
    };
    writeln!(o, "Only the naive sequence proves: {}.", list(&n.only_naive_proves)).unwrap();
    writeln!(o, "Only our plan proves: {}.\n", list(&n.only_optimized_proves)).unwrap();
}

/// Why each stage ran instead of being served from the stage cache.
fn cache(o: &mut String, r: &RunRecord) {
    if r.cache.is_empty() {
        return;
    }
    writeln!(o, "## Cache\n").unwrap();
    writeln!(o, "| stage | ran because / cached from |").unwrap();
    writeln!(o, "| --- | --- |").unwrap();
    for (id, why) in &r.cache {
        writeln!(o, "| `{id}` | {} |", why.replace('|', "\\|")).unwrap();
    }
    o.push('\n');
}

/// `--compile-cache`: what sccache did, why requests were not cached, and the warnings
/// (a warm cache that gave no hit, write errors).
fn compile_cache(o: &mut String, r: &RunRecord) {
    let Some(c) = &r.compile_cache else { return };
    writeln!(o, "## Compile cache\n").unwrap();
    writeln!(o, "{}\n", crate::report::text::compile_cache_sentence(c)).unwrap();
    if !c.not_cached.is_empty() {
        writeln!(o, "| not cached because | requests |").unwrap();
        writeln!(o, "| --- | ---: |").unwrap();
        for (why, n) in &c.not_cached {
            writeln!(o, "| {} | {n} |", why.replace('|', "\\|")).unwrap();
        }
        o.push('\n');
    }
    for w in crate::report::text::compile_cache_warnings(c) {
        writeln!(o, "**Warning:** {w}.\n").unwrap();
    }
}

/// A merged scale-out run: each shard's tests, predicted and measured times.
fn shards(o: &mut String, r: &RunRecord) {
    let Some(sh) = &r.shards else { return };
    writeln!(o, "## Shards\n").unwrap();
    writeln!(
        o,
        "Split by {}. Each shard's stage `shard-K` is in the stages below, starting when the build ended.\n",
        sh.strategy
    )
    .unwrap();
    writeln!(o, "| shard | run | tests | predicted | test time | wall |").unwrap();
    writeln!(o, "| ---: | --- | ---: | ---: | ---: | ---: |").unwrap();
    for s in &sh.shards {
        let predicted = s.predicted.map(secs).unwrap_or_else(|| "-".into());
        writeln!(
            o,
            "| {} | `{}` | {} | {predicted} | {} | {} |",
            s.index,
            s.run_id,
            s.tests,
            secs(s.test_time),
            secs(s.wall)
        )
        .unwrap();
    }
    writeln!(o, "\n{}\n", crate::report::shards_balance_sentence(sh)).unwrap();
}

fn stages(o: &mut String, r: &RunRecord) {
    writeln!(o, "## Stages\n").unwrap();
    writeln!(o, "| stage | status | start | wall | target | verdict | CPU | peak RSS |").unwrap();
    writeln!(o, "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |").unwrap();
    for s in &r.stages {
        let check = r.verdict.stages.iter().find(|c| c.id == s.id);
        let target = r.targets.stages.get(&s.id).map(|t| limit(*t)).unwrap_or_else(|| "-".into());
        let verdict = match (&s.status, check) {
            (StageStatus::Cached { .. }, _) => "cached".to_string(),
            (StageStatus::Skipped { .. }, _) => "skipped".to_string(),
            (_, Some(c)) => met(c.met).to_string(),
            (_, None) => "-".to_string(),
        };
        let (wall, cpu, rss) =
            if matches!(s.status, StageStatus::Cached { .. } | StageStatus::Skipped { .. }) {
                ("-".to_string(), "-".to_string(), "-".to_string())
            } else {
                (secs(s.wall), cpu_text(s, r.cores), rss_text(s.peak_rss_kib))
            };
        writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            s.id,
            status_text(&s.status),
            secs(s.start),
            wall,
            target,
            verdict,
            cpu,
            rss
        )
        .unwrap();
    }
    o.push('\n');
}

/// `12.0 s (60% of 2 cores)`.
fn cpu_text(s: &StageMetrics, cores: usize) -> String {
    let cpu = s.cpu_user + s.cpu_system;
    let capacity = s.wall.as_secs_f64() * cores.max(1) as f64;
    format!("{} ({} of {} cores)", secs(cpu), percent(cpu.as_secs_f64(), capacity), cores)
}

fn rss_text(kib: u64) -> String {
    if kib == 0 { "-".into() } else { format!("{:.0} MiB", kib as f64 / 1024.0) }
}

fn critical_path(o: &mut String, r: &RunRecord) {
    writeln!(o, "## Critical path\n").unwrap();
    if r.critical_path.is_empty() {
        writeln!(o, "No critical path was measured (no stage ran).\n").unwrap();
        return;
    }
    writeln!(o, "The chain of work that set the total time:\n").unwrap();
    // On a few cores a cold build's chain runs through every unit that waited for a
    // jobserver token: well over a hundred on a real workspace. Units under 1% of the
    // run are folded into one line per stretch, so the ones that matter stay readable.
    let total = r.total.as_secs_f64();
    let minor = |step: &crate::record::CriticalStep| {
        step.kind == "crate"
            && step.end.saturating_sub(step.start).as_secs_f64() < CRITICAL_STEP_MIN_SHARE * total
    };
    let mut n = 0;
    let mut i = 0;
    let steps = &r.critical_path;
    while i < steps.len() {
        n += 1;
        if minor(&steps[i]) {
            let run = steps[i..].iter().take_while(|s| minor(s)).count();
            if run > 1 {
                let part = &steps[i..i + run];
                let busy: std::time::Duration =
                    part.iter().map(|s| s.end.saturating_sub(s.start)).sum();
                writeln!(
                    o,
                    "{n}. {run} shorter compile units, each under {:.0}% of the run: {} → {} ({} compiling)",
                    CRITICAL_STEP_MIN_SHARE * 100.0,
                    secs(part[0].start),
                    secs(part[run - 1].end),
                    secs(busy)
                )
                .unwrap();
                i += run;
                continue;
            }
        }
        let step = &steps[i];
        let d = step.end.saturating_sub(step.start);
        writeln!(
            o,
            "{n}. {} `{}`: {} → {} ({}, {} of the run)",
            step.kind,
            step.name,
            secs(step.start),
            secs(step.end),
            secs(d),
            percent(d.as_secs_f64(), total)
        )
        .unwrap();
        i += 1;
    }
    o.push('\n');
}

/// Compile units on the critical path below this share of the run are folded together.
const CRITICAL_STEP_MIN_SHARE: f64 = 0.01;

fn slowest_crates(o: &mut String, r: &RunRecord) {
    writeln!(o, "## Slowest crates\n").unwrap();
    if r.crates.is_empty() {
        writeln!(
            o,
            "No compile units were recorded (nothing compiled, or every stage was cached).\n"
        )
        .unwrap();
        return;
    }
    let mut crates: Vec<_> = r.crates.iter().collect();
    crates.sort_by(|a, b| {
        (b.end.saturating_sub(b.start))
            .cmp(&a.end.saturating_sub(a.start))
            .then_with(|| a.package.cmp(&b.package))
    });
    // A package built at several versions is named with its version, as `cargo tree`
    // would need it.
    let mut versions = std::collections::BTreeMap::<&str, std::collections::BTreeSet<&str>>::new();
    for c in &r.crates {
        versions.entry(&c.package).or_default().insert(&c.version);
    }
    let name = |c: &crate::record::CrateTiming| match versions.get(c.package.as_str()) {
        Some(v) if v.len() > 1 && !c.version.is_empty() => format!("{}@{}", c.package, c.version),
        _ => c.package.clone(),
    };
    writeln!(o, "| crate | target | kind | stage | time | critical path |").unwrap();
    writeln!(o, "| --- | --- | --- | --- | ---: | --- |").unwrap();
    for c in crates.iter().take(SLOWEST_CRATES) {
        let critical = on_critical_path(r, c);
        writeln!(
            o,
            "| `{}` | `{}` | {} | `{}` | {} | {} |",
            name(c),
            c.target,
            c.kind,
            c.stage,
            secs(c.end.saturating_sub(c.start)),
            if critical { "yes" } else { "" }
        )
        .unwrap();
    }
    if crates.len() > SLOWEST_CRATES {
        writeln!(o, "\n{} more units in `run.json`.", crates.len() - SLOWEST_CRATES).unwrap();
    }
    o.push('\n');
}

/// Test counts per stage, then the slowest tests: a stage lasts about as long as its
/// longest tests, so these name where a test stage's time goes.
fn tests(o: &mut String, r: &RunRecord) {
    writeln!(o, "## Tests\n").unwrap();
    if r.test_counts.is_empty() && r.tests.is_empty() {
        writeln!(o, "No test runner ran (no test stage, or every one was cached).\n").unwrap();
        return;
    }
    if !r.test_counts.is_empty() {
        writeln!(o, "| stage | passed | failed | skipped |").unwrap();
        writeln!(o, "| --- | ---: | ---: | ---: |").unwrap();
        for c in &r.test_counts {
            writeln!(o, "| `{}` | {} | {} | {} |", c.stage, c.passed, c.failed, c.skipped).unwrap();
        }
        o.push('\n');
    }
    let slowest = crate::report::slowest_tests(r, crate::report::SLOWEST_TESTS);
    if slowest.is_empty() {
        writeln!(o, "The test runner reported no per-test times (`cargo test` does not).\n")
            .unwrap();
        return;
    }
    writeln!(o, "### Slowest tests\n").unwrap();
    writeln!(o, "| binary | test | stage | time | share of stage |").unwrap();
    writeln!(o, "| --- | --- | --- | ---: | ---: |").unwrap();
    for t in &slowest {
        let binary = if t.binary.is_empty() { "-".to_string() } else { format!("`{}`", t.binary) };
        writeln!(
            o,
            "| {binary} | `{}` | `{}` | {} | {} |",
            t.test,
            t.stage,
            secs(t.duration),
            percent(t.share(), 1.0)
        )
        .unwrap();
    }
    if r.tests.len() > slowest.len() {
        writeln!(o, "\n{} more tests in `run.json`.", r.tests.len() - slowest.len()).unwrap();
    }
    o.push('\n');
}

/// Each crate's doctests, slowest first: without merging (edition 2024), every doctest
/// is compiled and linked as a program of its own, which is where such a stage's time
/// goes.
fn doctests(o: &mut String, r: &RunRecord) {
    if r.doctests.is_empty() {
        return;
    }
    writeln!(
        o,
        "### Doctests
"
    )
    .unwrap();
    writeln!(o, "| crate | edition | doctests | time | per doctest | merged |").unwrap();
    writeln!(o, "| --- | --- | ---: | ---: | ---: | --- |").unwrap();
    let mut rows: Vec<&crate::record::DoctestTiming> = r.doctests.iter().collect();
    rows.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.crate_name.cmp(&b.crate_name)));
    for d in rows {
        let edition = r.workspace_facts.lib_editions.get(&d.crate_name).map_or("-", |e| e.as_str());
        let per = d.time / d.tests.max(1) as u32;
        let merged = if d.merged { "yes" } else { "no" };
        writeln!(
            o,
            "| `{}` | {edition} | {} | {} | {} | {merged} |",
            d.crate_name,
            d.tests,
            secs(d.time),
            secs(per)
        )
        .unwrap();
    }
    o.push('\n');
}

/// Units the tests compiled in cargo runs of their own: counted, never named, since
/// they are not crates of this workspace.
fn compiled_by_tests(o: &mut String, r: &RunRecord) {
    for n in &r.compiled_by_tests {
        writeln!(
            o,
            "Compiled by tests: {} units ({} compiling) in stage `{}`, by cargo or rustc runs \
             that its tests or build scripts started (another workspace or build directory); \
             they are not this workspace's units, so no table or recommendation uses them.\n",
            n.units,
            secs(n.time),
            n.stage
        )
        .unwrap();
    }
}

/// Units a stage compiled again after the build stage, which should have produced
/// everything later stages use, with why; the first [`LATE_UNITS_SHOWN`] of them.
fn compiled_after_build(o: &mut String, r: &RunRecord) {
    const LATE_UNITS_SHOWN: usize = 10;
    let late = &r.compiled_after_build;
    if late.is_empty() {
        return;
    }
    let time: std::time::Duration = late.iter().map(|u| u.time).sum();
    writeln!(
        o,
        "## Compiled after the build stage
"
    )
    .unwrap();
    writeln!(
        o,
        "{} ({} compiling) compiled again by later stages in the build stage's directory; \
         the build stage is meant to compile everything they use.\n",
        crate::report::count(late.len(), "unit", "units"),
        secs(time)
    )
    .unwrap();
    writeln!(o, "| stage | unit | time | why |\n| --- | --- | ---: | --- |").unwrap();
    for u in late.iter().take(LATE_UNITS_SHOWN) {
        let version = if u.version.is_empty() { String::new() } else { format!(" {}", u.version) };
        writeln!(
            o,
            "| `{}` | `{}{version}` ({} `{}`) | {} | {} |",
            u.stage,
            u.package,
            u.kind,
            u.target,
            secs(u.time),
            u.why
        )
        .unwrap();
    }
    if late.len() > LATE_UNITS_SHOWN {
        writeln!(
            o,
            "\n{} more in `run.json` (`compiled_after_build`).",
            late.len() - LATE_UNITS_SHOWN
        )
        .unwrap();
    }
    o.push('\n');
}

/// The flame graphs `flamegraph` drew of this run's tests, beside the reports.
fn flamegraphs(o: &mut String, r: &RunRecord) {
    if r.flamegraphs.is_empty() {
        return;
    }
    writeln!(o, "Flame graphs:\n").unwrap();
    for f in &r.flamegraphs {
        writeln!(o, "- [`{}`]({}) ({} of CPU)", f.test, f.svg, secs(f.cpu)).unwrap();
    }
    o.push('\n');
}

fn coverage(o: &mut String, r: &RunRecord) {
    writeln!(o, "## Coverage\n").unwrap();
    if r.stages.is_empty() {
        writeln!(o, "No stage finished: this run proved nothing.").unwrap();
    }
    for s in &r.stages {
        let proves =
            if s.proves.is_empty() { "nothing declared".to_string() } else { s.proves.join(", ") };
        let proven = match s.status {
            StageStatus::Succeeded => "proved",
            StageStatus::Cached { .. } => "proved by an earlier run",
            _ => "did NOT prove",
        };
        writeln!(o, "- `{}` {proven}: {proves}", s.id).unwrap();
    }
    if !r.dropped.is_empty() {
        writeln!(o, "\nDropped from the usual CI sequence:\n").unwrap();
        for d in &r.dropped {
            writeln!(o, "- `{}`: {}", d.id, d.reason).unwrap();
        }
    }
    if !r.notes.is_empty() {
        writeln!(o, "\nNotes:\n").unwrap();
        for n in &r.notes {
            writeln!(o, "- {n}").unwrap();
        }
    }
    o.push('\n');
}

fn failures(o: &mut String, r: &RunRecord) {
    let failed: Vec<_> = r
        .stages
        .iter()
        .filter(|s| matches!(s.status, StageStatus::Failed | StageStatus::TimedOut))
        .collect();
    let flaky: Vec<_> = r.stages.iter().filter(|s| !s.flaky_tests.is_empty()).collect();
    if failed.is_empty() && flaky.is_empty() {
        return;
    }
    writeln!(o, "## Failures\n").unwrap();
    for s in failed {
        let exit =
            s.exit_code.map(|c| format!("exit code {c}")).unwrap_or_else(|| "no exit code".into());
        writeln!(o, "### `{}` {} ({exit})\n", s.id, status_text(&s.status)).unwrap();
        writeln!(o, "Command: `{}`\n", s.command).unwrap();
        if !s.failed_tests.is_empty() {
            writeln!(o, "Failed tests:\n").unwrap();
            for t in &s.failed_tests {
                writeln!(o, "- `{t}`").unwrap();
            }
            o.push('\n');
        }
        if let Some(log) = &s.log_path {
            writeln!(o, "Full log: `{log}`\n").unwrap();
        }
        if !s.tail.is_empty() {
            writeln!(o, "Last {} lines of output:\n", s.tail.len()).unwrap();
            // A fence longer than any backtick run in the output keeps it verbatim.
            let fence = "`".repeat(3.max(longest_backtick_run(&s.tail) + 1));
            writeln!(o, "{fence}text").unwrap();
            for line in &s.tail {
                writeln!(o, "{line}").unwrap();
            }
            writeln!(o, "{fence}\n").unwrap();
        }
    }
    for s in flaky {
        writeln!(o, "Flaky in `{}` (failed, then passed on retry):\n", s.id).unwrap();
        for t in &s.flaky_tests {
            writeln!(o, "- `{t}`").unwrap();
        }
        o.push('\n');
    }
}

fn longest_backtick_run(lines: &[String]) -> usize {
    lines.iter().flat_map(|l| l.split(|c| c != '`')).map(str::len).max().unwrap_or(0)
}

fn recommend(o: &mut String, recs: &[Recommendation]) {
    writeln!(o, "## Recommendations\n").unwrap();
    if recs.is_empty() {
        writeln!(o, "None: no measurement of this run points at a change.").unwrap();
        return;
    }
    for (i, r) in recs.iter().enumerate() {
        writeln!(o, "{}. **{}** ({})", i + 1, r.action, r.kind).unwrap();
        writeln!(o, "   Evidence: {}.", r.evidence).unwrap();
    }
}
