//! The naive sequence: what an ordinary CI job runs, one command after another in one
//! build directory. `--against-naive` runs it beside the real plan and compares.

use camino::Utf8Path;

use super::command::{CargoInvocation, Layout, Selection, Subcommand, TargetSelector};
use super::{BuildProfile, CargoArgs, LockUse, Plan, Proof, Stage, StageCommand, StageKind};
use crate::config::Config;
use crate::workspace::Workspace;

/// One step of the sequence: its id, command, whether it compiles the selection, and
/// what its success proves.
struct Step {
    id: &'static str,
    subcommand: Subcommand,
    all_targets: bool,
    compiles: bool,
    proves: Vec<Proof>,
}

fn steps() -> [Step; 5] {
    let step = |id, subcommand, compiles, proves| Step {
        id,
        subcommand,
        all_targets: false,
        compiles,
        proves,
    };
    let dev = BuildProfile::Dev;
    [
        step("naive-fetch", Subcommand::Fetch, false, vec![Proof::DependenciesResolve]),
        step("naive-build", Subcommand::Build, true, vec![Proof::Build(dev)]),
        Step {
            all_targets: true,
            ..step(
                "naive-check",
                Subcommand::Check,
                true,
                vec![Proof::CheckAllTargets { profile: dev, except_benches: false }],
            )
        },
        step("naive-test", Subcommand::Test, true, vec![Proof::TestsPass, Proof::DoctestsPass]),
        step("naive-bench", Subcommand::BenchNoRun, true, vec![Proof::BenchNoRun]),
    ]
}

/// The naive sequence for `workspace` with the user's cargo flags, building in
/// `target_dir`.
pub fn naive(
    workspace: &Workspace,
    config: &Config,
    cargo: &CargoArgs,
    target_dir: &Utf8Path,
) -> Plan {
    let root = &workspace.root;
    let mut stages: Vec<Stage> = Vec::new();
    for step in steps() {
        let command = StageCommand::cargo(root, step_command(&step, workspace, cargo, target_dir));
        stages.push(Stage {
            id: step.id.into(),
            kind: StageKind::Custom,
            command,
            depends_on: stages.last().map(|s| s.id.clone()).into_iter().collect(),
            reason: "the naive sequence".into(),
            proves: step.proves,
            build_dir: Some(target_dir.to_owned()),
            lock: LockUse::Exclusive,
            cpu_heavy: step.compiles,
            timeout: config.stage_timeout,
        });
    }
    Plan { workspace_root: root.clone(), stages, dropped: Vec::new(), notes: Vec::new() }
}

fn step_command(
    step: &Step,
    workspace: &Workspace,
    cargo: &CargoArgs,
    target_dir: &Utf8Path,
) -> CargoInvocation {
    let mut c = CargoInvocation::new(step.subcommand, workspace.manifest_path.as_str());
    c.layout = Layout::Naive;
    if step.all_targets {
        c.targets = vec![TargetSelector::All];
    }
    c.selection = if step.compiles {
        cargo.selection()
    } else {
        Selection {
            locked: cargo.locked,
            frozen: cargo.frozen,
            target: cargo.target.clone(),
            ..Selection::default()
        }
    };
    // `cargo bench` builds in the bench profile whatever the user chose.
    if step.compiles && step.subcommand != Subcommand::BenchNoRun {
        c.profile = cargo.profile.clone();
    }
    // A flag, so that tests running cargo themselves do not inherit the directory.
    // `cargo fetch` builds nothing and takes no such flag.
    if step.subcommand != Subcommand::Fetch {
        c.target_dir = Some(target_dir.to_owned());
    }
    c
}
