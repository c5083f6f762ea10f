//! Running commands to completion (`POST .../exec`), and the consoles list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes/NAME/exec`: timeout_secs or timeout_ms, not both;
/// at most exec_timeout_max_secs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// argv[0] names the command (not empty).
    #[schema(min_items = 1)]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Text fed to the command's stdin (then closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Kill the command after this long (default: the daemon's
    /// `exec_timeout_secs`; at most `exec_timeout_max_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_secs: Option<u64>,
    /// The same in milliseconds (one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// Run as this user of the sandbox: a name in its /etc/passwd or a
    /// numeric uid (default root). HOME, USER and LOGNAME are the user's,
    /// and so is the working directory unless `cwd` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "user")]
    pub user: Option<String>,
}

/// What a collected exec returns (also the MCP `sandbox_exec` result).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    #[schema(required)]
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Either stream was cut at the output limit.
    pub truncated: bool,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    pub stdout: String,
    pub stderr: String,
}

/// One persistent console session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsoleSession {
    pub name: String,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub alive: bool,
    /// Clients attached now.
    #[serde(default)]
    pub attached: u32,
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
}

/// `GET /v1/sandboxes/NAME/console`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsoleList {
    pub sessions: Vec<ConsoleSession>,
}

/// The query of `GET /v1/sandboxes/NAME/console/ws`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// Session name (default main).
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub session: Option<String>,
    /// Terminal rows.
    #[param(maximum = 65535)]
    pub rows: Option<u16>,
    /// Terminal columns.
    #[param(maximum = 65535)]
    pub cols: Option<u16>,
    /// Start a new session's shell as this user of the sandbox (a name or
    /// uid; default root). Ignored when attaching to a running session.
    pub user: Option<String>,
}
