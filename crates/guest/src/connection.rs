//! One host connection: handshake, then a frame loop that multiplexes many
//! operations.
//!
//! The first message on a new stream id starts an operation in its own
//! task. Later messages on that id are routed to it: data (stdin, file
//! bytes, their ends) on one bounded channel, control (signal, resize,
//! cancel) on another, so an operation can always react to control while
//! its data side is busy. All replies funnel through one writer task.
//!
//! Head-of-line blocking: the reader waits when an operation's data channel
//! is full (e.g. a command that does not read its stdin). That is the
//! back-pressure the protocol has; it stalls this connection's reader until
//! the operation consumes data, ends (timeout, exit) or the connection
//! drops. Other operations' output keeps flowing meanwhile.
//!
//! When the connection drops, every operation sees its control channel
//! close: one-shot execs kill their process group, PTY clients detach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ironclaw_proto::{
    handshake, ErrorKind, FrameError, FrameReader, FrameWriter, GuestMsg, HostMsg,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::agent::Agent;
use crate::transport::Conn;
use crate::{exec, files, info, session};

/// Messages of data buffered per operation before the reader waits; with
/// 64 KiB chunks about 2 MiB.
const DATA_QUEUE: usize = 32;
const CTRL_QUEUE: usize = 16;
/// Replies buffered before operations wait for the socket.
const WRITE_QUEUE: usize = 64;

const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

enum WriterCmd {
    Msg(u32, GuestMsg),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The sending side of one stream.
#[derive(Clone)]
pub struct Out {
    id: u32,
    tx: mpsc::Sender<WriterCmd>,
}

/// The connection is gone; the operation should stop.
#[derive(Debug)]
pub struct Gone;

impl Out {
    pub async fn send(&self, msg: GuestMsg) -> Result<(), Gone> {
        self.tx
            .send(WriterCmd::Msg(self.id, msg))
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

    /// Wait until everything sent so far is on the wire.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterCmd::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What an operation receives after its first message.
pub struct Input {
    pub data: mpsc::Receiver<HostMsg>,
    pub ctrl: mpsc::Receiver<HostMsg>,
}

#[derive(Clone)]
struct Route {
    data: mpsc::Sender<HostMsg>,
    ctrl: mpsc::Sender<HostMsg>,
}

type Routes = Arc<Mutex<HashMap<u32, Route>>>;

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
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Msg(id, msg) => {
                if let Err(e) = w.write(id, &msg).await {
                    eprintln!("ironclaw-guest: connection write failed: {e}");
                    // Dropping rx fails every operation's next send.
                    return;
                }
            }
            WriterCmd::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    agent: Arc<Agent>,
    mut reader: FrameReader<R>,
    wtx: mpsc::Sender<WriterCmd>,
) {
    let routes: Routes = Arc::default();
    loop {
        let (id, msg) = match reader.read::<HostMsg>().await {
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
        let route = routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match (route, msg) {
            (
                Some(r),
                m @ (HostMsg::Stdin(_) | HostMsg::StdinEof | HostMsg::Data(_) | HostMsg::Eof),
            ) => {
                // A send error means the operation has finished: drop it.
                let _ = r.data.send(m).await;
            }
            (Some(r), m @ (HostMsg::Signal(_) | HostMsg::Resize(_) | HostMsg::Cancel)) => {
                let _ = r.ctrl.send(m).await;
            }
            // A host bug; answering on the stream would end the running
            // operation's stream in the host's eyes, so only log it.
            (Some(_), _) => {
                eprintln!("ironclaw-guest: stream {id} already carries an operation; ignoring")
            }
            // Late input for an operation that already ended.
            (None, HostMsg::Stdin(_) | HostMsg::StdinEof | HostMsg::Data(_) | HostMsg::Eof) => {}
            (None, HostMsg::Signal(_) | HostMsg::Resize(_) | HostMsg::Cancel) => {}
            (None, op) => start(
                &agent,
                &routes,
                Out {
                    id,
                    tx: wtx.clone(),
                },
                op,
            ),
        }
    }
    // Closing every route tells the operations the host is gone.
    routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

fn start(agent: &Arc<Agent>, routes: &Routes, out: Out, op: HostMsg) {
    let (data_tx, data) = mpsc::channel(DATA_QUEUE);
    let (ctrl_tx, ctrl) = mpsc::channel(CTRL_QUEUE);
    let id = out.id;
    routes.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        Route {
            data: data_tx,
            ctrl: ctrl_tx,
        },
    );
    let agent = agent.clone();
    let routes = routes.clone();
    tokio::spawn(async move {
        run(&agent, out, op, Input { data, ctrl }).await;
        routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
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
        HostMsg::List { path } => files::reply(out, move || files::list(&path)).await,
        HostMsg::Mkdir {
            path,
            parents,
            mode,
        } => files::reply(out, move || files::mkdir(&path, parents, mode)).await,
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
        // Filtered out by the reader; kept total for the compiler.
        HostMsg::Stdin(_)
        | HostMsg::StdinEof
        | HostMsg::Signal(_)
        | HostMsg::Resize(_)
        | HostMsg::Data(_)
        | HostMsg::Eof
        | HostMsg::Cancel => {}
    }
}
