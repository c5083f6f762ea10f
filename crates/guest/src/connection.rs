//! One host connection: handshake, then a frame loop that multiplexes many
//! operations.
//!
//! The first message on a new stream id starts an operation in its own
//! task. Later messages on that id are routed to it: data (stdin, file
//! bytes, their ends) on one queue, control (signal, resize, cancel) on
//! another, so an operation can always react to control while its data
//! side is busy. All replies funnel through one writer task.
//!
//! Flow control ([`ironclaw_proto::flow`]): every stream has a credit
//! window in each direction. An operation's sends wait while the host has
//! not taken what it already got (so a pump stops reading its pipe or
//! terminal), and the host's data for an operation queues up only to its
//! window, so the reader never waits for an operation: one stalled stream
//! (a command that does not read its stdin, a host consumer that stopped
//! reading) stalls nothing else on the connection.
//!
//! Every operation ends its stream with a final message, whatever happens
//! to it: a supervisor answers with an error for one that ended (or
//! panicked) without. Only a stream the host cancelled ends silently.
//!
//! When the connection drops, every operation sees its control channel
//! close: one-shot execs kill their process group, PTY clients detach.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ironclaw_proto::{
    frame, handshake, ErrorKind, FrameError, FrameReader, FrameWriter, GuestMsg, HostMsg,
    Reassembler, RecvWindow, SendWindow, MAX_ERROR,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::agent::Agent;
use crate::transport::Conn;
use crate::{exec, files, forward, info, session, supervisor, watch};

/// Frames queued for the socket before operations wait for it.
const WRITE_QUEUE: usize = 64;
/// Frames the writer puts in one system call at most.
const WRITE_BATCH: usize = 32;

const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

enum WriterCmd {
    Frame(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The sending side of one stream.
#[derive(Clone)]
pub struct Out {
    id: u32,
    tx: mpsc::Sender<WriterCmd>,
    window: Arc<SendWindow>,
    finished: Arc<AtomicBool>,
}

/// The connection is gone, or the host cancelled the stream; the
/// operation should stop.
#[derive(Debug)]
pub struct Gone;

impl Out {
    fn new(id: u32, tx: mpsc::Sender<WriterCmd>) -> Out {
        Out {
            id,
            tx,
            window: Arc::default(),
            finished: Arc::default(),
        }
    }

    /// Encode `msg`, or an error in its place when it cannot fit a frame:
    /// an oversized reply must fail its stream, never the connection.
    fn encode(&self, mut msg: GuestMsg) -> (Vec<u8>, bool) {
        if let GuestMsg::Error { message, .. } = &mut msg {
            ironclaw_proto::truncate(message, MAX_ERROR);
        }
        match frame::encode(self.id, &msg) {
            Ok(f) => (f, msg.is_final()),
            Err(e) => {
                eprintln!("ironclaw-guest: stream {}: reply not sent: {e}", self.id);
                let err = GuestMsg::Error {
                    kind: ErrorKind::ResourceExhausted,
                    message: format!("the reply does not fit the protocol's frames: {e}"),
                };
                (
                    frame::encode(self.id, &err).expect("a short error fits"),
                    true,
                )
            }
        }
    }

    /// Send one message once the host has room for it on this stream.
    pub async fn send(&self, msg: GuestMsg) -> Result<(), Gone> {
        let (frame, fin) = self.encode(msg);
        self.window
            .spend(frame::body_len(&frame))
            .await
            .map_err(|_| Gone)?;
        self.push(frame, fin).await
    }

    /// Send `empty` (a data message with no bytes, e.g.
    /// `GuestMsg::Stdout(Vec::new())`) carrying `bytes`, encoded straight
    /// from the slice. `bytes` is at most [`ironclaw_proto::CHUNK`].
    pub async fn send_bytes(&self, empty: GuestMsg, bytes: &[u8]) -> Result<(), Gone> {
        let frame = match frame::encode_with_bytes(self.id, &empty, bytes) {
            Ok(f) => f,
            Err(_) => return self.send(empty).await,
        };
        self.window
            .spend(frame::body_len(&frame))
            .await
            .map_err(|_| Gone)?;
        self.push(frame, false).await
    }

    async fn push(&self, frame: Vec<u8>, fin: bool) -> Result<(), Gone> {
        if fin {
            self.finished.store(true, Ordering::SeqCst);
        }
        self.tx
            .send(WriterCmd::Frame(frame))
            .await
            .map_err(|_| Gone)
    }

    pub async fn error(&self, kind: ErrorKind, message: impl Into<String>) {
        let _ = self
            .send(GuestMsg::Error {
                kind,
                message: message.into(),
            })
            .await;
    }

    /// Grant the host `n` more bytes of credit on this stream. Does not
    /// wait (so [`DataIn::recv`] stays cancel-safe): with the writer's
    /// queue full the grant goes out from a task of its own.
    fn credit(&self, n: u32) {
        let Ok(f) = frame::encode(self.id, &GuestMsg::Credit(n)) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(WriterCmd::Frame(f)) {
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(cmd).await });
        }
    }

    /// Wait until everything sent so far is on the wire.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterCmd::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Data for an operation (stdin, upload bytes and their ends), in order.
/// Taking a message grants its credit back to the host.
pub struct DataIn {
    rx: mpsc::UnboundedReceiver<(HostMsg, usize)>,
    window: Arc<RecvWindow>,
    out: Out,
}

impl DataIn {
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<HostMsg> {
        let (starved, (msg, cost)) = match self.rx.try_recv() {
            Ok(m) => (false, m),
            Err(_) => (true, self.rx.recv().await?),
        };
        if let Some(n) = self.window.consumed(cost, starved) {
            self.out.credit(n);
        }
        Some(msg)
    }
}

/// What an operation receives after its first message.
pub struct Input {
    pub data: DataIn,
    pub ctrl: mpsc::UnboundedReceiver<HostMsg>,
}

#[derive(Clone)]
struct Route {
    data: mpsc::UnboundedSender<(HostMsg, usize)>,
    ctrl: mpsc::UnboundedSender<HostMsg>,
    recv: Arc<RecvWindow>,
    send: Arc<SendWindow>,
}

type Routes = Arc<Mutex<HashMap<u32, Route>>>;

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<u32, Route>> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn serve(agent: Arc<Agent>, mut conn: Conn) {
    if let Err(e) = handshake::server(&mut conn, AGENT_VERSION).await {
        eprintln!("ironclaw-guest: handshake failed: {e}");
        return;
    }
    let (rd, wr) = tokio::io::split(conn);
    let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
    tokio::spawn(write_loop(FrameWriter::new(wr), wrx));
    read_loop(agent, FrameReader::new(rd), wtx).await;
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: FrameWriter<W>,
    mut rx: mpsc::Receiver<WriterCmd>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut flushes = Vec::new();
    while let Some(cmd) = rx.recv().await {
        let mut next = Some(cmd);
        while let Some(cmd) = next.take() {
            match cmd {
                WriterCmd::Frame(f) => batch.push(f),
                WriterCmd::Flush(done) => flushes.push(done),
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = w.write_encoded_batch(&batch).await {
            eprintln!("ironclaw-guest: connection write failed: {e}");
            // Dropping rx fails every operation's next send.
            return;
        }
        batch.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    agent: Arc<Agent>,
    mut reader: FrameReader<R>,
    wtx: mpsc::Sender<WriterCmd>,
) {
    let routes: Routes = Arc::default();
    let mut assembling: HashMap<u32, Reassembler> = HashMap::new();
    loop {
        let (id, msg, cost) = match reader.read_sized::<HostMsg>().await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => break,
            // The whole frame was consumed, so the stream is still in step:
            // skip a message this agent does not understand.
            Err(FrameError::Decode(e)) => {
                eprintln!("ironclaw-guest: skipping undecodable frame: {e}");
                continue;
            }
            Err(e) => {
                eprintln!("ironclaw-guest: connection read failed: {e}");
                break;
            }
        };
        let msg = match msg {
            HostMsg::Fragment { last, bytes } => {
                let r = assembling.entry(id).or_default().push(last, &bytes);
                match r {
                    Ok(None) => continue,
                    Ok(Some(msg)) => {
                        assembling.remove(&id);
                        msg
                    }
                    Err(e) => {
                        // Later fragments of it start a new (also refused)
                        // assembly; the host stops at the first error.
                        assembling.remove(&id);
                        let out = Out::new(id, wtx.clone());
                        tokio::spawn(async move {
                            out.error(ErrorKind::InvalidInput, e.to_string()).await
                        });
                        continue;
                    }
                }
            }
            m => m,
        };
        let route = lock(&routes).get(&id).cloned();
        match (route, msg) {
            (Some(r), HostMsg::Credit(n)) => r.send.grant(n),
            (Some(r), m) if m.costs_credit() => {
                if let Err(e) = r.recv.received(cost) {
                    eprintln!("ironclaw-guest: stream {id}: {e}; cancelling it");
                    r.send.close();
                    let _ = r.ctrl.send(HostMsg::Cancel);
                    continue;
                }
                // A send error means the operation has finished: drop it.
                let _ = r.data.send((m, cost));
            }
            (Some(r), HostMsg::Cancel) => {
                // The host no longer reads this stream: nothing more goes out.
                r.send.close();
                let _ = r.ctrl.send(HostMsg::Cancel);
            }
            (Some(r), m @ (HostMsg::Signal(_) | HostMsg::Resize(_))) => {
                let _ = r.ctrl.send(m);
            }
            // A host bug; answering on the stream would end the running
            // operation's stream in the host's eyes, so only log it.
            (Some(_), _) => {
                eprintln!("ironclaw-guest: stream {id} already carries an operation; ignoring")
            }
            // Late input or control for an operation that already ended.
            (
                None,
                HostMsg::Stdin(_)
                | HostMsg::StdinEof
                | HostMsg::Data(_)
                | HostMsg::Eof
                | HostMsg::Signal(_)
                | HostMsg::Resize(_)
                | HostMsg::Cancel
                | HostMsg::Credit(_)
                | HostMsg::Fragment { .. },
            ) => {}
            (None, op) => start(&agent, &routes, Out::new(id, wtx.clone()), op),
        }
    }
    // Closing every route tells the operations the host is gone.
    for (_, r) in lock(&routes).drain() {
        r.send.close();
    }
}

fn start(agent: &Arc<Agent>, routes: &Routes, out: Out, op: HostMsg) {
    let (data_tx, data) = mpsc::unbounded_channel();
    let (ctrl_tx, ctrl) = mpsc::unbounded_channel();
    let recv = Arc::new(RecvWindow::default());
    let id = out.id;
    lock(routes).insert(
        id,
        Route {
            data: data_tx,
            ctrl: ctrl_tx,
            recv: recv.clone(),
            send: out.window.clone(),
        },
    );
    let input = Input {
        data: DataIn {
            rx: data,
            window: recv,
            out: out.clone(),
        },
        ctrl,
    };
    let agent = agent.clone();
    let routes = routes.clone();
    let task = {
        let out = out.clone();
        async move { run(&agent, out, op, input).await }
    };
    tokio::spawn(async move {
        supervise(out, task).await;
        lock(&routes).remove(&id);
    });
}

/// A future's panic as an `Err`, so an operation's supervisor runs in the
/// operation's own task (no second task per request).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

/// Run an operation and make sure its stream ends with a
/// final message even if it returns without one or panics: the host must
/// never wait for a reply that will not come.
async fn supervise<F>(out: Out, op: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let res = CatchUnwind(Box::pin(op)).await;
    if out.finished.load(Ordering::SeqCst) || out.window.is_closed() {
        return;
    }
    let message = match res {
        Err(()) => {
            eprintln!("ironclaw-guest: stream {}: operation panicked", out.id);
            "internal error in the guest agent: the operation panicked"
        }
        _ => "internal error in the guest agent: the operation ended without a reply",
    };
    // Not held back by the window: the stream ends here, whatever the host
    // has not read yet.
    let (frame, _) = out.encode(GuestMsg::Error {
        kind: ErrorKind::Other,
        message: message.into(),
    });
    let _ = out.push(frame, true).await;
}

async fn run(agent: &Arc<Agent>, out: Out, op: HostMsg, input: Input) {
    match op {
        HostMsg::Exec(req) => exec::run(agent, out, req, input).await,
        HostMsg::PtyOpen(req) => session::open(agent, out, req, input).await,
        HostMsg::PtyList => {
            let _ = out.send(GuestMsg::PtySessions(agent.sessions.list())).await;
        }
        HostMsg::PtyKill { name } => session::kill(agent, out, &name).await,
        HostMsg::FileRead { path } => files::read(out, &path, input).await,
        HostMsg::FileWrite(req) => files::write(out, req, input).await,
        HostMsg::Stat { path } => files::reply(out, move || files::stat(&path)).await,
        HostMsg::List { path } => files::list(out, path).await,
        HostMsg::Mkdir {
            path,
            parents,
            mode,
            user,
        } => {
            files::reply(out, move || {
                files::mkdir(&path, parents, mode, user.as_deref())
            })
            .await
        }
        HostMsg::Remove { path, recursive } => {
            files::reply(out, move || files::remove(&path, recursive)).await
        }
        HostMsg::Rename { from, to } => files::reply(out, move || files::rename(&from, &to)).await,
        HostMsg::Info => {
            let info = info::gather(agent).await;
            let _ = out.send(GuestMsg::Info(info)).await;
        }
        HostMsg::Shutdown => {
            // The host must see the Ok before the agent goes away.
            let _ = out.send(GuestMsg::Ok).await;
            out.flush().await;
            agent.request_shutdown();
        }
        HostMsg::Ping => {
            let _ = out.send(GuestMsg::Pong).await;
        }
        HostMsg::ServiceStart(spec) => supervisor::start(agent, out, spec).await,
        HostMsg::ServiceStop { name } => supervisor::stop(agent, out, &name).await,
        HostMsg::ServiceList => {
            let _ = out.send(GuestMsg::Services(agent.services.list())).await;
        }
        HostMsg::TcpConnect { port } => forward::run(out, port, input).await,
        HostMsg::Watch(req) => watch::run(out, req, input).await,
        // Filtered out by the reader; kept total for the compiler.
        HostMsg::Stdin(_)
        | HostMsg::StdinEof
        | HostMsg::Signal(_)
        | HostMsg::Resize(_)
        | HostMsg::Data(_)
        | HostMsg::Eof
        | HostMsg::Cancel
        | HostMsg::Credit(_)
        | HostMsg::Fragment { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironclaw_proto::WINDOW;

    async fn decode(cmd: WriterCmd) -> (u32, GuestMsg) {
        let WriterCmd::Frame(f) = cmd else { panic!() };
        FrameReader::new(&f[..]).read().await.unwrap()
    }

    #[tokio::test]
    async fn a_panicking_or_silent_operation_still_ends_its_stream() {
        let (tx, mut rx) = mpsc::channel(8);
        supervise(Out::new(3, tx.clone()), async { panic!("boom") }).await;
        let (id, msg) = decode(rx.recv().await.unwrap()).await;
        assert_eq!(id, 3);
        assert!(
            matches!(&msg, GuestMsg::Error { kind: ErrorKind::Other, message } if message.contains("panicked")),
            "{msg:?}"
        );
        supervise(Out::new(5, tx.clone()), async {}).await;
        assert!(matches!(
            decode(rx.recv().await.unwrap()).await,
            (5, GuestMsg::Error { .. })
        ));
        // An operation that answered gets nothing more.
        let out = Out::new(7, tx.clone());
        let o = out.clone();
        supervise(out, async move { o.send(GuestMsg::Pong).await.unwrap() }).await;
        assert_eq!(decode(rx.recv().await.unwrap()).await, (7, GuestMsg::Pong));
        // Even when the host's window is used up.
        let out = Out::new(9, tx.clone());
        out.window.spend(WINDOW).await.unwrap();
        supervise(out, async {}).await;
        assert!(matches!(
            decode(rx.recv().await.unwrap()).await,
            (9, GuestMsg::Error { .. })
        ));
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn an_oversized_reply_becomes_an_error() {
        let (tx, mut rx) = mpsc::channel(8);
        let out = Out::new(1, tx);
        out.send(GuestMsg::Stdout(vec![0; 2 << 20])).await.unwrap();
        let (_, msg) = decode(rx.recv().await.unwrap()).await;
        assert!(
            matches!(
                msg,
                GuestMsg::Error {
                    kind: ErrorKind::ResourceExhausted,
                    ..
                }
            ),
            "{msg:?}"
        );
        out.error(ErrorKind::Other, "x".repeat(1 << 20)).await;
        let (_, GuestMsg::Error { message, .. }) = decode(rx.recv().await.unwrap()).await else {
            panic!()
        };
        assert!(message.len() <= MAX_ERROR);
    }
}
