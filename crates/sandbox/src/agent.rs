//! Host side of the guest agent protocol: one multiplexed connection per
//! sandbox, many concurrent streams on it.

#[cfg(test)]
pub(crate) mod fake_guest;
pub mod tcp;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclaw_proto::{
    frame, handshake, ErrorKind, ExecRequest, ExitStatus, FileStat, FrameError, FrameReader,
    FrameWriter, GuestInfo, GuestMsg, HostMsg, RecvWindow, SendWindow, CHUNK,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Frames queued for the socket before senders wait for it.
const WRITE_QUEUE: usize = 256;
/// Frames the writer puts in one system call at most.
const WRITE_BATCH: usize = 32;
/// Most entries a listing may have: a guest cannot make the host collect
/// without bound.
const MAX_LIST_ENTRIES: usize = 4_000_000;

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
    /// A request too big for the protocol (more than
    /// [`ironclaw_proto::MAX_MESSAGE`] bytes, e.g. an argv beyond Linux's own
    /// limit). Nothing was sent; the connection is fine.
    #[error("request too large for the guest agent: {0}")]
    TooLarge(String),
}

/// The reader's side of one stream.
struct Route {
    tx: mpsc::UnboundedSender<(GuestMsg, usize)>,
    /// Credit for what this end sends on the stream.
    send: Arc<SendWindow>,
    /// Accounting of what the guest sends, granted back as it is consumed.
    recv: Arc<RecvWindow>,
}

type Routes = Arc<Mutex<HashMap<u32, Route>>>;

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<u32, Route>> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    /// Encoded frames for the writer task.
    writer: mpsc::Sender<Vec<u8>>,
    routes: Routes,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
    agent_version: String,
    /// The agent honours a request's `user` (older ones ignore it).
    users: bool,
}

/// True for a request that asks for a user of the sandbox.
fn names_a_user(msg: &HostMsg) -> bool {
    match msg {
        HostMsg::Exec(r) => r.user.is_some(),
        HostMsg::PtyOpen(o) => o.user.is_some(),
        HostMsg::FileWrite(w) => w.user.is_some(),
        HostMsg::Mkdir { user, .. } => user.is_some(),
        _ => false,
    }
}

/// A connection to one guest agent. Cheap to clone; all clones share it.
///
/// Streams are flow-controlled one by one ([`ironclaw_proto::flow`]): a
/// stream whose consumer stops calling [`AgentStream::recv`] stops its
/// guest-side source once its window is full, and nothing else on the
/// connection waits for it.
#[derive(Clone)]
pub struct AgentClient {
    shared: Arc<Shared>,
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    closed: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(f) = rx.recv().await {
        batch.push(f);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        if writer.write_encoded_batch(&batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    closed.store(true, Ordering::SeqCst);
    // Every client handle is gone: half-close so the peer ends the
    // connection (the reader half alone would keep it open, and a QEMU
    // serial chardev serves one connection at a time).
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer.into_inner()).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    routes: Routes,
    // Weak: the connection must close once every client handle is gone
    // (a QEMU serial chardev serves one connection at a time).
    writer: mpsc::WeakSender<Vec<u8>>,
    closed: Arc<AtomicBool>,
) {
    loop {
        let (id, msg, cost): (u32, GuestMsg, usize) = match reader.read_sized().await {
            Ok(f) => f,
            // The whole frame was read: skip what this host cannot decode.
            Err(FrameError::Decode(e)) => {
                tracing::warn!("skipping an undecodable frame from the guest agent: {e}");
                continue;
            }
            Err(e) => {
                tracing::debug!("agent connection ended: {e}");
                break;
            }
        };
        if let GuestMsg::Credit(n) = msg {
            if let Some(r) = lock(&routes).get(&id) {
                r.send.grant(n);
            }
            continue;
        }
        let fin = msg.is_final();
        let mut map = lock(&routes);
        let Some(r) = map.get(&id) else {
            // A stream this end gave up on: its messages are dropped, never
            // buffered.
            continue;
        };
        if let Err(e) = r.recv.received(cost) {
            // A guest that ignores its window: end the stream with an error
            // rather than buffer without bound.
            let r = map.remove(&id).expect("present");
            drop(map);
            r.send.close();
            let _ = r.tx.send((
                GuestMsg::Error {
                    kind: ErrorKind::Other,
                    message: format!("guest agent broke the protocol: {e}"),
                },
                0,
            ));
            if let (Ok(f), Some(w)) = (frame::encode(id, &HostMsg::Cancel), writer.upgrade()) {
                let _ = w.try_send(f);
            }
            continue;
        }
        // Never waits: what a stream holds is bounded by its window.
        let _ = r.tx.send((msg, cost));
        if fin {
            // Nothing more may be sent on an ended stream.
            let r = map.remove(&id).expect("present");
            r.send.close();
        }
    }
    closed.store(true, Ordering::SeqCst);
    // Dropping every sender ends every open stream with `None`.
    for (_, r) in lock(&routes).drain() {
        r.send.close();
    }
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
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let routes: Routes = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(FrameWriter::new(w), rx, closed.clone()));
        tokio::spawn(read_loop(
            FrameReader::new(r),
            routes.clone(),
            tx.downgrade(),
            closed.clone(),
        ));
        Ok(AgentClient {
            shared: Arc::new(Shared {
                writer: tx,
                routes,
                next_id: AtomicU32::new(1),
                closed,
                agent_version: ready.agent_version,
                users: ready.users,
            }),
        })
    }

    pub fn agent_version(&self) -> &str {
        &self.shared.agent_version
    }

    /// The agent runs execs, PTYs and file writes as a named user when a
    /// request asks (an older one cannot, and such requests are refused).
    pub fn honours_users(&self) -> bool {
        self.shared.users
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst) || self.shared.writer.is_closed()
    }

    /// Open a stream whose first message is `first`. A request too big for
    /// one frame travels in fragments; one too big for the protocol fails
    /// with [`AgentError::TooLarge`] and leaves the connection as it was.
    pub async fn open(&self, first: HostMsg) -> Result<AgentStream, AgentError> {
        if self.is_closed() {
            return Err(AgentError::Closed);
        }
        if !self.shared.users && names_a_user(&first) {
            // An older agent would run it as root: refuse instead.
            return Err(AgentError::Guest {
                kind: ErrorKind::Unsupported,
                message: "the sandbox's guest agent predates running as a user; \
                          rebuild its image (ironclaw image build)"
                    .into(),
            });
        }
        let id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let too_large = |e| match e {
            FrameError::TooLarge(n) => AgentError::TooLarge(format!(
                "{n} bytes, the limit is {}",
                ironclaw_proto::MAX_MESSAGE
            )),
            other => AgentError::Protocol(other.to_string()),
        };
        let frames = match frame::encode(id, &first) {
            Ok(f) => vec![f],
            // Too big for one frame: in fragments.
            Err(FrameError::TooLarge(_)) => ironclaw_proto::fragment::split(&first)
                .map_err(too_large)?
                .iter()
                .map(|p| frame::encode(id, p))
                .collect::<Result<_, _>>()
                .map_err(too_large)?,
            Err(e) => return Err(AgentError::Protocol(e.to_string())),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let send = Arc::new(SendWindow::default());
        let recv = Arc::new(RecvWindow::default());
        lock(&self.shared.routes).insert(
            id,
            Route {
                tx,
                send: send.clone(),
                recv: recv.clone(),
            },
        );
        let mut stream = AgentStream {
            id,
            shared: self.shared.clone(),
            rx,
            send,
            recv,
            finished: false,
        };
        for f in frames {
            if self.shared.writer.send(f).await.is_err() {
                stream.finished = true;
                return Err(AgentError::Closed);
            }
        }
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

    /// A directory's entries, sorted by name; a big directory arrives in
    /// parts.
    pub async fn list(&self, path: &str) -> Result<Vec<ironclaw_proto::DirEntry>, AgentError> {
        let mut s = self.open(HostMsg::List { path: path.into() }).await?;
        let mut all = Vec::new();
        loop {
            let (part, last) = match s.recv().await? {
                GuestMsg::EntriesPart(e) => (e, false),
                GuestMsg::Entries(e) => (e, true),
                GuestMsg::Error { kind, message } => {
                    return Err(AgentError::Guest { kind, message })
                }
                other => return Err(AgentError::Protocol(format!("{other:?}"))),
            };
            if all.len() + part.len() > MAX_LIST_ENTRIES {
                return Err(AgentError::Protocol(format!(
                    "a listing of more than {MAX_LIST_ENTRIES} entries"
                )));
            }
            all.extend(part);
            if last {
                return Ok(all);
            }
        }
    }

    /// Start a supervised service (see [`HostMsg::ServiceStart`]).
    pub async fn service_start(&self, spec: ironclaw_proto::ServiceSpec) -> Result<(), AgentError> {
        self.call_ok(HostMsg::ServiceStart(spec)).await
    }

    /// Stop a supervised service; returns once it is gone.
    pub async fn service_stop(&self, name: &str) -> Result<(), AgentError> {
        self.call_ok(HostMsg::ServiceStop { name: name.into() })
            .await
    }

    /// The agent's supervised services. An agent built before services
    /// existed never answers: `Ok(None)` after `timeout`.
    pub async fn service_list(
        &self,
        timeout: Duration,
    ) -> Result<Option<Vec<ironclaw_proto::ServiceInfo>>, AgentError> {
        match tokio::time::timeout(timeout, self.call(HostMsg::ServiceList)).await {
            Err(_) => Ok(None),
            Ok(Ok(GuestMsg::Services(v))) => Ok(Some(v)),
            Ok(Ok(other)) => Err(AgentError::Protocol(format!("{other:?}"))),
            Ok(Err(e)) => Err(e),
        }
    }

    /// A TCP connection to `port` on the sandbox's own loopback (see
    /// [`HostMsg::TcpConnect`]), as a byte stream. A refused port is
    /// [`AgentError::Guest`] with [`ErrorKind::NotFound`]; an agent that
    /// does not know the request (built before it) times out.
    pub async fn tcp_connect(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<tcp::TcpTunnel, AgentError> {
        let mut s = self.open(HostMsg::TcpConnect { port }).await?;
        match tokio::time::timeout(timeout, s.recv()).await {
            Err(_) => Err(AgentError::Timeout(timeout)),
            Ok(Ok(GuestMsg::TcpConnected)) => Ok(tcp::TcpTunnel::new(s)),
            Ok(Ok(GuestMsg::Error { kind, message })) => Err(AgentError::Guest { kind, message }),
            Ok(Ok(other)) => Err(AgentError::Protocol(format!("{other:?}"))),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Requests answered by a bare `Ok` (mkdir, remove, rename, shutdown, pty kill).
    pub async fn call_ok(&self, msg: HostMsg) -> Result<(), AgentError> {
        match self.call(msg).await? {
            GuestMsg::Ok => Ok(()),
            other => Err(AgentError::Protocol(format!("{other:?}"))),
        }
    }

    /// Run a command to completion and collect its output. Stdin is fed
    /// while the output is read, so a command that answers as it reads
    /// cannot deadlock against its own input.
    pub async fn exec_collect(
        &self,
        req: ExecRequest,
        stdin: Option<Vec<u8>>,
    ) -> Result<ExecOutput, AgentError> {
        let mut req = req;
        req.stdin = stdin.is_some();
        let mut s = self.open(HostMsg::Exec(req)).await?;
        let sender = s.sender();
        let feed = async move {
            if let Some(data) = stdin {
                // Fails once the command has ended (it need not read all of
                // its input): the exit status below is the answer then.
                if sender.send(HostMsg::Stdin(data)).await.is_ok() {
                    let _ = sender.send(HostMsg::StdinEof).await;
                }
            }
        };
        let collect = async {
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
        };
        // The answer ends it all: input still waiting for credit is moot.
        tokio::pin!(feed, collect);
        let mut fed = false;
        loop {
            tokio::select! {
                () = &mut feed, if !fed => fed = true,
                out = &mut collect => return out,
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
    rx: mpsc::UnboundedReceiver<(GuestMsg, usize)>,
    send: Arc<SendWindow>,
    recv: Arc<RecvWindow>,
    finished: bool,
}

impl AgentStream {
    /// Send on the stream; see [`StreamSender::send`].
    pub async fn send(&self, msg: HostMsg) -> Result<(), AgentError> {
        self.sender().send(msg).await
    }

    /// Next message; [`AgentError::Closed`] if the connection dropped.
    /// Taking a message gives its flow-control credit back to the guest.
    pub async fn recv(&mut self) -> Result<GuestMsg, AgentError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`AgentStream::recv`] as a poll (for `AsyncRead` adapters).
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<GuestMsg, AgentError>> {
        // Waiting for data (nothing queued) means this consumer keeps up:
        // the stream's window may grow.
        let (starved, next) = match self.rx.try_recv() {
            Ok(m) => (false, Some(m)),
            Err(_) => match self.rx.poll_recv(cx) {
                std::task::Poll::Ready(m) => (true, m),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            },
        };
        std::task::Poll::Ready(match next {
            Some((m, cost)) => {
                if m.is_final() {
                    self.finished = true;
                } else if let Some(n) = self.recv.consumed(cost, starved) {
                    if let Ok(f) = frame::encode(self.id, &HostMsg::Credit(n)) {
                        // Not awaited while holding the message: a full
                        // writer queue only delays the grant.
                        if let Err(mpsc::error::TrySendError::Full(f)) =
                            self.shared.writer.try_send(f)
                        {
                            let w = self.shared.writer.clone();
                            tokio::spawn(async move { w.send(f).await });
                        }
                    }
                }
                Ok(m)
            }
            None => {
                self.finished = true;
                Err(AgentError::Closed)
            }
        })
    }

    /// A sender handle for this stream usable from another task.
    pub fn sender(&self) -> StreamSender {
        StreamSender {
            id: self.id,
            writer: self.shared.writer.clone(),
            window: self.send.clone(),
        }
    }
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        if let Some(r) = lock(&self.shared.routes).remove(&self.id) {
            r.send.close();
        }
        if !self.finished {
            // The guest must hear of it (or its operation would wait for
            // credit forever): with the queue full, from a task.
            if let Ok(f) = frame::encode(self.id, &HostMsg::Cancel) {
                if let Err(mpsc::error::TrySendError::Full(f)) = self.shared.writer.try_send(f) {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let w = self.shared.writer.clone();
                        rt.spawn(async move { w.send(f).await });
                    }
                }
            }
        }
    }
}

fn too_large(e: FrameError) -> AgentError {
    match e {
        FrameError::TooLarge(_) => AgentError::TooLarge(e.to_string()),
        e => AgentError::Protocol(e.to_string()),
    }
}

/// Sends on a stream while another task receives from it.
#[derive(Clone)]
pub struct StreamSender {
    id: u32,
    writer: mpsc::Sender<Vec<u8>>,
    window: Arc<SendWindow>,
}

impl StreamSender {
    /// Send one message. Data (`Stdin`, `Data`) of any size is split into
    /// chunks and waits for the guest's credit: it goes as fast as the
    /// guest-side operation takes it. Fails with [`AgentError::Closed`]
    /// once the stream has ended (or the connection has).
    pub async fn send(&self, msg: HostMsg) -> Result<(), AgentError> {
        match msg {
            HostMsg::Stdin(d) if d.len() > CHUNK => {
                for c in d.chunks(CHUNK) {
                    self.send_chunk(HostMsg::Stdin(Vec::new()), c).await?;
                }
                Ok(())
            }
            HostMsg::Data(d) if d.len() > CHUNK => {
                for c in d.chunks(CHUNK) {
                    self.send_chunk(HostMsg::Data(Vec::new()), c).await?;
                }
                Ok(())
            }
            m => {
                let f = frame::encode(self.id, &m).map_err(too_large)?;
                self.send_frame(f, m.costs_credit()).await
            }
        }
    }

    /// Data from the caller's buffer (`empty` is `Stdin` or `Data` with
    /// no bytes), in chunks encoded straight from it: the same frames
    /// [`StreamSender::send`] makes of an owned buffer, without the copy
    /// into one. An empty buffer is one empty frame, as `send` makes it.
    pub(crate) async fn send_bytes(&self, empty: HostMsg, data: &[u8]) -> Result<(), AgentError> {
        if data.is_empty() {
            return self.send_chunk(empty, data).await;
        }
        for c in data.chunks(CHUNK) {
            self.send_chunk(empty.clone(), c).await?;
        }
        Ok(())
    }

    /// One chunk of data, encoded straight from the caller's buffer.
    async fn send_chunk(&self, empty: HostMsg, chunk: &[u8]) -> Result<(), AgentError> {
        let f = frame::encode_with_bytes(self.id, &empty, chunk).map_err(too_large)?;
        self.send_frame(f, true).await
    }

    async fn send_frame(&self, f: Vec<u8>, costs_credit: bool) -> Result<(), AgentError> {
        if costs_credit {
            self.window
                .spend(frame::body_len(&f))
                .await
                .map_err(|_| AgentError::Closed)?;
        } else if self.window.is_closed() {
            return Err(AgentError::Closed);
        }
        self.writer.send(f).await.map_err(|_| AgentError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::fake_guest::{pair, within, STEP};
    use super::*;
    use ironclaw_proto::{MAX_FRAME, WINDOW};

    fn exec(stdin: bool) -> HostMsg {
        HostMsg::Exec(ExecRequest {
            argv: vec!["x".into()],
            stdin,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn every_wait_ends_when_the_guest_goes_away() {
        let (c, mut g) = pair().await;
        let mut s = c.open(exec(true)).await.unwrap();
        assert!(matches!(g.next().await.1, HostMsg::Exec(_)));
        // A sender waiting for credit the guest will never give.
        let sender = s.sender();
        let feed = tokio::spawn(async move { sender.send(HostMsg::Stdin(vec![0; 4 << 20])).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!feed.is_finished());
        drop(g);
        assert!(matches!(within(s.recv()).await, Err(AgentError::Closed)));
        assert!(matches!(
            within(feed).await.unwrap(),
            Err(AgentError::Closed)
        ));
        assert!(matches!(
            within(c.call(HostMsg::Ping)).await,
            Err(AgentError::Closed)
        ));
        assert!(c.is_closed());
    }

    #[tokio::test]
    async fn a_send_waiting_for_credit_ends_with_its_stream() {
        let (c, mut g) = pair().await;
        let mut s = c.open(exec(true)).await.unwrap();
        let (id, _) = g.next().await;
        let sender = s.sender();
        let feed = tokio::spawn(async move { sender.send(HostMsg::Stdin(vec![0; 4 << 20])).await });
        // The guest takes the first window's worth, then the command exits
        // without reading the rest.
        let mut got = 0;
        while got + CHUNK < WINDOW {
            if let (_, HostMsg::Stdin(d)) = g.next().await {
                got += d.len();
            }
        }
        g.send(
            id,
            GuestMsg::Exited(ExitStatus {
                code: 0,
                signal: None,
                timed_out: false,
            }),
        )
        .await;
        assert!(matches!(within(s.recv()).await, Ok(GuestMsg::Exited(_))));
        assert!(matches!(
            within(feed).await.unwrap(),
            Err(AgentError::Closed)
        ));
        // The connection is fine.
        let ping = tokio::spawn({
            let c = c.clone();
            async move { c.call(HostMsg::Ping).await }
        });
        let (pid, m) = g.next_op().await;
        assert_eq!(m, HostMsg::Ping);
        g.send(pid, GuestMsg::Pong).await;
        assert!(matches!(within(ping).await.unwrap(), Ok(GuestMsg::Pong)));
    }

    #[tokio::test]
    async fn exec_collect_returns_with_the_answer_whatever_its_stdin_does() {
        let (c, mut g) = pair().await;
        let run = tokio::spawn({
            let c = c.clone();
            async move {
                c.exec_collect(
                    ExecRequest {
                        argv: vec!["x".into()],
                        ..Default::default()
                    },
                    Some(vec![0; 8 << 20]),
                )
                .await
            }
        });
        let (id, _) = g.next().await;
        // An answer the client does not expect (and not a final one),
        // while its stdin still waits for credit: it must not wait on.
        g.send(id, GuestMsg::Data(vec![1])).await;
        assert!(matches!(
            within(run).await.unwrap(),
            Err(AgentError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn a_stalled_stream_holds_nothing_else_and_an_overrun_ends_it() {
        let (c, mut g) = pair().await;
        let mut stalled = c.open(exec(false)).await.unwrap();
        let (sid, _) = g.next().await;
        // A window's worth the host never reads...
        for _ in 0..WINDOW / CHUNK {
            g.send(sid, GuestMsg::Stdout(vec![1; CHUNK])).await;
        }
        // ...does not hold up another stream.
        let ping = tokio::spawn({
            let c = c.clone();
            async move { c.call(HostMsg::Ping).await }
        });
        let (pid, _) = g.next_op().await;
        g.send(pid, GuestMsg::Pong).await;
        assert!(matches!(within(ping).await.unwrap(), Ok(GuestMsg::Pong)));
        // A guest that ignores the window gets the stream ended (and
        // cancelled) instead of buffered without bound.
        for _ in 0..(MAX_FRAME / CHUNK + 1) {
            g.send(sid, GuestMsg::Stdout(vec![1; CHUNK])).await;
        }
        assert_eq!(g.next_op().await, (sid, HostMsg::Cancel));
        let mut n = 0;
        let last = loop {
            match within(stalled.recv()).await.unwrap() {
                GuestMsg::Stdout(_) => n += 1,
                other => break other,
            }
        };
        assert!(n * CHUNK >= WINDOW, "{n}");
        assert!(
            matches!(&last, GuestMsg::Error { message, .. } if message.contains("window")),
            "{last:?}"
        );
        assert!(!c.is_closed());
    }

    #[tokio::test]
    async fn credit_flows_back_as_the_consumer_reads() {
        let (c, mut g) = pair().await;
        let mut s = c.open(exec(false)).await.unwrap();
        let (id, _) = g.next().await;
        let total = 8 * WINDOW;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            loop {
                match s.recv().await.unwrap() {
                    GuestMsg::Stdout(d) => got += d.len(),
                    GuestMsg::Exited(_) => return got,
                    other => panic!("{other:?}"),
                }
            }
        });
        // The guest's side of the window: spend, wait for grants.
        let window = SendWindow::default();
        let mut sent = 0;
        while sent < total {
            let f = frame::encode(id, &GuestMsg::Stdout(vec![2; CHUNK])).unwrap();
            while window.available() < frame::body_len(&f) {
                match g.next().await {
                    (i, HostMsg::Credit(n)) if i == id => window.grant(n),
                    other => panic!("{other:?}"),
                }
            }
            within(window.spend(frame::body_len(&f))).await.unwrap();
            within(g.w.write_encoded(&f)).await.unwrap();
            sent += CHUNK;
        }
        g.send(
            id,
            GuestMsg::Exited(ExitStatus {
                code: 0,
                signal: None,
                timed_out: false,
            }),
        )
        .await;
        assert_eq!(within(reader).await.unwrap(), total);
    }

    #[tokio::test]
    async fn an_oversized_request_fails_and_the_connection_stays() {
        let (c, mut g) = pair().await;
        let argv: Vec<String> = (0..40_000).map(|i| format!("{i:0128}")).collect();
        let req = HostMsg::Exec(ExecRequest {
            argv,
            ..Default::default()
        });
        assert!(matches!(
            c.open(req).await.err(),
            Some(AgentError::TooLarge(_))
        ));
        // A 1 MiB argv goes, in fragments.
        let argv: Vec<String> = (0..8192).map(|i| format!("{i:0128}")).collect();
        let _s = c
            .open(HostMsg::Exec(ExecRequest {
                argv: argv.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        let mut r = ironclaw_proto::Reassembler::default();
        let msg = loop {
            match g.next().await.1 {
                HostMsg::Fragment { last, bytes } => {
                    if let Some(m) = r.push(last, &bytes).unwrap() {
                        break m;
                    }
                }
                other => panic!("{other:?}"),
            }
        };
        assert!(matches!(msg, HostMsg::Exec(e) if e.argv == argv));
        assert!(!c.is_closed());
    }

    #[tokio::test]
    async fn a_tcp_tunnel_is_a_byte_stream_with_half_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (c, mut g) = pair().await;
        let t = tokio::spawn({
            let c = c.clone();
            async move { c.tcp_connect(80, STEP).await }
        });
        let (id, m) = g.next().await;
        assert_eq!(m, HostMsg::TcpConnect { port: 80 });
        g.send(id, GuestMsg::TcpConnected).await;
        let mut t = within(t).await.unwrap().unwrap();
        // Host to guest: data in chunks, then the half-close.
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        within(t.write_all(&data)).await.unwrap();
        within(t.shutdown()).await.unwrap();
        let mut got = Vec::new();
        loop {
            match g.next_op().await {
                (i, HostMsg::Data(d)) if i == id => got.extend_from_slice(&d),
                (i, HostMsg::Eof) if i == id => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, data);
        assert!(t.write_all(b"x").await.is_err(), "written after shutdown");
        // Guest to host: data, its EOF, then the stream's end.
        g.send(id, GuestMsg::Data(b"answer".to_vec())).await;
        g.send(id, GuestMsg::TcpEof).await;
        g.send(id, GuestMsg::Ok).await;
        let mut back = Vec::new();
        within(t.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, b"answer");

        // A refused port, and an agent that does not know the request.
        let t = tokio::spawn({
            let c = c.clone();
            async move { c.tcp_connect(81, STEP).await }
        });
        let (id, _) = g.next_op().await;
        g.send(
            id,
            GuestMsg::Error {
                kind: ErrorKind::NotFound,
                message: "refused".into(),
            },
        )
        .await;
        assert!(matches!(
            within(t).await.unwrap().err(),
            Some(AgentError::Guest {
                kind: ErrorKind::NotFound,
                ..
            })
        ));
        let r = c.tcp_connect(82, Duration::from_millis(100)).await;
        assert!(matches!(r.err(), Some(AgentError::Timeout(_))));
        // A reset mid-stream is an error on read.
        let t = tokio::spawn({
            let c = c.clone();
            async move { c.tcp_connect(83, STEP).await }
        });
        let id = loop {
            match g.next_op().await {
                (i, HostMsg::TcpConnect { port: 83 }) => break i,
                _ => continue,
            }
        };
        g.send(id, GuestMsg::TcpConnected).await;
        let mut t = within(t).await.unwrap().unwrap();
        g.send(
            id,
            GuestMsg::Error {
                kind: ErrorKind::Other,
                message: "Connection reset by peer".into(),
            },
        )
        .await;
        let mut buf = Vec::new();
        let e = within(t.read_to_end(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn dropping_every_handle_closes_the_connection() {
        // A QEMU serial chardev takes the next host only once this one is
        // gone, so nothing internal may keep the connection open.
        let (c, mut g) = pair().await;
        let s = c.open(exec(false)).await.unwrap();
        assert!(matches!(g.next().await.1, HostMsg::Exec(_)));
        drop(s);
        drop(c);
        assert_eq!(g.next().await.1, HostMsg::Cancel);
        assert!(matches!(
            within(g.r.read::<HostMsg>()).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_version_mismatch_says_so() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(&mut guest);
            r.read_line(&mut line).await.unwrap();
            let nonce = line.split(' ').nth(1).unwrap().to_string();
            guest
                .write_all(format!("IRONCLAW-READY {nonce} 1 0.0.1\n").as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(STEP).await;
        });
        let _ = &mut host;
        let err = within(AgentClient::over(host)).await.err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("version 1") && text.contains(&PROTOCOL.to_string()),
            "{text}"
        );
    }

    const PROTOCOL: u32 = ironclaw_proto::PROTOCOL_VERSION;
}
