//! envd's directory watches: `WatchDir` (a server stream) and the polled
//! watchers of `CreateWatcher`, `GetWatcherEvents` and `RemoveWatcher`,
//! over the guest agent's inotify watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::Response;
use ironclaw_sandbox::guest_watch::Watcher;
use ironclaw_sandbox::types::{WatchEvent, WatchKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use crate::AppState;

/// Events a polled watcher keeps between two polls; later ones are dropped.
const MAX_PENDING: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchRequest {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatcherId {
    #[serde(default)]
    watcher_id: String,
}

struct Polled {
    sandbox: String,
    events: Mutex<Vec<Value>>,
    task: tokio::task::AbortHandle,
}

/// The polled watchers, by id.
#[derive(Default)]
pub struct Watchers {
    inner: Mutex<HashMap<String, Arc<Polled>>>,
}

impl Watchers {
    /// Stop the watchers of a sandbox that stops or goes away.
    pub fn forget_sandbox(&self, sandbox: &str) {
        self.inner.lock().unwrap().retain(|_, w| {
            let keep = w.sandbox != sandbox;
            if !keep {
                w.task.abort();
            }
            keep
        });
    }

    fn take(&self, sandbox: &str, id: &str) -> Result<Arc<Polled>, ConnectError> {
        match self.inner.lock().unwrap().get(id) {
            Some(w) if w.sandbox == sandbox => Ok(w.clone()),
            _ => Err(ConnectError::new(
                Code::NotFound,
                format!("watcher {id} not found"),
            )),
        }
    }
}

fn event_type(k: WatchKind) -> Option<&'static str> {
    Some(match k {
        WatchKind::Create => "EVENT_TYPE_CREATE",
        WatchKind::Write => "EVENT_TYPE_WRITE",
        WatchKind::Remove => "EVENT_TYPE_REMOVE",
        WatchKind::Rename => "EVENT_TYPE_RENAME",
        WatchKind::Chmod => "EVENT_TYPE_CHMOD",
        WatchKind::Ready | WatchKind::Overflow => return None,
    })
}

/// `FilesystemEvent`: the name is relative to the watched directory.
fn fs_event(root: &str, e: &WatchEvent) -> Option<Value> {
    let t = event_type(e.kind)?;
    let root = root.trim_end_matches('/');
    let name = e
        .path
        .strip_prefix(root)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(&e.path);
    Some(json!({"name": name, "type": t}))
}

async fn open(
    st: &AppState,
    rec: &ironclaw_store::E2bRecord,
    headers: &HeaderMap,
    r: &WatchRequest,
) -> Result<(String, Watcher), ConnectError> {
    let agent = super::envd_agent(st, rec).await?;
    // A relative path is under the request's user's home, as for files.
    let user = super::users::resolve(&agent, super::users::from_basic_auth(headers)?).await?;
    let path = user.path(&r.path)?;
    let w = agent.watch(&path, r.recursive).await?;
    Ok((path, w))
}

/// `WatchDir`: a start message, then the events, with keepalives.
pub async fn watch_dir(
    st: &AppState,
    rec: &ironclaw_store::E2bRecord,
    headers: &HeaderMap,
    r: WatchRequest,
) -> Result<Response, ConnectError> {
    let (root, w) = open(st, rec, headers, &r).await?;
    let keepalive = headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(50));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first = futures::stream::once(async { Ok(json!({"start": {}})) });
    let rest = futures::stream::unfold((w, tick, root), |(mut w, mut tick, root)| async move {
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    return Some((Ok(json!({"keepalive": {}})), (w, tick, root)));
                }
                ev = w.next() => match ev {
                    Some(Ok(e)) => {
                        if let Some(v) = fs_event(&root, &e) {
                            return Some((Ok(json!({"filesystem": v})), (w, tick, root)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e.into()), (w, tick, root))),
                    None => return None,
                },
            }
        }
    });
    use futures::StreamExt;
    Ok(connect::streaming(first.chain(rest)))
}

fn random_id() -> String {
    (0..12)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `CreateWatcher`: events are collected until polled.
pub async fn create(
    st: &AppState,
    rec: &ironclaw_store::E2bRecord,
    headers: &HeaderMap,
    r: WatchRequest,
) -> Result<Value, ConnectError> {
    let (root, mut w) = open(st, rec, headers, &r).await?;
    let id = random_id();
    let (tx, rx) = tokio::sync::oneshot::channel::<Arc<Polled>>();
    let task = tokio::spawn(async move {
        let Ok(p) = rx.await else { return };
        while let Some(Ok(e)) = w.next().await {
            if let Some(v) = fs_event(&root, &e) {
                let mut evs = p.events.lock().unwrap();
                if evs.len() < MAX_PENDING {
                    evs.push(v);
                }
            }
        }
    });
    let p = Arc::new(Polled {
        sandbox: rec.sandbox_id.clone(),
        events: Mutex::new(Vec::new()),
        task: task.abort_handle(),
    });
    st.e2b
        .watchers
        .inner
        .lock()
        .unwrap()
        .insert(id.clone(), p.clone());
    let _ = tx.send(p);
    Ok(json!({ "watcherId": id }))
}

/// `GetWatcherEvents`: what happened since the last poll.
pub fn events(st: &AppState, sandbox: &str, r: WatcherId) -> Result<Value, ConnectError> {
    let p = st.e2b.watchers.take(sandbox, &r.watcher_id)?;
    let evs = std::mem::take(&mut *p.events.lock().unwrap());
    Ok(json!({ "events": evs }))
}

/// `RemoveWatcher`.
pub fn remove(st: &AppState, sandbox: &str, r: WatcherId) -> Result<Value, ConnectError> {
    st.e2b.watchers.take(sandbox, &r.watcher_id)?;
    if let Some(p) = st.e2b.watchers.inner.lock().unwrap().remove(&r.watcher_id) {
        p.task.abort();
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_relative_to_the_watched_directory() {
        let e = WatchEvent {
            kind: WatchKind::Create,
            path: "/tmp/w/sub/f".into(),
        };
        assert_eq!(
            fs_event("/tmp/w/", &e),
            Some(json!({"name": "sub/f", "type": "EVENT_TYPE_CREATE"}))
        );
        let ready = WatchEvent {
            kind: WatchKind::Ready,
            path: "/tmp/w".into(),
        };
        assert_eq!(fs_event("/tmp/w", &ready), None);
    }
}
