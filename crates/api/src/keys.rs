//! Users' SSH public keys: `/v1/keys`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    /// One line of a .pub file: ALGORITHM BASE64 [COMMENT].
    #[schema(min_length = 1)]
    pub key: String,
    /// A note to remember the key by (default: the key's comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub user: String,
    /// SHA256:...
    pub fingerprint: String,
    pub algorithm: String,
    #[schema(required)]
    pub label: Option<String>,
    pub created_at: String,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<SshKey>,
}
