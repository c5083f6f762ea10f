//! Matrix client-server API: `/sync` long polling with the `since` token
//! persisted through the host after each batch is stored (the first sync
//! only learns where "now" is: history is not answered), invites joined,
//! `PUT /rooms/{room}/send/m.room.message/{txnId}` outbound with the part's
//! key as txnId (the homeserver drops a repeat: idempotent), typing
//! notifications, 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::http::{classify, retry_after, Backoff};
use crate::{api_base, BuildError, Channel, Host, Inbound, Kind, Outbound, SendError, Spec};

const SYNC_TIMEOUT_MS: u64 = 25_000;

pub struct Matrix {
    base: String,
    token: String,
    client: reqwest::Client,
    user_id: Mutex<Option<String>>,
    /// Joined member count per room, from sync summaries.
    members: Mutex<HashMap<String, u64>>,
}

impl Matrix {
    pub fn new(spec: Spec) -> Result<Self, BuildError> {
        if spec.token.is_empty() {
            return Err(BuildError::Invalid("matrix needs an access token".into()));
        }
        Ok(Matrix {
            base: api_base(&spec, Kind::Matrix),
            token: spec.token,
            client: crate::http::client(),
            user_id: Mutex::new(None),
            members: Mutex::default(),
        })
    }

    /// `base` + `/_matrix/client/v3/` + segments, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, SendError> {
        let mut u = reqwest::Url::parse(&self.base)
            .map_err(|e| SendError::Permanent(format!("bad api_base: {e}")))?;
        u.path_segments_mut()
            .map_err(|_| SendError::Permanent("bad api_base".into()))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        Ok(u)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, SendError> {
        let mut req = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let header_wait = retry_after(resp.headers());
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let what = format!(
            "{status} {} {}",
            v["errcode"].as_str().unwrap_or(""),
            v["error"].as_str().unwrap_or("")
        );
        match status {
            200..=299 => Ok(v),
            429 => Err(SendError::RetryAfter(
                v["retry_after_ms"]
                    .as_u64()
                    .map(Duration::from_millis)
                    .or(header_wait)
                    .unwrap_or(Duration::from_secs(1)),
                what,
            )),
            400..=499 => Err(SendError::Permanent(what)),
            _ => Err(SendError::Ambiguous(what)),
        }
    }

    fn normalize(&self, room: &str, ev: &Value) -> Option<Inbound> {
        if ev["type"] != "m.room.message" {
            return None;
        }
        let sender = ev["sender"].as_str()?;
        let me = self.user_id.lock().unwrap().clone();
        if me.as_deref() == Some(sender) {
            return None;
        }
        let content = &ev["content"];
        if !matches!(content["msgtype"].as_str(), Some("m.text" | "m.notice")) {
            return None;
        }
        let text = content["body"].as_str()?.to_string();
        let members = self.members.lock().unwrap().get(room).copied();
        let is_group = members.is_none_or(|n| n > 2);
        let mentioned = !is_group
            || me.as_ref().is_some_and(|m| {
                text.contains(m.as_str())
                    || content["m.mentions"]["user_ids"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(m)))
            });
        let relates = &content["m.relates_to"];
        let thread = (relates["rel_type"] == "m.thread")
            .then(|| relates["event_id"].as_str().map(String::from))
            .flatten();
        Some(Inbound {
            message_id: ev["event_id"].as_str()?.to_string(),
            sender: sender.to_string(),
            sender_name: None,
            chat: room.to_string(),
            is_group,
            thread,
            mentioned,
            text,
        })
    }

    /// Learn `room`'s joined member count from the homeserver (a DM is a
    /// room of two); unknown stays unknown, which counts as a group.
    async fn count_members(&self, room: &str) {
        let Ok(u) = self.url(&["rooms", room, "joined_members"]) else {
            return;
        };
        match self.call(reqwest::Method::GET, u, None, None).await {
            Ok(v) => {
                if let Some(j) = v["joined"].as_object() {
                    self.members
                        .lock()
                        .unwrap()
                        .insert(room.to_string(), j.len() as u64);
                }
            }
            Err(e) => tracing::debug!("matrix: joined_members of {room}: {e}"),
        }
    }

    /// Store a sync batch's messages; join invites. False when one could
    /// not be stored (the batch is then synced again).
    async fn batch(&self, host: &Arc<dyn Host>, v: &Value) -> bool {
        if let Some(invites) = v["rooms"]["invite"].as_object() {
            for room in invites.keys() {
                if let Ok(u) = self.url(&["rooms", room, "join"]) {
                    let _ = self
                        .call(reqwest::Method::POST, u, Some(&json!({})), None)
                        .await;
                }
            }
        }
        let Some(joined) = v["rooms"]["join"].as_object() else {
            return true;
        };
        for (room, r) in joined {
            let events = r["timeline"]["events"].as_array();
            if let Some(n) = r["summary"]["m.joined_member_count"].as_u64() {
                self.members.lock().unwrap().insert(room.clone(), n);
            } else if events
                .into_iter()
                .flatten()
                .any(|e| e["type"] == "m.room.member")
            {
                // Someone joined or left, and no summary says how many are
                // left (Synapse sends summaries only to lazy-loading
                // clients, and only when they change).
                self.members.lock().unwrap().remove(room);
            }
            let has_messages = events
                .into_iter()
                .flatten()
                .any(|e| e["type"] == "m.room.message");
            if has_messages && !self.members.lock().unwrap().contains_key(room) {
                self.count_members(room).await;
            }
            for ev in events.into_iter().flatten() {
                if let Some(msg) = self.normalize(room, ev) {
                    if let Err(e) = host.accept(msg).await {
                        host.status(true, Some(format!("storing a message: {e}")));
                        return false;
                    }
                }
            }
        }
        true
    }
}

#[async_trait::async_trait]
impl Channel for Matrix {
    fn kind(&self) -> Kind {
        Kind::Matrix
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn run(&self, host: Arc<dyn Host>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let sleep = |d: Duration| {
            let cancel = cancel.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(d) => true,
                    _ = cancel.cancelled() => false,
                }
            }
        };
        loop {
            let res = match self.url(&["account", "whoami"]) {
                Ok(u) => self.call(reqwest::Method::GET, u, None, None).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(v) => {
                    *self.user_id.lock().unwrap() = v["user_id"].as_str().map(String::from);
                    break;
                }
                Err(e) => {
                    host.status(false, Some(format!("whoami: {e}")));
                    if !sleep(backoff.next_delay()).await {
                        return;
                    }
                }
            }
        }
        backoff.reset();
        let mut since = host.cursor();
        loop {
            let Ok(mut url) = self.url(&["sync"]) else {
                return;
            };
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("timeout", &SYNC_TIMEOUT_MS.to_string());
                if let Some(s) = &since {
                    q.append_pair("since", s);
                }
            }
            let call = self.call(
                reqwest::Method::GET,
                url,
                None,
                Some(Duration::from_millis(SYNC_TIMEOUT_MS + 10_000)),
            );
            let res = tokio::select! {
                r = call => r,
                _ = cancel.cancelled() => return,
            };
            let wait = match res {
                Ok(v) => {
                    host.status(true, None);
                    backoff.reset();
                    // The first sync is the present: only its position counts.
                    let stored = since.is_none() || self.batch(&host, &v).await;
                    if stored {
                        if let Some(next) = v["next_batch"].as_str() {
                            if let Err(e) = host.set_cursor(next) {
                                host.status(true, Some(format!("storing the sync token: {e}")));
                            }
                            since = Some(next.to_string());
                        }
                        continue;
                    }
                    backoff.next_delay()
                }
                Err(SendError::RetryAfter(d, e)) => {
                    host.status(true, Some(format!("sync: {e}")));
                    d
                }
                Err(e) => {
                    host.status(false, Some(format!("sync: {e}")));
                    backoff.next_delay()
                }
            };
            if !sleep(wait).await {
                return;
            }
        }
    }

    async fn send(&self, msg: &Outbound) -> Result<String, SendError> {
        let mut body = if msg.plain {
            json!({"msgtype": "m.text", "body": crate::format::plain(&msg.text)})
        } else {
            json!({"msgtype": "m.text", "body": msg.text,
                "format": "org.matrix.custom.html",
                "formatted_body": crate::format::render(&msg.text, crate::Format::TelegramHtml)})
        };
        if let Some(t) = &msg.thread {
            body["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": t});
        }
        let url = self.url(&["rooms", &msg.chat, "send", "m.room.message", &msg.key])?;
        let v = self
            .call(reqwest::Method::PUT, url, Some(&body), None)
            .await?;
        Ok(v["event_id"].as_str().unwrap_or("").to_string())
    }

    async fn typing(&self, chat: &str, _thread: Option<&str>) -> Result<(), SendError> {
        let Some(me) = self.user_id.lock().unwrap().clone() else {
            return Ok(());
        };
        let url = self.url(&["rooms", chat, "typing", &me])?;
        self.call(
            reqwest::Method::PUT,
            url,
            Some(&json!({"typing": true, "timeout": 10_000})),
            None,
        )
        .await
        .map(|_| ())
    }
}
