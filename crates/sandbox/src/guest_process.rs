//! A process started in the guest and kept running while the host talks
//! to it: typed events out, typed control in (stdin, signals, terminal
//! size). What long-lived process APIs (E2B's `process.Process`) build on.

use ironclaw_proto::{ExecRequest, ExitStatus, HostMsg, TtySize};

use crate::agent::StreamSender;
use crate::{AgentClient, AgentError, Session, SessionEvent};

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
    session: Session,
    done: bool,
}

/// A PTY attach belongs to a PTY session, never to a spawned process.
fn attach_on_a_process() -> AgentError {
    AgentError::Protocol("a PTY attach on a process's stream".into())
}

impl ProcessEvents {
    /// The next event; `None` after [`ProcessEvent::Exited`].
    pub async fn next(&mut self) -> Option<Result<ProcessEvent, AgentError>> {
        if self.done {
            return None;
        }
        loop {
            let ev = match self.session.next().await? {
                Ok(SessionEvent::Stdout(d)) => ProcessEvent::Stdout(d),
                Ok(SessionEvent::Stderr(d)) => ProcessEvent::Stderr(d),
                Ok(SessionEvent::Exited(s)) => ProcessEvent::Exited(s),
                Ok(SessionEvent::Started { .. }) => continue,
                Ok(SessionEvent::Attached { .. }) => {
                    self.done = true;
                    return Some(Err(attach_on_a_process()));
                }
                Err(e) => return Some(Err(e)),
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
        let mut session = self.exec(req).await?;
        let control = session.control();
        let mut early = Vec::new();
        let pid = loop {
            match session.next().await {
                Some(Ok(SessionEvent::Started { pid })) => break Some(pid),
                Some(Ok(SessionEvent::Stdout(d))) => early.push(ProcessEvent::Stdout(d)),
                Some(Ok(SessionEvent::Stderr(d))) => early.push(ProcessEvent::Stderr(d)),
                Some(Ok(SessionEvent::Exited(s))) => {
                    early.push(ProcessEvent::Exited(s));
                    break None;
                }
                Some(Ok(SessionEvent::Attached { .. })) => return Err(attach_on_a_process()),
                Some(Err(e)) => return Err(e),
                None => return Err(AgentError::Protocol("the stream ended".into())),
            }
        };
        Ok(Spawned {
            pid,
            control,
            events: ProcessEvents {
                session,
                done: pid.is_none(),
            },
            early,
        })
    }
}
