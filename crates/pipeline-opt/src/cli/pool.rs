//! `cargo xtask pool <up|status|down|clean>`: the service pool's lifecycle, as calls into
//! `crate::pool`. Output names ports and pids, never credentials.

use crate::exit;
use crate::inputs::Inputs;
use crate::pool::{ContainerPool, PoolOptions, PoolStatus};
use anyhow::{Result, bail};

use super::flags::PoolAction;

impl super::flags::Pool {
    pub(crate) fn run(self) -> Result<i32> {
        let manifest = super::utf8(self.manifest_path.as_ref())?;
        let inputs = Inputs::load(manifest.as_deref())?;
        let pool = ContainerPool::for_workspace(&inputs.workspace, &inputs.config);
        match self.action {
            PoolAction::Up => {
                if inputs.config.services.is_empty() {
                    bail!(
                        "no services are declared; add one under [workspace.metadata.pipeline-opt.services.<name>] (see docs/services.md)"
                    );
                }
                // No owner: the pool outlives this command until `down` or the idle timeout.
                let handle = crate::pool::services_up(
                    &inputs.workspace,
                    &inputs.config,
                    &PoolOptions::default(),
                )?;
                for warning in &handle.warnings {
                    eprintln!("warning: {warning}");
                }
                for note in &handle.notes {
                    eprintln!("note: {note}");
                }
                let verb = if handle.started { "started" } else { "already running" };
                outln!("pool {verb} at {}", handle.dir.display());
                print_status(&handle.status);
                let (var, value) = handle.env();
                outln!("export {var}={}", value.to_string_lossy());
            }
            PoolAction::Status => {
                let status = pool.status();
                outln!("pool at {}", pool.dir().display());
                print_status(&status);
            }
            PoolAction::Down => {
                let report = pool.down()?;
                match (report.supervisor_stopped, report.leftovers_stopped.len()) {
                    (false, 0) => outln!("no pool was running at {}", pool.dir().display()),
                    (stopped, left) => outln!(
                        "pool stopped{}{}",
                        if stopped { "" } else { " (no supervisor was running)" },
                        if left > 0 {
                            format!("; {left} leftover server(s) stopped")
                        } else {
                            String::new()
                        }
                    ),
                }
            }
            PoolAction::Clean => {
                let report = pool.clean()?;
                if let Some(pid) = report.running_supervisor {
                    outln!(
                        "a live supervisor (pid {pid}) owns the pool; nothing to clean (stop it with `cargo xtask pool down`)"
                    );
                } else {
                    outln!(
                        "cleaned {}: {} leftover server(s) stopped",
                        pool.dir().display(),
                        report.leftovers_stopped.len()
                    );
                }
            }
        }
        Ok(exit::OK)
    }
}

fn print_status(status: &PoolStatus) {
    let supervisor = status.supervisor.map(|s| s.pid.to_string()).unwrap_or_else(|| "-".into());
    outln!("state: {:?} (supervisor pid {supervisor})", status.state);
    if let Some(message) = &status.message {
        outln!("message: {message}");
    }
    for (name, s) in &status.services {
        let servers: Vec<String> = s
            .servers
            .iter()
            .map(|v| format!("pid {} port {}", v.pid.map_or("-".into(), |p| p.to_string()), v.port))
            .collect();
        outln!(
            "  {name}: {:?}, size {}, {} ready, {} leased, generation {}, servers [{}], started in {:?} ms",
            s.kind.unwrap_or(crate::config::ServiceKind::Command),
            s.size,
            s.ready,
            s.leased,
            s.generation,
            servers.join(", "),
            s.start_ms
        );
        if let Some(refill) = &s.refill {
            outln!("    refill: {refill}");
        }
    }
}
