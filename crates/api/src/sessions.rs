//! Chat sessions and their usage (the chat itself is a WebSocket).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Tokens and cost, of a session or a user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub turns: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of input_tokens, read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Of input_tokens, written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// `POST /v1/sessions` (body optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub agent: String,
    #[schema(required)]
    pub title: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Messages in its history.
    pub messages: u64,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// One stored message of a session's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: i64,
    pub session_id: String,
    /// user, assistant or tool.
    pub role: String,
    /// The provider-neutral content blocks (text, tool calls, results).
    pub content: serde_json::Value,
    /// The summary message that replaced it in the model's context.
    #[serde(default)]
    pub summarized_by: Option<i64>,
    pub created_at: String,
}

/// `GET /v1/sessions/ID`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionHistory {
    pub session: Session,
    pub messages: Vec<Message>,
    pub usage: Usage,
}

/// The query of `GET /v1/chat/ws`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatWsQuery {
    /// Session id (default: the latest, or a new one).
    pub session: Option<String>,
}

/// What the client sends on `GET /v1/chat/ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatCommand {
    /// A message for the agent (`/stop` and `/new` as text work too).
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// Stop the running turn.
    Stop,
    /// Start a fresh session.
    New,
}

/// What the daemon sends on `GET /v1/chat/ws`: the session first (and
/// after `new`), then each turn's events, ending with `done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    Session {
        id: String,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        agent: String,
    },
    TextDelta {
        text: String,
    },
    ToolStart {
        #[serde(default)]
        id: String,
        name: String,
        /// The tool's arguments as the model gave them.
        #[serde(default)]
        input: serde_json::Value,
    },
    ToolEnd {
        #[serde(default)]
        id: String,
        output: String,
        #[serde(default)]
        is_error: bool,
    },
    /// After each model call.
    Usage {
        #[serde(default)]
        usage: serde_json::Value,
        #[serde(default)]
        cost_usd: f64,
    },
    /// Older messages were summarised.
    Compacted {
        #[serde(default)]
        summary: String,
        #[serde(default)]
        replaced: u64,
    },
    Error {
        message: String,
    },
    /// The turn ended: `stopped` is cancelled or step_limit when it was cut.
    Done {
        #[serde(default)]
        stopped: Option<String>,
        #[serde(default)]
        usage: Option<serde_json::Value>,
        #[serde(default)]
        cost_usd: f64,
        #[serde(default)]
        error: Option<String>,
    },
    /// An event of a newer daemon's.
    #[serde(other)]
    Other,
}
