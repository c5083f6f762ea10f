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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake_guest::{pair, within};
    use ironclaw_proto::{PtyOpen, TtySize, CHUNK};

    const DONE: ExitStatus = ExitStatus {
        code: 3,
        signal: None,
        timed_out: false,
    };

    #[tokio::test]
    async fn an_exec_session_relays_events_and_typed_input() {
        let (c, mut g) = pair().await;
        let req = ExecRequest {
            argv: vec!["cat".into()],
            stdin: true,
            ..Default::default()
        };
        let mut s = within(c.exec(req.clone())).await.unwrap();
        let (id, m) = g.next().await;
        assert_eq!(m, HostMsg::Exec(req));
        // Input from a borrowed buffer arrives as the same stdin chunks an
        // owned one makes, then the other controls in order.
        let input = s.control();
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        within(input.write_stdin(&data[..])).await.unwrap();
        within(input.close_stdin()).await.unwrap();
        within(input.signal(15)).await.unwrap();
        within(input.resize(TtySize { rows: 5, cols: 7 }))
            .await
            .unwrap();
        let mut got = Vec::new();
        loop {
            match g.next_op().await {
                (i, HostMsg::Stdin(d)) if i == id => {
                    assert!(d.len() <= CHUNK);
                    got.extend_from_slice(&d);
                }
                (i, HostMsg::StdinEof) if i == id => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, data);
        assert_eq!(g.next_op().await, (id, HostMsg::Signal(15)));
        assert_eq!(
            g.next_op().await,
            (id, HostMsg::Resize(TtySize { rows: 5, cols: 7 }))
        );
        g.send(id, GuestMsg::Started { pid: 42 }).await;
        g.send(id, GuestMsg::Stdout(b"out".to_vec())).await;
        g.send(id, GuestMsg::Stderr(b"err".to_vec())).await;
        g.send(id, GuestMsg::Exited(DONE)).await;
        let mut events = Vec::new();
        while let Some(ev) = within(s.next()).await {
            events.push(ev.unwrap());
        }
        assert_eq!(
            events,
            vec![
                SessionEvent::Started { pid: 42 },
                SessionEvent::Stdout(b"out".to_vec()),
                SessionEvent::Stderr(b"err".to_vec()),
                SessionEvent::Exited(DONE),
            ]
        );
        // Ended: input fails, nothing is cancelled.
        assert!(input.write_stdin(b"late").await.is_err());
    }

    #[tokio::test]
    async fn a_dropped_session_is_cancelled_and_a_guest_error_is_typed() {
        let (c, mut g) = pair().await;
        let s = within(c.exec(ExecRequest::default())).await.unwrap();
        let (id, _) = g.next().await;
        drop(s);
        assert_eq!(g.next_op().await, (id, HostMsg::Cancel));

        let mut s = within(c.exec(ExecRequest::default())).await.unwrap();
        let (id, _) = g.next_op().await;
        g.send(
            id,
            GuestMsg::Error {
                kind: ironclaw_proto::ErrorKind::NotFound,
                message: "no such directory".into(),
            },
        )
        .await;
        match within(s.next()).await {
            Some(Err(AgentError::Guest { message, .. })) => {
                assert_eq!(message, "no such directory")
            }
            other => panic!("{other:?}"),
        }
        assert!(within(s.next()).await.is_none());
    }

    #[tokio::test]
    async fn pty_sessions_attach_list_and_kill() {
        let (c, mut g) = pair().await;
        let open = PtyOpen {
            name: "main".into(),
            ..Default::default()
        };
        let mut s = within(c.pty_open(open.clone())).await.unwrap();
        let (id, m) = g.next().await;
        assert_eq!(m, HostMsg::PtyOpen(open));
        g.send(
            id,
            GuestMsg::PtyAttached {
                created: false,
                pid: 9,
            },
        )
        .await;
        g.send(id, GuestMsg::Stdout(b"$ ".to_vec())).await;
        assert_eq!(
            within(s.next()).await.unwrap().unwrap(),
            SessionEvent::Attached {
                created: false,
                pid: 9
            }
        );
        assert_eq!(
            within(s.next()).await.unwrap().unwrap(),
            SessionEvent::Stdout(b"$ ".to_vec())
        );
        // Detach: the guest hears of it.
        drop(s);
        assert_eq!(g.next_op().await, (id, HostMsg::Cancel));

        let list = tokio::spawn({
            let c = c.clone();
            async move { c.pty_list().await }
        });
        let (id, m) = g.next_op().await;
        assert_eq!(m, HostMsg::PtyList);
        let info = ironclaw_proto::PtySessionInfo {
            name: "main".into(),
            pid: 9,
            alive: true,
            attached: 0,
            size: TtySize::default(),
        };
        g.send(id, GuestMsg::PtySessions(vec![info.clone()])).await;
        assert_eq!(within(list).await.unwrap().unwrap(), vec![info]);

        let kill = tokio::spawn({
            let c = c.clone();
            async move { c.pty_kill("main").await }
        });
        let (id, m) = g.next_op().await;
        assert_eq!(
            m,
            HostMsg::PtyKill {
                name: "main".into()
            }
        );
        g.send(id, GuestMsg::Ok).await;
        within(kill).await.unwrap().unwrap();
    }
}
