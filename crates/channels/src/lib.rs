//! Chat channels behind one trait.
//!
//! A [`Channel`] turns a chat service into a stream of normalized
//! [`Inbound`] messages (handed to a [`Host`], which stores each one before
//! the channel acknowledges it to the service) and sends [`Outbound`]
//! replies, classifying every failure as permanent, retry-after, transient
//! (certainly not delivered) or ambiguous (may have been delivered). The
//! daemon owns the queue, the retries and the routing; this crate only
//! speaks each service's wire format. Every service's `api_base` is
//! configurable, so tests and self-hosted servers work.

pub mod discord;
pub mod fake;
pub mod format;
pub mod http;
pub mod matrix;
pub mod slack;
pub mod split;
pub mod telegram;
pub mod webhook;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use format::Format;
pub use split::split;

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Webhook,
    Telegram,
    Slack,
    Discord,
    Matrix,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "webhook" => Some(Kind::Webhook),
            "telegram" => Some(Kind::Telegram),
            "slack" => Some(Kind::Slack),
            "discord" => Some(Kind::Discord),
            "matrix" => Some(Kind::Matrix),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Telegram => "telegram",
            Kind::Slack => "slack",
            Kind::Discord => "discord",
            Kind::Matrix => "matrix",
        }
    }

    /// Longest message the service takes, in characters.
    pub fn limit(self) -> usize {
        match self {
            Kind::Telegram => 4096,
            Kind::Slack => 40_000,
            Kind::Discord => 2000,
            // Events are capped at 65,536 bytes; stay well under.
            Kind::Matrix => 16_000,
            Kind::Webhook => 40_000,
        }
    }

    /// The Markdown dialect replies are converted to.
    pub fn format(self) -> Format {
        match self {
            Kind::Telegram => Format::TelegramHtml,
            Kind::Slack => Format::SlackMrkdwn,
            Kind::Discord => Format::Markdown,
            Kind::Matrix => Format::TelegramHtml,
            Kind::Webhook => Format::Markdown,
        }
    }

    /// The service's own default API base.
    pub fn default_api_base(self) -> &'static str {
        match self {
            Kind::Telegram => "https://api.telegram.org",
            Kind::Slack => "https://slack.com/api",
            Kind::Discord => "https://discord.com/api/v10",
            Kind::Matrix => "https://matrix.org",
            Kind::Webhook => "",
        }
    }
}

/// What a channel is built from (the daemon stores it).
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: String,
    /// The service's API base; None for its default.
    pub api_base: Option<String>,
    /// The bot token (Telegram), read from the host's env by the daemon.
    pub token: String,
    /// Signing secret of inbound requests (webhook).
    pub secret: Option<String>,
    /// Where replies are POSTed (webhook).
    pub callback_url: Option<String>,
    /// The public URL of this channel's inbound endpoint, for services
    /// that push to it (Telegram webhook mode; `secret` is its token).
    pub webhook_url: Option<String>,
}

/// One message from the service, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// The service's id of the message, unique within the channel
    /// (redeliveries carry the same one).
    pub message_id: String,
    /// The sender's id on the service.
    pub sender: String,
    /// A display name, when the service gives one.
    pub sender_name: Option<String>,
    /// The chat (conversation, room, group) the message was sent in.
    pub chat: String,
    /// A group chat (more than the bot and one person).
    pub is_group: bool,
    /// The thread (topic) within the chat, when any.
    pub thread: Option<String>,
    /// The bot was mentioned (always true in a direct chat).
    pub mentioned: bool,
    pub text: String,
}

/// A reply part to send (already at most the channel's limit).
#[derive(Debug, Clone)]
pub struct Outbound {
    pub chat: String,
    pub thread: Option<String>,
    pub text: String,
    /// Stable across retries of this part: channels with idempotent sends
    /// pass it to the service (a retried send is delivered once).
    pub key: String,
    /// Send as plain text (after the service rejected the formatting).
    pub plain: bool,
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Retrying cannot help (bad chat, bot blocked, bad token).
    #[error("permanent: {0}")]
    Permanent(String),
    /// The service asked to wait this long first.
    #[error("rate limited for {0:?}: {1}")]
    RetryAfter(Duration, String),
    /// Certainly not delivered (connection refused, 5xx before acceptance):
    /// safe to retry.
    #[error("transient: {0}")]
    Transient(String),
    /// May or may not have been delivered (timeout after sending).
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// The service rejected the formatting; retry as plain text.
    #[error("formatting rejected: {0}")]
    Format(String),
}

/// What the channel tells the daemon.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Store `msg` durably; only then may the channel acknowledge it.
    /// Returns false when it was stored before (a redelivery).
    async fn accept(&self, msg: Inbound) -> Result<bool, String>;
    /// The persisted cursor (Telegram offset), if any.
    fn cursor(&self) -> Option<String>;
    fn set_cursor(&self, cursor: &str) -> Result<(), String>;
    /// Connection state for `channel status`: connected, and the last error.
    fn status(&self, connected: bool, error: Option<String>);
}

/// An inbound HTTP request for a channel (webhook channels).
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    /// Lowercase header names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookReply {
    pub status: u16,
    /// JSON.
    pub body: String,
}

impl WebhookReply {
    pub fn json(status: u16, v: serde_json::Value) -> Self {
        WebhookReply {
            status,
            body: v.to_string(),
        }
    }
}

#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> Kind;

    /// Sends carry [`Outbound::key`] to the service, which drops a repeat:
    /// an ambiguous failure is retried. Without it, an ambiguous failure
    /// is not retried (no duplicate; reported as unknown).
    fn idempotent(&self) -> bool;

    /// Receive until `cancel`: poll or hold a connection, handing each
    /// message to `host` before acknowledging it. Channels that receive
    /// over HTTP (webhooks) return at once... or wait for `cancel`.
    async fn run(&self, host: Arc<dyn Host>, cancel: CancellationToken);

    /// An inbound HTTP request to this channel's endpoint.
    async fn webhook(&self, _host: Arc<dyn Host>, _req: WebhookRequest) -> WebhookReply {
        WebhookReply::json(
            404,
            serde_json::json!({"error": "this channel takes no webhooks"}),
        )
    }

    /// Send one part; returns the service's id of the sent message.
    async fn send(&self, msg: &Outbound) -> Result<String, SendError>;

    /// Show "typing..." in `chat` (a few seconds; call again to extend).
    async fn typing(&self, _chat: &str, _thread: Option<&str>) -> Result<(), SendError> {
        Ok(())
    }
}

/// Errors building a channel.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Invalid(String),
}

/// Build the channel `kind` from `spec`.
pub fn build(kind: Kind, spec: Spec) -> Result<Arc<dyn Channel>, BuildError> {
    Ok(match kind {
        Kind::Telegram => Arc::new(telegram::Telegram::new(spec)?),
        Kind::Webhook => Arc::new(webhook::Webhook::new(spec)?),
        Kind::Slack => Arc::new(slack::Slack::new(spec)?),
        Kind::Discord => Arc::new(discord::Discord::new(spec)?),
        Kind::Matrix => Arc::new(matrix::Matrix::new(spec)?),
    })
}

/// The API base of `spec`, without a trailing slash.
pub(crate) fn api_base(spec: &Spec, kind: Kind) -> String {
    spec.api_base
        .clone()
        .unwrap_or_else(|| kind.default_api_base().to_string())
        .trim_end_matches('/')
        .to_string()
}
