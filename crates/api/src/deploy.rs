//! Git-push deploy of a sandbox.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes/NAME/deploy` (body optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployInit {
    /// The port the app's URL serves (kept once set; default 8000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 19999)]
    pub port: Option<i64>,
}

/// What `deploy init` answers: the git remote to push to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployTarget {
    pub name: String,
    /// git remote URL.
    pub remote: String,
    pub port: u16,
    /// How git authenticates.
    pub auth: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub number: u32,
    pub commit: String,
    /// building, live, failed, rolled-back or superseded.
    pub status: String,
    pub created_at: String,
    /// The Procfile's `web:` command.
    #[serde(default)]
    pub web: String,
    #[serde(default)]
    pub log_tail: String,
}

/// `GET .../deploy/releases`: oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseList {
    pub port: u16,
    pub releases: Vec<Release>,
}

/// `POST .../deploy/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rollback {
    #[schema(required)]
    pub release: Option<u32>,
    pub url: String,
    pub output: Vec<String>,
}

/// The query of `GET .../deploy/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployLogsQuery {
    /// Keep streaming new lines.
    #[serde(default)]
    pub follow: bool,
    /// Lines of history (default 100).
    #[param(maximum = 100000)]
    pub lines: Option<u32>,
}
