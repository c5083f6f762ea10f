//! A minimal host side for tests: starts the agent binary and speaks the
//! protocol to it with ironclaw-proto's framing and handshake.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclaw_proto::{
    handshake, DirEntry, ExecRequest, ExitStatus, FrameReader, FrameWriter, GuestMsg, HostMsg,
    RecvWindow, SendWindow,
};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// The agent under test: the binary cargo built for these tests, or
/// another build (e.g. the static release binary) named by
/// `IRONCLAW_GUEST_BIN`.
pub fn guest() -> PathBuf {
    std::env::var_os("IRONCLAW_GUEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ironclaw-guest").into())
}
/// Generous: a step that takes this long is a failure, not slowness.
pub const STEP: Duration = Duration::from_secs(10);

/// Wait for the agent's ready line on `child`'s stdout.
pub fn wait_ready(child: &mut Child) {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if line == "ironclaw-guest: ready" {
                let _ = tx.send(());
                break;
            }
        }
        // Keep draining so the agent never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(STEP)
        .expect("agent did not print its ready line");
}

/// An agent in `serve` mode on a socket in a temporary directory.
pub struct Guest {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Guest {
    pub fn start() -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let mut child = Command::new(guest())
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            // Must not leak into commands the agent runs.
            .env("IRONCLAW_LEAK_CHECK", "leaked")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(&mut child);
        Guest { child, dir, sock }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.sock).await
    }
}

impl Drop for Guest {
    /// SIGTERM first: the agent then stops its children too, so a failed
    /// test leaves no processes behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain syscall on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let until = std::time::Instant::now() + Duration::from_secs(4);
            while std::time::Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reader's side of a stream: where its messages go and the credit
/// the guest granted for what this end sends on it.
struct Route {
    tx: mpsc::UnboundedSender<(GuestMsg, usize)>,
    send: Arc<SendWindow>,
}

type Streams = Arc<Mutex<HashMap<u32, Route>>>;
type Writer = Arc<tokio::sync::Mutex<FrameWriter<OwnedWriteHalf>>>;

pub struct Client {
    writer: Writer,
    streams: Streams,
    next: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One stream, flow-controlled like the real host: the guest gets credit
/// back only as [`Stream::next`] takes messages.
pub struct Stream {
    pub id: u32,
    rx: mpsc::UnboundedReceiver<(GuestMsg, usize)>,
    writer: Writer,
    send: Arc<SendWindow>,
    recv: RecvWindow,
}

impl Client {
    pub async fn connect(sock: &Path) -> Client {
        let mut s = UnixStream::connect(sock).await.unwrap();
        let ready = handshake::client(&mut s, 0x1234_5678_9abc_def0)
            .await
            .unwrap();
        assert_eq!(ready.agent_version, env!("CARGO_PKG_VERSION"));
        let (rd, wr) = s.into_split();
        let streams: Streams = Arc::default();
        let routes = streams.clone();
        let reader = tokio::spawn(async move {
            let mut r = FrameReader::new(rd);
            while let Ok((id, msg, cost)) = r.read_sized::<GuestMsg>().await {
                let map = routes.lock().unwrap();
                let Some(route) = map.get(&id) else { continue };
                match msg {
                    GuestMsg::Credit(n) => route.send.grant(n),
                    msg => {
                        let _ = route.tx.send((msg, cost));
                    }
                }
            }
            // Connection gone: end every stream.
            for (_, r) in routes.lock().unwrap().drain() {
                r.send.close();
            }
        });
        Client {
            writer: Arc::new(tokio::sync::Mutex::new(FrameWriter::new(wr))),
            streams,
            next: AtomicU32::new(1),
            reader,
        }
    }

    /// Open a stream; a request too big for a frame goes in fragments.
    pub async fn open(&self, msg: HostMsg) -> Stream {
        let pieces = ironclaw_proto::fragments(msg).expect("request fits the protocol");
        self.open_raw(pieces).await
    }

    /// Open a stream with these messages as they are (a test can send
    /// what a correct host would not).
    pub async fn open_raw(&self, pieces: Vec<HostMsg>) -> Stream {
        let id = self.next.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let send = Arc::new(SendWindow::default());
        self.streams.lock().unwrap().insert(
            id,
            Route {
                tx,
                send: send.clone(),
            },
        );
        let s = Stream {
            id,
            rx,
            writer: self.writer.clone(),
            send,
            recv: RecvWindow::default(),
        };
        for piece in pieces {
            s.writer.lock().await.write(id, &piece).await.unwrap();
        }
        s
    }

    /// One request, one final answer.
    pub async fn call(&self, msg: HostMsg) -> GuestMsg {
        self.open(msg).await.next().await
    }

    pub async fn exec(&self, argv: &[&str]) -> Output {
        self.exec_req(ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
    }

    pub async fn exec_req(&self, req: ExecRequest) -> Output {
        self.open(HostMsg::Exec(req)).await.output().await
    }

    /// A listing, its parts put together.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, GuestMsg> {
        let mut s = self.open(HostMsg::List { path: path.into() }).await;
        let mut all = Vec::new();
        loop {
            match s.next().await {
                GuestMsg::EntriesPart(e) => all.extend(e),
                GuestMsg::Entries(e) => {
                    all.extend(e);
                    return Ok(all);
                }
                other => return Err(other),
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Output {
    pub started: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<ExitStatus>,
}

impl Output {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.status.expect("exited").code
    }
}

/// A second handle for sending on a stream while another task reads it.
#[derive(Clone)]
pub struct Sender {
    id: u32,
    writer: Writer,
    send: Arc<SendWindow>,
}

impl Sender {
    /// Send, waiting for the guest's credit for data. Panics if the stream
    /// ended first.
    pub async fn send(&self, msg: HostMsg) {
        self.try_send(msg).await.expect("stream ended")
    }

    /// Send, or `Err` if the stream ended before the guest had room.
    pub async fn try_send(&self, msg: HostMsg) -> Result<(), ()> {
        let frame = ironclaw_proto::encode(self.id, &msg).unwrap();
        if msg.costs_credit() {
            self.send
                .spend(ironclaw_proto::body_len(&frame))
                .await
                .map_err(|_| ())?;
        }
        self.writer
            .lock()
            .await
            .write_encoded(&frame)
            .await
            .map_err(|_| ())
    }
}

impl Stream {
    pub async fn send(&self, msg: HostMsg) {
        self.sender().send(msg).await;
    }

    pub fn sender(&self) -> Sender {
        Sender {
            id: self.id,
            writer: self.writer.clone(),
            send: self.send.clone(),
        }
    }

    async fn take(&mut self, got: Option<(GuestMsg, usize)>) -> Option<GuestMsg> {
        let (msg, cost) = got?;
        if let Some(n) = self.recv.consumed(cost, false) {
            let f = ironclaw_proto::encode(self.id, &HostMsg::Credit(n)).unwrap();
            let _ = self.writer.lock().await.write_encoded(&f).await;
        }
        Some(msg)
    }

    /// Next message; panics after [`STEP`] or if the stream ended.
    pub async fn next(&mut self) -> GuestMsg {
        match tokio::time::timeout(STEP, self.rx.recv()).await {
            Ok(Some(m)) => self.take(Some(m)).await.unwrap(),
            Ok(None) => panic!("stream {} ended without a final message", self.id),
            Err(_) => panic!("stream {}: no message within {STEP:?}", self.id),
        }
    }

    /// Next message if one arrives within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Option<GuestMsg> {
        let got = tokio::time::timeout(d, self.rx.recv()).await.ok().flatten();
        self.take(got).await
    }

    /// Collect an exec stream until its final message.
    pub async fn output(&mut self) -> Output {
        let mut out = Output::default();
        loop {
            match self.next().await {
                GuestMsg::Started { .. } => out.started = true,
                GuestMsg::Stdout(b) => out.stdout.extend(b),
                GuestMsg::Stderr(b) => out.stderr.extend(b),
                GuestMsg::Exited(s) => {
                    out.status = Some(s);
                    return out;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Read Stdout until the accumulated output contains `needle`.
    pub async fn stdout_until(&mut self, needle: &str) -> String {
        let mut acc = Vec::new();
        loop {
            match self.next().await {
                GuestMsg::Stdout(b) => {
                    acc.extend(b);
                    if String::from_utf8_lossy(&acc).contains(needle) {
                        return String::from_utf8_lossy(&acc).into_owned();
                    }
                }
                other => panic!(
                    "waiting for {needle:?}: unexpected {other:?} after {:?}",
                    String::from_utf8_lossy(&acc)
                ),
            }
        }
    }
}

pub fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// True if a process with this (host) pid still exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub async fn wait_gone(pid: i32, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}
