//! Host side of the guest agent protocol: one multiplexed connection per
//! sandbox, many concurrent streams on it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclaw_proto::{
    handshake, ErrorKind, ExecRequest, ExitStatus, FileStat, FrameReader, FrameWriter, GuestInfo,
    GuestMsg, HostMsg,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Messages buffered per stream before the connection's reader waits (so one
/// slow consumer slows its connection instead of growing memory unbounded).
const STREAM_BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent: {0}")]
    Connect(std::io::Error),
    #[error("guest agent handshake failed: {0}")]
    Handshake(#[from] handshake::HandshakeError),
    #[error("connection to the guest agent closed")]
    Closed,
    #[error("guest agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{message}")]
    Guest { kind: ErrorKind, message: String },
    #[error("unexpected reply from the guest agent: {0}")]
    Protocol(String),
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::Sender<GuestMsg>>>>;

struct Shared {
    writer: mpsc::Sender<(u32, HostMsg)>,
    routes: Routes,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
    agent_version: String,
}

/// A connection to one guest agent. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct AgentClient {
    shared: Arc<Shared>,
}

impl AgentClient {
    pub async fn connect_unix(path: &Path) -> Result<Self, AgentError> {
        let s = tokio::net::UnixStream::connect(path)
            .await
            .map_err(AgentError::Connect)?;
        Self::over(s).await
    }

    /// Handshake on `stream` and start the reader and writer tasks.
    pub async fn over<S>(mut stream: S) -> Result<Self, AgentError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ready = handshake::client(&mut stream, rand::random()).await?;
        let (r, w) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<(u32, HostMsg)>(256);
        let routes: Routes = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        let mut writer = FrameWriter::new(w);
        let wclosed = closed.clone();
        tokio::spawn(async move {
            while let Some((id, msg)) = rx.recv().await {
                if writer.write(id, &msg).await.is_err() {
                    break;
                }
            }
            wclosed.store(true, Ordering::SeqCst);
            // Every client handle is gone: half-close so the peer ends the
            // connection (the reader half alone would keep it open, and a
            // QEMU serial chardev serves one connection at a time).
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer.into_inner()).await;
        });

        let mut reader = FrameReader::new(r);
        let rroutes = routes.clone();
        let rclosed = closed.clone();
        tokio::spawn(async move {
            loop {
                let (id, msg): (u32, GuestMsg) = match reader.read().await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!("agent connection ended: {e}");
                        break;
                    }
                };
                let fin = msg.is_final();
                let route = {
                    let mut map = rroutes.lock().unwrap();
                    if fin {
                        map.remove(&id)
                    } else {
                        map.get(&id).cloned()
                    }
                };
                if let Some(route) = route {
                    let _ = route.send(msg).await;
                }
            }
            rclosed.store(true, Ordering::SeqCst);
            // Dropping every sender ends every open stream with `None`.
            rroutes.lock().unwrap().clear();
        });

        Ok(AgentClient {
            shared: Arc::new(Shared {
                writer: tx,
                routes,
                next_id: AtomicU32::new(1),
                closed,
                agent_version: ready.agent_version,
            }),
        })
    }

    pub fn agent_version(&self) -> &str {
        &self.shared.agent_version
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst) || self.shared.writer.is_closed()
    }

    /// Open a stream whose first message is `first`.
    pub async fn open(&self, first: HostMsg) -> Result<AgentStream, AgentError> {
        if self.is_closed() {
            return Err(AgentError::Closed);
        }
        let id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.shared.routes.lock().unwrap().insert(id, tx);
        let stream = AgentStream {
            id,
            shared: self.shared.clone(),
            rx,
            finished: false,
        };
        stream.send(first).await?;
        Ok(stream)
    }

    /// One request, one final reply.
    pub async fn call(&self, msg: HostMsg) -> Result<GuestMsg, AgentError> {
        let mut s = self.open(msg).await?;
        match s.recv().await? {
            GuestMsg::Error { kind, message } => Err(AgentError::Guest { kind, message }),
            other => Ok(other),
        }
    }

    pub async fn ping(&self, timeout: Duration) -> Result<(), AgentError> {
        match tokio::time::timeout(timeout, self.call(HostMsg::Ping)).await {
            Err(_) => Err(AgentError::Timeout(timeout)),
            Ok(Ok(GuestMsg::Pong)) => Ok(()),
            Ok(Ok(other)) => Err(AgentError::Protocol(format!("{other:?}"))),
            Ok(Err(e)) => Err(e),
        }
    }

    pub async fn info(&self) -> Result<GuestInfo, AgentError> {
        match self.call(HostMsg::Info).await? {
            GuestMsg::Info(i) => Ok(i),
            other => Err(AgentError::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn stat(&self, path: &str) -> Result<FileStat, AgentError> {
        match self.call(HostMsg::Stat { path: path.into() }).await? {
            GuestMsg::Stat(s) => Ok(s),
            other => Err(AgentError::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn list(&self, path: &str) -> Result<Vec<ironclaw_proto::DirEntry>, AgentError> {
        match self.call(HostMsg::List { path: path.into() }).await? {
            GuestMsg::Entries(e) => Ok(e),
            other => Err(AgentError::Protocol(format!("{other:?}"))),
        }
    }

    /// Requests answered by a bare `Ok` (mkdir, remove, rename, shutdown, pty kill).
    pub async fn call_ok(&self, msg: HostMsg) -> Result<(), AgentError> {
        match self.call(msg).await? {
            GuestMsg::Ok => Ok(()),
            other => Err(AgentError::Protocol(format!("{other:?}"))),
        }
    }

    /// Run a command to completion and collect its output.
    pub async fn exec_collect(
        &self,
        req: ExecRequest,
        stdin: Option<Vec<u8>>,
    ) -> Result<ExecOutput, AgentError> {
        let mut req = req;
        req.stdin = stdin.is_some();
        let mut s = self.open(HostMsg::Exec(req)).await?;
        if let Some(data) = stdin {
            for chunk in data.chunks(ironclaw_proto::CHUNK) {
                s.send(HostMsg::Stdin(chunk.to_vec())).await?;
            }
            s.send(HostMsg::StdinEof).await?;
        }
        let mut out = ExecOutput::default();
        loop {
            match s.recv().await? {
                GuestMsg::Stdout(d) => out.stdout.extend_from_slice(&d),
                GuestMsg::Stderr(d) => out.stderr.extend_from_slice(&d),
                GuestMsg::Started { .. } => {}
                GuestMsg::Exited(st) => {
                    out.status = st;
                    return Ok(out);
                }
                GuestMsg::Error { kind, message } => {
                    return Err(AgentError::Guest { kind, message })
                }
                other => return Err(AgentError::Protocol(format!("{other:?}"))),
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Default for ExecOutput {
    fn default() -> Self {
        ExecOutput {
            status: ExitStatus {
                code: -1,
                signal: None,
                timed_out: false,
            },
            stdout: vec![],
            stderr: vec![],
        }
    }
}

/// One stream on an agent connection. Dropping it before its final message
/// tells the guest to cancel the operation.
pub struct AgentStream {
    id: u32,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<GuestMsg>,
    finished: bool,
}

impl AgentStream {
    pub async fn send(&self, msg: HostMsg) -> Result<(), AgentError> {
        self.shared
            .writer
            .send((self.id, msg))
            .await
            .map_err(|_| AgentError::Closed)
    }

    /// Next message; [`AgentError::Closed`] if the connection dropped.
    pub async fn recv(&mut self) -> Result<GuestMsg, AgentError> {
        match self.rx.recv().await {
            Some(m) => {
                if m.is_final() {
                    self.finished = true;
                }
                Ok(m)
            }
            None => {
                self.finished = true;
                Err(AgentError::Closed)
            }
        }
    }

    /// A sender handle for this stream usable from another task.
    pub fn sender(&self) -> StreamSender {
        StreamSender {
            id: self.id,
            writer: self.shared.writer.clone(),
        }
    }
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        self.shared.routes.lock().unwrap().remove(&self.id);
        if !self.finished {
            let _ = self.shared.writer.try_send((self.id, HostMsg::Cancel));
        }
    }
}

/// Sends on a stream while another task receives from it.
#[derive(Clone)]
pub struct StreamSender {
    id: u32,
    writer: mpsc::Sender<(u32, HostMsg)>,
}

impl StreamSender {
    pub async fn send(&self, msg: HostMsg) -> Result<(), AgentError> {
        self.writer
            .send((self.id, msg))
            .await
            .map_err(|_| AgentError::Closed)
    }
}
