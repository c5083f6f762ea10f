//! Discord: the Gateway WebSocket inbound (Hello, Identify with the
//! message intents, heartbeats at the interval Hello gives, MESSAGE_CREATE
//! dispatches) and REST outbound (`POST /channels/{id}/messages`, `POST
//! /channels/{id}/typing`). A 429 honours `retry_after` (seconds, float).
//! Sends carry a `nonce` derived from the part's key with `enforce_nonce`,
//! so Discord returns the earlier message for a repeat: idempotent, and an
//! ambiguous failure is retried.
//!
//! The session survives a dropped connection: session_id,
//! resume_gateway_url and the last sequence number handled are kept, and a
//! dropped connection, opcode 7 (Reconnect), a missing heartbeat ACK or
//! opcode 9 with d=true reconnect to resume_gateway_url and send opcode 6
//! RESUME; Discord replays the dispatches missed, then RESUMED. Opcode 9
//! with d=false, a non-resumable close code or repeated failed resumes
//! start a fresh session (IDENTIFY). Replays of a message already stored
//! are dropped by the host's dedupe on the message id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::http::{classify, retry_after, Backoff};
use crate::{api_base, BuildError, Channel, Host, Inbound, Kind, Outbound, SendError, Spec};

/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

/// Failed resume attempts in a row before a fresh IDENTIFY.
const MAX_RESUME_FAILURES: u32 = 5;

pub struct Discord {
    base: String,
    token: String,
    client: reqwest::Client,
    bot_user: Mutex<Option<String>>,
    resume: Mutex<Resume>,
}

/// What a RESUME needs, kept across connections.
#[derive(Debug, Clone, Default)]
struct Resume {
    session_id: Option<String>,
    url: Option<String>,
    /// The last dispatch handled.
    seq: Option<i64>,
    failures: u32,
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
            resume: Mutex::default(),
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

    async fn session(
        &self,
        host: &Arc<dyn Host>,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> End {
        let resume = self.resume.lock().unwrap().clone();
        let resuming = match (&resume.session_id, &resume.url) {
            (Some(_), Some(_)) if resume.failures < MAX_RESUME_FAILURES => true,
            _ => {
                *self.resume.lock().unwrap() = Resume::default();
                false
            }
        };
        let url = if resuming {
            let base = resume.url.clone().unwrap_or_default();
            format!("{}/?v=10&encoding=json", base.trim_end_matches('/'))
        } else {
            match self.gateway_url().await {
                Ok(u) => u,
                Err(e) => return End::Retry(e),
            }
        };
        if resuming {
            // Counted until RESUMED arrives: a session that cannot be
            // resumed falls back to a fresh IDENTIFY.
            self.resume.lock().unwrap().failures += 1;
        }
        let mut ws = match crate::ws::connect(&url).await {
            Ok(w) => w,
            Err(e) => return End::Retry(e),
        };
        let mut interval = Duration::from_secs(41);
        let mut heartbeat = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        let mut acked = true;
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = &mut heartbeat => {
                    if !acked {
                        // A zombie connection: close with a code that keeps
                        // the session (not 1000/1001) and resume it.
                        let _ = ws.close(Some(CloseFrame { code: CloseCode::from(4000), reason: "no heartbeat ACK".into() })).await;
                        return End::Retry("gateway: no heartbeat ACK; reconnecting to resume".into());
                    }
                    let seq = self.resume.lock().unwrap().seq;
                    if ws.send(WsMessage::Text(json!({"op": 1, "d": seq}).to_string())).await.is_err() {
                        return End::Retry("gateway: heartbeat failed".into());
                    }
                    acked = false;
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + interval);
                    continue;
                }
                _ = cancel.cancelled() => {
                    // A normal close ends the session at Discord too.
                    let _ = ws.close(None).await;
                    *self.resume.lock().unwrap() = Resume::default();
                    return End::Cancelled;
                }
            };
            let text = match frame {
                Some(Ok(WsMessage::Text(t))) => t,
                Some(Ok(WsMessage::Close(c))) => {
                    let code = c.as_ref().map(|c| u16::from(c.code)).unwrap_or(0);
                    // Codes after which Discord will not resume the session.
                    if matches!(code, 4004 | 4007 | 4009 | 4010..=4014) {
                        *self.resume.lock().unwrap() = Resume::default();
                    }
                    return End::Retry(format!(
                        "gateway closed: {}",
                        c.map(|c| format!("{} {}", c.code, c.reason))
                            .unwrap_or_default()
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return End::Retry(format!("gateway: {e}")),
                None => return End::Retry("gateway: connection closed".into()),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            match v["op"].as_i64() {
                // Hello: start heartbeating, resume or identify.
                Some(10) => {
                    interval = Duration::from_millis(
                        v["d"]["heartbeat_interval"].as_u64().unwrap_or(41_250),
                    );
                    let jitter = interval.mul_f64(rand_fraction());
                    heartbeat
                        .as_mut()
                        .reset(tokio::time::Instant::now() + jitter);
                    let first = if resuming {
                        json!({"op": 6, "d": {"token": self.token,
                            "session_id": resume.session_id, "seq": resume.seq}})
                    } else {
                        json!({"op": 2, "d": {"token": self.token, "intents": INTENTS,
                            "properties": {"os": "linux", "browser": "ironclaw", "device": "ironclaw"}}})
                    };
                    if ws.send(WsMessage::Text(first.to_string())).await.is_err() {
                        return End::Retry("gateway: identify failed".into());
                    }
                }
                // Heartbeat request.
                Some(1) => {
                    let seq = self.resume.lock().unwrap().seq;
                    let _ = ws
                        .send(WsMessage::Text(json!({"op": 1, "d": seq}).to_string()))
                        .await;
                }
                Some(11) => acked = true,
                Some(7) => {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(4000),
                            reason: "reconnect".into(),
                        }))
                        .await;
                    return End::Retry("gateway asked to reconnect; resuming".into());
                }
                Some(9) => {
                    if v["d"] != true {
                        *self.resume.lock().unwrap() = Resume::default();
                    }
                    return End::Retry("gateway: invalid session".into());
                }
                Some(0) => {
                    match v["t"].as_str() {
                        Some("READY") => {
                            let d = &v["d"];
                            *self.bot_user.lock().unwrap() =
                                d["user"]["id"].as_str().map(String::from);
                            let mut r = self.resume.lock().unwrap();
                            r.session_id = d["session_id"].as_str().map(String::from);
                            r.url = d["resume_gateway_url"].as_str().map(String::from);
                            r.failures = 0;
                            drop(r);
                            backoff.reset();
                            host.status(true, None);
                        }
                        Some("RESUMED") => {
                            self.resume.lock().unwrap().failures = 0;
                            backoff.reset();
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
                    }
                    // Only after the event is handled: a resume from here
                    // replays nothing it has not seen.
                    if let Some(seq) = v["s"].as_i64() {
                        self.resume.lock().unwrap().seq = Some(seq);
                    }
                }
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
            match self.session(&host, &cancel, &mut backoff).await {
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
