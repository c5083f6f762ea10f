//! A channel's settings as stored (JSON in `channels.config`) and as the
//! API takes them. Credentials are named, never held: `token_env` and
//! `secret_env` are environment variables of the daemon's host.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Who may talk to the agent through the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// An unknown sender gets a code; `ironclaw pair approve CODE --user NAME`
    /// links them to a user.
    #[default]
    Pairing,
    /// Only the sender ids in `allow`, as `user`.
    Allowlist,
    /// Anyone, as `user`.
    Open,
}

/// Which messages share a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One session per sender (across chats).
    Sender,
    /// One per chat or group.
    #[default]
    Chat,
    /// One per thread (topic) within a chat.
    Thread,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The env var holding the bot token (Telegram, Slack, Discord, Matrix).
    #[serde(default)]
    pub token_env: Option<String>,
    /// The env var holding the signing secret (webhook, Slack).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The service's API base (default: the real service).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Where the webhook channel POSTs replies.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The daemon's public base URL (Telegram webhook mode, with
    /// `secret_env` as the secret token): Telegram pushes updates to
    /// `{public_url}/v1/channels/{name}/events` instead of being polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(default)]
    pub access: Access,
    /// Sender ids let in by `allowlist`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Group chats the bot answers in (none by default).
    #[serde(default)]
    pub groups: Vec<String>,
    /// In groups, a message must mention the bot or contain this
    /// (case-insensitive), e.g. `@Andy`.
    #[serde(default)]
    pub trigger: Option<String>,
    #[serde(default)]
    pub scope: Scope,
    /// The user that allowlisted and open messages run as (default: the
    /// channel's owner). Each group runs as its own group agent instead.
    #[serde(default)]
    pub user: Option<String>,
}

fn env_name_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Settings {
    /// Check what a channel of `kind` needs; bad input changes nothing.
    pub fn validate(&self, kind: ironclaw_channels::Kind) -> Result<(), ApiError> {
        use ironclaw_channels::Kind;
        for (what, v) in [
            ("token_env", &self.token_env),
            ("secret_env", &self.secret_env),
        ] {
            if let Some(v) = v {
                if !env_name_ok(v) {
                    return Err(ApiError::BadRequest(format!(
                        "{what} must name an environment variable (letters, digits, '_'), got {v:?}"
                    )));
                }
            }
        }
        for (what, v) in [
            ("api_base", &self.api_base),
            ("callback_url", &self.callback_url),
            ("public_url", &self.public_url),
        ] {
            if let Some(v) = v {
                if !(v.starts_with("http://") || v.starts_with("https://")) || v.len() > 2048 {
                    return Err(ApiError::BadRequest(format!(
                        "{what} must be an http(s) URL, got {v:?}"
                    )));
                }
            }
        }
        match kind {
            Kind::Telegram if self.public_url.is_some() != self.secret_env.is_some() => {
                Err(ApiError::BadRequest(
                    "telegram webhook mode needs both --public-url URL (the daemon's public base URL) and --secret-env VAR (its secret token); with neither, the channel polls getUpdates"
                        .into(),
                ))
            }
            Kind::Slack | Kind::Discord | Kind::Matrix | Kind::Webhook
                if self.public_url.is_some() =>
            {
                Err(ApiError::BadRequest(
                    "--public-url is for telegram webhook mode only".into(),
                ))
            }
            Kind::Telegram | Kind::Discord | Kind::Matrix if self.token_env.is_none() => {
                Err(ApiError::BadRequest(format!(
                    "a {} channel needs --token-env VAR (the env var of its token)",
                    kind.as_str()
                )))
            }
            Kind::Slack if self.token_env.is_none() || self.secret_env.is_none() => {
                Err(ApiError::BadRequest(
                    "a slack channel needs --token-env VAR (bot token) and --secret-env VAR (signing secret)"
                        .into(),
                ))
            }
            Kind::Webhook if self.secret_env.is_none() || self.callback_url.is_none() => {
                Err(ApiError::BadRequest(
                    "a webhook channel needs --secret-env VAR (its HMAC key) and --callback-url URL"
                        .into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The credential in `var` from the daemon's environment.
    pub fn env(var: &Option<String>) -> Result<Option<String>, String> {
        match var {
            None => Ok(None),
            Some(v) => match std::env::var(v) {
                Ok(s) if !s.is_empty() => Ok(Some(s)),
                _ => Err(format!("environment variable {v} is not set for ironclawd")),
            },
        }
    }

    /// What the channel crate builds from.
    pub fn spec(&self, name: &str) -> Result<ironclaw_channels::Spec, String> {
        Ok(ironclaw_channels::Spec {
            name: name.to_string(),
            api_base: self.api_base.clone(),
            token: Self::env(&self.token_env)?.unwrap_or_default(),
            secret: Self::env(&self.secret_env)?,
            callback_url: self.callback_url.clone(),
            webhook_url: self
                .public_url
                .as_ref()
                .map(|u| format!("{}/v1/channels/{name}/events", u.trim_end_matches('/'))),
        })
    }

    /// Does a group message trigger the bot?
    pub fn triggered(&self, text: &str, mentioned: bool) -> bool {
        mentioned
            || self
                .trigger
                .as_deref()
                .is_some_and(|t| text.to_lowercase().contains(&t.to_lowercase()))
    }
}
