//! Facts about the workspace that the reports need beyond the measurements: its resolved
//! dependency graph and the debug setting of its test profile, measured when a run loads
//! its inputs and saved in the run record ([`WorkspaceFacts`]), so that a saved record
//! renders the same reports without cargo. Pure functions; nothing here reads a file.

use std::collections::{BTreeMap, BTreeSet};

pub use crate::record::{DebugLevel, ResolvedPackage, TestDebug, WorkspaceFacts};

// The record keeps the types; measuring them is this module's.
impl WorkspaceFacts {
    /// The packages of `metadata`'s resolve with the features each is built with, and
    /// the test profile's debug setting from the root manifest's text (`None` when it
    /// could not be read). Best effort: what is missing is left empty, and the
    /// recommendations that need it are not made.
    pub fn new(metadata: &cargo_metadata::Metadata, root_manifest: Option<&str>) -> WorkspaceFacts {
        let test_debug = root_manifest.and_then(test_debug_from_manifest);
        WorkspaceFacts {
            packages: resolved_packages(metadata),
            test_debug,
            nextest_missing: false,
            lib_editions: lib_editions(metadata),
        }
    }
}

/// The edition of each member's library, by crate name.
fn lib_editions(metadata: &cargo_metadata::Metadata) -> BTreeMap<String, String> {
    metadata
        .workspace_packages()
        .iter()
        .flat_map(|p| p.targets.iter())
        .filter(|t| t.is_lib() || t.is_proc_macro())
        .map(|t| (t.name.replace('-', "_"), t.edition.as_str().to_string()))
        .collect()
}

/// The packages of `metadata`'s resolve with the features each is built with.
fn resolved_packages(metadata: &cargo_metadata::Metadata) -> Vec<ResolvedPackage> {
    let Some(resolve) = &metadata.resolve else { return Vec::new() };
    let by_id: BTreeMap<_, _> = metadata.packages.iter().map(|p| (&p.id, p)).collect();
    let member_deps: BTreeSet<_> = resolve
        .nodes
        .iter()
        .filter(|node| metadata.workspace_members.contains(&node.id))
        .flat_map(|node| node.deps.iter().map(|d| &d.pkg))
        .collect();
    resolve
        .nodes
        .iter()
        .filter_map(|node| {
            let p = by_id.get(&node.id)?;
            Some(ResolvedPackage {
                name: p.name.to_string(),
                version: p.version.to_string(),
                features: node.features.iter().map(|f| f.to_string()).collect(),
                member_dep: member_deps.contains(&node.id),
            })
        })
        .collect()
}

/// The `debug` setting of the profile `cargo test` builds with: `[profile.test]`, which
/// inherits `[profile.dev]`, whose default is full debug info.
pub fn test_debug_from_manifest(manifest: &str) -> Option<TestDebug> {
    let doc: toml::Table = manifest.parse().ok()?;
    let profile = doc.get("profile").and_then(|p| p.as_table());
    for name in ["test", "dev"] {
        let Some(value) = profile.and_then(|p| p.get(name)).and_then(|t| t.get("debug")) else {
            continue;
        };
        let level = match value {
            toml::Value::Boolean(true) | toml::Value::Integer(2) => DebugLevel::Full,
            toml::Value::Boolean(false) | toml::Value::Integer(0) => DebugLevel::None,
            toml::Value::Integer(1) => DebugLevel::Limited,
            toml::Value::String(s) => match s.as_str() {
                "full" => DebugLevel::Full,
                "limited" => DebugLevel::Limited,
                "line-tables-only" => DebugLevel::LineTablesOnly,
                "line-directives-only" => DebugLevel::LineDirectivesOnly,
                "none" => DebugLevel::None,
                _ => return None,
            },
            _ => return None,
        };
        return Some(TestDebug { level, source: format!("[profile.{name}] debug = {value}") });
    }
    Some(TestDebug {
        level: DebugLevel::Full,
        source: "[profile.dev] debug is unset, and cargo's default is full debug info".into(),
    })
}
