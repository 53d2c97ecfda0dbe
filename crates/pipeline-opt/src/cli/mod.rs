//! The library's command line: every command of `cargo pipeline-opt` and of an xtask
//! built on this library, as one function, [`main`], so both ways in behave the same.
//! Flags are parsed with xflags after [`normalise_args`]; each command family has a file
//! that turns flags into library options and prints. Exit codes are `crate::exit`'s table.

/// The cargo flags that `plan`, `optimize` and `check` share, from any of their flag
/// structs (xflags generates one struct per command).
macro_rules! cargo_args {
    ($flags:expr) => {
        crate::plan::CargoArgs {
            locked: $flags.locked,
            frozen: $flags.frozen,
            features: crate::cli::split_features(&$flags.features),
            all_features: $flags.all_features,
            no_default_features: $flags.no_default_features,
            target: $flags.target,
            profile: $flags.profile,
            // `--workspace` wins over `-p`, as in cargo.
            packages: if $flags.workspace { Vec::new() } else { $flags.package },
            exclude: $flags.exclude,
        }
    };
}

/// `print!` for command output: a reader that went away (`| head`, `| true`) ends the
/// command normally instead of panicking as `print!` does on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { crate::cli::write_stdout(format_args!($($t)*)) };
}

/// `println!` for command output; see [`out!`].
macro_rules! outln {
    () => { crate::cli::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

pub mod flags;
mod values;

mod args;
mod bench_compare;
mod cache;
mod history;
mod init_xtask;
mod optimize;
mod pool;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use camino::Utf8PathBuf;

pub use args::normalise_args;

use crate::exit;
use crate::inputs::Inputs;

/// A command that an embedding program adds to the library's commands: this
/// repository's xtask adds `ci`, its own tests, which is no user command. `run` gets the
/// arguments after the command's name and returns an exit code; its errors are reported
/// like the library's own (`error: …`, exit 1).
pub struct ExtraCommand {
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    pub run: fn(Vec<OsString>) -> Result<i32>,
}

/// The whole command line, for a binary's `main`: `fn main() -> ExitCode {
/// pipeline_opt::cli::main() }` is a complete xtask or cargo subcommand.
pub fn main() -> ExitCode {
    main_with(&[])
}

/// [`main`] with commands of the embedding program's own, tried before the library's.
pub fn main_with(extra: &[ExtraCommand]) -> ExitCode {
    // The engine re-executes this binary as RUSTC_WRAPPER, pool supervisor and services
    // stage; those modes never return.
    crate::run_helper_modes_if_requested();
    let args = normalise_args(subcommand_args(std::env::args_os().skip(1).collect()));
    if wants_version(&args) {
        outln!("pipeline-opt {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match extra.iter().find(|c| args.first().is_some_and(|a| a == c.name)) {
        Some(command) if args[1..].iter().any(|a| a == "--help" || a == "-h") => {
            outln!("Usage: {} {}\n\n{}", env!("CARGO_PKG_NAME"), command.name, command.about);
            return ExitCode::SUCCESS;
        }
        Some(command) => (command.run)(args[1..].to_vec()),
        None => match flags::PipelineOpt::from_vec(args.clone()) {
            Ok(flags) => run(flags),
            Err(err) => return usage(err, &args, extra),
        },
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        // A Ctrl-C reaches the whole foreground group, so a tool the command was running
        // (cargo metadata) may fail from the same signal: that is an interrupt, 130.
        Err(err) if crate::process::received_signal().is_some() => {
            eprintln!("error: interrupted ({err:#})");
            ExitCode::from(exit::INTERRUPTED as u8)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::ERROR as u8)
        }
    }
}

/// Cargo runs `cargo pipeline-opt ARGS` as `cargo-pipeline-opt pipeline-opt ARGS`; the
/// subcommand's own name is not an argument.
fn subcommand_args(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.first().is_some_and(|a| a == "pipeline-opt") {
        args.remove(0);
    }
    args
}

/// `--version` on any command (before a `--`), or `-V` alone, as cargo tools answer.
fn wants_version(args: &[OsString]) -> bool {
    args.first().is_some_and(|a| a == "-V")
        || args.iter().take_while(|a| *a != "--").any(|a| a == "--version")
}

/// xflags' help (exit 0, on stdout) or usage error (exit 2, on stderr), with the
/// embedding program's commands listed under the top-level help.
fn usage(err: xflags::Error, args: &[OsString], extra: &[ExtraCommand]) -> ExitCode {
    if !err.is_help() {
        eprintln!("{err}");
        return ExitCode::from(exit::USAGE as u8);
    }
    outln!("{err}");
    if args.first().is_some_and(|a| a == "--help" || a == "-h" || a == "help") {
        for command in extra {
            outln!("  {:<21}{}", command.name, command.about);
        }
    }
    ExitCode::SUCCESS
}

/// Writes command output to stdout. A closed stdout (EPIPE) means the reader has all it
/// wanted, so the command ends with exit 0; any other write error ends it with exit 1.
fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(exit::OK);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(exit::ERROR);
    }
}

fn run(flags: flags::PipelineOpt) -> Result<i32> {
    match flags.subcommand {
        flags::PipelineOptCmd::Plan(cmd) => cmd.run(),
        flags::PipelineOptCmd::Optimize(cmd) => cmd.run(),
        flags::PipelineOptCmd::Check(cmd) => cmd.run(),
        flags::PipelineOptCmd::Flamegraph(cmd) => cmd.run(),
        flags::PipelineOptCmd::BenchCompare(cmd) => cmd.run(),
        flags::PipelineOptCmd::Pool(cmd) => cmd.run(),
        flags::PipelineOptCmd::Cache(cmd) => cmd.run(),
        flags::PipelineOptCmd::History(cmd) => cmd.run(),
        flags::PipelineOptCmd::Report(cmd) => cmd.run(),
        flags::PipelineOptCmd::CiWorkflow(cmd) => cmd.run(),
        flags::PipelineOptCmd::InitXtask(cmd) => cmd.run(),
        flags::PipelineOptCmd::Shard(cmd) => match cmd.subcommand {
            flags::ShardCmd::Run(run) => run.run(),
            flags::ShardCmd::Merge(merge) => merge.run(),
        },
    }
}

impl flags::Plan {
    fn run(self) -> Result<i32> {
        let manifest = utf8(self.manifest_path.as_ref())?;
        let inputs = Inputs::load(manifest.as_deref())?;
        // What `optimize` runs with the same flags: planned by the same function.
        let options = crate::OptimizeOptions {
            strict: self.strict,
            since: self.since.clone(),
            retries: self.retries.unwrap_or(0),
            cargo: cargo_args!(self),
            ..Default::default()
        };
        let (plan, _) = crate::optimize::pipeline_plan(&inputs, &options)?;
        match self.format.unwrap_or_default() {
            flags::PlanFormat::Json => outln!("{}", serde_json::to_string_pretty(&plan)?),
            flags::PlanFormat::Text => out!("{}", plan.render_text()),
        }
        Ok(exit::OK)
    }
}

pub(crate) fn utf8(path: Option<&std::path::PathBuf>) -> Result<Option<Utf8PathBuf>> {
    path.map(std::path::PathBuf::as_path).map(utf8_path).transpose()
}

/// The path of a required flag as UTF-8, which every path the library keeps is.
pub(crate) fn utf8_path(path: &std::path::Path) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(path.to_path_buf()).map_err(|p| {
        anyhow::anyhow!("the path {} is not UTF-8; move the workspace to a UTF-8 path", p.display())
    })
}

/// `--features a,b --features c` and `"a b"` both name features, as cargo accepts.
fn split_features(features: &[String]) -> Vec<String> {
    features
        .iter()
        .flat_map(|f| f.split([',', ' ']))
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::flags::{PipelineOpt, PipelineOptCmd};

    /// `--features` may be repeated, and each may list several, as cargo accepts.
    #[test]
    fn repeated_features_add_up() {
        let args = ["check", "--features", "a,b", "-F", "c", "--features=d"];
        let args = super::normalise_args(args.iter().map(Into::into).collect());
        let PipelineOptCmd::Check(check) = PipelineOpt::from_vec(args).unwrap().subcommand else {
            panic!("not `check`")
        };
        assert_eq!(cargo_args!(check).features, ["a", "b", "c", "d"]);
    }
}
