//! A fake Slack Web API: `auth.test` and `chat.postMessage` with the bot
//! token checked (`invalid_auth` otherwise), and scripted rate limits:
//! HTTP 429 with `Retry-After` and `{"ok":false,"error":"ratelimited"}`,
//! or 200 with `{"ok":false,"error":"rate_limited"}`. Also signs Events
//! API requests as Slack does, for tests to POST.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum SlackAnswer {
    /// HTTP 429, Retry-After: secs.
    TooMany(u64),
    /// 200 `{"ok":false,"error":"rate_limited"}`.
    RateLimited,
}

#[derive(Default)]
struct Shared {
    token: String,
    calls: Mutex<Vec<(String, Value)>>,
    script: Mutex<VecDeque<SlackAnswer>>,
    ts: Mutex<u64>,
}

pub struct FakeSlack {
    /// The `api_base` (`http://127.0.0.1:PORT/api`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(s): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", s.token) {
        return axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    s.calls.lock().unwrap().push((method.clone(), body.clone()));
    match method.as_str() {
        "auth.test" => axum::Json(json!({"ok": true, "url": "https://fake.slack.com/",
            "team": "Fake", "user": "andy", "team_id": "T0001", "user_id": "UBOT1", "bot_id": "B0001"}))
        .into_response(),
        "chat.postMessage" => {
            match s.script.lock().unwrap().pop_front() {
                Some(SlackAnswer::TooMany(secs)) => {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", secs.to_string())],
                        axum::Json(json!({"ok": false, "error": "ratelimited"})),
                    )
                        .into_response()
                }
                Some(SlackAnswer::RateLimited) => {
                    return axum::Json(json!({"ok": false, "error": "rate_limited"}))
                        .into_response()
                }
                None => {}
            }
            let Some(channel) = body["channel"].as_str() else {
                return axum::Json(json!({"ok": false, "error": "channel_not_found"}))
                    .into_response();
            };
            if body["text"].as_str().unwrap_or("").is_empty() {
                return axum::Json(json!({"ok": false, "error": "no_text"})).into_response();
            }
            let ts = {
                let mut t = s.ts.lock().unwrap();
                *t += 1;
                format!("1700000000.{:06}", *t)
            };
            axum::Json(json!({"ok": true, "channel": channel, "ts": ts,
                "message": {"type": "message", "text": body["text"], "user": "UBOT1", "ts": ts}}))
            .into_response()
        }
        _ => axum::Json(json!({"ok": false, "error": "unknown_method"})).into_response(),
    }
}

impl FakeSlack {
    pub async fn start(token: &str) -> FakeSlack {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/:method", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Slack");
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack { url, shared, task }
    }

    pub fn script(&self, a: SlackAnswer) {
        self.shared.script.lock().unwrap().push_back(a);
    }

    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// An Events API `event_callback` body for a message event.
pub fn message_event(channel: &str, channel_type: &str, user: &str, ts: &str, text: &str) -> Value {
    json!({"token": "verification-token-unused", "team_id": "T0001", "api_app_id": "A0001",
        "type": "event_callback", "event_id": format!("Ev{}", ts.replace('.', "")), "event_time": 1700000000,
        "event": {"type": "message", "channel": channel, "channel_type": channel_type,
                  "user": user, "text": text, "ts": ts, "event_ts": ts}})
}

/// The headers Slack sends with `body`, signed with `secret` at `ts`.
pub fn signed_headers(secret: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("x-slack-request-timestamp".into(), ts.to_string()),
        (
            "x-slack-signature".into(),
            crate::slack::sign(secret, &ts.to_string(), body),
        ),
        ("content-type".into(), "application/json".into()),
    ]
}
