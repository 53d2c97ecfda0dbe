//! Shared test helpers: fixture workspaces in temporary directories.

use camino::{Utf8Path, Utf8PathBuf};
use pipeline_opt::fixture::FixtureWorkspace;
use pipeline_opt::workspace::Workspace;

/// A fixture written into its own temporary directory, removed on drop.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: Utf8PathBuf,
    pub manifest: Utf8PathBuf,
}

impl Fixture {
    pub fn write(ws: &FixtureWorkspace) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Utf8Path::from_path(dir.path()).expect("utf-8 temp dir").to_owned();
        let manifest = ws.write(&root).expect("fixture written");
        Fixture { _dir: dir, root, manifest }
    }

    pub fn load(&self) -> Workspace {
        Workspace::load(Some(&self.manifest)).expect("fixture loads")
    }

    /// `text` with the temporary root replaced by `$ROOT`, for snapshots.
    pub fn redact(&self, text: &str) -> String {
        text.replace(self.root.as_str(), "$ROOT")
    }
}
