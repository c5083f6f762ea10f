//! Telegram Bot API: `deleteWebhook` first (a bot with a webhook set gets
//! 409 from `getUpdates`), then long polling `getUpdates` with the offset
//! persisted through the host after each message is stored. A 409 Conflict
//! (another poller) backs off and is reported in status, never a silent
//! loop; 429 honours `parameters.retry_after`; 400 "can't parse entities"
//! asks for the plain-text retry.
//!
//! Webhook mode (a `webhook_url` and a secret token): `setWebhook` at
//! start instead, and updates arrive on the daemon's inbound endpoint,
//! checked against `X-Telegram-Bot-Api-Secret-Token` (constant time; wrong
//! or missing is 401 and nothing is stored), stored before the 200 answer
//! (a failure to store is a 500: Telegram redelivers). Redeliveries carry
//! the same message, so they are deduplicated by the same id as in polling
//! mode, and switching modes processes nothing twice.
//!
//! Sends have no idempotency key in this API: an ambiguous failure (the
//! request went out, no answer came) is not retried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::http::{classify, ct_eq, Backoff};
use crate::{
    api_base, BuildError, Channel, Host, Inbound, Kind, Outbound, SendError, Spec, WebhookReply,
    WebhookRequest,
};

/// Seconds a `getUpdates` call waits for updates.
const POLL_SECS: u64 = 25;

/// The header Telegram sends the webhook's secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// How often webhook mode asks getWebhookInfo whether deliveries work.
const WEBHOOK_CHECK: Duration = Duration::from_secs(60);

/// Webhook mode: where Telegram pushes updates, and the token it sends.
struct Push {
    url: String,
    secret: String,
}

pub struct Telegram {
    base: String,
    client: reqwest::Client,
    push: Option<Push>,
    check_every: Duration,
    /// The bot's @username (from getMe), for mention detection.
    username: Mutex<Option<String>>,
}

/// A Bot API answer that is not `ok`.
#[derive(Debug)]
struct ApiFail {
    status: u16,
    code: i64,
    description: String,
    retry_after: Option<u64>,
}

impl Telegram {
    pub fn new(spec: Spec) -> Result<Self, BuildError> {
        if spec.token.is_empty() {
            return Err(BuildError::Invalid("telegram needs a bot token".into()));
        }
        let base = format!("{}/bot{}", api_base(&spec, Kind::Telegram), spec.token);
        let push = match spec.webhook_url {
            None => None,
            Some(url) => {
                let secret = spec.secret.unwrap_or_default();
                // The Bot API's own rule for secret_token.
                if secret.is_empty()
                    || secret.len() > 256
                    || !secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(BuildError::Invalid(
                        "telegram webhook mode needs a secret token of 1-256 characters A-Z, a-z, 0-9, '_' and '-'".into(),
                    ));
                }
                Some(Push { url, secret })
            }
        };
        Ok(Telegram {
            base,
            client: crate::http::client(),
            push,
            check_every: WEBHOOK_CHECK,
            username: Mutex::new(None),
        })
    }

    /// Call `method`: the `result`, or the API's failure, or a transport error.
    async fn call(
        &self,
        method: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<Result<Value, ApiFail>, reqwest::Error> {
        let mut req = self
            .client
            .post(format!("{}/{method}", self.base))
            .json(body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if v["ok"] == true {
            return Ok(Ok(v["result"].clone()));
        }
        Ok(Err(ApiFail {
            status,
            code: v["error_code"].as_i64().unwrap_or(status as i64),
            description: v["description"]
                .as_str()
                .unwrap_or("no description")
                .to_string(),
            retry_after: v["parameters"]["retry_after"].as_u64(),
        }))
    }

    fn normalize(&self, u: &Value) -> Option<Inbound> {
        let m = u.get("message")?;
        let text = m["text"].as_str().or(m["caption"].as_str())?.to_string();
        let chat = &m["chat"];
        let is_group = matches!(chat["type"].as_str(), Some("group" | "supergroup"));
        let username = self.username.lock().unwrap().clone();
        let mentioned = !is_group
            || username.is_some_and(|u| {
                text.to_lowercase()
                    .contains(&format!("@{}", u.to_lowercase()))
            })
            || m["reply_to_message"]["from"]["is_bot"] == true;
        let from = &m["from"];
        let name = from["username"]
            .as_str()
            .or(from["first_name"].as_str())
            .map(String::from);
        Some(Inbound {
            message_id: format!("{}:{}", id_str(&chat["id"]), id_str(&m["message_id"])),
            sender: id_str(&from["id"]),
            sender_name: name,
            chat: id_str(&chat["id"]),
            is_group,
            thread: m
                .get("message_thread_id")
                .filter(|_| m["is_topic_message"] == true)
                .map(id_str),
            mentioned,
            text,
        })
    }

    /// Check webhook deliveries this often instead (tests).
    pub fn with_webhook_check(mut self, every: Duration) -> Self {
        self.check_every = every;
        self
    }

    /// Webhook mode, once set: Telegram tells in getWebhookInfo when it
    /// cannot deliver (a wrong public URL, a proxy in the way), the
    /// webhook's silent failure, or that the webhook was replaced or
    /// deleted (another instance); both show in status, and a lost webhook
    /// is set again.
    async fn watch_webhook(&self, push: &Push, host: &Arc<dyn Host>, cancel: &CancellationToken) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        // Errors from before this start are not news.
        let mut seen = now - 1;
        while sleep_or_cancel(self.check_every, cancel).await {
            let info = match self.call("getWebhookInfo", &json!({}), None).await {
                Ok(Ok(info)) => info,
                Ok(Err(f)) => {
                    host.status(
                        true,
                        Some(format!("getWebhookInfo: {} {}", f.code, f.description)),
                    );
                    continue;
                }
                Err(e) => {
                    host.status(true, Some(format!("getWebhookInfo: {e}")));
                    continue;
                }
            };
            let url = info["url"].as_str().unwrap_or("");
            if url != push.url {
                let what = if url.is_empty() {
                    "deleted".to_string()
                } else {
                    format!("changed to {url}")
                };
                let e = format!("the webhook was {what} (another instance?); setting it again");
                tracing::warn!("telegram: {e}");
                host.status(false, Some(e));
                match self.start().await {
                    Ok(()) => host.status(true, None),
                    Err(e) => host.status(false, Some(e)),
                }
                continue;
            }
            let date = info["last_error_date"].as_i64().unwrap_or(0);
            if date > seen {
                seen = date;
                let e = format!(
                    "Telegram could not deliver to {}: {} ({} update(s) pending)",
                    push.url,
                    info["last_error_message"]
                        .as_str()
                        .unwrap_or("no reason given"),
                    info["pending_update_count"].as_u64().unwrap_or(0)
                );
                tracing::warn!("telegram: {e}");
                host.status(false, Some(e));
            } else {
                host.status(true, None);
            }
        }
    }

    /// Call `method` once for its side effect.
    async fn must(&self, method: &str, body: &Value) -> Result<(), String> {
        match self.call(method, body, None).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(f)) => Err(format!("{method}: {} {}", f.code, f.description)),
            Err(e) => Err(format!("{method}: {e}")),
        }
    }

    /// One startup attempt: drop a webhook (polling) or set ours (webhook
    /// mode), learn the bot's name.
    async fn start(&self) -> Result<(), String> {
        match &self.push {
            None => {
                self.must("deleteWebhook", &json!({"drop_pending_updates": false}))
                    .await?
            }
            Some(p) => {
                self.must(
                    "setWebhook",
                    &json!({"url": p.url, "secret_token": p.secret,
                        "allowed_updates": ["message"], "drop_pending_updates": false}),
                )
                .await?
            }
        }
        match self.call("getMe", &json!({}), None).await {
            Ok(Ok(me)) => {
                *self.username.lock().unwrap() = me["username"].as_str().map(String::from);
                Ok(())
            }
            Ok(Err(f)) => Err(format!("getMe: {} {}", f.code, f.description)),
            Err(e) => Err(format!("getMe: {e}")),
        }
    }
}

fn id_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

#[async_trait::async_trait]
impl Channel for Telegram {
    fn kind(&self) -> Kind {
        Kind::Telegram
    }

    fn idempotent(&self) -> bool {
        false
    }

    async fn run(&self, host: Arc<dyn Host>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.start().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("telegram: {e}");
                    host.status(false, Some(e));
                    if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        return;
                    }
                }
            }
        }
        backoff.reset();
        if let Some(push) = &self.push {
            // Updates come to `webhook`; on removal, stop Telegram pushing
            // to an endpoint that is gone.
            host.status(true, None);
            self.watch_webhook(push, &host, &cancel).await;
            let body = json!({"drop_pending_updates": false});
            let stop = self.must("deleteWebhook", &body);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(5), stop)
                .await
                .unwrap_or(Err("deleteWebhook: timed out".into()))
            {
                tracing::warn!("telegram: {e}");
            }
            return;
        }
        let mut offset: Option<i64> = host.cursor().and_then(|c| c.parse().ok());
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let mut body = json!({"timeout": POLL_SECS, "allowed_updates": ["message"]});
            if let Some(o) = offset {
                body["offset"] = json!(o);
            }
            let call = self.call(
                "getUpdates",
                &body,
                Some(Duration::from_secs(POLL_SECS + 10)),
            );
            let res = tokio::select! {
                r = call => r,
                _ = cancel.cancelled() => return,
            };
            let wait = match res {
                Ok(Ok(updates)) => {
                    host.status(true, None);
                    backoff.reset();
                    let mut stored_all = true;
                    for u in updates.as_array().into_iter().flatten() {
                        let Some(id) = u["update_id"].as_i64() else {
                            continue;
                        };
                        if let Some(msg) = self.normalize(u) {
                            if let Err(e) = host.accept(msg).await {
                                // Not stored: not acknowledged either; the
                                // service sends it again.
                                host.status(true, Some(format!("storing an update: {e}")));
                                stored_all = false;
                                break;
                            }
                        }
                        offset = Some(id + 1);
                        if let Err(e) = host.set_cursor(&(id + 1).to_string()) {
                            host.status(true, Some(format!("storing the offset: {e}")));
                        }
                    }
                    if stored_all {
                        continue;
                    }
                    backoff.next_delay()
                }
                Ok(Err(f)) if f.code == 409 => {
                    let d = backoff.next_delay();
                    let e = format!(
                        "409 Conflict from getUpdates ({}): another poller or a webhook holds this bot; retrying in {d:?}",
                        f.description
                    );
                    tracing::warn!("telegram: {e}");
                    host.status(false, Some(e));
                    // A webhook set since: drop it again.
                    let _ = self.start().await;
                    d
                }
                Ok(Err(f)) if f.code == 429 => {
                    let d = Duration::from_secs(f.retry_after.unwrap_or(5));
                    host.status(
                        true,
                        Some(format!("429 from getUpdates: {}", f.description)),
                    );
                    d
                }
                Ok(Err(f)) => {
                    let e = format!(
                        "getUpdates: {} {} (HTTP {})",
                        f.code, f.description, f.status
                    );
                    host.status(false, Some(e));
                    backoff.next_delay()
                }
                Err(e) => {
                    host.status(false, Some(format!("getUpdates: {e}")));
                    backoff.next_delay()
                }
            };
            if !sleep_or_cancel(wait, &cancel).await {
                return;
            }
        }
    }

    async fn webhook(&self, host: Arc<dyn Host>, req: WebhookRequest) -> WebhookReply {
        let Some(push) = &self.push else {
            return WebhookReply::json(
                404,
                json!({"error": "this telegram channel polls getUpdates; it takes no webhooks"}),
            );
        };
        let given = req.header(SECRET_HEADER).unwrap_or("");
        if !ct_eq(given.as_bytes(), push.secret.as_bytes()) {
            return WebhookReply::json(
                401,
                json!({"error": "missing or wrong X-Telegram-Bot-Api-Secret-Token"}),
            );
        }
        let Ok(u) = serde_json::from_slice::<Value>(&req.body) else {
            return WebhookReply::json(400, json!({"error": "the body is not JSON"}));
        };
        if u["update_id"].as_i64().is_none() {
            return WebhookReply::json(400, json!({"error": "not an Update: no update_id"}));
        }
        // Other update kinds (edits, reactions...) are acknowledged unread.
        if let Some(msg) = self.normalize(&u) {
            if let Err(e) = host.accept(msg).await {
                host.status(true, Some(format!("storing an update: {e}")));
                // Not stored, so not acknowledged: Telegram sends it again.
                return WebhookReply::json(500, json!({"error": "could not store the update"}));
            }
        }
        WebhookReply::json(200, json!({}))
    }

    async fn send(&self, msg: &Outbound) -> Result<String, SendError> {
        let text = if msg.plain {
            crate::format::plain(&msg.text)
        } else {
            crate::format::render(&msg.text, crate::Format::TelegramHtml)
        };
        let mut body = json!({"chat_id": msg.chat, "text": text});
        if !msg.plain {
            body["parse_mode"] = json!("HTML");
        }
        if let Some(t) = msg.thread.as_deref().and_then(|t| t.parse::<i64>().ok()) {
            body["message_thread_id"] = json!(t);
        }
        match self.call("sendMessage", &body, None).await {
            Ok(Ok(m)) => Ok(id_str(&m["message_id"])),
            Ok(Err(f)) => Err(send_error(f)),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn typing(&self, chat: &str, thread: Option<&str>) -> Result<(), SendError> {
        let mut body = json!({"chat_id": chat, "action": "typing"});
        if let Some(t) = thread.and_then(|t| t.parse::<i64>().ok()) {
            body["message_thread_id"] = json!(t);
        }
        match self.call("sendChatAction", &body, None).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(f)) => Err(send_error(f)),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn send_error(f: ApiFail) -> SendError {
    let what = format!("{} {}", f.code, f.description);
    match f.code {
        429 => SendError::RetryAfter(Duration::from_secs(f.retry_after.unwrap_or(5)), what),
        400 if f.description.contains("can't parse entities") => SendError::Format(what),
        // Bad chat, blocked by the user, bad token, too long...
        400..=499 => SendError::Permanent(what),
        // The service failed mid-request: it may have sent it.
        _ => SendError::Ambiguous(what),
    }
}
