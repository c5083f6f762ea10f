//! Chat channels (admin) and pairing approval.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelAccess {
    /// Unknown senders get a code for the admin to approve.
    #[default]
    Pairing,
    Allowlist,
    Open,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelScope {
    /// One session per sender (across chats).
    Sender,
    /// One per chat or group.
    #[default]
    Chat,
    /// One per thread (topic) within a chat.
    Thread,
}

/// The chat services a channel can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Telegram,
    Slack,
    Discord,
    Matrix,
    Webhook,
}

/// `POST /v1/channels`: credentials are named env vars of the daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddChannel {
    #[schema(value_type = ChannelKind)]
    pub kind: String,
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// The env var holding the bot token (Telegram, Slack, Discord, Matrix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The env var holding the signing secret (webhook, Slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The service's API base (default: the real service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Where the webhook channel POSTs replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The daemon's public base URL (Telegram webhook mode, with
    /// `secret_env` as the secret token): Telegram pushes updates to
    /// `{public_url}/v1/channels/{name}/events` instead of being polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<ChannelAccess>,
    /// Sender ids let in by allowlist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Group chats the bot answers in (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// In groups, a message must mention the bot or contain this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ChannelScope>,
    /// The user that allowlisted and open messages run as (default: the
    /// channel's owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A channel with its status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Channel {
    pub name: String,
    pub kind: String,
    pub owner: String,
    /// Its settings as added (env var names, never their values).
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub running: bool,
    pub connected: bool,
    #[schema(required)]
    pub last_error: Option<String>,
    pub queue_depth: u64,
    pub created_at: String,
}

/// `GET /v1/channels`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<Channel>,
}

/// `GET /v1/channels/NAME/messages`: newest first, each with its reply
/// parts and their delivery log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelMessages {
    pub messages: Vec<ChannelMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelMessage {
    pub message: Inbound,
    #[serde(default)]
    pub replies: Vec<Reply>,
}

/// A message a channel received.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Inbound {
    pub id: i64,
    pub channel: String,
    /// The service's id of the message.
    #[serde(default)]
    pub message_id: String,
    pub sender: String,
    #[serde(default)]
    pub chat: String,
    /// What the service sent, normalized (`text`, attachments...).
    pub body: serde_json::Value,
    /// queued, running, done, failed, ignored...
    pub state: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    pub received_at: String,
}

/// One part of a reply and its delivery attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reply {
    pub part: Outbound,
    #[serde(default)]
    pub log: Vec<DeliveryAttempt>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Outbound {
    pub id: i64,
    pub channel: String,
    #[serde(default)]
    pub inbound_id: Option<i64>,
    #[serde(default)]
    pub chat: String,
    #[serde(default)]
    pub thread: Option<String>,
    #[serde(default)]
    pub part: i64,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub plain: bool,
    /// queued, sent, failed...
    pub state: String,
    #[serde(default)]
    pub attempts: i64,
    #[serde(default)]
    pub next_at: i64,
    #[serde(default)]
    pub remote_id: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    pub outbound_id: i64,
    pub attempt: i64,
    pub outcome: String,
    #[serde(default)]
    pub detail: Option<String>,
    pub at: String,
}

/// `?limit=` of the channel messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// `POST /v1/pairings/approve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    pub code: String,
    pub user: String,
}

/// A sender's pairing with a user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pairing {
    pub channel: String,
    pub sender: String,
    pub code: String,
    #[schema(required)]
    pub user: Option<String>,
    #[serde(default)]
    pub created_at: String,
}
