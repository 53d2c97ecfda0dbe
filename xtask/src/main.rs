//! `cargo xtask`: the command line of pipeline-opt. Every command parses its flags here
//! and calls the library; nothing a user embedding `pipeline-opt` would need lives in
//! this crate. Exit codes are the table in `pipeline_opt::exit`.

// Commands still being built leave some generated fields unread for now.
#[allow(dead_code)]
/// The cargo flags that `plan`, `optimize` and `check` share, from any of their flag
/// structs (xflags generates one struct per command).
macro_rules! cargo_args {
    ($flags:expr) => {
        pipeline_opt::plan::CargoArgs {
            locked: $flags.locked,
            frozen: $flags.frozen,
            features: crate::split_features($flags.features.as_deref()),
            all_features: $flags.all_features,
            no_default_features: $flags.no_default_features,
            target: $flags.target,
            profile: $flags.profile,
            packages: $flags.package,
        }
    };
}

/// `print!` for command output: a reader that went away (`| head`, `| true`) ends the
/// command normally instead of panicking as `print!` does on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { crate::write_stdout(format_args!($($t)*)) };
}

/// `println!` for command output; see [`out!`].
macro_rules! outln {
    () => { crate::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { crate::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

mod flags;

mod bench_compare;
mod cache;
mod ci;
mod history;
mod optimize;
mod pool;

use std::process::ExitCode;

use anyhow::Result;
use camino::Utf8PathBuf;
use pipeline_opt::exit;
use pipeline_opt::inputs::Inputs;

fn main() -> ExitCode {
    // The engine re-executes this binary as RUSTC_WRAPPER, pool supervisor and services
    // stage; those modes never return.
    pipeline_opt::run_helper_modes_if_requested();
    let flags = flags::Xtask::from_env_or_exit();
    match run(flags) {
        Ok(code) => ExitCode::from(code as u8),
        // A Ctrl-C reaches the whole foreground group, so a tool the command was running
        // (cargo metadata) may fail from the same signal: that is an interrupt, 130.
        Err(err) if pipeline_opt::process::received_signal().is_some() => {
            eprintln!("error: interrupted ({err:#})");
            ExitCode::from(exit::INTERRUPTED as u8)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::ERROR as u8)
        }
    }
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

fn run(flags: flags::Xtask) -> Result<i32> {
    let sh = xshell::Shell::new()?;
    match flags.subcommand {
        flags::XtaskCmd::Plan(cmd) => cmd.run(&sh),
        flags::XtaskCmd::Optimize(cmd) => cmd.run(),
        flags::XtaskCmd::Check(cmd) => cmd.run(),
        flags::XtaskCmd::Ci(cmd) => cmd.run(&sh),
        flags::XtaskCmd::BenchCompare(cmd) => cmd.run(&sh),
        flags::XtaskCmd::Pool(cmd) => cmd.run(&sh),
        flags::XtaskCmd::Cache(cmd) => cmd.run(),
        flags::XtaskCmd::History(cmd) => cmd.run(),
        flags::XtaskCmd::Report(cmd) => cmd.run(),
        flags::XtaskCmd::CiWorkflow(cmd) => cmd.run(),
    }
}

impl flags::Plan {
    fn run(self, _sh: &xshell::Shell) -> Result<i32> {
        let format = self.format.as_deref().unwrap_or("text");
        if !matches!(format, "text" | "json") {
            anyhow::bail!("unknown --format `{format}`: use `text` or `json`");
        }
        let manifest = utf8(self.manifest_path.as_ref())?;
        let inputs = Inputs::load(manifest.as_deref())?;
        // What `optimize` runs with the same flags: planned by the same function.
        let options = pipeline_opt::OptimizeOptions {
            strict: self.strict,
            since: self.since.clone(),
            retries: self.retries.unwrap_or(0),
            cargo: cargo_args!(self),
            ..Default::default()
        };
        let (plan, _) = pipeline_opt::optimize::pipeline_plan(&inputs, &options)?;
        match format {
            "json" => outln!("{}", serde_json::to_string_pretty(&plan)?),
            _ => out!("{}", plan.render_text()),
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
fn split_features(features: Option<&str>) -> Vec<String> {
    features
        .into_iter()
        .flat_map(|f| f.split([',', ' ']))
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect()
}
