//! Slack: the Events API inbound (signature v0 checked: `X-Slack-Signature:
//! v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{body}">`, the
//! timestamp within 5 minutes; `url_verification` answered with its
//! challenge), `chat.postMessage` outbound with the bot token. Rate limits
//! (HTTP 429 with Retry-After, or `rate_limited`/`ratelimited`) become
//! retry-after. Slack's Web API has no idempotency key: an ambiguous send
//! is not retried. Markdown becomes mrkdwn.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::http::{classify, hmac_verify, retry_after, Backoff};
use crate::{
    api_base, BuildError, Channel, Host, Inbound, Kind, Outbound, SendError, Spec, WebhookReply,
    WebhookRequest,
};

/// Oldest request timestamp accepted (replay protection).
const MAX_SKEW_SECS: i64 = 300;

pub struct Slack {
    base: String,
    token: String,
    secret: String,
    client: reqwest::Client,
    /// The bot's user id (from auth.test), for mentions and own messages.
    bot_user: Mutex<Option<String>>,
}

impl Slack {
    pub fn new(spec: Spec) -> Result<Self, BuildError> {
        if spec.token.is_empty() {
            return Err(BuildError::Invalid("slack needs a bot token".into()));
        }
        let secret = spec
            .secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BuildError::Invalid("slack needs its signing secret".into()))?;
        Ok(Slack {
            base: api_base(&spec, Kind::Slack),
            token: spec.token,
            secret,
            client: crate::http::client(),
            bot_user: Mutex::new(None),
        })
    }

    async fn api(&self, method: &str, body: &Value) -> Result<Value, SendError> {
        let resp = self
            .client
            .post(format!("{}/{method}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let err = v["error"].as_str().unwrap_or("").to_string();
        if status == 429 || err == "rate_limited" || err == "ratelimited" {
            return Err(SendError::RetryAfter(
                wait.unwrap_or(Duration::from_secs(1)),
                format!("{method}: {status} {err}"),
            ));
        }
        if status >= 500 {
            return Err(SendError::Ambiguous(format!("{method}: HTTP {status}")));
        }
        if v["ok"] != true {
            return Err(SendError::Permanent(format!(
                "{method}: {}",
                if err.is_empty() {
                    format!("HTTP {status}")
                } else {
                    err
                }
            )));
        }
        Ok(v)
    }

    fn normalize(&self, ev: &Value) -> Option<Inbound> {
        let kind = ev["type"].as_str()?;
        if kind != "message" && kind != "app_mention" {
            return None;
        }
        // Edits, joins, bots (ourselves included) are not messages to answer.
        if ev.get("subtype").is_some() || ev.get("bot_id").is_some() {
            return None;
        }
        let bot = self.bot_user.lock().unwrap().clone();
        let user = ev["user"].as_str()?;
        if bot.as_deref() == Some(user) {
            return None;
        }
        let text = ev["text"].as_str()?.to_string();
        let channel = ev["channel"].as_str()?.to_string();
        let ts = ev["ts"].as_str()?;
        let is_group = ev["channel_type"].as_str() != Some("im");
        let mentioned = !is_group
            || kind == "app_mention"
            || bot.is_some_and(|b| text.contains(&format!("<@{b}>")));
        Some(Inbound {
            // Slack sends `message` and `app_mention` for one message, and
            // retries: channel + ts names the message itself.
            message_id: format!("{channel}:{ts}"),
            sender: user.to_string(),
            sender_name: None,
            chat: channel,
            is_group,
            thread: ev["thread_ts"].as_str().map(String::from),
            mentioned,
            text,
        })
    }
}

/// The signature header's value for `body` at `ts`.
pub fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut base = format!("v0:{ts}:").into_bytes();
    base.extend_from_slice(body);
    format!("v0={}", crate::http::hmac_hex(secret.as_bytes(), &base))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Channel for Slack {
    fn kind(&self) -> Kind {
        Kind::Slack
    }

    fn idempotent(&self) -> bool {
        false
    }

    async fn run(&self, host: Arc<dyn Host>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            match self.api("auth.test", &json!({})).await {
                Ok(v) => {
                    *self.bot_user.lock().unwrap() = v["user_id"].as_str().map(String::from);
                    host.status(true, None);
                    break;
                }
                Err(e) => {
                    host.status(false, Some(format!("auth.test: {e}")));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
        cancel.cancelled().await;
    }

    async fn webhook(&self, host: Arc<dyn Host>, req: WebhookRequest) -> WebhookReply {
        let ts = req.header("x-slack-request-timestamp").unwrap_or("");
        let fresh = ts
            .parse::<i64>()
            .is_ok_and(|t| (unix_now() - t).abs() <= MAX_SKEW_SECS);
        let mut base = format!("v0:{ts}:").into_bytes();
        base.extend_from_slice(&req.body);
        let signed = req
            .header("x-slack-signature")
            .and_then(|s| s.strip_prefix("v0="))
            .is_some_and(|h| hmac_verify(self.secret.as_bytes(), &base, h));
        if !fresh || !signed {
            return WebhookReply::json(401, json!({"error": "bad signature or stale timestamp"}));
        }
        let v: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return WebhookReply::json(400, json!({"error": format!("bad body: {e}")})),
        };
        match v["type"].as_str() {
            Some("url_verification") => {
                WebhookReply::json(200, json!({"challenge": v["challenge"]}))
            }
            Some("event_callback") => {
                let Some(msg) = self.normalize(&v["event"]) else {
                    return WebhookReply::json(200, json!({"ok": true}));
                };
                match host.accept(msg).await {
                    Ok(_) => WebhookReply::json(200, json!({"ok": true})),
                    // Not stored: a non-2xx makes Slack retry.
                    Err(e) => WebhookReply::json(503, json!({"error": format!("not stored: {e}")})),
                }
            }
            _ => WebhookReply::json(200, json!({"ok": true})),
        }
    }

    async fn send(&self, msg: &Outbound) -> Result<String, SendError> {
        let text = if msg.plain {
            crate::format::plain(&msg.text)
        } else {
            crate::format::render(&msg.text, crate::Format::SlackMrkdwn)
        };
        let mut body = json!({"channel": msg.chat, "text": text});
        if msg.plain {
            body["mrkdwn"] = json!(false);
        }
        if let Some(t) = &msg.thread {
            body["thread_ts"] = json!(t);
        }
        let v = self.api("chat.postMessage", &body).await?;
        Ok(v["ts"].as_str().unwrap_or("").to_string())
    }
}
