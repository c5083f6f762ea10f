//! Supervised services: named long-running processes the agent keeps up
//! independently of any connection (a deployed app's web process). Each
//! runs in its own session and process group with stdout and stderr
//! appended to its log file; when it exits it is started again after a
//! backoff (1 s doubling to 30 s, back to 1 s after 30 s of uptime), until
//! the host stops it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_proto::{ErrorKind, GuestMsg, ServiceInfo, ServiceSpec};
use tokio::sync::{watch, Notify};

use crate::agent::Agent;
use crate::connection::Out;
use crate::spawn::{self, signal_group, Io, Spec};

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Uptime after which a crash restarts at once-ish again.
const STABLE: Duration = Duration::from_secs(30);
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Services {
    map: Mutex<HashMap<String, Arc<Service>>>,
}

struct Service {
    spec: ServiceSpec,
    state: Mutex<State>,
    stop: Notify,
    /// Becomes true when the supervising task has ended.
    done: watch::Receiver<bool>,
}

#[derive(Default)]
struct State {
    pid: Option<i32>,
    restarts: u32,
    stopping: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Services {
    /// At shutdown: no service is restarted any more (each task stops its
    /// process; the shutdown's own kill follows).
    pub fn stop_all(&self) {
        for s in lock(&self.map).values() {
            lock(&s.state).stopping = true;
            s.stop.notify_one();
        }
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        let mut v: Vec<ServiceInfo> = lock(&self.map)
            .values()
            .map(|s| {
                let st = lock(&s.state);
                ServiceInfo {
                    name: s.spec.name.clone(),
                    pid: st.pid,
                    restarts: st.restarts,
                    supervised: !st.stopping && !*s.done.borrow(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// Append-only log file for the service's output.
fn open_log(path: &str) -> std::io::Result<OwnedFd> {
    let p = spawn::resolve(path);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)?;
    Ok(f.into())
}

fn note(path: &str, line: &str) {
    use std::io::Write;
    if let Ok(fd) = open_log(path) {
        let mut f = std::fs::File::from(fd);
        let _ = writeln!(f, "[ironclaw] {line}");
    }
}

fn spawn_once(agent: &Agent, spec: &ServiceSpec) -> Result<spawn::Spawned, String> {
    let log = open_log(&spec.log).map_err(|e| format!("log file {}: {e}", spec.log))?;
    spawn::spawn(
        &agent.reaper,
        Spec {
            argv: &spec.argv,
            env: &spec.env,
            cwd: spec.cwd.as_deref(),
            user: None,
            io: Io::Log(log),
        },
    )
    .map_err(|e| e.to_string())
}

pub async fn start(agent: &Arc<Agent>, out: Out, spec: ServiceSpec) {
    if spec.name.is_empty() || spec.log.is_empty() || spec.argv.is_empty() {
        out.error(
            ErrorKind::InvalidInput,
            "a service needs a name, a command and a log file",
        )
        .await;
        return;
    }
    // Checked and inserted under one lock, so two starts cannot both win.
    let started = {
        let mut map = lock(&agent.services.map);
        if map.get(&spec.name).is_some_and(|s| !*s.done.borrow()) {
            Err((
                ErrorKind::AlreadyExists,
                format!("service {:?} is already supervised", spec.name),
            ))
        } else {
            note(
                &spec.log,
                &format!("starting {}: {}", spec.name, spec.argv.join(" ")),
            );
            match spawn_once(agent, &spec) {
                Ok(first) => {
                    let (done_tx, done) = watch::channel(false);
                    let svc = Arc::new(Service {
                        spec: spec.clone(),
                        state: Mutex::new(State {
                            pid: Some(first.pid),
                            ..State::default()
                        }),
                        stop: Notify::new(),
                        done,
                    });
                    map.insert(spec.name.clone(), svc.clone());
                    Ok((svc, first, done_tx))
                }
                Err(e) => Err((ErrorKind::InvalidInput, e)),
            }
        }
    };
    let (svc, first, done_tx) = match started {
        Ok(v) => v,
        Err((kind, e)) => {
            out.error(kind, e).await;
            return;
        }
    };
    let agent2 = agent.clone();
    tokio::spawn(async move {
        supervise(&agent2, &svc, first).await;
        lock(&svc.state).pid = None;
        let _ = done_tx.send(true);
    });
    let _ = out.send(GuestMsg::Ok).await;
}

async fn supervise(agent: &Agent, svc: &Service, first: spawn::Spawned) {
    let spec = &svc.spec;
    let mut delay = Duration::from_secs(1);
    let mut running = Some(first);
    loop {
        let Some(proc) = running.take() else { return };
        let started = Instant::now();
        let pid = proc.pid;
        let mut exit = proc.exit;
        let status = tokio::select! {
            st = &mut exit => st.ok(),
            _ = svc.stop.notified() => {
                signal_group(pid, libc::SIGTERM);
                if tokio::time::timeout(KILL_GRACE, &mut exit).await.is_err() {
                    signal_group(pid, libc::SIGKILL);
                    let _ = exit.await;
                }
                note(&spec.log, &format!("stopped {}", spec.name));
                return;
            }
        };
        let restarts = {
            let mut st = lock(&svc.state);
            st.pid = None;
            st.restarts += 1;
            st.restarts
        };
        if started.elapsed() > STABLE {
            delay = Duration::from_secs(1);
        }
        let how = match status {
            Some(s) => match s.signal {
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("status {}", s.code),
            },
            None => "unknown status".into(),
        };
        note(
            &spec.log,
            &format!(
                "{} exited ({how}); restart {restarts} in {}s",
                spec.name,
                delay.as_secs()
            ),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = svc.stop.notified() => {
                note(&spec.log, &format!("stopped {}", spec.name));
                return;
            }
        }
        delay = (delay * 2).min(MAX_BACKOFF);
        note(
            &spec.log,
            &format!("starting {}: {}", spec.name, spec.argv.join(" ")),
        );
        loop {
            match spawn_once(agent, spec) {
                Ok(p) => {
                    lock(&svc.state).pid = Some(p.pid);
                    running = Some(p);
                    break;
                }
                Err(e) => {
                    note(&spec.log, &format!("cannot start {}: {e}", spec.name));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = svc.stop.notified() => return,
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

pub async fn stop(agent: &Arc<Agent>, out: Out, name: &str) {
    let svc = lock(&agent.services.map).get(name).cloned();
    let Some(svc) = svc else {
        out.error(ErrorKind::NotFound, format!("no service named {name:?}"))
            .await;
        return;
    };
    lock(&svc.state).stopping = true;
    // A stored permit: the task takes it at its next wait if it is not
    // waiting right now.
    svc.stop.notify_one();
    let mut done = svc.done.clone();
    let _ = tokio::time::timeout(KILL_GRACE * 3, done.wait_for(|d| *d)).await;
    {
        let mut map = lock(&agent.services.map);
        if map.get(name).is_some_and(|s| Arc::ptr_eq(s, &svc)) {
            map.remove(name);
        }
    }
    let _ = out.send(GuestMsg::Ok).await;
}
