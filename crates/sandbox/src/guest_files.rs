//! Typed file operations on a guest: streamed reads and writes, and the
//! small ones (mkdir, remove, rename).

use ironclaw_proto::{FileStat, FileWrite, GuestMsg, HostMsg};

use crate::agent::AgentStream;
use crate::{AgentClient, AgentError};

/// A file being read: its contents in chunks.
pub struct FileReader {
    stream: AgentStream,
    done: bool,
}

impl FileReader {
    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, AgentError>> {
        if self.done {
            return None;
        }
        let r = match self.stream.recv().await {
            Ok(GuestMsg::Data(d)) => return Some(Ok(d)),
            Ok(GuestMsg::Eof) => None,
            Ok(GuestMsg::Error { kind, message }) => Some(Err(AgentError::Guest { kind, message })),
            Ok(other) => Some(Err(AgentError::Protocol(format!("{other:?}")))),
            Err(e) => Some(Err(e)),
        };
        self.done = true;
        r
    }

    /// The chunks as a stream (e.g. an HTTP body); it ends after the last
    /// chunk or the first error. Dropping it cancels the read.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, AgentError>> + Send + 'static {
        futures::stream::unfold(self, |mut r| async move { r.next().await.map(|c| (c, r)) })
    }
}

/// A file being written: data in, then [`FileWriter::finish`]. Dropped
/// before that, the write is cancelled (the guest removes its temporary).
pub struct FileWriter {
    stream: AgentStream,
}

impl FileWriter {
    /// Append data, in chunks sent as the guest takes them (flow control:
    /// a slow disk slows the caller, nothing piles up). An error means the
    /// guest ended the write: call [`FileWriter::finish`] to learn why.
    pub async fn write(&mut self, data: impl AsRef<[u8]>) -> Result<(), AgentError> {
        self.stream
            .sender()
            .send_bytes(HostMsg::Data(Vec::new()), data.as_ref())
            .await
    }

    /// Put the file in place; its stat once there.
    pub async fn finish(mut self) -> Result<FileStat, AgentError> {
        let sent = self.stream.send(HostMsg::Eof).await;
        match (sent, self.stream.recv().await) {
            (_, Ok(GuestMsg::Stat(s))) => Ok(s),
            (_, Ok(GuestMsg::Error { kind, message })) => Err(AgentError::Guest { kind, message }),
            (_, Ok(other)) => Err(AgentError::Protocol(format!("{other:?}"))),
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e),
        }
    }
}

impl AgentClient {
    /// Read a file; the first chunk's error (no such file) comes from
    /// the first [`FileReader::next`].
    pub async fn file_reader(&self, path: &str) -> Result<FileReader, AgentError> {
        let stream = self.open(HostMsg::FileRead { path: path.into() }).await?;
        Ok(FileReader {
            stream,
            done: false,
        })
    }

    /// Write a file (to a temporary name, renamed into place at finish).
    pub async fn file_writer(
        &self,
        path: &str,
        mode: u32,
        parents: bool,
    ) -> Result<FileWriter, AgentError> {
        self.file_writer_as(path, mode, parents, None).await
    }

    /// [`AgentClient::file_writer`] for a user of the sandbox (a name or
    /// uid): the file, and the directories made for it, are that user's,
    /// and a relative path is under its home. An unknown user is an error
    /// before anything is written.
    pub async fn file_writer_as(
        &self,
        path: &str,
        mode: u32,
        parents: bool,
        user: Option<&str>,
    ) -> Result<FileWriter, AgentError> {
        let stream = self
            .open(HostMsg::FileWrite(FileWrite {
                path: path.into(),
                mode,
                parents,
                user: user.map(Into::into),
            }))
            .await?;
        Ok(FileWriter { stream })
    }

    pub async fn make_dir(&self, path: &str, parents: bool, mode: u32) -> Result<(), AgentError> {
        self.make_dir_as(path, parents, mode, None).await
    }

    /// [`AgentClient::make_dir`] for a user: what it makes is the user's.
    pub async fn make_dir_as(
        &self,
        path: &str,
        parents: bool,
        mode: u32,
        user: Option<&str>,
    ) -> Result<(), AgentError> {
        self.call_ok(HostMsg::Mkdir {
            path: path.into(),
            parents,
            mode,
            user: user.map(Into::into),
        })
        .await
    }

    pub async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), AgentError> {
        self.call_ok(HostMsg::Remove {
            path: path.into(),
            recursive,
        })
        .await
    }

    pub async fn rename_path(&self, from: &str, to: &str) -> Result<(), AgentError> {
        self.call_ok(HostMsg::Rename {
            from: from.into(),
            to: to.into(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake_guest::{pair, within};
    use futures::StreamExt;
    use ironclaw_proto::{FileKind, CHUNK};

    #[tokio::test]
    async fn a_borrowed_upload_goes_in_chunks_and_finish_gives_the_stat() {
        let (c, mut g) = pair().await;
        let up = tokio::spawn({
            let c = c.clone();
            async move {
                let mut w = c.file_writer("/f", 0o600, true).await?;
                let data: Vec<u8> = (0..200_000u32).map(|i| (i % 249) as u8).collect();
                w.write(&data[..]).await?;
                w.write(Vec::new()).await?;
                w.finish().await
            }
        });
        let (id, m) = g.next().await;
        assert_eq!(
            m,
            HostMsg::FileWrite(FileWrite {
                path: "/f".into(),
                mode: 0o600,
                parents: true,
                user: None,
            })
        );
        let mut got = Vec::new();
        let mut empty = 0;
        loop {
            match g.next_op().await {
                (i, HostMsg::Data(d)) if i == id => {
                    assert!(d.len() <= CHUNK);
                    empty += usize::from(d.is_empty());
                    got.extend_from_slice(&d);
                }
                (i, HostMsg::Eof) if i == id => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got.len(), 200_000);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 249) as u8));
        assert_eq!(empty, 1, "an empty write is one empty frame");
        let st = FileStat {
            path: "/f".into(),
            kind: FileKind::File,
            size: 200_000,
            mode: 0o600,
            mtime: 0,
        };
        g.send(id, GuestMsg::Stat(st.clone())).await;
        assert_eq!(within(up).await.unwrap().unwrap(), st);
    }

    /// An agent from before users (no feature word in its ready line)
    /// would ignore a request's user and run it as root: such requests
    /// are refused on the host, before anything is sent.
    #[tokio::test]
    async fn an_agent_without_users_is_not_asked_to_act_as_one() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (host, guest) = tokio::io::duplex(1 << 16);
        let old = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(guest);
            let mut line = String::new();
            tokio::io::BufReader::new(r)
                .read_line(&mut line)
                .await
                .unwrap();
            let nonce = line.split(' ').nth(1).unwrap().to_string();
            let ready = format!(
                "IRONCLAW-READY {nonce} {} 0.0.9\n",
                ironclaw_proto::PROTOCOL_VERSION
            );
            w.write_all(ready.as_bytes()).await.unwrap();
            w
        });
        let c = within(AgentClient::over(host)).await.unwrap();
        let _w = old.await.unwrap();
        assert!(!c.honours_users());
        let e = within(c.make_dir_as("/x", true, 0o755, Some("user")))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AgentError::Guest { kind: ironclaw_proto::ErrorKind::Unsupported, message } if message.contains("rebuild")),
            "{e}"
        );
        let e = within(c.file_writer_as("/f", 0o644, false, Some("user")))
            .await
            .err();
        assert!(matches!(e, Some(AgentError::Guest { .. })));
        let exec = ironclaw_proto::ExecRequest {
            argv: vec!["id".into()],
            user: Some("1000".into()),
            ..Default::default()
        };
        assert!(matches!(
            within(c.exec(exec)).await,
            Err(AgentError::Guest { .. })
        ));
    }

    #[tokio::test]
    async fn a_download_is_a_stream_that_ends_at_eof_or_the_first_error() {
        let (c, mut g) = pair().await;
        let r = within(c.file_reader("/f")).await.unwrap();
        let (id, _) = g.next().await;
        g.send(id, GuestMsg::Data(b"ab".to_vec())).await;
        g.send(id, GuestMsg::Data(b"cd".to_vec())).await;
        g.send(id, GuestMsg::Eof).await;
        let chunks: Vec<_> = within(r.into_stream().collect::<Vec<_>>()).await;
        let chunks: Vec<Vec<u8>> = chunks.into_iter().map(Result::unwrap).collect();
        assert_eq!(chunks, vec![b"ab".to_vec(), b"cd".to_vec()]);

        let r = within(c.file_reader("/g")).await.unwrap();
        let (id, _) = g.next_op().await;
        g.send(id, GuestMsg::Data(b"x".to_vec())).await;
        g.send(
            id,
            GuestMsg::Error {
                kind: ironclaw_proto::ErrorKind::Other,
                message: "I/O error".into(),
            },
        )
        .await;
        let got: Vec<_> = within(r.into_stream().collect::<Vec<_>>()).await;
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&got[1], Err(AgentError::Guest { message, .. }) if message == "I/O error")
        );
    }
}
