//! `init-xtask`: writes into a user's workspace an `xtask` crate whose `main` is this
//! library's command line, the `cargo xtask` alias in `.cargo/config.toml` and the
//! workspace membership. Every file is worked out before any is written, so a refusal
//! (a file of the user's that differs) leaves the workspace as it was; a second run
//! finds nothing to change. Manifests are edited with toml_edit to keep their layout.

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

use crate::exit;
use crate::workspace::Workspace;

/// What `cargo xtask` runs, as cargo's own xtask convention writes it.
const ALIAS: &str = "run --quiet --package xtask --";

const MAIN_RS: &str = "\
//! `cargo xtask`: pipeline-opt's commands (plan, optimize, check, ...) for this workspace.

fn main() -> std::process::ExitCode {
    pipeline_opt::cli::main()
}
";

/// Where the generated xtask takes pipeline-opt from.
enum Source {
    Path(Utf8PathBuf),
    Git(String),
}

/// One file of the set-up: its path under the workspace root and its new contents, or
/// `None` when it already says what it should.
struct Edit {
    path: &'static str,
    what: &'static str,
    contents: Option<String>,
}

impl super::flags::InitXtask {
    pub(crate) fn run(self) -> Result<i32> {
        let source = match (&self.path, self.git) {
            (Some(_), Some(_)) => bail!("pass --path or --git, not both"),
            (Some(dir), None) => Source::Path(pipeline_opt_dir(&super::utf8_path(dir)?)?),
            (None, Some(url)) => Source::Git(url),
            (None, None) => Source::Path(pipeline_opt_dir(Utf8Path::new(env!("CARGO_MANIFEST_DIR"))).context(
                "the sources this binary was built from are gone; pass --path DIR or --git URL to say where pipeline-opt comes from",
            )?),
        };
        let manifest = super::utf8(self.manifest_path.as_ref())?;
        let root = Workspace::load(manifest.as_deref())?.root;
        let edits = edits(&root, &source)?;
        if edits.iter().all(|e| e.contents.is_none()) {
            outln!("nothing to change: {root} already has the xtask; run `cargo xtask --help`");
            return Ok(exit::OK);
        }
        for edit in &edits {
            match &edit.contents {
                Some(contents) => {
                    crate::report::write_atomic(&root.join(edit.path), contents.as_bytes())?;
                    outln!("wrote {} ({})", edit.path, edit.what);
                }
                None => outln!("unchanged {}", edit.path),
            }
        }
        outln!("done: run `cargo xtask optimize` in {root}");
        Ok(exit::OK)
    }
}

/// `dir` as an absolute path to the pipeline-opt crate, checked to be one.
fn pipeline_opt_dir(dir: &Utf8Path) -> Result<Utf8PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!("--path {dir}: no Cargo.toml there; pass the directory of the pipeline-opt crate")
    })?;
    let doc: DocumentMut =
        text.parse().with_context(|| format!("--path {dir}: {manifest} does not parse"))?;
    if doc.get("package").and_then(|p| p.get("name")).and_then(Item::as_str) != Some("pipeline-opt")
    {
        bail!(
            "--path {dir}: its Cargo.toml is not the pipeline-opt crate; pass crates/pipeline-opt of its repository"
        );
    }
    dir.canonicalize_utf8().with_context(|| format!("--path {dir}"))
}

/// Every file of the set-up, in the order they are written; fails naming the first file
/// of the user's that differs from what would be written.
fn edits(root: &Utf8Path, source: &Source) -> Result<Vec<Edit>> {
    let new_file = |path: &'static str, what, wanted: String| -> Result<Edit> {
        match read(&root.join(path))? {
            None => Ok(Edit { path, what, contents: Some(wanted) }),
            Some(text) if text == wanted => Ok(Edit { path, what, contents: None }),
            Some(_) => bail!(
                "{} exists and differs from what init-xtask writes; move it away or merge it by hand",
                root.join(path)
            ),
        }
    };
    Ok(vec![
        new_file("xtask/Cargo.toml", "the xtask crate", xtask_manifest(source))?,
        new_file("xtask/src/main.rs", "the xtask crate", MAIN_RS.to_owned())?,
        cargo_config(root)?,
        workspace_members(root)?,
    ])
}

/// The file's text, or `None` when there is no such file.
fn read(path: &Utf8Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

fn xtask_manifest(source: &Source) -> String {
    let mut doc = DocumentMut::new();
    let mut package = Table::new();
    package["name"] = toml_edit::value("xtask");
    package["version"] = toml_edit::value("0.0.0");
    package["edition"] = toml_edit::value("2021");
    package["publish"] = toml_edit::value(false);
    doc["package"] = Item::Table(package);
    let mut dep = InlineTable::new();
    match source {
        Source::Path(dir) => dep.insert("path", dir.as_str().into()),
        Source::Git(url) => dep.insert("git", url.as_str().into()),
    };
    let mut deps = Table::new();
    deps["pipeline-opt"] = Item::Value(Value::InlineTable(dep));
    doc["dependencies"] = Item::Table(deps);
    doc.to_string()
}

/// `.cargo/config.toml` with `alias.xtask` added (the rest of the file as it was).
fn cargo_config(root: &Utf8Path) -> Result<Edit> {
    const PATH: &str = ".cargo/config.toml";
    let path = root.join(PATH);
    let text = read(&path)?.unwrap_or_default();
    let mut doc: DocumentMut =
        text.parse().with_context(|| format!("{path} does not parse; fix it first"))?;
    let alias = doc.entry("alias").or_insert_with(|| Item::Table(Table::new()));
    let Some(alias) = alias.as_table_like_mut() else {
        bail!("{path}: `alias` is not a table; fix it first")
    };
    match alias.get("xtask") {
        Some(existing) if existing.as_str() == Some(ALIAS) => {
            return Ok(Edit { path: PATH, what: "the cargo xtask alias", contents: None });
        }
        Some(existing) => bail!(
            "{path} already defines alias.xtask as `{}`; remove it or make it `{ALIAS}`",
            existing.to_string().trim()
        ),
        None => alias.insert("xtask", toml_edit::value(ALIAS)),
    };
    Ok(Edit { path: PATH, what: "the cargo xtask alias", contents: Some(doc.to_string()) })
}

/// The root manifest with `xtask` among the workspace members: added to
/// `[workspace] members`, or a single-package root made a workspace of itself and xtask.
fn workspace_members(root: &Utf8Path) -> Result<Edit> {
    const PATH: &str = "Cargo.toml";
    let path = root.join(PATH);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let mut doc: DocumentMut = text.parse().with_context(|| format!("{path} does not parse"))?;
    let unchanged = Edit { path: PATH, what: "workspace members", contents: None };
    match doc.get_mut("workspace").and_then(Item::as_table_like_mut) {
        Some(workspace) => {
            let members =
                workspace.entry("members").or_insert(Item::Value(Value::Array(Array::new())));
            let Some(members) = members.as_array_mut() else {
                bail!("{path}: `workspace.members` is not a list; fix it first")
            };
            if members
                .iter()
                .any(|m| m.as_str().is_some_and(|m| m.trim_end_matches('/') == "xtask"))
            {
                return Ok(unchanged);
            }
            push_like_the_last(members, "xtask");
        }
        None => {
            let mut workspace = Table::new();
            workspace["members"] = toml_edit::value(Array::from_iter([".", "xtask"]));
            doc["workspace"] = Item::Table(workspace);
        }
    }
    Ok(Edit { contents: Some(doc.to_string()), ..unchanged })
}

/// Appends `item` to `array` laid out as its last element is: on a line of its own in a
/// list written one member per line (a comment after the last member stays with it),
/// after a space otherwise.
fn push_like_the_last(array: &mut Array, item: &str) {
    let last_prefix =
        array.iter().last().and_then(|v| v.decor().prefix()?.as_str().map(String::from));
    let Some(line_start) = last_prefix.filter(|p| p.contains('\n')) else {
        array.push(item);
        return;
    };
    let trailing = array.trailing().as_str().unwrap_or_default().to_owned();
    let (comment, rest) = match trailing.rfind('\n') {
        Some(i) => (&trailing[..i], &trailing[i..]),
        None => ("", trailing.as_str()),
    };
    let mut value = Value::from(item);
    value.decor_mut().set_prefix(format!("{comment}{line_start}"));
    array.push_formatted(value);
    array.set_trailing(rest);
}
