//! `cargo xtask`: pipeline-opt's command line (`pipeline_opt::cli`, the same as
//! `cargo pipeline-opt`) plus `ci`, this repository's own checks and tests, which is no
//! user command and so lives here only.

mod ci;

fn main() -> std::process::ExitCode {
    pipeline_opt::cli::main_with(&[pipeline_opt::cli::ExtraCommand {
        name: "ci",
        about: "This workspace's own checks and tests, as CI runs them.",
        run: ci::run,
    }])
}
