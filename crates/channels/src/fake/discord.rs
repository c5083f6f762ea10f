//! A fake Discord: `GET /api/v10/gateway/bot`, the Gateway WebSocket
//! (Hello with a short heartbeat interval, Identify checked, READY,
//! Heartbeat ACKs, MESSAGE_CREATE dispatches the test pushes; a bad token
//! closes with 4004), and REST `POST /channels/{id}/messages` (nonce
//! enforcement: a repeated nonce returns the earlier message; scripted 429
//! with `retry_after`) and `POST /channels/{id}/typing` (204).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Default)]
struct Shared {
    token: String,
    url: Mutex<String>,
    heartbeat_ms: u64,
    dispatch: Mutex<Option<broadcast::Sender<Value>>>,
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

async fn gateway(State(s): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| session(s, socket))
}

async fn session(s: Arc<Shared>, mut ws: WebSocket) {
    let hello =
        json!({"op": 10, "d": {"heartbeat_interval": s.heartbeat_ms}, "s": null, "t": null});
    if ws.send(Message::Text(hello.to_string())).await.is_err() {
        return;
    }
    let mut rx = {
        let mut d = s.dispatch.lock().unwrap();
        d.get_or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    };
    let mut seq = 0;
    loop {
        tokio::select! {
            m = ws.recv() => {
                let Some(Ok(Message::Text(t))) = m else { return };
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                match v["op"].as_i64() {
                    Some(1) => {
                        *s.heartbeats.lock().unwrap() += 1;
                        let _ = ws.send(Message::Text(json!({"op": 11}).to_string())).await;
                    }
                    Some(2) => {
                        if v["d"]["token"].as_str() != Some(&s.token) {
                            let _ = ws.send(Message::Close(Some(CloseFrame { code: 4004, reason: "Authentication failed.".into() }))).await;
                            return;
                        }
                        *s.identified.lock().unwrap() += 1;
                        seq += 1;
                        let ready = json!({"op": 0, "t": "READY", "s": seq, "d": {"v": 10,
                            "user": {"id": "800000000000000001", "username": "andy", "bot": true},
                            "session_id": "fake-session", "resume_gateway_url": "ws://unused", "guilds": []}});
                        let _ = ws.send(Message::Text(ready.to_string())).await;
                    }
                    _ => {}
                }
            }
            d = rx.recv() => {
                let Ok(d) = d else { return };
                seq += 1;
                let ev = json!({"op": 0, "t": "MESSAGE_CREATE", "s": seq, "d": d});
                if ws.send(Message::Text(ev.to_string())).await.is_err() { return; }
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
            heartbeat_ms: 250,
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/", get(gateway))
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

    /// Dispatch MESSAGE_CREATE to every connected gateway session.
    pub fn message(&self, d: Value) {
        if let Some(tx) = self.shared.dispatch.lock().unwrap().as_ref() {
            let _ = tx.send(d);
        }
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
