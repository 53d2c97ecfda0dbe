//! What a run measured. The orchestrator emits [`Event`]s; [`PipelineProfiler`] turns
//! them into a [`RunRecord`] (per-stage [`StageMetrics`], per-crate compile timings, the
//! measured critical path), which every reporter renders. The record's types live in
//! [`crate::record`], below every layer that reads them.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8PathBuf;

use crate::plan::Plan;
use crate::record::{
    CompiledByTests, CpuSample, CrateTiming, CriticalStep, DoctestTiming, Event, LateReason,
    LateUnit, LowerBound, RunKind, RunOutcome, RunRecord, SCHEMA_VERSION, StageMetrics,
    StageStatus, TestCounts, TestTiming,
};

/// Consumes events and builds the run record.
#[derive(Debug, Default)]
pub struct PipelineProfiler {
    pub stages: Vec<StageMetrics>,
    pub crates: Vec<CrateTiming>,
    pub compiled_by_tests: Vec<CompiledByTests>,
    pub tests: Vec<TestTiming>,
    pub test_counts: Vec<TestCounts>,
    pub doctests: Vec<DoctestTiming>,
    /// Per stage, the crate whose `Doc-tests` output is being read.
    doctest_crate: BTreeMap<String, String>,
    pub cpu_samples: Vec<CpuSample>,
    pub outcome: Option<RunOutcome>,
    pub total: Duration,
}

/// What the record says about the run besides what the events carry.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    pub started_at: std::time::SystemTime,
    pub workspace_root: Utf8PathBuf,
    pub command: String,
    pub plan: crate::plan::Plan,
    pub cores: usize,
    pub targets: crate::record::PerformanceTargets,
}

impl PipelineProfiler {
    pub fn new() -> PipelineProfiler {
        PipelineProfiler::default()
    }

    pub fn observe(&mut self, ev: &Event) {
        match ev {
            Event::StageFinished(m) => self.stages.push(m.clone()),
            Event::CrateCompiled(c) => self.crates.push(c.clone()),
            Event::CompiledByTests(c) => {
                let d = c.end.saturating_sub(c.start);
                match self.compiled_by_tests.iter_mut().find(|n| n.stage == c.stage) {
                    Some(n) => {
                        n.units += 1;
                        n.time += d;
                    }
                    None => self.compiled_by_tests.push(CompiledByTests {
                        stage: c.stage.clone(),
                        units: 1,
                        time: d,
                    }),
                }
            }
            Event::TestFinished(t) => {
                // A retried test counts with its last try, which decided its outcome.
                self.tests.retain(|o| !(o.stage == t.stage && o.name == t.name));
                self.tests.push(t.clone());
            }
            Event::CpuSampled(c) => self.cpu_samples.push(*c),
            Event::RunFinished { outcome, total } => {
                self.outcome = Some(*outcome);
                self.total = *total;
            }
            Event::StageOutput { id, line } => {
                self.observe_doctests(id, line);
                if let Some(found) = TestCounts::in_line(line) {
                    match self.test_counts.iter_mut().find(|c| c.stage == *id) {
                        Some(c) => c.add(found),
                        None => {
                            let mut c = TestCounts { stage: id.clone(), ..Default::default() };
                            c.add(found);
                            self.test_counts.push(c);
                        }
                    }
                }
            }
            Event::RunStarted { .. } | Event::StageStarted { .. } => {}
        }
    }

    /// `cargo test --doc` output: `Doc-tests NAME`, then libtest's `test result:` line
    /// with its time, then with merged doctests rustdoc's `all doctests ran in`.
    fn observe_doctests(&mut self, stage: &str, line: &str) {
        if let Some(name) = DoctestTiming::started_by(line) {
            self.doctest_crate.insert(stage.to_string(), name);
            return;
        }
        if let Some(time) = DoctestTiming::merged_in(line) {
            if let Some(last) = self.doctests.iter_mut().rev().find(|d| d.stage == stage) {
                last.time = time;
                last.merged = true;
            }
            return;
        }
        let Some(crate_name) = self.doctest_crate.get(stage) else { return };
        let Some((_, passed, failed, _)) = TestCounts::in_line(line) else { return };
        let Some(time) = DoctestTiming::finished_in(line) else { return };
        // A crate with none (or whose doctests the cache proved) adds nothing to tell.
        if passed + failed > 0 {
            self.doctests.push(DoctestTiming {
                stage: stage.to_string(),
                crate_name: crate_name.clone(),
                tests: passed + failed,
                time,
                merged: false,
            });
        }
    }

    /// The run record: stages in plan order, the critical path, the verdict.
    pub fn into_record(self, ctx: RunContext) -> RunRecord {
        let order: Vec<&str> = ctx.plan.stages.iter().map(|s| s.id.as_str()).collect();
        let mut stages = self.stages;
        stages.sort_by_key(|s| order.iter().position(|o| *o == s.id).unwrap_or(usize::MAX));
        let mut crates = self.crates;
        crates.sort_by_key(|a| a.start);
        let critical_path = critical_path(&ctx.plan, &stages, &crates);
        let compiled_after_build = compiled_after_build(&ctx.plan, &stages, &crates);
        let cpu: Duration = stages.iter().map(|s| s.cpu_user + s.cpu_system).sum();
        let lower_bound = lower_bound(&ctx.plan, &stages, cpu, ctx.cores);
        let idle_cpu = (self.total * ctx.cores as u32).saturating_sub(cpu);
        let verdict = ctx.targets.verdict(self.total, &stages);
        RunRecord {
            schema_version: SCHEMA_VERSION,
            run_id: ctx.run_id,
            started_at: humantime::format_rfc3339_seconds(ctx.started_at).to_string(),
            workspace_root: ctx.workspace_root,
            command: ctx.command,
            kind: RunKind::default(),
            outcome: self.outcome.unwrap_or(RunOutcome::Interrupted),
            total: self.total,
            stages,
            crates,
            critical_path,
            dropped: ctx.plan.dropped.iter().map(crate::plan::Dropped::to_record).collect(),
            notes: ctx.plan.notes.clone(),
            cores: ctx.cores,
            targets: ctx.targets,
            verdict,
            naive: None,
            tests: self.tests,
            idle_cpu,
            cache: Default::default(),
            cpu_samples: self.cpu_samples,
            explore: None,
            test_settings: Vec::new(),
            compiled_by_tests: self.compiled_by_tests,
            compiled_after_build,
            flamegraphs: Vec::new(),
            test_counts: self.test_counts,
            workspace_facts: Default::default(),
            lower_bound,
            shards: None,
            doctests: self.doctests,
            compile_cache: None,
        }
    }
}

/// The units that the test and doctest stages compiled in the build stage's directory
/// after the build stage succeeded in this run, each matched with the build stage's
/// unit of the same package, version, target and kind to tell why: none there, another
/// unit (cargo's metadata differs: features, profile or target), the same unit with
/// other flags, or the same unit with the same arguments (an input changed).
pub fn compiled_after_build(
    plan: &Plan,
    stages: &[StageMetrics],
    crates: &[CrateTiming],
) -> Vec<LateUnit> {
    use crate::plan::StageKind;
    let Some(build) = plan.stages.iter().find(|s| s.kind == StageKind::Build) else {
        return Vec::new();
    };
    let built =
        stages.iter().any(|m| m.id == build.id && matches!(m.status, StageStatus::Succeeded));
    if !built {
        return Vec::new();
    }
    let later: Vec<&str> = plan
        .stages
        .iter()
        .filter(|s| {
            matches!(s.kind, StageKind::Test | StageKind::CustomTests | StageKind::Doctest)
                && s.build_dir == build.build_dir
        })
        .map(|s| s.id.as_str())
        .collect();
    let in_build: Vec<&CrateTiming> = crates.iter().filter(|c| c.stage == build.id).collect();
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    crates
        .iter()
        .filter(|c| later.contains(&c.stage.as_str()))
        .map(|c| {
            let same = in_build.iter().find(|b| {
                b.package == c.package
                    && b.version == c.version
                    && b.target == c.target
                    && b.kind == c.kind
            });
            let why = match same {
                None => LateReason::NotInBuild,
                Some(b) if b.metadata != c.metadata => LateReason::OtherSettings {
                    only_in_build: only(&b.settings, &c.settings),
                    only_here: only(&c.settings, &b.settings),
                },
                Some(b) if b.settings != c.settings => LateReason::OtherFlags {
                    only_in_build: only(&b.settings, &c.settings),
                    only_here: only(&c.settings, &b.settings),
                },
                Some(_) => LateReason::InputChanged,
            };
            LateUnit {
                stage: c.stage.clone(),
                package: c.package.clone(),
                version: c.version.clone(),
                target: c.target.clone(),
                kind: c.kind.clone(),
                time: c.end.saturating_sub(c.start),
                why,
            }
        })
        .collect()
}

/// The longest chain of dependent stages at their measured walls (a stage that did not
/// run counts 0), and the CPU work over `cores`; `None` when no stage ran.
fn lower_bound(
    plan: &Plan,
    stages: &[StageMetrics],
    cpu_work: Duration,
    cores: usize,
) -> Option<LowerBound> {
    let wall = |id: &str| stages.iter().find(|s| s.id == id).map_or(Duration::ZERO, |s| s.wall);
    if stages.iter().all(|s| s.wall.is_zero()) {
        return None;
    }
    // Longest chain ending at each stage, memoised; the plan has no cycles.
    let mut ends: BTreeMap<&str, (Duration, Vec<String>)> = BTreeMap::new();
    fn chain_to<'p>(
        id: &'p str,
        plan: &'p Plan,
        wall: &dyn Fn(&str) -> Duration,
        ends: &mut BTreeMap<&'p str, (Duration, Vec<String>)>,
    ) -> (Duration, Vec<String>) {
        if let Some(done) = ends.get(id) {
            return done.clone();
        }
        let deps = plan.stages.iter().find(|s| s.id == id).map(|s| &s.depends_on);
        let mut best = (Duration::ZERO, Vec::new());
        for dep in deps.into_iter().flatten() {
            if plan.stages.iter().any(|s| &s.id == dep) {
                let c = chain_to(dep, plan, wall, ends);
                if c.0 > best.0 {
                    best = c;
                }
            }
        }
        best.0 += wall(id);
        best.1.push(id.to_string());
        ends.insert(id, best.clone());
        best
    }
    let (chain, chain_stages) =
        plan.stages.iter().map(|s| chain_to(&s.id, plan, &wall, &mut ends)).max_by_key(|c| c.0)?;
    let cpu = cpu_work / cores.max(1) as u32;
    Some(LowerBound { chain, chain_stages, cpu_work, cpu })
}

/// The chain that set the total: from the stage that finished last, back through the
/// dependency (or the earlier user of the same build directory) that finished last
/// before it started; inside each stage on the chain, the crate units that did the same
/// (the unit that ended last, then the one that ended last before it started). The
/// crate chain is measured, not derived from the dependency graph: it names what the
/// stage was waiting on at each moment.
pub fn critical_path(
    plan: &crate::plan::Plan,
    stages: &[StageMetrics],
    crates: &[CrateTiming],
) -> Vec<CriticalStep> {
    let ran = |s: &&StageMetrics| !matches!(s.status, StageStatus::Skipped { .. });
    let end = |s: &StageMetrics| s.start + s.wall;
    let Some(mut cur) = stages.iter().filter(ran).max_by_key(|s| end(s)) else {
        return Vec::new();
    };
    let slack = Duration::from_millis(50);
    let mut chain = vec![cur];
    loop {
        let stage = plan.stage(&cur.id);
        let dir = stage.and_then(|s| s.build_dir.as_ref());
        let before = |s: &&StageMetrics| {
            s.id != cur.id && end(s) <= cur.start + slack && !chain.iter().any(|c| c.id == s.id)
        };
        // What `cur` waited for: a stage that ended just as it started (a dependency,
        // the build-directory lock or the cores it needed), else its latest dependency
        // or earlier user of its build directory.
        let released_it = stages
            .iter()
            .filter(ran)
            .filter(before)
            .filter(|s| end(s) + slack >= cur.start)
            .max_by_key(|s| end(s));
        let pred = released_it.or_else(|| {
            stages
                .iter()
                .filter(ran)
                .filter(before)
                .filter(|s| {
                    stage.is_some_and(|st| st.depends_on.contains(&s.id))
                        || (dir.is_some()
                            && plan.stage(&s.id).and_then(|p| p.build_dir.as_ref()) == dir)
                })
                .max_by_key(|s| end(s))
        });
        match pred {
            Some(p) if !chain.iter().any(|c| c.id == p.id) => {
                chain.push(p);
                cur = p;
            }
            _ => break,
        }
    }
    chain.reverse();
    let mut out = Vec::new();
    for s in chain {
        out.push(CriticalStep {
            kind: "stage".into(),
            name: s.id.clone(),
            start: s.start,
            end: end(s),
        });
        let units: Vec<&CrateTiming> = crates.iter().filter(|c| c.stage == s.id).collect();
        let mut unit_chain = Vec::new();
        let mut cur = units.iter().max_by_key(|c| c.end).copied();
        while let Some(u) = cur {
            unit_chain.push(u);
            cur = units
                .iter()
                .filter(|c| c.end <= u.start + Duration::from_millis(5) && !std::ptr::eq(**c, u))
                .max_by_key(|c| c.end)
                .copied();
        }
        unit_chain.reverse();
        for u in unit_chain {
            out.push(CriticalStep {
                kind: "crate".into(),
                name: format!("{} ({} {})", u.package, u.kind, u.target),
                start: u.start,
                end: u.end,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LockUse, Plan, Stage, StageCommand, StageKind};

    fn stage(id: &str, deps: &[&str]) -> Stage {
        Stage {
            id: id.into(),
            kind: StageKind::Custom,
            command: StageCommand::argv("true", vec![], "/".into()),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            reason: String::new(),
            proves: vec![],
            build_dir: None,
            lock: LockUse::Exclusive,
            cpu_heavy: true,
            timeout: None,
        }
    }

    fn ran(id: &str, start: u64, end: u64) -> StageMetrics {
        StageMetrics {
            id: id.into(),
            command: String::new(),
            status: StageStatus::Succeeded,
            start: Duration::from_secs(start),
            wall: Duration::from_secs(end - start),
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            peak_rss_kib: 0,
            exit_code: Some(0),
            log_path: None,
            tail: vec![],
            failed_tests: vec![],
            flaky_tests: vec![],
            proves: vec![],
            kind: Default::default(),
            profile: None,
        }
    }

    #[test]
    fn critical_path_follows_what_each_stage_waited_for() {
        let plan = Plan {
            workspace_root: "/".into(),
            stages: vec![
                stage("fetch", &[]),
                stage("build", &["fetch"]),
                stage("bench-build", &["fetch"]),
                stage("test", &["build"]),
            ],
            dropped: vec![],
            notes: vec![],
        };
        // bench-build only depends on fetch but waited for build's cores.
        let stages = [
            ran("fetch", 0, 1),
            ran("build", 1, 10),
            ran("bench-build", 10, 15),
            ran("test", 10, 12),
        ];
        let crates = [CrateTiming {
            package: "a".into(),
            version: "0.1.0".into(),
            target: "a".into(),
            kind: "lib".into(),
            stage: "build".into(),
            start: Duration::from_secs(2),
            end: Duration::from_secs(9),
            metadata: String::new(),
            settings: Vec::new(),
        }];
        let path: Vec<String> = critical_path(&plan, &stages, &crates)
            .into_iter()
            .map(|c| format!("{} {}", c.kind, c.name))
            .collect();
        assert_eq!(path, ["stage fetch", "stage build", "crate a (lib a)", "stage bench-build"]);

        // The lower bound ignores that wait: bench-build could have run beside build,
        // so the longest chain is fetch -> build -> test (1 + 9 + 2 s), not the 15 s the
        // run took; 30 CPU-seconds over 4 cores is 7.5 s, so the chain binds.
        let mut with_cpu = stages.clone();
        with_cpu[1].cpu_user = Duration::from_secs(30);
        let cpu = Duration::from_secs(30);
        let b = lower_bound(&plan, &with_cpu, cpu, 4).expect("stages ran");
        assert_eq!(b.chain, Duration::from_secs(12));
        assert_eq!(b.chain_stages, ["fetch", "build", "test"]);
        assert_eq!(b.cpu, Duration::from_millis(7_500));
        assert_eq!(b.bound(), Duration::from_secs(12));
        // On one core the CPU work binds instead.
        assert_eq!(lower_bound(&plan, &with_cpu, cpu, 1).unwrap().bound(), cpu);
        // Nothing ran (all cached): no bound to speak of.
        let cached: Vec<StageMetrics> = stages.iter().map(|s| ran(&s.id, 0, 0)).collect();
        assert!(lower_bound(&plan, &cached, Duration::ZERO, 4).is_none());
    }

    fn unit(stage: &str, package: &str, metadata: &str, settings: &[&str]) -> CrateTiming {
        CrateTiming {
            package: package.into(),
            version: "0.1.0".into(),
            target: package.into(),
            kind: "lib".into(),
            stage: stage.into(),
            start: Duration::from_secs(1),
            end: Duration::from_secs(3),
            metadata: metadata.into(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn units_compiled_after_the_build_stage_say_why() {
        let on_dir = |mut s: Stage, kind: StageKind, dir: &str| {
            s.kind = kind;
            s.build_dir = Some(dir.into());
            s
        };
        let plan = Plan {
            workspace_root: "/".into(),
            stages: vec![
                on_dir(stage("build", &[]), StageKind::Build, "/t"),
                on_dir(stage("test", &["build"]), StageKind::Test, "/t"),
                on_dir(stage("doctest", &["build"]), StageKind::Doctest, "/t"),
                // A directory of its own: compiling there is its job.
                on_dir(stage("bench-build", &[]), StageKind::BenchBuild, "/b"),
            ],
            dropped: vec![],
            notes: vec![],
        };
        let stages = [ran("build", 0, 5), ran("test", 5, 9), ran("doctest", 5, 9)];
        let base = ["--edition 2021", "-C debuginfo=2"];
        let crates = [
            unit("build", "feat", "m1", &base),
            unit("build", "flags", "m2", &base),
            unit("build", "input", "m3", &base),
            unit(
                "test",
                "feat",
                "m9",
                &["--cfg feature=\"x\"", "--edition 2021", "-C debuginfo=2"],
            ),
            unit("test", "flags", "m2", &["--cfg late", "--edition 2021", "-C debuginfo=2"]),
            unit("doctest", "input", "m3", &base),
            unit("test", "extra", "m4", &base),
            unit("bench-build", "feat", "m5", &base),
        ];
        let late = compiled_after_build(&plan, &stages, &crates);
        let why: Vec<(&str, &str, &LateReason)> =
            late.iter().map(|u| (u.stage.as_str(), u.package.as_str(), &u.why)).collect();
        assert_eq!(
            why,
            [
                (
                    "test",
                    "feat",
                    &LateReason::OtherSettings {
                        only_in_build: vec![],
                        only_here: vec!["--cfg feature=\"x\"".into()]
                    }
                ),
                (
                    "test",
                    "flags",
                    &LateReason::OtherFlags {
                        only_in_build: vec![],
                        only_here: vec!["--cfg late".into()]
                    }
                ),
                ("doctest", "input", &LateReason::InputChanged),
                ("test", "extra", &LateReason::NotInBuild),
            ]
        );
        assert_eq!(late[0].time, Duration::from_secs(2));

        // A build stage that failed (or was cached) proves nothing about what it left.
        let mut failed = stages.clone();
        failed[0].status = StageStatus::Failed;
        assert!(compiled_after_build(&plan, &failed, &crates).is_empty());
    }
}
