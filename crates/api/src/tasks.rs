//! Scheduled tasks: `/v1/tasks`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/tasks`: exactly one of at, every, cron.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Required by the API (the agent's own scheduler may leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        required,
        nullable = false,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 16384)]
    pub prompt: String,
    /// RFC 3339, or a local YYYY-MM-DDTHH:MM[:SS] in tz; in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A duration: 30s, 5m, 1h, 1d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// 5 fields, or 6 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

/// One run of a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskRun {
    pub id: i64,
    #[serde(default)]
    pub task_id: String,
    /// Unix seconds of the slot this run is for.
    pub slot: i64,
    /// running, ok or failed.
    pub state: String,
    /// The final text of the turn.
    #[schema(required)]
    pub result: Option<String>,
    /// Why it failed.
    #[schema(required)]
    pub error: Option<String>,
    pub started_at: String,
    #[schema(required)]
    pub finished_at: Option<String>,
}

/// `GET /v1/tasks/NAME/runs/ID`: a run with its conversation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskRunDetail {
    #[serde(flatten)]
    pub run: TaskRun,
    /// The run's messages (null while it runs).
    #[serde(default)]
    pub messages: serde_json::Value,
}

/// The chat of a channel that a task's results also go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskDelivery {
    pub channel: String,
    pub chat: String,
    #[serde(default)]
    pub thread: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub name: String,
    pub owner: String,
    pub prompt: String,
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
    /// RFC 3339 UTC; null when no run is left.
    #[schema(required)]
    pub next_run: Option<String>,
    pub created_at: String,
    /// The newest run, if any.
    #[serde(default)]
    pub last_run: Option<TaskRun>,
    #[serde(default)]
    pub deliver_to: Option<TaskDelivery>,
}

/// `?owner=` of the task routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskOwnerQuery {
    /// Admin only: the user whose tasks these are (default: the caller's
    /// own). Another user's task is a 404 for non-admins.
    pub owner: Option<String>,
}
