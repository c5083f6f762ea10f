//! An image's start command ([`StartCommand`]): the server an image exists
//! for (the code interpreter's), started as a supervised service of the
//! guest agent after every boot of a sandbox of that image, then waited
//! for until its port accepts, so the sandbox is ready when create or
//! start answers.

use std::time::{Duration, Instant};

use ironclaw_sandbox::agent::{AgentClient, AgentError};
use ironclaw_sandbox::image::StartCommand;
use ironclaw_sandbox::types::{ErrorKind, ServiceSpec};

/// How long one readiness probe may take, and the pause between probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting {name}: {source}")]
    Service { name: String, source: AgentError },
    #[error("{name} did not accept on port {port} within {secs} s (its log: {log})")]
    NotReady {
        name: String,
        port: u16,
        secs: u64,
        log: String,
    },
}

/// Start `cmd` in the sandbox `agent` serves (a no-op if it runs already)
/// and wait for its ready port.
pub async fn run(agent: &AgentClient, cmd: &StartCommand) -> Result<(), StartError> {
    let spec = ServiceSpec {
        name: cmd.name.clone(),
        argv: cmd.argv.clone(),
        env: cmd.env.clone(),
        cwd: cmd.cwd.clone(),
        log: cmd.log.clone(),
    };
    match agent.service_start(spec).await {
        Ok(())
        | Err(AgentError::Guest {
            kind: ErrorKind::AlreadyExists,
            ..
        }) => {}
        Err(source) => {
            return Err(StartError::Service {
                name: cmd.name.clone(),
                source,
            })
        }
    }
    let Some(port) = cmd.ready_port else {
        return Ok(());
    };
    let deadline = Instant::now() + StartCommand::READY_TIMEOUT;
    loop {
        // A connection that opens is dropped at once: the server sees a
        // client that went away, nothing more.
        if agent.tcp_connect(port, PROBE_TIMEOUT).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartError::NotReady {
                name: cmd.name.clone(),
                port,
                secs: StartCommand::READY_TIMEOUT.as_secs(),
                log: cmd.log.clone(),
            });
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}
