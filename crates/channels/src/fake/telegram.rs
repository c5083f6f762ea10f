//! A fake Telegram Bot API (`/bot<token>/<method>`): `deleteWebhook`,
//! `getMe`, long-polling `getUpdates` (confirming updates below `offset`,
//! as the real one does), `sendMessage` and `sendChatAction`; and webhook
//! mode: `setWebhook` (then `getUpdates` answers 409, as the real one
//! does), after which pending updates are POSTed to the URL one at a time
//! with `X-Telegram-Bot-Api-Secret-Token`, and kept and retried until the
//! answer is 2xx (`http://` URLs are accepted here; the real API wants
//! HTTPS). Scripted
//! answers: 409 Conflict for getUpdates; 429 with `parameters.retry_after`,
//! 400 "can't parse entities" or no answer at all (stall) for sendMessage.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// A scripted answer to the next `sendMessage`.
#[derive(Debug, Clone)]
pub enum SendAnswer {
    /// 429 Too Many Requests with `retry_after` seconds.
    TooMany(u64),
    /// 400 Bad Request: can't parse entities (only when parse_mode is set).
    CantParse,
    /// Record the request, never answer.
    Stall,
    /// 403 Forbidden: bot was blocked by the user.
    Blocked,
}

#[derive(Default)]
struct Shared {
    token: String,
    updates: Mutex<Vec<Value>>,
    next_update: Mutex<i64>,
    pushed: Notify,
    /// Every call: (method, body).
    calls: Mutex<Vec<(String, Value)>>,
    conflicts: Mutex<u32>,
    send_script: Mutex<VecDeque<SendAnswer>>,
    next_message: Mutex<i64>,
    /// The webhook set: (url, secret token).
    webhook: Mutex<Option<(String, Option<String>)>>,
    /// Every update ever pushed, for redelivery.
    history: Mutex<Vec<Value>>,
    /// Webhook POSTs: (update_id, HTTP status, 0 when no answer).
    deliveries: Mutex<Vec<(i64, u16)>>,
    /// The last failed webhook POST: (unix time, message).
    last_error: Mutex<Option<(i64, String)>>,
}

pub struct FakeTelegram {
    /// `http://127.0.0.1:PORT` (the `api_base`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    pusher: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
        self.pusher.abort();
    }
}

fn fail(status: StatusCode, description: &str, extra: Option<Value>) -> Response {
    let mut v = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(p) = extra {
        v["parameters"] = p;
    }
    (status, axum::Json(v)).into_response()
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

async fn handle(
    State(s): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if bot.strip_prefix("bot") != Some(s.token.as_str()) {
        return fail(StatusCode::UNAUTHORIZED, "Unauthorized", None);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    s.calls.lock().unwrap().push((method.clone(), body.clone()));
    match method.as_str() {
        "deleteWebhook" => {
            let was = s.webhook.lock().unwrap().take();
            if body["drop_pending_updates"] == true {
                s.updates.lock().unwrap().clear();
            }
            let d = if was.is_some() {
                "Webhook was deleted"
            } else {
                "Webhook is already deleted"
            };
            axum::Json(json!({"ok": true, "result": true, "description": d})).into_response()
        }
        "setWebhook" => {
            let Some(url) = body["url"].as_str().filter(|u| !u.is_empty()) else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
                    None,
                );
            };
            let secret = body["secret_token"].as_str().map(String::from);
            if secret.as_deref().is_some_and(|t| {
                t.is_empty()
                    || t.len() > 256
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }) {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: secret token contains unallowed characters",
                    None,
                );
            }
            *s.webhook.lock().unwrap() = Some((url.to_string(), secret));
            if body["drop_pending_updates"] == true {
                s.updates.lock().unwrap().clear();
            }
            s.pushed.notify_waiters();
            axum::Json(json!({"ok": true, "result": true, "description": "Webhook was set"}))
                .into_response()
        }
        "getWebhookInfo" => {
            let url = s.webhook.lock().unwrap().as_ref().map(|w| w.0.clone());
            let mut info = json!({"url": url.unwrap_or_default(),
                "has_custom_certificate": false,
                "pending_update_count": s.updates.lock().unwrap().len()});
            if let Some((date, msg)) = s.last_error.lock().unwrap().clone() {
                info["last_error_date"] = json!(date);
                info["last_error_message"] = json!(msg);
            }
            ok(info)
        }
        "getMe" => ok(json!({"id": 7000001, "is_bot": true, "first_name": "Andy",
            "username": "andy_bot", "can_join_groups": true})),
        "getUpdates" => {
            if s.webhook.lock().unwrap().is_some() {
                return fail(
                    StatusCode::CONFLICT,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                    None,
                );
            }
            {
                let mut c = s.conflicts.lock().unwrap();
                if *c > 0 {
                    *c -= 1;
                    return fail(
                        StatusCode::CONFLICT,
                        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                        None,
                    );
                }
            }
            let offset = body["offset"].as_i64();
            let timeout = body["timeout"].as_u64().unwrap_or(0).min(50);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let pushed = s.pushed.notified();
                let ready: Vec<Value> = {
                    let mut u = s.updates.lock().unwrap();
                    if let Some(o) = offset {
                        // Calling with an offset confirms everything below it.
                        u.retain(|x| x["update_id"].as_i64().unwrap_or(0) >= o);
                    }
                    u.clone()
                };
                if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                    return ok(Value::Array(ready));
                }
                let _ = tokio::time::timeout_at(deadline, pushed).await;
            }
        }
        "sendMessage" => {
            if body["chat_id"].is_null() || body["text"].as_str().unwrap_or("").is_empty() {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message text is empty",
                    None,
                );
            }
            if body["text"].as_str().unwrap_or("").chars().count() > 4096 {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message is too long",
                    None,
                );
            }
            let answer = s.send_script.lock().unwrap().pop_front();
            match answer {
                Some(SendAnswer::TooMany(secs)) => {
                    return fail(
                        StatusCode::TOO_MANY_REQUESTS,
                        &format!("Too Many Requests: retry after {secs}"),
                        Some(json!({"retry_after": secs})),
                    )
                }
                Some(SendAnswer::CantParse) if !body["parse_mode"].is_null() => {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0",
                        None,
                    )
                }
                Some(SendAnswer::Blocked) => {
                    return fail(StatusCode::FORBIDDEN, "Forbidden: bot was blocked by the user", None)
                }
                Some(SendAnswer::Stall) => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                _ => {}
            }
            let id = {
                let mut n = s.next_message.lock().unwrap();
                *n += 1;
                *n
            };
            ok(
                json!({"message_id": id, "date": 1700000000, "chat": {"id": body["chat_id"]},
                "text": body["text"]}),
            )
        }
        "sendChatAction" => ok(json!(true)),
        _ => fail(StatusCode::NOT_FOUND, "Not Found", None),
    }
}

/// A failed POST's status as getWebhookInfo words it.
fn error_message(status: u16) -> String {
    match status {
        0 => "Connection refused".to_string(),
        s => format!(
            "Wrong response from the webhook: {s} {}",
            StatusCode::from_u16(s)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("")
        ),
    }
}

async fn post_update(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    update: &Value,
) -> u16 {
    let mut req = client
        .post(url)
        .timeout(Duration::from_secs(60))
        .json(update);
    if let Some(t) = secret {
        req = req.header("X-Telegram-Bot-Api-Secret-Token", t);
    }
    match req.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Webhook mode: POST the oldest pending update until it is answered 2xx,
/// then the next (Telegram keeps an update until its webhook takes it).
async fn push_webhooks(s: Arc<Shared>) {
    let client = reqwest::Client::new();
    loop {
        let pushed = s.pushed.notified();
        let hook = s.webhook.lock().unwrap().clone();
        let next = s.updates.lock().unwrap().first().cloned();
        let (Some((url, secret)), Some(u)) = (hook, next) else {
            let _ = tokio::time::timeout(Duration::from_secs(1), pushed).await;
            continue;
        };
        let id = u["update_id"].as_i64().unwrap_or(0);
        let status = post_update(&client, &url, secret.as_deref(), &u).await;
        s.deliveries.lock().unwrap().push((id, status));
        if (200..300).contains(&status) {
            let mut q = s.updates.lock().unwrap();
            if let Some(i) = q.iter().position(|x| x["update_id"] == id) {
                q.remove(i);
            }
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            *s.last_error.lock().unwrap() = Some((now, error_message(status)));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl FakeTelegram {
    pub async fn start(token: &str) -> FakeTelegram {
        Self::start_on(token, "127.0.0.1:0").await
    }

    /// On a given address (a restarted test binds the same port again).
    pub async fn start_on(token: &str, addr: &str) -> FakeTelegram {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            next_update: Mutex::new(100),
            ..Default::default()
        });
        let app = Router::new()
            .route("/:bot/:method", post(handle).get(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the fake Telegram");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let pusher = tokio::spawn(push_webhooks(shared.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram {
            url,
            shared,
            task,
            pusher,
        }
    }

    /// Queue an update carrying `message`; returns its update_id.
    pub fn push_message(&self, message: Value) -> i64 {
        let id = {
            let mut n = self.shared.next_update.lock().unwrap();
            *n += 1;
            *n
        };
        let u = json!({"update_id": id, "message": message});
        self.shared.history.lock().unwrap().push(u.clone());
        self.shared.updates.lock().unwrap().push(u);
        self.shared.pushed.notify_waiters();
        id
    }

    /// Queue update `update_id` again, unchanged (as Telegram does when a
    /// webhook's answer was lost).
    pub fn redeliver(&self, update_id: i64) {
        let u = self
            .update(update_id)
            .expect("redeliver: no such update was pushed");
        self.shared.updates.lock().unwrap().push(u);
        self.shared.pushed.notify_waiters();
    }

    /// Update `update_id` as pushed.
    pub fn update(&self, update_id: i64) -> Option<Value> {
        self.shared
            .history
            .lock()
            .unwrap()
            .iter()
            .find(|u| u["update_id"] == update_id)
            .cloned()
    }

    /// The webhook set: (url, secret token).
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.shared.webhook.lock().unwrap().clone()
    }

    /// Delete the webhook behind the channel's back (another instance).
    pub fn drop_webhook(&self) {
        *self.shared.webhook.lock().unwrap() = None;
    }

    /// Webhook POSTs made: (update_id, HTTP status; 0 for no answer).
    pub fn deliveries(&self) -> Vec<(i64, u16)> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// POST `update` to the webhook set, with `secret` as the token header
    /// (None: no header); returns the HTTP status. For tests of what the
    /// receiver does with a forged or unsigned request.
    pub async fn post_to_webhook(&self, update: &Value, secret: Option<&str>) -> u16 {
        let (url, _) = self.webhook().expect("no webhook set");
        post_update(&reqwest::Client::new(), &url, secret, update).await
    }

    /// A private text message from user `from` (chat id = user id).
    pub fn private(&self, from: i64, message_id: i64, text: &str) -> i64 {
        self.push_message(json!({"message_id": message_id, "date": 1700000000,
            "from": {"id": from, "is_bot": false, "first_name": "Pat", "username": format!("user{from}")},
            "chat": {"id": from, "type": "private", "first_name": "Pat"},
            "text": text}))
    }

    /// A group text message.
    pub fn group(&self, chat: i64, from: i64, message_id: i64, text: &str) -> i64 {
        self.push_message(json!({"message_id": message_id, "date": 1700000000,
            "from": {"id": from, "is_bot": false, "first_name": "Pat"},
            "chat": {"id": chat, "type": "supergroup", "title": "The group"},
            "text": text}))
    }

    /// The next `n` getUpdates calls answer 409 Conflict.
    pub fn conflict(&self, n: u32) {
        *self.shared.conflicts.lock().unwrap() = n;
    }

    pub fn script_send(&self, a: SendAnswer) {
        self.shared.send_script.lock().unwrap().push_back(a);
    }

    /// Calls of `method`, their JSON bodies, in order.
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

    /// The methods called, in order.
    pub fn methods(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Texts of every sendMessage received (answered or not).
    pub fn sent_texts(&self) -> Vec<String> {
        self.calls("sendMessage")
            .iter()
            .map(|b| b["text"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Updates not yet confirmed by an offset.
    pub fn unconfirmed(&self) -> usize {
        self.shared.updates.lock().unwrap().len()
    }
}
