//! The generic webhook channel. Inbound: a POST to the channel's endpoint
//! whose body is signed, `X-Ironclaw-Signature: sha256=<hex HMAC-SHA256 of
//! the body under the channel's secret>`, with the JSON
//! `{"id", "sender", "text", "chat"?, "thread"?, "group"?, "mentioned"?}`;
//! answered 200 `{"ok":true,"duplicate":bool}` only once stored, 401 on a
//! bad signature, 400 on a bad body. Outbound: a POST of
//! `{"id","chat","thread","text"}` to the callback URL, signed the same
//! way, with `Idempotency-Key: <id>`: the receiver drops a repeated id, so
//! ambiguous failures are retried (this channel is idempotent).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::http::{classify, hmac_hex, hmac_verify, retry_after};
use crate::{
    BuildError, Channel, Host, Inbound, Kind, Outbound, SendError, Spec, WebhookReply,
    WebhookRequest,
};

pub const SIGNATURE_HEADER: &str = "x-ironclaw-signature";

pub struct Webhook {
    secret: String,
    callback: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Body {
    id: String,
    sender: String,
    text: String,
    chat: Option<String>,
    thread: Option<String>,
    #[serde(default)]
    group: bool,
    #[serde(default)]
    mentioned: bool,
    sender_name: Option<String>,
}

/// The signature header's value for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret.as_bytes(), body))
}

impl Webhook {
    pub fn new(spec: Spec) -> Result<Self, BuildError> {
        let secret = spec.secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            BuildError::Invalid("a webhook channel needs a signing secret".into())
        })?;
        let callback = spec
            .callback_url
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| {
                BuildError::Invalid("a webhook channel needs an http(s) callback URL".into())
            })?;
        Ok(Webhook {
            secret,
            callback,
            client: crate::http::client(),
        })
    }
}

#[async_trait::async_trait]
impl Channel for Webhook {
    fn kind(&self) -> Kind {
        Kind::Webhook
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn run(&self, host: Arc<dyn Host>, cancel: CancellationToken) {
        host.status(true, None);
        cancel.cancelled().await;
    }

    async fn webhook(&self, host: Arc<dyn Host>, req: WebhookRequest) -> WebhookReply {
        let sig = req.header(SIGNATURE_HEADER).unwrap_or("");
        let ok = sig
            .strip_prefix("sha256=")
            .is_some_and(|h| hmac_verify(self.secret.as_bytes(), &req.body, h));
        if !ok {
            return WebhookReply::json(401, json!({"error": "bad or missing signature"}));
        }
        let b: Body = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => return WebhookReply::json(400, json!({"error": format!("bad body: {e}")})),
        };
        if b.id.is_empty() || b.sender.is_empty() || b.text.trim().is_empty() {
            return WebhookReply::json(400, json!({"error": "id, sender and text are required"}));
        }
        let chat = b.chat.unwrap_or_else(|| b.sender.clone());
        let msg = Inbound {
            message_id: b.id,
            sender: b.sender,
            sender_name: b.sender_name,
            chat,
            is_group: b.group,
            thread: b.thread,
            mentioned: b.mentioned || !b.group,
            text: b.text,
        };
        match host.accept(msg).await {
            Ok(new) => WebhookReply::json(200, json!({"ok": true, "duplicate": !new})),
            Err(e) => WebhookReply::json(503, json!({"error": format!("not stored: {e}")})),
        }
    }

    async fn send(&self, msg: &Outbound) -> Result<String, SendError> {
        let text = if msg.plain {
            crate::format::plain(&msg.text)
        } else {
            msg.text.clone()
        };
        let body = json!({"id": msg.key, "chat": msg.chat, "thread": msg.thread, "text": text})
            .to_string();
        let resp = self
            .client
            .post(&self.callback)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, body.as_bytes()))
            .header("idempotency-key", &msg.key)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok(msg.key.clone()),
            429 => Err(SendError::RetryAfter(
                wait.unwrap_or(Duration::from_secs(5)),
                format!("429 {text}"),
            )),
            400..=499 => Err(SendError::Permanent(format!("{status} {text}"))),
            _ => Err(SendError::Ambiguous(format!("{status} {text}"))),
        }
    }
}
