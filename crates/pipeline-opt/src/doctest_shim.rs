//! Doctests narrowed like tests, with the feature set left alone: the doctest stage keeps
//! its whole package selection (`cargo test --doc --workspace`, so cargo unifies the
//! features exactly as the build stage did and nothing compiles again), and cargo runs
//! the running binary as `RUSTDOC`. For each package whose doctests the stage cache
//! proved on these very inputs, this mode answers cargo's `rustdoc --test` with an empty
//! passing result instead of compiling and running the doctests again; every other
//! rustdoc invocation runs the real rustdoc (the user's `RUSTDOC` or `build.rustdoc`,
//! chained) unchanged.
//!
//! `--package` flags would narrow too, but they change which packages cargo unifies
//! features over: the narrowed run would then compile the libraries again with other
//! features and prove something else than the whole run does.

/// The crates (`--crate-name`, as rustdoc is given it) whose doctests are proven, each
/// with the run that proved them: `crate=run,crate=run`. Its presence, with a first
/// argument that is a rustdoc flag, puts the binary into this mode.
pub const PROVEN_VAR: &str = "PIPELINE_OPT_DOCTESTS_PROVEN";
/// The rustdoc to run for everything else: the user's, else `rustdoc` on `PATH`.
pub const RUSTDOC_VAR: &str = "PIPELINE_OPT_RUSTDOC";

/// Call first thing in `main` (after the lease runner, whose first argument is also a
/// flag): when cargo runs this binary as `RUSTDOC` for a narrowed doctest stage, answer
/// or run rustdoc, and exit with its status. Otherwise return at once.
pub fn run_rustdoc_shim_if_requested() {
    let Some(proven) = std::env::var_os(PROVEN_VAR) else { return };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // cargo gives rustdoc flags first (`--edition=…`, `-vV`); our own command line never
    // starts with one in this environment, and the rustc shim's starts with a path.
    if !args.first().is_some_and(|a| a.to_string_lossy().starts_with('-')) {
        return;
    }
    let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let proven = proven.to_string_lossy().into_owned();
    if let Some((krate, run)) = proven_by(&text, &proven) {
        println!(
            "pipeline-opt: the doctests of `{krate}` passed on these inputs in run {run}; not run again"
        );
        println!();
        println!("running 0 tests");
        println!();
        println!(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
        );
        println!();
        std::process::exit(0);
    }
    let program =
        std::env::var_os(RUSTDOC_VAR).filter(|p| !p.is_empty()).unwrap_or_else(|| "rustdoc".into());
    let mut cmd = std::process::Command::new(&program);
    // The doctests rustdoc runs, and what they start, must not find this mode.
    cmd.args(&args).env_remove(PROVEN_VAR).env_remove(RUSTDOC_VAR);
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    eprintln!("pipeline-opt: could not run rustdoc `{}`: {e}", program.to_string_lossy());
    std::process::exit(101);
}

/// The crate and run when `args` are a `rustdoc --test` of a crate that `proven`
/// (`crate=run,…`) names.
fn proven_by(args: &[String], proven: &str) -> Option<(String, String)> {
    if !args.iter().any(|a| a == "--test") {
        return None;
    }
    let krate = args.iter().position(|a| a == "--crate-name").and_then(|i| args.get(i + 1))?;
    proven.split(',').find_map(|entry| {
        let (name, run) = entry.split_once('=')?;
        (name == krate).then(|| (name.to_string(), run.to_string()))
    })
}

/// The `PROVEN_VAR` value for these crates and runs.
pub fn proven_value(proven: &[(String, String)]) -> String {
    proven.iter().map(|(c, r)| format!("{c}={r}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn only_a_doctest_run_of_a_proven_crate_is_answered() {
        let proven = proven_value(&[("a".into(), "r1".into()), ("b_c".into(), "r2".into())]);
        let doctest = args("--edition=2021 --crate-type lib --crate-name b_c --test b/src/lib.rs");
        assert_eq!(proven_by(&doctest, &proven), Some(("b_c".into(), "r2".into())));
        let other = args("--edition=2021 --crate-type lib --crate-name d --test d/src/lib.rs");
        assert_eq!(proven_by(&other, &proven), None);
        // Not a doctest run (cargo asks rustdoc for its version, or documents a crate).
        assert_eq!(proven_by(&args("-vV"), &proven), None);
        assert_eq!(proven_by(&args("--crate-name a src/lib.rs -o doc"), &proven), None);
        // A crate whose name is a prefix of a proven one is not proven.
        assert_eq!(proven_by(&args("--crate-name b --test b.rs"), &proven), None);
    }
}
