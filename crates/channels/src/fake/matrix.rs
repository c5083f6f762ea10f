//! A fake Matrix homeserver (client-server API v3): `account/whoami`,
//! long-polling `/sync` with `since`/`next_batch` (the first sync returns
//! existing history), `rooms/{id}/join`, `PUT rooms/{id}/send/{type}/{txnId}`
//! (a repeated txnId returns the first event id, as the spec requires),
//! typing, `rooms/{id}/joined_members`, sync room summaries (or none, as
//! Synapse does for clients that do not lazy-load members), bearer tokens checked (`M_UNKNOWN_TOKEN`), scripted 429
//! `M_LIMIT_EXCEEDED` with `retry_after_ms`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const BOT: &str = "@andy:fake.local";

#[derive(Default)]
struct Shared {
    token: String,
    /// (room, event), in timeline order.
    events: Mutex<Vec<(String, Value)>>,
    members: Mutex<HashMap<String, u64>>,
    pushed: Notify,
    syncs: Mutex<Vec<Option<String>>>,
    /// txnId -> (room, event id, body)
    sent: Mutex<HashMap<String, (String, String, Value)>>,
    puts: Mutex<u32>,
    limit: Mutex<VecDeque<u64>>,
    typing: Mutex<Vec<String>>,
    joined: Mutex<Vec<String>>,
    invites: Mutex<Vec<String>>,
    no_summaries: std::sync::atomic::AtomicBool,
}

pub struct FakeMatrix {
    /// The `api_base` (`http://127.0.0.1:PORT`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMatrix {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"errcode": code, "error": msg}))).into_response()
}

fn authed(s: &Shared, h: &HeaderMap) -> Result<(), Box<Response>> {
    if h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", s.token))
    {
        Ok(())
    } else {
        Err(Box::new(err(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Invalid access token passed.",
        )))
    }
}

async fn whoami(State(s): State<Arc<Shared>>, h: HeaderMap) -> Response {
    if let Err(r) = authed(&s, &h) {
        return *r;
    }
    axum::Json(json!({"user_id": BOT, "device_id": "FAKEDEV"})).into_response()
}

fn batch(s: &Shared, from: usize) -> Value {
    let events = s.events.lock().unwrap();
    let members = s.members.lock().unwrap();
    let summaries = !s.no_summaries.load(std::sync::atomic::Ordering::SeqCst);
    let mut join = serde_json::Map::new();
    for (room, ev) in events.iter().skip(from) {
        let r = join.entry(room.clone()).or_insert_with(|| {
            let mut r = json!({"timeline": {"events": [], "limited": false}});
            if summaries {
                r["summary"] =
                    json!({"m.joined_member_count": members.get(room).copied().unwrap_or(2)});
            }
            r
        });
        r["timeline"]["events"]
            .as_array_mut()
            .unwrap()
            .push(ev.clone());
    }
    let mut invite = serde_json::Map::new();
    for room in s.invites.lock().unwrap().drain(..) {
        invite.insert(room, json!({"invite_state": {"events": []}}));
    }
    json!({"next_batch": format!("s{}", events.len()), "rooms": {"join": join, "invite": invite}})
}

async fn sync(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authed(&s, &h) {
        return *r;
    }
    let since = q.get("since").cloned();
    s.syncs.lock().unwrap().push(since.clone());
    let from = match &since {
        None => 0,
        Some(t) => match t.strip_prefix('s').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    "bad since token",
                )
            }
        },
    };
    let timeout = q
        .get("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0)
        .min(30_000);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    loop {
        let pushed = s.pushed.notified();
        let have = s.events.lock().unwrap().len() > from || !s.invites.lock().unwrap().is_empty();
        if have || since.is_none() || tokio::time::Instant::now() >= deadline {
            return axum::Json(batch(&s, from)).into_response();
        }
        let _ = tokio::time::timeout_at(deadline, pushed).await;
    }
}

async fn join(State(s): State<Arc<Shared>>, h: HeaderMap, Path(room): Path<String>) -> Response {
    if let Err(r) = authed(&s, &h) {
        return *r;
    }
    s.joined.lock().unwrap().push(room.clone());
    axum::Json(json!({"room_id": room})).into_response()
}

async fn send(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    Path((room, kind, txn)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authed(&s, &h) {
        return *r;
    }
    *s.puts.lock().unwrap() += 1;
    if let Some(ms) = s.limit.lock().unwrap().pop_front() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": ms})),
        )
            .into_response();
    }
    if kind != "m.room.message" {
        return err(
            StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            "unexpected event type",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Content not JSON.");
    };
    let mut sent = s.sent.lock().unwrap();
    let n = sent.len();
    let (_, id, _) = sent
        .entry(txn)
        .or_insert_with(|| (room, format!("$fake-event-{n}"), body))
        .clone();
    axum::Json(json!({"event_id": id})).into_response()
}

async fn typing(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    Path((room, user)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authed(&s, &h) {
        return *r;
    }
    if user != BOT {
        return err(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Cannot set another user's typing state",
        );
    }
    s.typing.lock().unwrap().push(room);
    axum::Json(json!({})).into_response()
}

async fn joined_members(
    State(s): State<Arc<Shared>>,
    Path(room): Path<String>,
    h: HeaderMap,
) -> Response {
    if let Err(r) = authed(&s, &h) {
        return *r;
    }
    let n = s.members.lock().unwrap().get(&room).copied().unwrap_or(2);
    let mut joined = serde_json::Map::new();
    joined.insert(BOT.into(), json!({"display_name": "andy"}));
    for i in 1..n {
        joined.insert(format!("@user{i}:fake.local"), json!({}));
    }
    axum::Json(json!({"joined": joined})).into_response()
}

impl FakeMatrix {
    /// Sync without room summaries from now on (as Synapse answers a
    /// client that does not lazy-load members).
    pub fn no_summaries(&self) {
        self.shared
            .no_summaries
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub async fn start(token: &str) -> FakeMatrix {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            ..Default::default()
        });
        let p = "/_matrix/client/v3";
        let app = Router::new()
            .route(&format!("{p}/account/whoami"), get(whoami))
            .route(&format!("{p}/sync"), get(sync))
            .route(&format!("{p}/rooms/:room/join"), post(join))
            .route(&format!("{p}/rooms/:room/send/:kind/:txn"), put(send))
            .route(&format!("{p}/rooms/:room/typing/:user"), put(typing))
            .route(
                &format!("{p}/rooms/:room/joined_members"),
                get(joined_members),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Matrix");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeMatrix { url, shared, task }
    }

    /// A text message from `sender` into `room` (with `members` joined).
    pub fn message(&self, room: &str, members: u64, sender: &str, event_id: &str, text: &str) {
        self.shared
            .members
            .lock()
            .unwrap()
            .insert(room.into(), members);
        self.shared.events.lock().unwrap().push((
            room.into(),
            json!({"type": "m.room.message", "event_id": event_id, "sender": sender,
                "origin_server_ts": 1700000000000u64, "content": {"msgtype": "m.text", "body": text}}),
        ));
        self.shared.pushed.notify_waiters();
    }

    pub fn invite(&self, room: &str) {
        self.shared.invites.lock().unwrap().push(room.into());
        self.shared.pushed.notify_waiters();
    }

    pub fn limit(&self, retry_after_ms: u64) {
        self.shared.limit.lock().unwrap().push_back(retry_after_ms);
    }

    /// `since` of every sync, in order.
    pub fn syncs(&self) -> Vec<Option<String>> {
        self.shared.syncs.lock().unwrap().clone()
    }

    /// Distinct events sent (by txnId): (room, body).
    pub fn sent(&self) -> Vec<(String, Value)> {
        self.shared
            .sent
            .lock()
            .unwrap()
            .values()
            .map(|(r, _, b)| (r.clone(), b.clone()))
            .collect()
    }

    /// Every PUT of an event, repeats included.
    pub fn puts(&self) -> u32 {
        *self.shared.puts.lock().unwrap()
    }

    pub fn typing(&self) -> Vec<String> {
        self.shared.typing.lock().unwrap().clone()
    }

    pub fn joined(&self) -> Vec<String> {
        self.shared.joined.lock().unwrap().clone()
    }
}
