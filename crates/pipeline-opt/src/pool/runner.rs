//! The lease runner: cargo and cargo-nextest start every test binary of a test stage
//! through it (the planner sets it as the target runner, see
//! [`crate::plan::TestLeases`]). It leases one instance of each service the plan names,
//! sets the variables the tests read from their templates, hands the leases' locks to a
//! holder that lives exactly as long as the test, and execs the user's own runner or the
//! test binary in its place: the test is the process cargo started, so its exit status
//! and the signals sent to it are its own.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use super::{Lease, LeaseError};
use crate::config::{Placeholder, ServiceKind, render_template};
use crate::plan::{LEASE_RUNNER_ARG, LEASE_RUNNER_PROTOCOL};

/// Acts as the lease runner when this binary was started as one (its first argument
/// is [`LEASE_RUNNER_ARG`]): never returns then. An argument rather than a variable, so
/// that nothing of the mode reaches the test or what it runs.
pub fn lease_runner_if_requested() {
    let mut args = std::env::args_os();
    let _exe = args.next();
    if args.next().is_none_or(|a| a != LEASE_RUNNER_ARG) {
        return;
    }
    let args: Vec<OsString> = args.collect();
    if args.len() == 1 && args[0] == "--protocol" {
        println!("{LEASE_RUNNER_PROTOCOL}");
        std::process::exit(0);
    }
    let err = run(args);
    eprintln!("pipeline-opt lease runner: error: {err}");
    std::process::exit(1);
}

#[derive(Debug, thiserror::Error)]
enum RunnerError {
    #[error(
        "{0}; the plan writes this runner's arguments, run the stage's command as `plan` shows it"
    )]
    Usage(String),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("the `env` template of service `{service}` does not apply: {message}")]
    Template { service: String, message: String },
    #[error("could not keep the leases for the test's lifetime: {0}")]
    Hold(std::io::Error),
    #[error("could not run `{program}`: {source}; check that it exists and is executable")]
    Exec { program: String, source: std::io::Error },
}

/// A service the plan names: leased (`--lease`) or, with `mode = "server"`, the whole
/// server (`--server`), with its variables.
struct Wanted {
    name: String,
    whole_server: bool,
    env: Vec<(String, String)>,
}

/// What the plan asked for: services with their variables, then the command to run.
struct Request {
    services: Vec<Wanted>,
    command: Vec<OsString>,
}

fn parse(args: Vec<OsString>) -> Result<Request, RunnerError> {
    let mut services: Vec<Wanted> = Vec::new();
    let mut it = args.into_iter();
    let text = |a: Option<OsString>, what: &str| {
        a.and_then(|a| a.into_string().ok())
            .ok_or_else(|| RunnerError::Usage(format!("{what} needs a UTF-8 value")))
    };
    loop {
        let Some(arg) = it.next() else {
            return Err(RunnerError::Usage("no `--` before the command".into()));
        };
        match arg.to_str() {
            Some("--") => break,
            Some(flag @ ("--lease" | "--server")) => services.push(Wanted {
                name: text(it.next(), flag)?,
                whole_server: flag == "--server",
                env: Vec::new(),
            }),
            Some("--env") => {
                let pair = text(it.next(), "--env")?;
                let (var, template) = pair
                    .split_once('=')
                    .ok_or_else(|| RunnerError::Usage(format!("`--env {pair}` lacks `=`")))?;
                let last = services
                    .last_mut()
                    .ok_or_else(|| RunnerError::Usage("`--env` before any `--lease`".into()))?;
                last.env.push((var.to_string(), template.to_string()));
            }
            _ => return Err(RunnerError::Usage(format!("unexpected argument {arg:?}"))),
        }
    }
    let command: Vec<OsString> = it.collect();
    if command.is_empty() {
        return Err(RunnerError::Usage("no test binary after `--`".into()));
    }
    Ok(Request { services, command })
}

fn run(args: Vec<OsString>) -> RunnerError {
    let request = match parse(args) {
        Ok(r) => r,
        Err(e) => return e,
    };
    // nextest lists a binary's tests through the runner too: no lease for a listing.
    let listing = request.command.iter().any(|a| a == "--list");
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut leases: Vec<Lease> = Vec::new();
    if !listing {
        for wanted in &request.services {
            let (slot, lease) = if wanted.whole_server {
                match pipeline_opt_lease::server(&wanted.name) {
                    Ok(slot) => (slot, None),
                    Err(e) => return e.into(),
                }
            } else {
                match super::lease(&wanted.name) {
                    Ok(l) => (l.slot().clone(), Some(l)),
                    Err(e) => return e.into(),
                }
            };
            let values = slot_values(&slot.url, slot.kind, slot.database.as_deref());
            for (var, template) in &wanted.env {
                match render_template(template, slot.kind, &values) {
                    Ok(v) => vars.push((var.clone(), v)),
                    Err(message) => {
                        return RunnerError::Template { service: wanted.name.clone(), message };
                    }
                }
            }
            leases.extend(lease);
        }
        if !leases.is_empty() {
            let fds: Vec<_> = leases.iter().map(Lease::lock_fd).collect();
            if let Err(e) = crate::process::hold_until_exit(&fds) {
                return RunnerError::Hold(e);
            }
        }
    }
    let program = &request.command[0];
    let source = std::process::Command::new(program)
        .args(&request.command[1..])
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .exec();
    drop(leases);
    RunnerError::Exec { program: program.to_string_lossy().into_owned(), source }
}

/// What a lease fills an `env` template's placeholders with: the parts of its URL.
pub fn lease_values(lease: &Lease) -> impl Fn(Placeholder) -> String + '_ {
    slot_values(lease.url(), lease.kind(), lease.database())
}

pub(crate) fn slot_values<'a>(
    url: &'a str,
    kind: ServiceKind,
    database: Option<&str>,
) -> impl Fn(Placeholder) -> String + 'a {
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        None => (url, ""),
    };
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, ""));
    let db = match (database, kind) {
        (Some(db), _) => db.to_string(),
        (None, ServiceKind::Command) => String::new(),
        (None, _) => path.to_string(),
    };
    let parts = [user, password, host, port].map(String::from);
    move |p| match p {
        Placeholder::Url => url.to_string(),
        Placeholder::User => parts[0].clone(),
        Placeholder::Password => parts[1].clone(),
        Placeholder::Host => parts[2].clone(),
        Placeholder::Port => parts[3].clone(),
        Placeholder::Db => db.clone(),
    }
}
