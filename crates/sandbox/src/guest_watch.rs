//! Directory watches on a guest: a stream of changes under a path.

use std::time::Duration;

use ironclaw_proto::{ErrorKind, GuestMsg, HostMsg, WatchEvent, WatchKind, WatchRequest};

use crate::agent::AgentStream;
use crate::{AgentClient, AgentError};

/// How long an agent has to set a watch; one built before watches existed
/// never answers.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running watch. Dropping it stops the watch in the guest.
pub struct Watcher {
    stream: AgentStream,
    done: bool,
}

impl Watcher {
    /// The next change; `None` once the watch ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, AgentError>> {
        if self.done {
            return None;
        }
        let r = match self.stream.recv().await {
            Ok(GuestMsg::Watch(e)) => return Some(Ok(e)),
            Ok(GuestMsg::Error { kind, message }) => Some(Err(AgentError::Guest { kind, message })),
            Ok(other) => Some(Err(AgentError::Protocol(format!("{other:?}")))),
            Err(e) => Some(Err(e)),
        };
        self.done = true;
        r
    }
}

impl AgentClient {
    /// Watch the directory `path` (and its subdirectories when
    /// `recursive`); returns once the watch is set.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Watcher, AgentError> {
        let mut stream = self
            .open(HostMsg::Watch(WatchRequest {
                path: path.into(),
                recursive,
            }))
            .await?;
        let first = tokio::time::timeout(READY_WITHIN, stream.recv()).await;
        match first {
            Err(_) => Err(AgentError::Guest {
                kind: ErrorKind::Unsupported,
                message: "the sandbox's guest agent does not support watches (rebuild the image)"
                    .into(),
            }),
            Ok(Ok(GuestMsg::Watch(WatchEvent {
                kind: WatchKind::Ready,
                ..
            }))) => Ok(Watcher {
                stream,
                done: false,
            }),
            Ok(Ok(GuestMsg::Error { kind, message })) => Err(AgentError::Guest { kind, message }),
            Ok(Ok(other)) => Err(AgentError::Protocol(format!("{other:?}"))),
            Ok(Err(e)) => Err(e),
        }
    }
}
