//! The cargo config files cargo reads for a run in a directory, as cargo finds them: the
//! nearest first, `.cargo/config` and `.cargo/config.toml` in that directory and each one
//! above it, then in `$CARGO_HOME`. Read by what must honour the user's own settings
//! (test runners, `[env]`, `build.jobs`, `build.rustdoc`); a file that does not parse is
//! cargo's error to report, so it is passed over here.

use camino::{Utf8Path, Utf8PathBuf};

/// The config files that apply to a command run in `root`, nearest first.
pub fn files(root: &Utf8Path) -> impl Iterator<Item = Utf8PathBuf> + '_ {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .and_then(|h| Utf8PathBuf::from_path_buf(h).ok());
    let in_tree: Vec<Utf8PathBuf> = root.ancestors().map(|d| d.join(".cargo")).collect();
    let home = home.filter(|h| !in_tree.contains(h));
    in_tree.into_iter().chain(home).flat_map(|d| [d.join("config"), d.join("config.toml")])
}

/// Each config file that applies and parses, nearest first, with its table.
pub fn tables(root: &Utf8Path) -> impl Iterator<Item = (Utf8PathBuf, toml::Table)> + '_ {
    files(root).filter_map(|file| {
        let text = std::fs::read_to_string(&file).ok()?;
        let table = text.parse::<toml::Table>().ok()?;
        Some((file, table))
    })
}

/// The directory a config file's relative paths start from: the one holding `.cargo`.
pub fn base(file: &Utf8Path) -> &Utf8Path {
    file.parent().and_then(Utf8Path::parent).unwrap_or(Utf8Path::new("/"))
}

/// A file as messages name it: relative to `root` when inside it.
pub fn shown(root: &Utf8Path, file: &Utf8Path) -> Utf8PathBuf {
    file.strip_prefix(root).map_or(file.to_owned(), |f| f.to_owned())
}

/// A program named in `file`: cargo runs one given with a `/` relative to where it was
/// set; a bare name is looked up on `PATH`.
pub fn resolve_program(program: &str, file: &Utf8Path) -> String {
    if program.contains('/') && !program.starts_with('/') {
        base(file).join(program).to_string()
    } else {
        program.to_string()
    }
}

/// The rustdoc cargo runs for a command in `root`: `RUSTDOC`, else `build.rustdoc` of the
/// nearest config that sets it; `None` for the default.
pub fn user_rustdoc(root: &Utf8Path) -> Option<String> {
    if let Some(v) = std::env::var("RUSTDOC").ok().filter(|v| !v.is_empty()) {
        return Some(v);
    }
    tables(root).find_map(|(file, t)| {
        let program = t.get("build")?.get("rustdoc")?.as_str()?;
        Some(resolve_program(program, &file))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_rustdoc_is_found_and_resolved_from_the_config_that_sets_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        let ws = root.join("ws");
        std::fs::create_dir_all(ws.join(".cargo")).unwrap();
        std::fs::create_dir_all(root.join(".cargo")).unwrap();
        std::fs::write(root.join(".cargo/config.toml"), "[build]\nrustdoc = \"tools/rd\"\n")
            .unwrap();
        // The nearest config without the key does not hide the farther one.
        std::fs::write(ws.join(".cargo/config.toml"), "[build]\njobs = 1\n").unwrap();
        if std::env::var_os("RUSTDOC").is_none() {
            assert_eq!(user_rustdoc(&ws), Some(root.join("tools/rd").to_string()));
        }
        assert_eq!(
            resolve_program("rustdoc-wrapper", &ws.join(".cargo/config")),
            "rustdoc-wrapper"
        );
    }
}
