//! A process started in the guest and kept running while the host talks
//! to it: typed events out, typed control in (stdin, signals, terminal
//! size). What long-lived process APIs (E2B's `process.Process`) build on.

use ironclaw_proto::{ExecRequest, ExitStatus, GuestMsg, HostMsg, TtySize};

use crate::agent::{AgentStream, StreamSender};
use crate::{AgentClient, AgentError};

/// What a guest process reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// Output on stdout (or the terminal's output for a PTY process).
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last event.
    Exited(ExitStatus),
}

/// Sends input and signals to a running process; cheap to clone.
#[derive(Clone)]
pub struct ProcessControl {
    pub(crate) sender: StreamSender,
}

impl ProcessControl {
    /// Bytes for its stdin (or terminal input), sent in chunks as the
    /// guest takes them (flow control). Fails once it has ended.
    pub async fn write_stdin(&self, data: impl AsRef<[u8]>) -> Result<(), AgentError> {
        self.sender
            .send_bytes(HostMsg::Stdin(Vec::new()), data.as_ref())
            .await
    }

    /// End of input: closes a pipe; on a terminal sends ^D.
    pub async fn close_stdin(&self) -> Result<(), AgentError> {
        self.sender.send(HostMsg::StdinEof).await
    }

    /// Deliver `signal` to its process group.
    pub async fn signal(&self, signal: i32) -> Result<(), AgentError> {
        self.sender.send(HostMsg::Signal(signal)).await
    }

    /// Resize its terminal.
    pub async fn resize(&self, size: TtySize) -> Result<(), AgentError> {
        self.sender.send(HostMsg::Resize(size)).await
    }
}

/// The events of one process. Dropping it before [`ProcessEvent::Exited`]
/// kills the process.
pub struct ProcessEvents {
    stream: AgentStream,
    done: bool,
}

impl ProcessEvents {
    /// The next event; `None` after [`ProcessEvent::Exited`].
    pub async fn next(&mut self) -> Option<Result<ProcessEvent, AgentError>> {
        if self.done {
            return None;
        }
        loop {
            let ev = match self.stream.recv().await {
                Ok(GuestMsg::Stdout(d)) => ProcessEvent::Stdout(d),
                Ok(GuestMsg::Stderr(d)) => ProcessEvent::Stderr(d),
                Ok(GuestMsg::Exited(s)) => {
                    self.done = true;
                    ProcessEvent::Exited(s)
                }
                Ok(GuestMsg::Error { kind, message }) => {
                    self.done = true;
                    return Some(Err(AgentError::Guest { kind, message }));
                }
                Ok(GuestMsg::Started { .. }) => continue,
                Ok(other) => {
                    self.done = true;
                    return Some(Err(AgentError::Protocol(format!("{other:?}"))));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            return Some(Ok(ev));
        }
    }
}

/// A started process: its pid in the guest (`None` when it could not be
/// started and already exited, e.g. 127 for a missing binary), its control
/// and its events.
pub struct Spawned {
    pub pid: Option<i32>,
    pub control: ProcessControl,
    pub events: ProcessEvents,
    /// Events that came before the process was known to be running (the
    /// exit of one that could not start).
    pub early: Vec<ProcessEvent>,
}

impl AgentClient {
    /// Start a process and wait until it runs (or failed to start).
    /// `req.stdin` decides whether it reads input; no timeout applies
    /// unless `req.timeout_ms` sets one.
    pub async fn spawn(&self, req: ExecRequest) -> Result<Spawned, AgentError> {
        let mut stream = self.open(HostMsg::Exec(req)).await?;
        let control = ProcessControl {
            sender: stream.sender(),
        };
        let mut early = Vec::new();
        let pid = loop {
            match stream.recv().await? {
                GuestMsg::Started { pid } => break Some(pid),
                GuestMsg::Stdout(d) => early.push(ProcessEvent::Stdout(d)),
                GuestMsg::Stderr(d) => early.push(ProcessEvent::Stderr(d)),
                GuestMsg::Exited(s) => {
                    early.push(ProcessEvent::Exited(s));
                    break None;
                }
                GuestMsg::Error { kind, message } => {
                    return Err(AgentError::Guest { kind, message })
                }
                other => return Err(AgentError::Protocol(format!("{other:?}"))),
            }
        };
        Ok(Spawned {
            pid,
            control,
            events: ProcessEvents {
                stream,
                done: pid.is_none(),
            },
            early,
        })
    }
}
