//! Where the config is read from, on generated fixtures through real `cargo metadata`:
//! `[workspace.metadata.pipeline-opt]`, a root package's `[package.metadata.pipeline-opt]`
//! or `pipeline-opt.toml`, each validated alike; two places at once is an error.

use expect_test::{Expect, expect};
use pipeline_opt::config::{Config, ConfigPlace};
use pipeline_opt::fixture::FixtureWorkspace;

use crate::support::Fixture;

/// A single-package project: the root manifest is the package, with `package_config`
/// as its `[package.metadata.pipeline-opt]`.
fn single_package(package_config: &str) -> FixtureWorkspace {
    FixtureWorkspace { package_config: Some(package_config.into()), ..Default::default() }
}

/// The config as loaded, or the error with the fixture's root written `$ROOT`.
fn load(ws: &FixtureWorkspace) -> Result<Config, String> {
    let fx = Fixture::write(ws);
    fx.load().config().map_err(|e| fx.redact(&e.to_string()))
}

#[track_caller]
fn check_error(ws: &FixtureWorkspace, expect: Expect) {
    let err = load(ws).expect_err("the config is rejected");
    expect.assert_eq(&err);
}

#[test]
fn the_root_packages_metadata_is_read() {
    let config = load(&single_package(
        "disable = [\"doctest\"]\n[services.db]\nkind = \"postgres\"\nsize = 2\n",
    ))
    .unwrap();
    assert_eq!(config.place, ConfigPlace::PackageMetadata);
    assert_eq!(config.disable, ["doctest"]);
    assert_eq!(config.services["db"].size, 2);
}

#[test]
fn pipeline_opt_toml_at_the_root_is_read() {
    let ws = FixtureWorkspace::chain(1)
        .file("pipeline-opt.toml", "enable = [\"fmt\"]\n[targets]\nrequired = \"30s\"\n");
    let config = load(&ws).unwrap();
    assert_eq!(config.place, ConfigPlace::File);
    assert_eq!(config.enable, ["fmt"]);
    assert_eq!(config.targets.required, Some(std::time::Duration::from_secs(30)));
}

#[test]
fn the_workspace_table_is_still_read_and_named() {
    let config = load(&FixtureWorkspace::chain(1).config("disable = [\"doctest\"]\n")).unwrap();
    assert_eq!(config.place, ConfigPlace::WorkspaceMetadata);
    assert_eq!(config.disable, ["doctest"]);
}

#[test]
fn junk_in_the_root_packages_metadata_is_rejected_naming_the_key() {
    check_error(
        &single_package("tragets = 1\n"),
        expect![
            "invalid `package.metadata.pipeline-opt.tragets` in Cargo.toml: unknown field `tragets`, expected one of `targets`, `disable`, `enable`, `bench-proof`, `test-runner`, `incremental`, `compile-cache`, `stage-timeout`, `stages`, `services`, `cache`, `env`"
        ],
    );
    check_error(
        &single_package("[services.db]\nkind = \"postgres\"\nsize = 0\n"),
        expect![
            "invalid `package.metadata.pipeline-opt.services.db.size` in Cargo.toml: the size must be at least 1"
        ],
    );
    check_error(
        &single_package("[targets]\nrequired = \"4x\"\n"),
        expect![[
            r#"invalid `package.metadata.pipeline-opt.targets.required` in Cargo.toml: `4x` is not a duration (unknown time unit "x", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like "45s" or "2m 30s""#
        ]],
    );
}

#[test]
fn junk_in_pipeline_opt_toml_is_rejected_naming_the_key() {
    let file = |body: &str| FixtureWorkspace::chain(1).file("pipeline-opt.toml", body);
    check_error(
        &file("[services.db]\nkind = \"mysql\"\n"),
        expect![
            "invalid `services.db.kind` in pipeline-opt.toml: unknown variant `mysql`, expected one of `postgres`, `redis`, `command`"
        ],
    );
    check_error(
        &file("[stages.x]\ncommand = []\n"),
        expect![[
            r#"invalid `stages.x.command` in pipeline-opt.toml: the command is empty; give the program and its arguments as a list, e.g. ["cargo", "doc"]"#
        ]],
    );
    check_error(
        &file("disable = [\n"),
        expect![
            "could not read $ROOT/pipeline-opt.toml: line 1: unclosed array, expected `]`; fix the TOML syntax"
        ],
    );
}

#[test]
fn a_config_in_two_places_is_an_error_naming_both() {
    let both = |ws: FixtureWorkspace| {
        let err = load(&ws).expect_err("two places are refused");
        assert!(!err.contains('\n'), "{err}");
        err
    };
    let mut ws = single_package("disable = [\"doctest\"]\n");
    ws.config = Some("disable = [\"fmt\"]\n".into());
    expect!["the pipeline-opt config is in two places, [workspace.metadata.pipeline-opt] in Cargo.toml and [package.metadata.pipeline-opt] in Cargo.toml; keep it in one of them (they are not merged)"]
        .assert_eq(&both(ws));
    expect!["the pipeline-opt config is in two places, [package.metadata.pipeline-opt] in Cargo.toml and pipeline-opt.toml; keep it in one of them (they are not merged)"]
        .assert_eq(&both(single_package("").file("pipeline-opt.toml", "")));
    expect!["the pipeline-opt config is in two places, [workspace.metadata.pipeline-opt] in Cargo.toml and pipeline-opt.toml; keep it in one of them (they are not merged)"]
        .assert_eq(&both(FixtureWorkspace::chain(1).config("").file("pipeline-opt.toml", "")));
}

/// The error planning gives for a config that loads: stage names are checked against
/// the plan, and still named in the place the user wrote them.
#[track_caller]
fn check_plan_error(ws: &FixtureWorkspace, expect: Expect) {
    let fx = Fixture::write(ws);
    let workspace = fx.load();
    let config = workspace.config().expect("the config loads");
    let options = pipeline_opt::plan::PlanOptions::default();
    let err = pipeline_opt::plan::plan(&workspace, &config, &options).expect_err("plan refuses");
    expect.assert_eq(&fx.redact(&err.to_string()));
}

#[test]
fn planning_errors_name_the_place_the_config_is_in() {
    check_plan_error(
        &single_package("disable = [\"lint\"]\n"),
        expect![
            "unknown stage `lint` in `package.metadata.pipeline-opt.disable` in Cargo.toml; known stages: fetch, build, check, test, test-archive, custom-tests, doctest, bench-build, clippy, fmt, doc, services"
        ],
    );
    check_plan_error(
        &FixtureWorkspace::chain(1).file(
            "pipeline-opt.toml",
            "[stages.a]\ncommand = [\"true\"]\ndepends-on = [\"b\"]\n[stages.b]\ncommand = [\"true\"]\ndepends-on = [\"a\"]\n",
        ),
        expect!["stages depend on each other in a cycle: a -> b -> a; remove one `depends-on` entry in [stages] in pipeline-opt.toml"],
    );
    check_plan_error(
        &FixtureWorkspace::chain(1).file(
            "pipeline-opt.toml",
            "[stages.a]\ncommand = [\"true\"]\ndepends-on = [\"nope\"]\n",
        ),
        expect![
            "unknown stage `nope` in `stages.a.depends-on` in pipeline-opt.toml; known stages: a, build, doctest, fetch, test"
        ],
    );
}

#[test]
fn a_disabled_stage_names_the_place_it_was_disabled_in() {
    let reason = |ws: &FixtureWorkspace| {
        let fx = Fixture::write(ws);
        let workspace = fx.load();
        let config = workspace.config().unwrap();
        // With nextest, doctests are a stage of their own, which `disable` drops.
        let options = pipeline_opt::plan::PlanOptions { nextest: true, ..Default::default() };
        let plan = pipeline_opt::plan::plan(&workspace, &config, &options).unwrap();
        let dropped = plan.dropped.iter().find(|d| d.id == "doctest");
        let dropped = dropped.unwrap_or_else(|| panic!("doctest not dropped: {:?}", plan.dropped));
        dropped.reason.to_string()
    };
    let disable = "disable = [\"doctest\"]\n";
    assert_eq!(
        reason(&FixtureWorkspace::chain(1).config(disable)),
        "disabled in [workspace.metadata.pipeline-opt] `disable`"
    );
    assert_eq!(
        reason(&single_package(disable)),
        "disabled in [package.metadata.pipeline-opt] `disable`"
    );
    assert_eq!(
        reason(&FixtureWorkspace::chain(1).file("pipeline-opt.toml", disable)),
        "disabled in pipeline-opt.toml `disable`"
    );
}
