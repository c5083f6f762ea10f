//! One-shot commands (`HostMsg::Exec`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ironclaw_proto::{ErrorKind, ExecRequest, ExitStatus, GuestMsg, HostMsg, CHUNK};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{sleep, Sleep};

use crate::agent::Agent;
use crate::connection::{DataIn, Input, Out};
use crate::errors::kind_of;
use crate::fdio::FdIo;
use crate::pty;
use crate::spawn::{self, signal_group, Io, Spec};

/// After the command exits, output still in flight is forwarded, but a
/// background process that inherited the pipes and keeps them open must
/// not hold the reply back forever: give up after this much silence.
const DRAIN_IDLE: Duration = Duration::from_millis(300);

/// End-of-transmission: what a terminal sends for ^D, the tty's "EOF".
const VEOF: u8 = 0x04;

pub async fn run(agent: &Arc<Agent>, out: Out, req: ExecRequest, mut input: Input) {
    let io = match req.tty {
        Some(size) => Io::Pty(size),
        None => Io::Pipes { stdin: req.stdin },
    };
    let spawned = spawn::spawn(
        &agent.reaper,
        Spec {
            argv: &req.argv,
            env: &req.env,
            cwd: req.cwd.as_deref(),
            user: req.user.as_deref(),
            io,
        },
    );
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            match e.exit_code() {
                Some(code) => {
                    let _ = out
                        .send(GuestMsg::Stderr(format!("ironclaw: {e}\n").into_bytes()))
                        .await;
                    let _ = out
                        .send(GuestMsg::Exited(ExitStatus {
                            code,
                            signal: None,
                            timed_out: false,
                        }))
                        .await;
                }
                None => out.error(e.kind(), e.to_string()).await,
            }
            return;
        }
    };
    let pid = spawned.pid;
    // Kills the group unless the command ended normally: covers Cancel, a
    // dropped connection and a failed send alike.
    let mut guard = Guard {
        pgid: pid,
        armed: true,
        tasks: Vec::new(),
    };
    if out.send(GuestMsg::Started { pid }).await.is_err() {
        return;
    }
    let (exited_tx, exited) = watch::channel(false);
    let mut master = None;
    let mut pumps = Vec::new();
    // From here every failure still ends the stream with a message (the
    // guard kills the command).
    if let Some(fd) = spawned.pty_master {
        let m = match FdIo::pty_master(fd) {
            Ok(m) => Arc::new(m),
            Err(e) => return out.error(kind_of(&e), format!("terminal: {e}")).await,
        };
        pumps.push(tokio::spawn(pump(
            m.clone(),
            out.clone(),
            GuestMsg::Stdout,
            exited.clone(),
        )));
        if req.stdin {
            guard
                .tasks
                .push(tokio::spawn(feed(input.data, m.clone(), Some(VEOF))).abort_handle());
        }
        master = Some(m);
    } else {
        for (fd, wrap) in [
            (spawned.stdout, GuestMsg::Stdout as fn(_) -> _),
            (spawned.stderr, GuestMsg::Stderr),
        ] {
            let src = match fd.map(FdIo::new) {
                Some(Ok(src)) => src,
                Some(Err(e)) => return out.error(kind_of(&e), format!("output pipe: {e}")).await,
                None => {
                    return out
                        .error(ErrorKind::Other, "the command has no output pipe")
                        .await
                }
            };
            pumps.push(tokio::spawn(pump(
                Arc::new(src),
                out.clone(),
                wrap,
                exited.clone(),
            )));
        }
        match spawned.stdin.map(FdIo::new) {
            Some(Ok(sink)) => guard
                .tasks
                .push(tokio::spawn(feed(input.data, Arc::new(sink), None)).abort_handle()),
            Some(Err(e)) => return out.error(kind_of(&e), format!("input pipe: {e}")).await,
            None => {}
        }
    }
    guard.tasks.extend(pumps.iter().map(|p| p.abort_handle()));

    let mut timeout: Option<Pin<Box<Sleep>>> = req
        .timeout_ms
        .map(|ms| Box::pin(sleep(Duration::from_millis(ms))));
    let mut timed_out = false;
    let mut exit = spawned.exit;
    let status = loop {
        tokio::select! {
            status = &mut exit => match status {
                Ok(s) => break s,
                // The reaper never drops a waiter; if it did, report a kill.
                Err(_) => break ExitStatus { code: 137, signal: Some(9), timed_out: false },
            },
            _ = async { timeout.as_mut().unwrap().await }, if timeout.is_some() => {
                timeout = None;
                timed_out = true;
                signal_group(pid, libc::SIGKILL);
            }
            msg = input.ctrl.recv() => match msg {
                Some(HostMsg::Signal(sig)) => signal_group(pid, sig),
                Some(HostMsg::Resize(size)) => {
                    if let Some(m) = &master {
                        let _ = pty::set_size(m.raw(), size);
                    }
                }
                // Cancel or connection gone: the guard kills the group.
                _ => return,
            },
        }
    };
    guard.armed = false;
    let _ = exited_tx.send(true);
    // Exited must come after all output; ignore pumps that died sending.
    for p in pumps {
        let _ = p.await;
    }
    let status = if timed_out {
        ExitStatus {
            code: 137,
            signal: Some(libc::SIGKILL),
            timed_out: true,
        }
    } else {
        status
    };
    let _ = out.send(GuestMsg::Exited(status)).await;
}

struct Guard {
    pgid: i32,
    armed: bool,
    tasks: Vec<AbortHandle>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Forward one output descriptor as it produces data, in chunks of at most
/// [`CHUNK`] bytes. Stops at EOF, or after [`DRAIN_IDLE`] of silence once
/// the process has exited. While the host has no room for more (its
/// window is used up) nothing is read: the pipe fills and the command
/// blocks on its writes, as it would on a slow terminal.
pub async fn pump(
    src: Arc<FdIo>,
    out: Out,
    wrap: fn(Vec<u8>) -> GuestMsg,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = if *exited.borrow() {
            match tokio::time::timeout(DRAIN_IDLE, src.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                r = src.read(&mut buf) => r,
                _ = exited.changed() => continue,
            }
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send_bytes(wrap(Vec::new()), &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copy Stdin messages into the process. The end of input closes a pipe;
/// on a terminal it is sent as `eof_byte` instead, as a keyboard would.
pub async fn feed(mut data: DataIn, sink: Arc<FdIo>, eof_byte: Option<u8>) {
    while let Some(msg) = data.recv().await {
        let more = match msg {
            // A failed write means the reader went away (EPIPE): further
            // input is moot.
            HostMsg::Stdin(bytes) => sink.write_all(&bytes).await.is_ok(),
            HostMsg::StdinEof => match eof_byte {
                Some(b) => sink.write_all(&[b]).await.is_ok(),
                None => false,
            },
            _ => true,
        };
        if !more {
            return;
        }
    }
}
