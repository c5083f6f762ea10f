//! One running channel: the [`Host`] its module reports to (inbound
//! messages stored before they are acknowledged, the cursor, the status),
//! access and routing of each message to (user, session), one lane per
//! session so its turns run in order, and the turn itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclaw_channels::{Channel, Host, Inbound};
use ironclaw_store::{InboundRecord, NewPart, Store};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::settings::{Access, Scope, Settings};
use crate::chat::Chat;

/// Connection state for `channel status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub connected: bool,
    pub last_error: Option<String>,
}

pub struct Runtime {
    pub name: String,
    pub owner: String,
    pub settings: Settings,
    pub channel: Arc<dyn Channel>,
    pub store: Arc<Store>,
    pub chat: Arc<Chat>,
    pub status: Mutex<Status>,
    pub cancel: CancellationToken,
    /// Wakes the delivery worker when parts are queued.
    pub queued: Notify,
    /// Per session scope: the lane running its turns in order.
    lanes: Mutex<HashMap<String, mpsc::UnboundedSender<LaneItem>>>,
}

/// A message queued in its session's lane: id, message, user.
type LaneItem = (i64, Inbound, String);

/// How often "typing..." is renewed while the agent works (services show
/// it for about 5 s).
const TYPING_EVERY: Duration = Duration::from_secs(4);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Runtime {
    pub fn new(
        name: String,
        owner: String,
        settings: Settings,
        channel: Arc<dyn Channel>,
        store: Arc<Store>,
        chat: Arc<Chat>,
    ) -> Arc<Runtime> {
        Arc::new(Runtime {
            name,
            owner,
            settings,
            channel,
            store,
            chat,
            status: Mutex::default(),
            cancel: CancellationToken::new(),
            queued: Notify::new(),
            lanes: Mutex::default(),
        })
    }

    /// Messages a crash left unanswered, routed again in order.
    pub fn resume(self: &Arc<Self>) {
        match self.store.unfinished_inbound(&self.name) {
            Ok(rows) => {
                for r in rows {
                    self.dispatch(r);
                }
            }
            Err(e) => tracing::error!(channel = %self.name, "loading unfinished messages: {e}"),
        }
    }

    fn default_user(&self) -> String {
        self.settings.user.clone().unwrap_or(self.owner.clone())
    }

    fn ignore(&self, id: i64, why: &str) {
        if let Err(e) = self
            .store
            .set_inbound_state(id, "ignored", Some(why), None, None)
        {
            tracing::error!(channel = %self.name, "marking message {id}: {e}");
        }
    }

    /// Access, then the lane of the message's session.
    fn dispatch(self: &Arc<Self>, rec: InboundRecord) {
        let msg: Inbound = match serde_json::from_value(rec.body.clone()) {
            Ok(m) => m,
            Err(e) => return self.ignore(rec.id, &format!("unreadable: {e}")),
        };
        let user = if msg.is_group {
            if !self.settings.groups.contains(&msg.chat) {
                return self.ignore(rec.id, "group not in the channel's group allowlist");
            }
            if !self.settings.triggered(&msg.text, msg.mentioned) {
                return self.ignore(rec.id, "not triggered (no mention or trigger pattern)");
            }
            match self.group_user(&msg.chat) {
                Ok(u) => u,
                Err(e) => return self.ignore(rec.id, &format!("no group agent: {e}")),
            }
        } else {
            match self.settings.access {
                Access::Open => self.default_user(),
                Access::Allowlist => {
                    if !self.settings.allow.contains(&msg.sender) {
                        return self.ignore(rec.id, "sender not in the allowlist");
                    }
                    self.default_user()
                }
                Access::Pairing => match self.paired(rec.id, &msg) {
                    Some(u) => u,
                    None => return,
                },
            }
        };
        let scope = match self.settings.scope {
            Scope::Sender => format!("{user}|sender:{}", msg.sender),
            Scope::Chat => format!("{user}|chat:{}", msg.chat),
            Scope::Thread => format!(
                "{user}|chat:{}|thread:{}",
                msg.chat,
                msg.thread.as_deref().unwrap_or("")
            ),
        };
        let mut lanes = self.lanes.lock().unwrap();
        let item = (rec.id, msg, user);
        let item = match lanes.get(&scope) {
            Some(tx) => match tx.send(item) {
                Ok(()) => return,
                Err(mpsc::error::SendError(item)) => item,
            },
            None => item,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        lanes.insert(scope.clone(), tx);
        tokio::spawn(self.clone().lane(scope, rx));
    }

    /// A group's own agent context: a user of its own (made on first
    /// use), so the group has its own sandbox, memory files and sessions.
    fn group_user(&self, chat: &str) -> Result<String, String> {
        let h = ironclaw_store::users::hash_token(&format!("{}/{chat}", self.name));
        let name = format!("grp-{}", &h[..16]);
        match self.store.add_user(&name, false) {
            Ok(_) => {
                tracing::info!(channel = %self.name, group = %chat, user = %name, "new group agent")
            }
            Err(ironclaw_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        Ok(name)
    }

    /// The sender's paired user; otherwise a pairing code is sent (once)
    /// and None.
    fn paired(&self, id: i64, msg: &Inbound) -> Option<String> {
        match self.store.pairing(&self.name, &msg.sender) {
            Ok(Some(p)) if p.user.is_some() => return p.user,
            Ok(Some(_)) => {
                self.ignore(id, "sender waits for pairing approval");
                return None;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(channel = %self.name, "pairing lookup: {e}");
                return None;
            }
        }
        for _ in 0..5 {
            let code: String = (0..6)
                .map(|_| {
                    let alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
                    alphabet[rand::random::<usize>() % alphabet.len()] as char
                })
                .collect();
            let text = format!(
                "Hi! I don't know you yet. Your pairing code is {code}. Ask the operator to run: ironclaw pair approve {code} --user NAME"
            );
            let part = NewPart {
                chat: &msg.chat,
                thread: msg.thread.as_deref(),
                text: &text,
            };
            match self
                .store
                .create_pairing(&self.name, &msg.sender, &code, &part, now_ms())
            {
                Ok(()) => {
                    self.ignore(id, &format!("pairing code {code} sent"));
                    self.queued.notify_one();
                    return None;
                }
                Err(ironclaw_store::StoreError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::error!(channel = %self.name, "creating a pairing: {e}");
                    return None;
                }
            }
        }
        None
    }

    /// Run the scope's turns one after another; end when idle.
    async fn lane(self: Arc<Self>, scope: String, mut rx: mpsc::UnboundedReceiver<LaneItem>) {
        loop {
            let next = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep(Duration::from_secs(60)) => None,
                _ = self.cancel.cancelled() => return,
            };
            let item = match next {
                Some(i) => i,
                None => {
                    // Idle: leave, unless something arrived meanwhile.
                    let mut lanes = self.lanes.lock().unwrap();
                    match rx.try_recv() {
                        Ok(i) => i,
                        Err(_) => {
                            lanes.remove(&scope);
                            return;
                        }
                    }
                }
            };
            let (id, msg, user) = item;
            self.turn(id, &msg, &user, &scope).await;
        }
    }

    /// One agent turn for an inbound message; the reply goes to the queue
    /// in the same transaction that marks the message done.
    async fn turn(&self, id: i64, msg: &Inbound, user: &str, scope: &str) {
        let store = &self.store;
        // Still `running` when its turn begins: a daemon crash cut that turn off.
        let resumed = store.inbound(id).is_ok_and(|r| r.state == "running");
        let _ = store.set_inbound_state(id, "running", None, Some(user), None);
        let session = match self.session(user, scope) {
            Ok(s) => s,
            Err(e) => return self.fail(id, msg, &format!("no session: {e}")),
        };
        let _ = store.set_inbound_state(id, "running", None, None, Some(&session.id));
        // Typing while the agent works.
        let typing = CancellationToken::new();
        {
            let (channel, chat, thread, stop) = (
                self.channel.clone(),
                msg.chat.clone(),
                msg.thread.clone(),
                typing.clone(),
            );
            tokio::spawn(async move {
                loop {
                    if let Err(e) = channel.typing(&chat, thread.as_deref()).await {
                        tracing::debug!("typing: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(TYPING_EVERY) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        let _stop_typing = typing.drop_guard();
        let (tx, mut rx) = mpsc::channel(256);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        // Tasks this turn schedules post their results to this chat.
        let origin = crate::chat::ChannelTurn {
            reply_to: ironclaw_store::TaskDelivery {
                channel: self.name.clone(),
                chat: msg.chat.clone(),
                thread: msg.thread.clone(),
            },
            resumed,
        };
        let turn = self
            .chat
            .turn_from(Some(origin), user, &session, &msg.text, None, tx);
        let reply = match turn.await {
            Ok(r) => match r.error {
                Some(e) => format!("Sorry, the agent failed: {e}"),
                None => {
                    let t = r.outcome.final_text();
                    if t.trim().is_empty() {
                        "(no answer)".to_string()
                    } else {
                        t
                    }
                }
            },
            Err(e) => format!("Sorry, that did not work: {e}"),
        };
        self.reply(id, msg, "done", None, &reply);
    }

    fn fail(&self, id: i64, msg: &Inbound, why: &str) {
        tracing::warn!(channel = %self.name, "message {id}: {why}");
        self.reply(id, msg, "failed", Some(why), &format!("Sorry: {why}"));
    }

    fn reply(&self, id: i64, msg: &Inbound, state: &str, note: Option<&str>, text: &str) {
        let parts = ironclaw_channels::split(text, self.channel.kind().limit());
        let parts: Vec<NewPart<'_>> = parts
            .iter()
            .map(|p| NewPart {
                chat: &msg.chat,
                thread: msg.thread.as_deref(),
                text: p,
            })
            .collect();
        match self
            .store
            .finish_inbound(id, &self.name, state, note, &parts, now_ms())
        {
            Ok(()) => self.queued.notify_one(),
            Err(e) => tracing::error!(channel = %self.name, "queueing the reply to {id}: {e}"),
        }
    }

    /// The scope's session, made on first use.
    fn session(&self, user: &str, scope: &str) -> Result<ironclaw_store::SessionRecord, String> {
        if let Some(id) = self
            .store
            .channel_session(&self.name, scope)
            .map_err(|e| e.to_string())?
        {
            if let Ok(s) = self.store.session(user, &id) {
                return Ok(s);
            }
        }
        let s = self
            .chat
            .new_session(user, None)
            .map_err(|e| e.to_string())?;
        self.store
            .set_channel_session(&self.name, scope, &s.id)
            .map_err(|e| e.to_string())?;
        Ok(s)
    }
}

/// The [`Host`] a channel module reports to: stores, then routes.
pub struct Handle(pub Arc<Runtime>);

#[async_trait::async_trait]
impl Host for Handle {
    async fn accept(&self, msg: Inbound) -> Result<bool, String> {
        let rt = &self.0;
        let body = serde_json::to_value(&msg).map_err(|e| e.to_string())?;
        let id = rt
            .store
            .insert_inbound(&rt.name, &msg.message_id, &msg.sender, &msg.chat, &body)
            .map_err(|e| e.to_string())?;
        let Some(id) = id else {
            return Ok(false);
        };
        let rec = rt.store.inbound(id).map_err(|e| e.to_string())?;
        rt.dispatch(rec);
        Ok(true)
    }

    fn cursor(&self) -> Option<String> {
        self.0.store.channel(&self.0.name).ok()?.cursor
    }

    fn set_cursor(&self, cursor: &str) -> Result<(), String> {
        self.0
            .store
            .set_channel_cursor(&self.0.name, cursor)
            .map_err(|e| e.to_string())
    }

    fn status(&self, connected: bool, error: Option<String>) {
        let mut s = self.0.status.lock().unwrap();
        s.connected = connected;
        if error.is_some() {
            s.last_error = error;
        }
    }
}
