//! Named PTY sessions in a guest ("consoles"): they outlive the
//! connection, so a client can detach and attach again.

use ironclaw_proto::{GuestMsg, HostMsg, PtyOpen, PtySessionInfo};

use crate::guest_session::Session;
use crate::{AgentClient, AgentError};

impl AgentClient {
    /// Attach to the PTY session `open.name`, starting it (with
    /// `open.argv`, or the image's login shell) when it does not exist.
    /// The first event is [`crate::SessionEvent::Attached`]; dropping the
    /// session detaches.
    pub async fn pty_open(&self, open: PtyOpen) -> Result<Session, AgentError> {
        Ok(Session::new(self.open(HostMsg::PtyOpen(open)).await?))
    }

    /// The guest's PTY sessions.
    pub async fn pty_list(&self) -> Result<Vec<PtySessionInfo>, AgentError> {
        match self.call(HostMsg::PtyList).await? {
            GuestMsg::PtySessions(s) => Ok(s),
            other => Err(AgentError::Protocol(format!("{other:?}"))),
        }
    }

    /// End the PTY session `name` (its processes are killed).
    pub async fn pty_kill(&self, name: &str) -> Result<(), AgentError> {
        self.call_ok(HostMsg::PtyKill { name: name.into() }).await
    }
}
