//! Whole-file operations on an [`AgentClient`], so callers on the host
//! (the daemon's MCP tools, the agent's file tools) never speak protocol
//! messages themselves. Streaming transfers (uploads of any size) stay with
//! [`AgentClient::open`].

use ironclaw_proto::{FileStat, FileWrite, GuestMsg, HostMsg, CHUNK};

use crate::agent::{AgentClient, AgentError};

impl AgentClient {
    /// A file's contents, refused once they pass `max_bytes` (the file may
    /// grow while it is read, so the limit is checked as data arrives).
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, AgentError> {
        let mut s = self.open(HostMsg::FileRead { path: path.into() }).await?;
        let mut data = Vec::new();
        loop {
            match s.recv().await? {
                GuestMsg::Data(d) => {
                    data.extend_from_slice(&d);
                    if data.len() as u64 > max_bytes {
                        // Dropping the stream cancels the read in the guest.
                        return Err(AgentError::TooLarge(format!(
                            "{path} is larger than {max_bytes} bytes"
                        )));
                    }
                }
                GuestMsg::Eof => return Ok(data),
                GuestMsg::Error { kind, message } => {
                    return Err(AgentError::Guest { kind, message })
                }
                other => return Err(AgentError::Protocol(format!("{other:?}"))),
            }
        }
    }

    /// Write `data` to `path` (replacing it atomically: the guest writes a
    /// temporary file and renames it), creating parents when asked.
    pub async fn write_file(
        &self,
        path: &str,
        mode: u32,
        parents: bool,
        data: &[u8],
    ) -> Result<FileStat, AgentError> {
        let mut s = self
            .open(HostMsg::FileWrite(FileWrite {
                path: path.into(),
                mode,
                parents,
            }))
            .await?;
        // A send fails once the guest has refused the write; its final
        // message then says why, so read it either way.
        let mut sent = Ok(());
        for chunk in data.chunks(CHUNK) {
            sent = s.send(HostMsg::Data(chunk.to_vec())).await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = s.send(HostMsg::Eof).await;
        }
        match (s.recv().await, sent) {
            (Ok(GuestMsg::Stat(st)), _) => Ok(st),
            (Ok(GuestMsg::Error { kind, message }), _) => Err(AgentError::Guest { kind, message }),
            (Ok(other), _) => Err(AgentError::Protocol(format!("{other:?}"))),
            (Err(_), Err(e)) | (Err(e), Ok(())) => Err(e),
        }
    }

    pub async fn mkdir(&self, path: &str, parents: bool, mode: u32) -> Result<(), AgentError> {
        self.call_ok(HostMsg::Mkdir {
            path: path.into(),
            parents,
            mode,
        })
        .await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), AgentError> {
        self.call_ok(HostMsg::Remove {
            path: path.into(),
            recursive,
        })
        .await
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), AgentError> {
        self.call_ok(HostMsg::Rename {
            from: from.into(),
            to: to.into(),
        })
        .await
    }
}
