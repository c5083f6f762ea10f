//! The one place that waits for children.
//!
//! As PID 1 the agent must reap every zombie, including orphans it never
//! spawned, which means `waitpid(-1)`. That would steal exit statuses from
//! any other waiter (tokio::process included), so all spawning goes through
//! [`Reaper::spawn`] and statuses are handed out from here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ironclaw_proto::ExitStatus;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Reaper {
    /// Pids we spawned and someone waits for. Held while spawning so a child
    /// that exits at once cannot be reaped before its waiter is registered.
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Start a child with `start` (which returns its pid) and register
    /// for its exit status.
    pub fn spawn(
        &self,
        start: impl FnOnce() -> std::io::Result<i32>,
    ) -> std::io::Result<(i32, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let pid = start()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Pids of spawned children that have not exited yet.
    pub fn live(&self) -> Vec<i32> {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Collect every exited child without blocking.
    pub fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    let (Some(pid), Some(exit)) = (status.pid(), exit_status(status)) else {
                        continue;
                    };
                    if let Some(tx) = waiters.remove(&pid.as_raw()) {
                        let _ = tx.send(exit);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => break,
            }
        }
    }

    /// Reap on every SIGCHLD, forever. The periodic pass is a safety net:
    /// signals coalesce, and a reap pass is cheap.
    pub async fn run(&self) {
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "ironclaw-guest: cannot watch SIGCHLD ({e}); polling for exited children"
                );
                None
            }
        };
        loop {
            self.reap();
            match sigchld.as_mut() {
                Some(s) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Shell convention: a signal death is reported as 128 + signal.
pub fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus {
            code,
            signal: None,
            timed_out: false,
        }),
        WaitStatus::Signaled(_, sig, _) => Some(ExitStatus {
            code: 128 + sig as i32,
            signal: Some(sig as i32),
            timed_out: false,
        }),
        _ => None,
    }
}
