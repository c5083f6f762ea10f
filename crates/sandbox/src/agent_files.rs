//! Whole-file transfers over an agent connection: [`AgentClient::read_file`]
//! and [`AgentClient::write_file`], so callers never handle the
//! `FileRead`/`FileWrite` stream messages themselves; and the small file
//! operations answered by `Ok`.

use ironclaw_proto::{FileStat, FileWrite, GuestMsg, HostMsg, CHUNK};

use crate::agent::{AgentClient, AgentError};

/// What [`AgentClient::read_file`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContents {
    /// At most the `max` bytes asked for.
    pub data: Vec<u8>,
    /// The file had more than `max` bytes; the read stopped there.
    pub truncated: bool,
}

impl AgentClient {
    /// The first `max` bytes of the file at `path` (all of it when it is
    /// smaller). Reading stops at `max`, so a file that grows without end
    /// costs bounded memory.
    pub async fn read_file(&self, path: &str, max: usize) -> Result<FileContents, AgentError> {
        let mut s = self.open(HostMsg::FileRead { path: path.into() }).await?;
        let mut data = Vec::new();
        loop {
            match s.recv().await? {
                GuestMsg::Data(d) => {
                    data.extend_from_slice(&d);
                    if data.len() > max {
                        data.truncate(max);
                        // Dropping the stream cancels the rest of the read.
                        return Ok(FileContents {
                            data,
                            truncated: true,
                        });
                    }
                }
                GuestMsg::Eof => {
                    return Ok(FileContents {
                        data,
                        truncated: false,
                    })
                }
                GuestMsg::Error { kind, message } => {
                    return Err(AgentError::Guest { kind, message })
                }
                other => return Err(AgentError::Protocol(format!("{other:?}"))),
            }
        }
    }

    /// Create or replace the file at `path` with `data` and permission
    /// bits `mode`, creating missing parent directories when `parents`.
    /// The file's stat once written.
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
                user: None,
            }))
            .await?;
        // A send fails once the guest has refused the write (a missing
        // directory, a full disk); its final message then says why, so it
        // is read either way.
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
            user: None,
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
