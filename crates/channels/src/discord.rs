//! Discord: the Gateway WebSocket inbound (Hello, Identify with the
//! message intents, heartbeats at the interval Hello gives, MESSAGE_CREATE
//! dispatches; Reconnect and Invalid Session reconnect and identify again)
//! and REST outbound (`POST /channels/{id}/messages`, `POST
//! /channels/{id}/typing`). A 429 honours `retry_after` (seconds, float).
//! Sends carry a `nonce` derived from the part's key with `enforce_nonce`,
//! so Discord returns the earlier message for a repeat: idempotent, and an
//! ambiguous failure is retried. Gateway messages missed while
//! disconnected are not replayed (no resume).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::http::{classify, retry_after, Backoff};
use crate::{api_base, BuildError, Channel, Host, Inbound, Kind, Outbound, SendError, Spec};

/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

pub struct Discord {
    base: String,
    token: String,
    client: reqwest::Client,
    bot_user: Mutex<Option<String>>,
}

/// Why a gateway session ended.
enum End {
    Cancelled,
    Retry(String),
}

impl Discord {
    pub fn new(spec: Spec) -> Result<Self, BuildError> {
        if spec.token.is_empty() {
            return Err(BuildError::Invalid("discord needs a bot token".into()));
        }
        Ok(Discord {
            base: api_base(&spec, Kind::Discord),
            token: spec.token,
            client: crate::http::client(),
            bot_user: Mutex::new(None),
        })
    }

    fn auth(&self) -> String {
        format!("Bot {}", self.token)
    }

    async fn gateway_url(&self) -> Result<String, String> {
        let resp = self
            .client
            .get(format!("{}/gateway/bot", self.base))
            .header("authorization", self.auth())
            .send()
            .await
            .map_err(|e| format!("GET /gateway/bot: {e}"))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match v["url"].as_str() {
            Some(u) if status == 200 => Ok(format!("{u}/?v=10&encoding=json")),
            _ => Err(format!(
                "GET /gateway/bot: HTTP {status} {}",
                v["message"].as_str().unwrap_or("")
            )),
        }
    }

    fn normalize(&self, d: &Value) -> Option<Inbound> {
        let author = &d["author"];
        if author["bot"] == true {
            return None;
        }
        let text = d["content"].as_str().filter(|t| !t.is_empty())?.to_string();
        let bot = self.bot_user.lock().unwrap().clone();
        let is_group = d.get("guild_id").is_some_and(|g| !g.is_null());
        let mentioned = !is_group
            || bot.as_ref().is_some_and(|b| {
                d["mentions"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|u| u["id"].as_str() == Some(b)))
            });
        Some(Inbound {
            message_id: d["id"].as_str()?.to_string(),
            sender: author["id"].as_str()?.to_string(),
            sender_name: author["username"].as_str().map(String::from),
            chat: d["channel_id"].as_str()?.to_string(),
            is_group,
            thread: None,
            mentioned,
            text,
        })
    }

    async fn session(&self, host: &Arc<dyn Host>, cancel: &CancellationToken) -> End {
        let url = match self.gateway_url().await {
            Ok(u) => u,
            Err(e) => return End::Retry(e),
        };
        let mut ws = match crate::ws::connect(&url).await {
            Ok(w) => w,
            Err(e) => return End::Retry(e),
        };
        let mut seq: Option<i64> = None;
        let mut interval = Duration::from_secs(41);
        let mut heartbeat = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = &mut heartbeat => {
                    if ws.send(WsMessage::Text(json!({"op": 1, "d": seq}).to_string())).await.is_err() {
                        return End::Retry("gateway: heartbeat failed".into());
                    }
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + interval);
                    continue;
                }
                _ = cancel.cancelled() => {
                    let _ = ws.close(None).await;
                    return End::Cancelled;
                }
            };
            let text = match frame {
                Some(Ok(WsMessage::Text(t))) => t,
                Some(Ok(WsMessage::Close(c))) => {
                    return End::Retry(format!(
                        "gateway closed: {}",
                        c.map(|c| format!("{} {}", c.code, c.reason))
                            .unwrap_or_default()
                    ))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return End::Retry(format!("gateway: {e}")),
                None => return End::Retry("gateway: connection closed".into()),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(s) = v["s"].as_i64() {
                seq = Some(s);
            }
            match v["op"].as_i64() {
                // Hello: start heartbeating, identify.
                Some(10) => {
                    interval = Duration::from_millis(
                        v["d"]["heartbeat_interval"].as_u64().unwrap_or(41_250),
                    );
                    let jitter = interval.mul_f64(rand_fraction());
                    heartbeat
                        .as_mut()
                        .reset(tokio::time::Instant::now() + jitter);
                    let identify = json!({"op": 2, "d": {"token": self.token, "intents": INTENTS,
                        "properties": {"os": "linux", "browser": "ironclaw", "device": "ironclaw"}}});
                    if ws
                        .send(WsMessage::Text(identify.to_string()))
                        .await
                        .is_err()
                    {
                        return End::Retry("gateway: identify failed".into());
                    }
                }
                // Heartbeat request.
                Some(1) => {
                    let _ = ws
                        .send(WsMessage::Text(json!({"op": 1, "d": seq}).to_string()))
                        .await;
                }
                Some(7) => return End::Retry("gateway asked to reconnect".into()),
                Some(9) => return End::Retry("gateway: invalid session".into()),
                Some(0) => match v["t"].as_str() {
                    Some("READY") => {
                        *self.bot_user.lock().unwrap() =
                            v["d"]["user"]["id"].as_str().map(String::from);
                        host.status(true, None);
                    }
                    Some("MESSAGE_CREATE") => {
                        if let Some(msg) = self.normalize(&v["d"]) {
                            if let Err(e) = host.accept(msg).await {
                                host.status(true, Some(format!("storing a message: {e}")));
                            }
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }

    async fn rest(&self, path: &str, body: &Value) -> Result<Value, SendError> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("authorization", self.auth())
            .json(body)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let header_wait = retry_after(resp.headers());
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(v),
            429 => {
                let wait = v["retry_after"]
                    .as_f64()
                    .map(Duration::from_secs_f64)
                    .or(header_wait)
                    .unwrap_or(Duration::from_secs(1));
                Err(SendError::RetryAfter(
                    wait,
                    format!("429 {}", v["message"].as_str().unwrap_or("")),
                ))
            }
            400..=499 => Err(SendError::Permanent(format!(
                "{status} {} {}",
                v["code"],
                v["message"].as_str().unwrap_or("")
            ))),
            _ => Err(SendError::Ambiguous(format!("HTTP {status}"))),
        }
    }
}

fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos % 1000) as f64 / 1000.0
}

/// Discord nonces are at most 25 characters.
fn nonce(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    crate::http::hex(d.as_ref())[..25].to_string()
}

#[async_trait::async_trait]
impl Channel for Discord {
    fn kind(&self) -> Kind {
        Kind::Discord
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn run(&self, host: Arc<dyn Host>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            match self.session(&host, &cancel).await {
                End::Cancelled => return,
                End::Retry(e) => {
                    tracing::warn!("discord: {e}");
                    host.status(false, Some(e));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    async fn send(&self, msg: &Outbound) -> Result<String, SendError> {
        let body = json!({"content": if msg.plain { crate::format::plain(&msg.text) } else { msg.text.clone() },
            "nonce": nonce(&msg.key), "enforce_nonce": true});
        let v = self
            .rest(&format!("/channels/{}/messages", msg.chat), &body)
            .await?;
        Ok(v["id"].as_str().unwrap_or("").to_string())
    }

    async fn typing(&self, chat: &str, _thread: Option<&str>) -> Result<(), SendError> {
        self.rest(&format!("/channels/{chat}/typing"), &json!({}))
            .await
            .map(|_| ())
    }
}
