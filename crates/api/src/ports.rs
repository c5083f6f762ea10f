//! Exposed ports of a sandbox.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exposure {
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Reachable without a token.
    pub public: bool,
    /// http://PORT-NAME.<base_domain>:<listen port>
    pub url: String,
}

/// `GET /v1/sandboxes/NAME/ports`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExposureList {
    pub ports: Vec<Exposure>,
}

/// `POST /v1/sandboxes/NAME/ports`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    /// Wider than a port so 0 and 70000 get the daemon's message, not
    /// serde's.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: i64,
    /// Reachable without a token.
    #[serde(default)]
    pub public: bool,
}
