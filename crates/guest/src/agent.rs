//! The agent proper: shared state, the accept loop and the way out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::session::Sessions;
use crate::transport::{Listener, TransportError};
use crate::{connection, reaper::Reaper, shutdown};

/// What this process is responsible for beyond answering requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A plain process on a host (tests): only its own children are its
    /// business.
    Serve,
    /// PID 1 of a namespace sandbox.
    NsInit,
    /// PID 1 of a VM.
    VmInit,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot watch signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

pub struct Agent {
    pub role: Role,
    pub started: Instant,
    pub reaper: Reaper,
    pub sessions: Sessions,
    pub services: crate::supervisor::Services,
    shutdown: Notify,
}

impl Agent {
    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }
}

/// A namespace sandbox's agent, and a VM's with one vCPU, get a
/// single-threaded runtime. An exec is a chain of small wakeups (request,
/// spawn, SIGCHLD, pipes at EOF, reply), and between worker threads each
/// is a cross-thread wake: `exec true` took 0.58-0.73 ms with two workers
/// and 0.46-0.52 ms with one, at the same transfer rates. Creating a thread
/// also costs ~20 ms of a TCG boot. Blocking work still goes to tokio's
/// blocking pool; commands are processes of their own.
fn runtime_builder(role: Role) -> tokio::runtime::Builder {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if role == Role::NsInit || (role == Role::VmInit && cpus == 1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

/// Build the runtime, listen, announce readiness and serve until shutdown.
/// `bind` runs inside the runtime because sockets register with it.
pub fn start<F>(role: Role, bind: F) -> Result<(), AgentError>
where
    F: FnOnce() -> Result<Listener, TransportError>,
{
    let runtime = runtime_builder(role)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(async move {
        let agent = Arc::new(Agent {
            role,
            started: Instant::now(),
            reaper: Reaper::default(),
            sessions: Sessions::default(),
            services: Default::default(),
            shutdown: Notify::new(),
        });
        let reaper = agent.clone();
        tokio::spawn(async move { reaper.reaper.run().await });
        let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        let listener = bind()?;
        // The host waits for this exact line before connecting.
        println!("ironclaw-guest: ready");
        loop {
            tokio::select! {
                conn = listener.accept() => match conn {
                    Ok((conn, slot)) => {
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            connection::serve(agent, conn).await;
                            // The reader is done: a serial port may take
                            // the next host now.
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        eprintln!("ironclaw-guest: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = agent.shutdown.notified() => break,
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        listener.cleanup();
        shutdown::run(&agent).await;
        Ok(())
    })
}
