//! The OpenAI-compatible endpoints (`/v1/models`, `/v1/chat/completions`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/chat/completions` (model = agent name).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    pub model: String,
    #[schema(min_items = 1)]
    pub messages: Vec<ChatCompletionMessage>,
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionMessage {
    #[schema(value_type = ChatRole)]
    pub role: String,
    /// A string, or an array of `{"type":"text","text":...}` parts.
    #[serde(default)]
    #[schema(required)]
    #[schema(value_type = String, min_length = 1)]
    pub content: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}
