//! Named PTY sessions that outlive connections (`HostMsg::PtyOpen`).
//!
//! A session is one process on one terminal, plus a ring buffer of its
//! recent output so a client that (re)attaches can redraw. Any number of
//! clients may be attached; each gets all output. Detaching (Cancel, a
//! dropped connection) leaves the session running; the process exiting
//! ends it for everyone.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ironclaw_proto::{
    ErrorKind, ExitStatus, GuestMsg, HostMsg, PtyOpen, PtySessionInfo, TtySize, CHUNK,
};
use tokio::sync::{broadcast, watch};

use crate::agent::Agent;
use crate::connection::{Input, Out};
use crate::exec::feed;
use crate::fdio::FdIo;
use crate::pty;
use crate::spawn::{self, signal_group, Io, Spec};

/// Output kept per session for replay on attach.
const REPLAY_BYTES: usize = 256 * 1024;
/// Output chunks buffered per attached client. A client that falls further
/// behind loses the oldest chunks (and is told nothing: a terminal redraws
/// on the next full-screen update); the session itself never waits for a
/// slow client.
const CLIENT_BACKLOG: usize = 1024;
/// Longest session name.
const MAX_NAME: usize = 256;
/// How long a killed session gets to exit on SIGHUP before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// Output drained after the process exits; see `exec::DRAIN_IDLE`.
const DRAIN_IDLE: Duration = Duration::from_millis(300);

#[derive(Clone)]
enum Event {
    Output(Arc<[u8]>),
    Exited(ExitStatus),
}

struct State {
    replay: VecDeque<u8>,
    size: TtySize,
    attached: u32,
    exit: Option<ExitStatus>,
}

pub struct Session {
    name: String,
    pid: i32,
    master: Arc<FdIo>,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    ended: watch::Receiver<bool>,
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resize(&self, size: TtySize) {
        if pty::set_size(self.master.raw(), size).is_ok() {
            self.state().size = size;
        }
    }

    fn info(&self) -> PtySessionInfo {
        let st = self.state();
        PtySessionInfo {
            name: self.name.clone(),
            pid: self.pid,
            alive: st.exit.is_none(),
            attached: st.attached,
            size: st.size,
        }
    }
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<PtySessionInfo> {
        let mut out: Vec<_> = self.map().values().map(|s| s.info()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn login_shell() -> Vec<String> {
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    vec![shell.to_string(), "-l".to_string()]
}

/// Find the live session called `req.name` or start it. Creating under the
/// registry lock keeps two racing opens from starting two processes.
fn get_or_create(
    agent: &Arc<Agent>,
    req: &PtyOpen,
) -> Result<(Arc<Session>, bool), spawn::SpawnError> {
    let mut map = agent.sessions.map();
    if let Some(s) = map.get(&req.name) {
        if s.state().exit.is_none() {
            return Ok((s.clone(), false));
        }
    }
    let argv = if req.argv.is_empty() {
        login_shell()
    } else {
        req.argv.clone()
    };
    let spawned = spawn::spawn(
        &agent.reaper,
        Spec {
            argv: &argv,
            env: &req.env,
            cwd: req.cwd.as_deref(),
            user: req.user.as_deref(),
            io: Io::Pty(req.size),
        },
    )?;
    let fd = spawned.pty_master.expect("a PTY spawn has a master");
    let master = match FdIo::pty_master(fd) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            signal_group(spawned.pid, libc::SIGKILL);
            return Err(spawn::SpawnError::Io {
                cmd: argv[0].clone(),
                source: e,
            });
        }
    };
    let (events, _) = broadcast::channel(CLIENT_BACKLOG);
    let (ended_tx, ended) = watch::channel(false);
    let session = Arc::new(Session {
        name: req.name.clone(),
        pid: spawned.pid,
        master,
        state: Mutex::new(State {
            replay: VecDeque::new(),
            size: req.size,
            attached: 0,
            exit: None,
        }),
        events,
        ended,
    });
    map.insert(req.name.clone(), session.clone());
    tokio::spawn(lifecycle(
        agent.clone(),
        session.clone(),
        spawned.exit,
        ended_tx,
    ));
    Ok((session, true))
}

/// Read the terminal until the process is gone, then end the session.
async fn lifecycle(
    agent: Arc<Agent>,
    s: Arc<Session>,
    exit: tokio::sync::oneshot::Receiver<ExitStatus>,
    ended: watch::Sender<bool>,
) {
    let (exited_tx, mut exited) = watch::channel(false);
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let r = if *exited.borrow() {
                    match tokio::time::timeout(DRAIN_IDLE, s.master.read(&mut buf)).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                } else {
                    tokio::select! {
                        r = s.master.read(&mut buf) => r,
                        _ = exited.changed() => continue,
                    }
                };
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Under the state lock so an attaching client's replay
                // snapshot and its live feed neither overlap nor miss bytes.
                let mut st = s.state();
                st.replay.extend(&buf[..n]);
                let excess = st.replay.len().saturating_sub(REPLAY_BYTES);
                st.replay.drain(..excess);
                let _ = s.events.send(Event::Output(Arc::from(&buf[..n])));
            }
        })
    };
    let status = exit.await.unwrap_or(ExitStatus {
        code: 137,
        signal: Some(libc::SIGKILL),
        timed_out: false,
    });
    let _ = exited_tx.send(true);
    let _ = reader.await;
    {
        let mut map = agent.sessions.map();
        if map.get(&s.name).is_some_and(|cur| Arc::ptr_eq(cur, &s)) {
            map.remove(&s.name);
        }
    }
    {
        let mut st = s.state();
        st.exit = Some(status);
        let _ = s.events.send(Event::Exited(status));
    }
    let _ = ended.send(true);
    // Whatever still holds the terminal (background jobs) gets hung up on
    // when the last client drops the session and with it the master.
}

/// Decrements the attach count however the client leaves.
struct Attachment(Arc<Session>);

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.attached = st.attached.saturating_sub(1);
    }
}

pub async fn open(agent: &Arc<Agent>, out: Out, req: PtyOpen, mut input: Input) {
    if req.name.is_empty() {
        out.error(ErrorKind::InvalidInput, "a PTY session needs a name")
            .await;
        return;
    }
    // Names come back in every session listing, which must fit a frame.
    if req.name.len() > MAX_NAME {
        out.error(
            ErrorKind::InvalidInput,
            format!("a PTY session name is at most {MAX_NAME} bytes"),
        )
        .await;
        return;
    }
    let (s, created) = match get_or_create(agent, &req) {
        Ok(x) => x,
        Err(e) => {
            out.error(e.kind(), e.to_string()).await;
            return;
        }
    };
    let (replay, mut events) = {
        let mut st = s.state();
        st.attached += 1;
        let replay: Vec<u8> = if created {
            Vec::new()
        } else {
            st.replay.iter().copied().collect()
        };
        (replay, s.events.subscribe())
    };
    let _attachment = Attachment(s.clone());
    if out
        .send(GuestMsg::PtyAttached {
            created,
            pid: s.pid,
        })
        .await
        .is_err()
    {
        return;
    }
    if !created {
        // At least one Stdout, so the host can rely on the replay message.
        let mut chunks = replay.chunks(CHUNK).peekable();
        if chunks.peek().is_none() && out.send(GuestMsg::Stdout(Vec::new())).await.is_err() {
            return;
        }
        for c in chunks {
            if out
                .send_bytes(GuestMsg::Stdout(Vec::new()), c)
                .await
                .is_err()
            {
                return;
            }
        }
        s.resize(req.size);
    }
    let writer = tokio::spawn(feed(input.data, s.master.clone(), Some(0x04)));
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Event::Output(bytes)) => {
                    if out.send_bytes(GuestMsg::Stdout(Vec::new()), &bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Exited(status)) => {
                    let _ = out.send(GuestMsg::Exited(status)).await;
                    break;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    let status = s.state().exit;
                    if let Some(status) = status {
                        let _ = out.send(GuestMsg::Exited(status)).await;
                    }
                    break;
                }
            },
            msg = input.ctrl.recv() => match msg {
                Some(HostMsg::Resize(size)) => s.resize(size),
                Some(HostMsg::Signal(sig)) => signal_group(s.pid, sig),
                // Cancel or connection gone: detach, the session lives on.
                _ => break,
            },
        }
    }
    writer.abort();
}

pub async fn kill(agent: &Arc<Agent>, out: Out, name: &str) {
    let Some(s) = agent.sessions.map().get(name).cloned() else {
        out.error(
            ErrorKind::NotFound,
            format!("no PTY session named {name:?}"),
        )
        .await;
        return;
    };
    let mut ended = s.ended.clone();
    // SIGHUP is what a terminal hang-up sends; interactive shells ignore
    // SIGTERM. SIGCONT wakes a stopped job so it can act on it.
    signal_group(s.pid, libc::SIGHUP);
    signal_group(s.pid, libc::SIGCONT);
    if tokio::time::timeout(KILL_GRACE, ended.wait_for(|e| *e))
        .await
        .is_err()
    {
        signal_group(s.pid, libc::SIGKILL);
        let _ = tokio::time::timeout(KILL_GRACE, ended.wait_for(|e| *e)).await;
    }
    let _ = out.send(GuestMsg::Ok).await;
}
