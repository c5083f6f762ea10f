//! Users, their tokens (admin only), and `GET /v1/me`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::sessions::Usage;

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
}

/// `POST /v1/users/NAME/tokens` (body optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A user. `usage` is there in `GET /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub created_at: String,
    /// Live tokens.
    #[serde(default)]
    pub tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `GET /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// `POST /v1/users`: the user and their first token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewUser {
    pub user: User,
    pub token: String,
    pub token_id: String,
}

/// `POST /v1/users/NAME/tokens`: the token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    pub user: String,
    pub token: String,
    pub token_id: String,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub user: String,
    #[schema(required)]
    pub label: Option<String>,
    pub created_at: String,
}

/// `GET /v1/users/NAME/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

/// `DELETE /v1/users/NAME/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// `GET /v1/me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: String,
    pub admin: bool,
    pub usage: Usage,
    /// The agent's sandbox, once the first chat made it.
    #[schema(required)]
    pub sandbox: Option<String>,
    /// The quotas that apply to the caller (fields as in the daemon's
    /// `[quotas]`).
    #[schema(value_type = Object)]
    pub quota: serde_json::Value,
}
