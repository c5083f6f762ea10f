//! A process the host talks to while it runs: a one-shot exec
//! ([`AgentClient::exec`]) or a named PTY session
//! ([`AgentClient::pty_open`]). Typed events out ([`SessionEvent`]),
//! typed input in ([`ProcessControl`]: stdin, its end, signals, terminal
//! size), so callers never handle protocol messages. Unlike
//! [`AgentClient::spawn`] it returns at once, without waiting for the
//! process to start: a stream relayed to a client relays the start too.
//!
//! Dropping a [`Session`] before [`SessionEvent::Exited`] kills the exec
//! in the guest (a PTY session is only detached: it lives on for the next
//! attach).

use ironclaw_proto::{ExecRequest, ExitStatus, GuestMsg, HostMsg};

use crate::agent::AgentStream;
use crate::guest_process::ProcessControl;
use crate::{AgentClient, AgentError};

/// What a session's process reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// An exec's process runs with this pid (in the guest).
    Started {
        pid: i32,
    },
    /// Attached to a PTY session; `created` is false on a reattach, when
    /// the screen's replay follows as [`SessionEvent::Stdout`].
    Attached {
        created: bool,
        pid: i32,
    },
    /// Output on stdout (a terminal's output for a PTY).
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last event.
    Exited(ExitStatus),
}

/// One running exec or attached PTY session.
pub struct Session {
    stream: AgentStream,
    done: bool,
}

impl Session {
    pub(crate) fn new(stream: AgentStream) -> Session {
        Session {
            stream,
            done: false,
        }
    }

    /// A handle for its input, usable from another task while this one
    /// reads the events. Sends fail once the session has ended.
    pub fn control(&self) -> ProcessControl {
        ProcessControl {
            sender: self.stream.sender(),
        }
    }

    /// The next event; `None` after [`SessionEvent::Exited`] or an error.
    /// A failure the guest reports (the command could not run, the
    /// session was killed) is [`AgentError::Guest`].
    pub async fn next(&mut self) -> Option<Result<SessionEvent, AgentError>> {
        if self.done {
            return None;
        }
        let ev = match self.stream.recv().await {
            Ok(GuestMsg::Started { pid }) => SessionEvent::Started { pid },
            Ok(GuestMsg::PtyAttached { created, pid }) => SessionEvent::Attached { created, pid },
            Ok(GuestMsg::Stdout(d)) => SessionEvent::Stdout(d),
            Ok(GuestMsg::Stderr(d)) => SessionEvent::Stderr(d),
            Ok(GuestMsg::Exited(s)) => {
                self.done = true;
                SessionEvent::Exited(s)
            }
            Ok(GuestMsg::Error { kind, message }) => {
                self.done = true;
                return Some(Err(AgentError::Guest { kind, message }));
            }
            Ok(other) => {
                self.done = true;
                return Some(Err(AgentError::Protocol(format!("{other:?}"))));
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        Some(Ok(ev))
    }
}

impl AgentClient {
    /// Start a command. `req.stdin` decides whether it reads input (then
    /// close it with [`ProcessControl::close_stdin`]); `req.tty` runs it
    /// on a terminal; no timeout applies unless `req.timeout_ms` sets one.
    pub async fn exec(&self, req: ExecRequest) -> Result<Session, AgentError> {
        Ok(Session::new(self.open(HostMsg::Exec(req)).await?))
    }
}
