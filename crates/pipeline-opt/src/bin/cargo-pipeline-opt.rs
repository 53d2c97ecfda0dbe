//! `cargo pipeline-opt`: the library's command line as a cargo subcommand, installed with
//! `cargo install --path crates/pipeline-opt` (or from git). It works on the workspace
//! of the current directory, as cargo does, unless `--manifest-path` names another.

fn main() -> std::process::ExitCode {
    pipeline_opt::cli::main()
}
