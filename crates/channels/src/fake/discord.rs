//! A fake Discord: `GET /api/v10/gateway/bot`, the Gateway WebSocket
//! (Hello with a short heartbeat interval, Identify checked, READY,
//! Heartbeat ACKs, MESSAGE_CREATE dispatches the test pushes; a bad token
//! closes with 4004; sessions with a replay buffer: RESUME (opcode 6) on
//! `resume_gateway_url` replays the dispatches after the client's sequence
//! number, then RESUMED; an unknown session gets opcode 9 d=false; the
//! test can drop connections, hold new ones, send opcode 7 or 9 and
//! withhold heartbeat ACKs), and REST `POST /channels/{id}/messages` (nonce
//! enforcement: a repeated nonce returns the earlier message; scripted 429
//! with `retry_after`) and `POST /channels/{id}/typing` (204).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Notify};

/// What the test tells live gateway connections.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// Drop the TCP connection, no close frame.
    Kill,
    /// Opcode 7.
    Reconnect,
    /// Opcode 9 with this `d`.
    Invalid(bool),
}

/// A gateway session: every dispatch it was given, with its sequence
/// number, kept for replay.
#[derive(Default)]
struct GwSession {
    seq: i64,
    log: Vec<Value>,
}

impl GwSession {
    fn dispatch(&mut self, t: &str, d: Value) {
        self.seq += 1;
        self.log
            .push(json!({"op": 0, "t": t, "s": self.seq, "d": d}));
    }

    fn after(&self, seq: i64) -> Vec<Value> {
        self.log
            .iter()
            .filter(|f| f["s"].as_i64().unwrap_or(0) > seq)
            .cloned()
            .collect()
    }
}

struct Shared {
    token: String,
    url: Mutex<String>,
    heartbeat_ms: u64,
    sessions: Mutex<HashMap<String, GwSession>>,
    next_session: Mutex<u64>,
    /// A dispatch was logged.
    logged: Notify,
    control: broadcast::Sender<Control>,
    /// New gateway connections wait while false.
    gate: watch::Sender<bool>,
    live: AtomicUsize,
    skip_acks: Mutex<u32>,
    resumed: Mutex<u32>,
    /// MESSAGE_CREATE dispatches sent again by a RESUME.
    replayed: Mutex<u32>,
    /// The path of each gateway connection.
    connects: Mutex<Vec<String>>,
    heartbeats: Mutex<u32>,
    identified: Mutex<u32>,
    /// POSTed messages: (channel, body).
    posts: Mutex<Vec<(String, Value)>>,
    nonces: Mutex<HashMap<String, Value>>,
    too_many: Mutex<VecDeque<f64>>,
    typing: Mutex<Vec<String>>,
    next_id: Mutex<u64>,
}

pub struct FakeDiscord {
    /// The `api_base` (`http://127.0.0.1:PORT/api/v10`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn authed(s: &Shared, h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bot {}", s.token))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "401: Unauthorized", "code": 0})),
    )
        .into_response()
}

async fn gateway_bot(State(s): State<Arc<Shared>>, h: HeaderMap) -> Response {
    if !authed(&s, &h) {
        return unauthorized();
    }
    let url = s.url.lock().unwrap().replacen("http", "ws", 1);
    axum::Json(json!({"url": url, "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}}))
    .into_response()
}

async fn gateway(
    State(s): State<Arc<Shared>>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let mut gate = s.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    s.connects.lock().unwrap().push(uri.path().to_string());
    ws.on_upgrade(move |socket| session(s, socket))
}

/// Counts a live connection while it lives.
struct Live(Arc<Shared>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn send(ws: &mut WebSocket, v: &Value) -> bool {
    ws.send(Message::Text(v.to_string())).await.is_ok()
}

async fn session(s: Arc<Shared>, mut ws: WebSocket) {
    s.live.fetch_add(1, Ordering::SeqCst);
    let _live = Live(s.clone());
    let mut control = s.control.subscribe();
    let hello =
        json!({"op": 10, "d": {"heartbeat_interval": s.heartbeat_ms}, "s": null, "t": null});
    if !send(&mut ws, &hello).await {
        return;
    }
    // The session this connection serves, and the last seq it sent.
    let mut bound: Option<(String, i64)> = None;
    loop {
        let logged = s.logged.notified();
        if let Some((id, sent)) = &mut bound {
            let frames = s
                .sessions
                .lock()
                .unwrap()
                .get(id.as_str())
                .map(|g| g.after(*sent))
                .unwrap_or_default();
            for f in frames {
                if !send(&mut ws, &f).await {
                    return;
                }
                *sent = f["s"].as_i64().unwrap_or(*sent);
            }
        }
        tokio::select! {
            m = ws.recv() => {
                let Some(Ok(Message::Text(t))) = m else { return };
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                match v["op"].as_i64() {
                    Some(1) => {
                        *s.heartbeats.lock().unwrap() += 1;
                        let skip = {
                            let mut n = s.skip_acks.lock().unwrap();
                            let skip = *n > 0;
                            *n = n.saturating_sub(1);
                            skip
                        };
                        if !skip && !send(&mut ws, &json!({"op": 11})).await {
                            return;
                        }
                    }
                    Some(2 | 6) if v["d"]["token"].as_str() != Some(&s.token) => {
                        let _ = ws.send(Message::Close(Some(CloseFrame { code: 4004, reason: "Authentication failed.".into() }))).await;
                        return;
                    }
                    Some(2) => {
                        *s.identified.lock().unwrap() += 1;
                        let id = {
                            let mut n = s.next_session.lock().unwrap();
                            *n += 1;
                            format!("fake-session-{n}")
                        };
                        let resume_url = format!("{}/resume", s.url.lock().unwrap().replacen("http", "ws", 1));
                        let mut g = GwSession::default();
                        g.dispatch("READY", json!({"v": 10,
                            "user": {"id": "800000000000000001", "username": "andy", "bot": true},
                            "session_id": id, "resume_gateway_url": resume_url, "guilds": []}));
                        s.sessions.lock().unwrap().insert(id.clone(), g);
                        bound = Some((id, 0));
                    }
                    Some(6) => {
                        let id = v["d"]["session_id"].as_str().unwrap_or("").to_string();
                        let seq = v["d"]["seq"].as_i64().unwrap_or(0);
                        let missed = s.sessions.lock().unwrap().get(&id).map(|g| g.after(seq));
                        let Some(missed) = missed else {
                            // Unknown or invalidated: start over.
                            if !send(&mut ws, &json!({"op": 9, "d": false})).await { return; }
                            continue;
                        };
                        let mut sent = seq;
                        for f in &missed {
                            if !send(&mut ws, f).await { return; }
                            sent = f["s"].as_i64().unwrap_or(sent);
                        }
                        let n = missed.iter().filter(|f| f["t"] == "MESSAGE_CREATE").count() as u32;
                        *s.replayed.lock().unwrap() += n;
                        *s.resumed.lock().unwrap() += 1;
                        if !send(&mut ws, &json!({"op": 0, "t": "RESUMED", "s": null, "d": {}})).await { return; }
                        bound = Some((id, sent));
                    }
                    _ => {}
                }
            }
            _ = logged => {}
            c = control.recv() => match c {
                Ok(Control::Kill) | Err(_) => return,
                Ok(Control::Reconnect) => { let _ = send(&mut ws, &json!({"op": 7, "d": null})).await; }
                Ok(Control::Invalid(d)) => { let _ = send(&mut ws, &json!({"op": 9, "d": d})).await; }
            }
        }
    }
}

async fn create_message(
    State(s): State<Arc<Shared>>,
    Path(channel): Path<String>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authed(&s, &h) {
        return unauthorized();
    }
    if let Some(secs) = s.too_many.lock().unwrap().pop_front() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", format!("{}", secs.ceil() as u64))],
            axum::Json(json!({"message": "You are being rate limited.", "retry_after": secs, "global": false})),
        )
            .into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let content = body["content"].as_str().unwrap_or("");
    if content.is_empty() || content.chars().count() > 2000 {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "Invalid Form Body", "code": 50035})),
        )
            .into_response();
    }
    s.posts
        .lock()
        .unwrap()
        .push((channel.clone(), body.clone()));
    let nonce = body["nonce"].as_str().map(String::from);
    if body["enforce_nonce"] == true {
        if let Some(prev) = nonce
            .as_ref()
            .and_then(|n| s.nonces.lock().unwrap().get(n).cloned())
        {
            return axum::Json(prev).into_response();
        }
    }
    let id = {
        let mut n = s.next_id.lock().unwrap();
        *n += 1;
        format!("9000000000000{:05}", *n)
    };
    let msg = json!({"id": id, "channel_id": channel, "content": content, "nonce": nonce,
        "author": {"id": "800000000000000001", "username": "andy", "bot": true}});
    if let Some(n) = nonce {
        s.nonces.lock().unwrap().insert(n, msg.clone());
    }
    axum::Json(msg).into_response()
}

async fn typing(
    State(s): State<Arc<Shared>>,
    Path(channel): Path<String>,
    h: HeaderMap,
) -> Response {
    if !authed(&s, &h) {
        return unauthorized();
    }
    s.typing.lock().unwrap().push(channel);
    StatusCode::NO_CONTENT.into_response()
}

impl FakeDiscord {
    pub async fn start(token: &str) -> FakeDiscord {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            url: Mutex::default(),
            // Short, for fast tests; long enough that a loaded machine
            // does not miss ACKs (which the client takes for a zombie
            // connection and resumes).
            heartbeat_ms: 1000,
            sessions: Mutex::default(),
            next_session: Mutex::default(),
            logged: Notify::new(),
            control: broadcast::channel(16).0,
            gate: watch::channel(true).0,
            live: AtomicUsize::new(0),
            skip_acks: Mutex::default(),
            resumed: Mutex::default(),
            replayed: Mutex::default(),
            connects: Mutex::default(),
            heartbeats: Mutex::default(),
            identified: Mutex::default(),
            posts: Mutex::default(),
            nonces: Mutex::default(),
            too_many: Mutex::default(),
            typing: Mutex::default(),
            next_id: Mutex::default(),
        });
        let app = Router::new()
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/", get(gateway))
            .route("/resume/", get(gateway))
            .route("/api/v10/channels/:id/messages", post(create_message))
            .route("/api/v10/channels/:id/typing", post(typing))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Discord");
        let base = format!("http://{}", listener.local_addr().unwrap());
        *shared.url.lock().unwrap() = base.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeDiscord {
            url: format!("{base}/api/v10"),
            shared,
            task,
        }
    }

    /// Dispatch MESSAGE_CREATE in every gateway session: sent at once to
    /// a connected client, kept for replay to one that resumes.
    pub fn message(&self, d: Value) {
        for g in self.shared.sessions.lock().unwrap().values_mut() {
            g.dispatch("MESSAGE_CREATE", d.clone());
        }
        self.shared.logged.notify_waiters();
    }

    /// Drop every gateway connection (no close frame) and hold new ones
    /// until [`FakeDiscord::open_gateway`]; returns when none is live.
    pub async fn close_gateway(&self) {
        self.shared.gate.send_replace(false);
        let _ = self.shared.control.send(Control::Kill);
        while self.shared.live.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn open_gateway(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Opcode 7 (Reconnect) to every live connection.
    pub fn ask_reconnect(&self) {
        let _ = self.shared.control.send(Control::Reconnect);
    }

    /// Opcode 9 (Invalid Session); `resumable: false` ends every session.
    pub fn invalidate(&self, resumable: bool) {
        if !resumable {
            self.shared.sessions.lock().unwrap().clear();
        }
        let _ = self.shared.control.send(Control::Invalid(resumable));
    }

    /// Leave the next `n` heartbeats unacknowledged.
    pub fn skip_acks(&self, n: u32) {
        *self.shared.skip_acks.lock().unwrap() = n;
    }

    /// Successful RESUMEs.
    pub fn resumed(&self) -> u32 {
        *self.shared.resumed.lock().unwrap()
    }

    /// MESSAGE_CREATE dispatches replayed by RESUMEs.
    pub fn replayed(&self) -> u32 {
        *self.shared.replayed.lock().unwrap()
    }

    /// The path of each gateway connection (`/` or `/resume/`), in order.
    pub fn connects(&self) -> Vec<String> {
        self.shared.connects.lock().unwrap().clone()
    }

    /// A message object (`guild` None for a DM), mentioning the bot when `mention`.
    pub fn user_message(
        id: &str,
        channel: &str,
        guild: Option<&str>,
        author: &str,
        text: &str,
        mention: bool,
    ) -> Value {
        let mentions = if mention {
            json!([{"id": "800000000000000001", "username": "andy", "bot": true}])
        } else {
            json!([])
        };
        json!({"id": id, "channel_id": channel, "guild_id": guild, "content": text, "mentions": mentions,
            "author": {"id": author, "username": format!("user{author}")}, "type": 0, "tts": false})
    }

    pub fn too_many(&self, retry_after: f64) {
        self.shared.too_many.lock().unwrap().push_back(retry_after);
    }

    pub fn identified(&self) -> u32 {
        *self.shared.identified.lock().unwrap()
    }

    pub fn heartbeats(&self) -> u32 {
        *self.shared.heartbeats.lock().unwrap()
    }

    /// Created messages (repeats of a nonce not counted): (channel, content).
    pub fn created(&self) -> Vec<(String, String)> {
        self.shared
            .nonces
            .lock()
            .unwrap()
            .values()
            .map(|m| {
                (
                    m["channel_id"].as_str().unwrap_or("").to_string(),
                    m["content"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Every POST to create a message, repeats included.
    pub fn posts(&self) -> Vec<(String, Value)> {
        self.shared.posts.lock().unwrap().clone()
    }

    pub fn typing(&self) -> Vec<String> {
        self.shared.typing.lock().unwrap().clone()
    }
}
