//! Chat channels in the daemon: each configured channel (a row in the
//! store) runs as a [`runtime::Runtime`] with its module's receive loop and
//! a delivery worker. Messages are routed to (user, session), run through
//! the chat machinery (`crate::chat`), and the replies go through the
//! durable queue. Credentials are read from the daemon's environment
//! (the variables the channel names) and never reach a sandbox: the agent's
//! tools run there, the channel code runs here.

pub mod delivery;
pub mod runtime;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ironclaw_channels::{Kind, WebhookReply, WebhookRequest};
use ironclaw_store::{ChannelRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::chat::Chat;
use crate::error::ApiError;
use runtime::{Handle, Runtime, Status};
pub use settings::Settings;

/// What `POST /v1/channels` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddChannel {
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub settings: Settings,
}

/// A channel as the API shows it.
#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub name: String,
    pub kind: String,
    pub owner: String,
    pub settings: serde_json::Value,
    pub running: bool,
    pub connected: bool,
    pub last_error: Option<String>,
    pub queue_depth: u64,
    pub created_at: String,
}

pub struct Channels {
    store: Arc<Store>,
    chat: Arc<Chat>,
    running: Mutex<HashMap<String, Arc<Runtime>>>,
    /// Why a stored channel is not running (missing env var...).
    broken: Mutex<HashMap<String, String>>,
}

impl Channels {
    pub fn new(store: Arc<Store>, chat: Arc<Chat>) -> Arc<Channels> {
        Arc::new(Channels {
            store,
            chat,
            running: Mutex::default(),
            broken: Mutex::default(),
        })
    }

    /// Start every stored channel (daemon start).
    pub fn start_all(&self) {
        match self.store.channels() {
            Ok(list) => {
                for c in list {
                    if let Err(e) = self.start(&c) {
                        tracing::error!(channel = %c.name, "not started: {e}");
                        self.broken.lock().unwrap().insert(c.name.clone(), e);
                    }
                }
            }
            Err(e) => tracing::error!("loading channels: {e}"),
        }
    }

    fn start(&self, rec: &ChannelRecord) -> Result<(), String> {
        let kind = Kind::parse(&rec.kind).ok_or_else(|| format!("unknown kind {}", rec.kind))?;
        let settings: Settings =
            serde_json::from_value(rec.config.clone()).map_err(|e| format!("settings: {e}"))?;
        let spec = settings.spec(&rec.name)?;
        let channel = ironclaw_channels::build(kind, spec).map_err(|e| e.to_string())?;
        let rt = Runtime::new(
            rec.name.clone(),
            rec.owner.clone(),
            settings,
            channel,
            self.store.clone(),
            self.chat.clone(),
        );
        rt.resume();
        tokio::spawn(delivery::run(rt.clone()));
        {
            let rt = rt.clone();
            tokio::spawn(async move {
                let host = Arc::new(Handle(rt.clone()));
                rt.channel.run(host, rt.cancel.clone()).await;
            });
        }
        self.running.lock().unwrap().insert(rec.name.clone(), rt);
        self.broken.lock().unwrap().remove(&rec.name);
        Ok(())
    }

    pub fn add(&self, owner: &str, req: AddChannel) -> Result<ChannelView, ApiError> {
        crate::names::check_label("channel", &req.name)?;
        let kind = Kind::parse(&req.kind).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown channel kind {:?}: use telegram, slack, discord, matrix or webhook",
                req.kind
            ))
        })?;
        req.settings.validate(kind)?;
        if let Some(u) = &req.settings.user {
            self.store.user(u)?;
        }
        // The credentials must be there now, or the channel could not run.
        let spec = req.settings.spec(&req.name).map_err(ApiError::BadRequest)?;
        ironclaw_channels::build(kind, spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let config =
            serde_json::to_value(&req.settings).map_err(|e| ApiError::Internal(e.to_string()))?;
        let rec = self
            .store
            .add_channel(&req.name, kind.as_str(), owner, &config)?;
        if let Err(e) = self.start(&rec) {
            let _ = self.store.remove_channel(&rec.name);
            return Err(ApiError::BadRequest(e));
        }
        self.view(&rec)
    }

    pub fn remove(&self, name: &str) -> Result<(), ApiError> {
        self.store.remove_channel(name)?;
        if let Some(rt) = self.running.lock().unwrap().remove(name) {
            rt.cancel.cancel();
        }
        self.broken.lock().unwrap().remove(name);
        Ok(())
    }

    fn view(&self, rec: &ChannelRecord) -> Result<ChannelView, ApiError> {
        let rt = self.running.lock().unwrap().get(&rec.name).cloned();
        let status = match &rt {
            Some(rt) => rt.status.lock().unwrap().clone(),
            None => Status {
                connected: false,
                last_error: self.broken.lock().unwrap().get(&rec.name).cloned(),
            },
        };
        Ok(ChannelView {
            name: rec.name.clone(),
            kind: rec.kind.clone(),
            owner: rec.owner.clone(),
            settings: rec.config.clone(),
            running: rt.is_some(),
            connected: status.connected,
            last_error: status.last_error,
            queue_depth: self.store.queue_depth(&rec.name)?,
            created_at: rec.created_at.clone(),
        })
    }

    pub fn list(&self) -> Result<Vec<ChannelView>, ApiError> {
        self.store
            .channels()?
            .iter()
            .map(|c| self.view(c))
            .collect()
    }

    pub fn show(&self, name: &str) -> Result<ChannelView, ApiError> {
        self.view(&self.store.channel(name)?)
    }

    /// A channel's messages, newest first, each with its reply parts and
    /// their delivery log.
    pub fn messages(&self, name: &str, limit: u32) -> Result<serde_json::Value, ApiError> {
        self.store.channel(name)?;
        let mut out = Vec::new();
        for m in self.store.inbound_list(name, limit)? {
            let mut replies = Vec::new();
            for o in self
                .store
                .outbound_list(name, Some(m.id), 100)?
                .into_iter()
                .rev()
            {
                let log = self.store.delivery_log(o.id)?;
                replies.push(json!({"part": o, "log": log}));
            }
            out.push(json!({"message": m, "replies": replies}));
        }
        Ok(json!({"messages": out}))
    }

    /// An inbound HTTP request to a channel (webhook, Slack events).
    pub async fn webhook(&self, name: &str, req: WebhookRequest) -> WebhookReply {
        let rt = self.running.lock().unwrap().get(name).cloned();
        match rt {
            Some(rt) => {
                let host = Arc::new(Handle(rt.clone()));
                rt.channel.webhook(host, req).await
            }
            None => WebhookReply::json(404, json!({"error": "no such channel"})),
        }
    }

    pub fn approve(&self, code: &str, user: &str) -> Result<ironclaw_store::Pairing, ApiError> {
        self.store.user(user)?;
        Ok(self
            .store
            .approve_pairing(&code.trim().to_uppercase(), user)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_request_rejects_unknown_fields() {
        let ok: AddChannel = serde_json::from_value(
            json!({"kind": "telegram", "name": "tg", "token_env": "X", "access": "open"}),
        )
        .unwrap();
        assert_eq!(ok.settings.access, settings::Access::Open);
        for bad in [
            json!({"kind": "telegram", "name": "tg", "tokenenv": "X"}),
            json!({"kind": "telegram", "name": "tg", "access": "everyone"}),
            json!({"name": "tg"}),
        ] {
            assert!(
                serde_json::from_value::<AddChannel>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
