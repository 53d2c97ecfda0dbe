//! The Docker/Podman backend (cargo feature `docker`): only starting, probing and
//! removing containers differ from the process backend; slots, leases, readiness checks
//! and resets are shared. Containers carry a label naming the pool directory, so `clean`
//! finds leaked ones. UNTESTED against a real engine: the development machine has none.

use std::path::Path;
use std::process::{Command, Stdio};

use super::files::{Layout, io_err};
use super::{PoolError, ServiceSpec};
use crate::config::ServiceKind;

const LABEL: &str = "pipeline-opt.pool";

fn engine() -> String {
    std::env::var("PIPELINE_OPT_CONTAINER_ENGINE").unwrap_or_else(|_| "docker".into())
}

/// Whether `docker info` (or the engine named by `PIPELINE_OPT_CONTAINER_ENGINE`) works.
pub(crate) fn engine_available() -> bool {
    Command::new(engine())
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts a container for one server, published on `127.0.0.1:port`; returns its id.
/// The password goes through an env file (mode 0600), never the command line.
pub(crate) fn start_container(
    layout: &Layout,
    spec: &ServiceSpec,
    instance: &str,
    port: u16,
    password: &str,
) -> Result<String, PoolError> {
    let env_file = layout.run().join(format!("{instance}.env"));
    let (image, inner_port, env, args): (&str, u16, String, Vec<String>) = match spec.kind {
        ServiceKind::Postgres => (
            "postgres:15-alpine",
            5432,
            format!("POSTGRES_USER=pool\nPOSTGRES_PASSWORD={password}\n"),
            ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
                .iter()
                .flat_map(|s| ["-c".to_string(), s.to_string()])
                .collect(),
        ),
        ServiceKind::Redis => (
            "redis:7-alpine",
            6379,
            String::new(),
            vec![
                "redis-server".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--databases".into(),
                (spec.size + 1).to_string(),
                // Redis reads no password from the environment; the container's command
                // line is visible only to the engine's users.
                "--requirepass".into(),
                password.into(),
            ],
        ),
        ServiceKind::Command => {
            return Err(PoolError::Docker {
                message: format!("service `{}`: command services run only as processes", spec.name),
            });
        }
    };
    std::fs::write(&env_file, env).map_err(io_err("write", &env_file))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod", &env_file))?;
    }
    let out = Command::new(engine())
        .args(["run", "-d", "--rm", "--label"])
        .arg(format!("{LABEL}={}", layout.dir.display()))
        .arg("--env-file")
        .arg(&env_file)
        .arg("-p")
        .arg(format!("127.0.0.1:{port}:{inner_port}"))
        .arg("--name")
        .arg(format!("pipeline-opt-{instance}-{}", std::process::id()))
        .arg(image)
        .args(&args)
        .output()
        .map_err(io_err("run", Path::new("docker")))?;
    if !out.status.success() {
        return Err(PoolError::Docker {
            message: format!(
                "`docker run {image}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn container_alive(id: &str) -> bool {
    Command::new(engine())
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

pub(crate) fn remove_container(id: &str) {
    let _ = Command::new(engine()).args(["rm", "-f", id]).output();
}

/// Removes every container labelled with this pool directory (leaks of a crashed run).
pub(crate) fn remove_labelled(dir: &Path) {
    let Ok(out) = Command::new(engine())
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={LABEL}={}", dir.display()))
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        remove_container(id);
    }
}
