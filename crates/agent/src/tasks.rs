//! Scheduled tasks as tools: `schedule_task`, `list_tasks`, `cancel_task`.
//!
//! The agent crate does not know how tasks are stored or run: the daemon
//! implements [`TaskScheduler`] for the caller's user and passes it in
//! [`crate::TurnContext::tasks`]; without one these tools are not offered.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::provider::ToolSpec;
use crate::tools::ToolOutput;

/// What `schedule_task` asks for: exactly one of `at`, `every`, `cron`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// None: the scheduler picks one from the prompt.
    #[serde(default)]
    pub name: Option<String>,
    pub prompt: String,
    /// RFC 3339 time (or a local time with `tz`).
    #[serde(default)]
    pub at: Option<String>,
    /// A duration such as `30s`, `5m`, `1h`.
    #[serde(default)]
    pub every: Option<String>,
    /// A cron expression (5 fields, or 6 with seconds first).
    #[serde(default)]
    pub cron: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`; default UTC.
    #[serde(default)]
    pub tz: Option<String>,
}

/// The user's tasks, as the daemon keeps them. Errors are messages for the
/// model (a bad cron expression, a limit reached).
#[async_trait::async_trait]
pub trait TaskScheduler: Send + Sync {
    /// Create a task; a one-line description of it (name, next run).
    async fn schedule(&self, req: TaskRequest) -> Result<String, String>;
    /// The user's tasks, one per line.
    async fn list(&self) -> Result<String, String>;
    /// Remove the task `name`.
    async fn cancel(&self, name: &str) -> Result<String, String>;
}

pub const TOOL_NAMES: [&str; 3] = ["schedule_task", "list_tasks", "cancel_task"];

/// Kept terse: sent with every request (see `prompt::first_turn_prompt_tokens`).
pub fn specs() -> Vec<ToolSpec> {
    let s = json!({"type": "string"});
    vec![
        ToolSpec {
            name: "schedule_task".into(),
            description: "Run prompt later as a new agent turn: one of at (RFC 3339), every (e.g. 1h) or cron; tz e.g. Europe/Berlin.".into(),
            input_schema: json!({"type": "object", "properties": {
                "prompt": s, "at": s, "every": s, "cron": s, "tz": s, "name": s},
                "required": ["prompt"]}),
        },
        ToolSpec {
            name: "list_tasks".into(),
            description: "List scheduled tasks.".into(),
            input_schema: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: "cancel_task".into(),
            description: "Cancel a scheduled task.".into(),
            input_schema: json!({"type": "object", "properties": {"name": s}, "required": ["name"]}),
        },
    ]
}

fn out(r: Result<String, String>) -> ToolOutput {
    match r {
        Ok(content) => ToolOutput {
            content,
            is_error: false,
        },
        Err(content) => ToolOutput {
            content,
            is_error: true,
        },
    }
}

/// Run task tool `name` (one of [`TOOL_NAMES`]).
pub async fn execute(s: &dyn TaskScheduler, name: &str, input: &Value) -> ToolOutput {
    if let Some(raw) = input.get(crate::tools::INVALID_ARGS) {
        return out(Err(format!(
            "invalid arguments: not a JSON object: {}",
            raw.as_str().unwrap_or_default()
        )));
    }
    match name {
        "schedule_task" => match serde_json::from_value::<TaskRequest>(input.clone()) {
            Ok(req) => out(s.schedule(req).await),
            Err(e) => out(Err(format!("invalid arguments: {e}"))),
        },
        "list_tasks" => out(s.list().await),
        "cancel_task" => match input.get("name").and_then(Value::as_str) {
            Some(n) => out(s.cancel(n).await),
            None => out(Err("invalid arguments: missing name".into())),
        },
        other => out(Err(format!("unknown tool {other:?}"))),
    }
}
