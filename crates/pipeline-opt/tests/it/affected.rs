//! Affected-only runs: files changed since a real git ref → owning packages → their
//! reverse dependencies, and root inputs widening to everything.

use pipeline_opt::affected::{self, Affected};
use pipeline_opt::fixture::{FixtureCrate, FixtureWorkspace};
use pipeline_opt::plan::CargoArgs;
use pipeline_opt::workspace::Workspace;
use xshell::{Shell, cmd};

use crate::cache::Repo;

fn diamond_repo() -> Repo {
    let repo = Repo::new(FixtureWorkspace::diamond().file("docs/notes.md", "notes"));
    repo.git(&["tag", "base"]);
    repo
}

fn since(repo: &Repo, git_ref: &str) -> Affected {
    let ws = Workspace::load(Some(&repo.manifest())).unwrap();
    affected::since(&ws, git_ref, &[]).unwrap()
}

#[test]
fn committed_unstaged_and_untracked_changes_reach_their_dependents() {
    let repo = diamond_repo();
    repo.append("crates/left/src/lib.rs", "\npub fn l() {}\n");
    repo.commit_all("left changed");
    let a = since(&repo, "base");
    assert_eq!(a.changed_packages, ["left"]);
    assert_eq!(a.packages, ["left", "top"]);
    assert_eq!(a.widened, None);
    assert_eq!(a.note(), "--since base: left changed; with their dependents: left, top");

    // Unstaged and untracked files count too.
    repo.append("crates/top/src/lib.rs", "\npub fn t() {}\n");
    repo.write("crates/right/src/new.rs", "pub fn n() {}\n");
    let a = since(&repo, "base");
    assert_eq!(a.changed_packages, ["left", "right", "top"]);
    assert_eq!(a.packages, ["left", "right", "top"]);

    // Against HEAD only the working-tree changes remain.
    let a = since(&repo, "HEAD");
    assert_eq!(a.changed_packages, ["right", "top"]);
    let narrowed = a.narrow(&CargoArgs::default()).unwrap();
    assert_eq!(narrowed.packages, ["right", "top"]);
    // `--exclude` stays out of the narrowed selection, which names the rest instead.
    let base = CargoArgs { exclude: vec!["top".into()], ..CargoArgs::default() };
    let narrowed = a.narrow(&base).unwrap();
    assert_eq!((narrowed.packages, narrowed.exclude), (vec!["right".to_string()], vec![]));
    let only_top =
        CargoArgs { exclude: vec!["right".into(), "top".into()], ..CargoArgs::default() };
    assert_eq!(a.narrow(&only_top), None, "every affected package is excluded");
}

#[test]
fn a_change_to_the_root_crate_reaches_everything_above_it() {
    let repo = diamond_repo();
    repo.append("crates/base/src/lib.rs", "\npub fn b() {}\n");
    assert_eq!(since(&repo, "base").packages, ["base", "left", "right", "top"]);
}

#[test]
fn root_inputs_widen_to_everything_and_say_why() {
    let repo = diamond_repo();
    repo.append("Cargo.toml", "\n# a comment\n");
    let a = since(&repo, "base");
    assert_eq!(a.packages, ["base", "left", "right", "top"]);
    assert_eq!(a.widened.as_deref(), Some("Cargo.toml is a root input of every package"));
    assert_eq!(a.narrow(&CargoArgs::default()).unwrap(), CargoArgs::default());
    assert!(a.note().contains("everything is affected"), "{}", a.note());

    let repo = diamond_repo();
    std::fs::create_dir_all(repo.root.join(".cargo")).unwrap();
    repo.write(".cargo/config.toml", "[build]\n");
    let a = since(&repo, "base");
    assert_eq!(a.widened.as_deref(), Some(".cargo/config.toml is a root input of every package"));
}

#[test]
fn a_file_outside_every_package_widens_until_a_build_shows_who_reads_it() {
    let repo = diamond_repo();
    repo.write("docs/notes.md", "changed");
    let a = since(&repo, "base");
    assert!(a.widened.as_deref().is_some_and(|w| w.starts_with("docs/notes.md lies outside")));

    // After a build, dep-info shows that no package reads it.
    let sh = Shell::new().unwrap();
    let manifest = repo.manifest();
    let mut c = cmd!(sh, "cargo build --offline --quiet --manifest-path {manifest}");
    for var in pipeline_opt::toolchain::inherited_cargo_vars() {
        c = c.env_remove(var);
    }
    c.run().unwrap();
    let ws = Workspace::load(Some(&repo.manifest())).unwrap();
    let a = affected::since(&ws, "base", &[]).unwrap();
    assert_eq!(a.widened, None);
    assert!(a.packages.is_empty());
    assert_eq!(a.notes, ["docs/notes.md changed, but no package reads it"]);
    assert_eq!(a.narrow(&CargoArgs::default()), None, "nothing to build");
}

#[test]
fn an_unknown_ref_is_a_clear_error() {
    let repo = Repo::new(FixtureWorkspace::new(vec![FixtureCrate::new("one")]));
    let ws = Workspace::load(Some(&repo.manifest())).unwrap();
    let err = affected::since(&ws, "no-such-ref", &[]).unwrap_err().to_string();
    assert!(err.contains("`no-such-ref` a commit, branch or tag"), "{err}");
}
