//! Scheduled tasks: a prompt run as an isolated agent turn in its owner's
//! sandbox at a time (`at`), at an interval (`every`) or on a cron
//! schedule (with a time zone).
//!
//! ```toml
//! [tasks]
//! missed = "run"          # a slot missed while the daemon was down: "run" (once) or "skip"
//! max_per_user = 100
//! max_total = 5000
//! max_prompt_bytes = 16384
//! max_concurrent_runs = 8
//! ```
//!
//! [`Tasks`] checks and stores tasks (API, CLI and the agent's tools all
//! come through it); [`runner`] claims due slots and runs them;
//! [`schedule`] computes slots.

pub mod runner;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ironclaw_agent::{TaskRequest, TaskScheduler};
use ironclaw_store::{CreateTaskError, NewTask, Store, TaskDelivery, TaskRecord, TaskRunRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Run once at start, however many slots were missed.
    #[default]
    Run,
    /// Go on with the next slot.
    Skip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    pub missed: Missed,
    pub max_per_user: u64,
    pub max_total: u64,
    pub max_prompt_bytes: usize,
    pub max_concurrent_runs: usize,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            missed: Missed::Run,
            max_per_user: 100,
            max_total: 5000,
            max_prompt_bytes: 16 * 1024,
            max_concurrent_runs: 8,
        }
    }
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub name: String,
    pub owner: String,
    pub prompt: String,
    pub at: Option<String>,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub tz: Option<String>,
    /// RFC 3339 UTC; None when no run is left.
    pub next_run: Option<String>,
    pub created_at: String,
    /// The newest run, if any.
    pub last_run: Option<TaskRunRecord>,
    /// The chat its results are also posted to (a task scheduled from a
    /// chat channel).
    pub deliver_to: Option<TaskDelivery>,
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn rfc3339(t: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub struct Tasks {
    pub store: Arc<Store>,
    pub config: TasksConfig,
    /// Wakes the runner when tasks change (its next slot may be earlier).
    pub(crate) wake: Notify,
    /// Runs in progress: run id -> (task id, its stop). Removing a task
    /// stops its runs.
    pub(crate) running: Mutex<HashMap<i64, (String, CancellationToken)>>,
}

impl Tasks {
    pub fn new(store: Arc<Store>, config: TasksConfig) -> Arc<Tasks> {
        Arc::new(Tasks {
            store,
            config,
            wake: Notify::new(),
            running: Mutex::default(),
        })
    }

    fn view(&self, t: TaskRecord) -> Result<TaskView, ApiError> {
        let last_run = self.store.task_runs(&t.id, 1)?.into_iter().next();
        let every = (t.kind == "every").then(|| {
            t.spec
                .parse::<u64>()
                .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
                .unwrap_or_else(|_| t.spec.clone())
        });
        Ok(TaskView {
            at: (t.kind == "at").then(|| t.spec.clone()),
            cron: (t.kind == "cron").then(|| t.spec.clone()),
            every,
            name: t.name,
            owner: t.owner,
            prompt: t.prompt,
            tz: t.tz,
            next_run: t.next_slot.map(rfc3339),
            created_at: t.created_at,
            last_run,
            deliver_to: t.deliver_to,
        })
    }

    /// Check and store a task of `owner`. Bad input is a 400 and stores
    /// nothing; a limit reached is a 403 naming it.
    pub fn add(&self, owner: &str, req: &TaskRequest) -> Result<TaskView, ApiError> {
        self.add_delivering(owner, req, None)
    }

    /// [`Tasks::add`], the results also posted to `deliver_to`.
    pub fn add_delivering(
        &self,
        owner: &str,
        req: &TaskRequest,
        deliver_to: Option<&TaskDelivery>,
    ) -> Result<TaskView, ApiError> {
        let name = match &req.name {
            Some(n) => n.clone(),
            None => format!(
                "task-{}",
                (0..4)
                    .map(|_| format!("{:02x}", rand::random::<u8>()))
                    .collect::<String>()
            ),
        };
        crate::names::check_label("task", &name)?;
        if req.prompt.trim().is_empty() {
            return Err(ApiError::BadRequest("the prompt is empty".into()));
        }
        let max = self.config.max_prompt_bytes;
        if req.prompt.len() > max {
            return Err(ApiError::BadRequest(format!(
                "the prompt is {} bytes; the limit is {max}",
                req.prompt.len()
            )));
        }
        let (_, (kind, spec, tz), first) = schedule::parse(
            req.at.as_deref(),
            req.every.as_deref(),
            req.cron.as_deref(),
            req.tz.as_deref(),
            unix_now(),
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let id: String = (0..8)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let new = NewTask {
            id: &format!("tsk_{id}"),
            owner,
            name: &name,
            prompt: &req.prompt,
            kind,
            spec: &spec,
            tz: tz.as_deref(),
            next_slot: Some(first),
            deliver_to,
        };
        let (per_user, total) = (self.config.max_per_user, self.config.max_total);
        let t = self
            .store
            .create_task(&new, per_user, total)
            .map_err(|e| match e {
                CreateTaskError::OwnerLimit(n) => ApiError::Forbidden(format!(
                    "quota exceeded: tasks {n} of {per_user} for user {owner} ([tasks] max_per_user)"
                )),
                CreateTaskError::TotalLimit(n) => ApiError::Forbidden(format!(
                    "quota exceeded: tasks {n} of {total} on this daemon ([tasks] max_total)"
                )),
                CreateTaskError::Store(ironclaw_store::StoreError::Conflict(_)) => {
                    ApiError::BadRequest(format!("you already have a task named '{name}'"))
                }
                CreateTaskError::Store(e) => e.into(),
            })?;
        self.wake.notify_one();
        self.view(t)
    }

    pub fn list(&self, owner: &str) -> Result<Vec<TaskView>, ApiError> {
        self.store
            .tasks(owner)?
            .into_iter()
            .map(|t| self.view(t))
            .collect()
    }

    pub fn show(&self, owner: &str, name: &str) -> Result<TaskView, ApiError> {
        self.view(self.store.task(owner, name)?)
    }

    /// Remove the task and its runs; a run in progress is stopped.
    pub fn remove(&self, owner: &str, name: &str) -> Result<(), ApiError> {
        let id = self.store.task(owner, name)?.id;
        self.store.delete_task(owner, name)?;
        for (task, stop) in self.running.lock().unwrap().values() {
            if *task == id {
                stop.cancel();
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// One run with its conversation (the prompt, tool calls and results,
    /// the answer).
    pub fn run(
        &self,
        owner: &str,
        name: &str,
        id: i64,
    ) -> Result<(TaskRunRecord, serde_json::Value), ApiError> {
        let t = self.store.task(owner, name)?;
        Ok(self.store.task_run(&t.id, id)?)
    }

    pub fn runs(&self, owner: &str, name: &str) -> Result<Vec<TaskRunRecord>, ApiError> {
        let t = self.store.task(owner, name)?;
        Ok(self
            .store
            .task_runs(&t.id, ironclaw_store::tasks::KEEP_RUNS)?)
    }
}

/// The task tools of one user's turns.
pub struct UserTasks {
    pub tasks: Arc<Tasks>,
    pub user: String,
    /// The chat the turn came from: tasks it schedules post their results
    /// back there.
    pub origin: Option<TaskDelivery>,
}

fn describe(v: &TaskView) -> String {
    let when = match (&v.at, &v.every, &v.cron) {
        (Some(a), _, _) => format!("at {a}"),
        (_, Some(e), _) => format!("every {e}"),
        (_, _, Some(c)) => format!("cron '{c}'"),
        _ => String::new(),
    };
    let tz =
        v.tz.as_deref()
            .map(|z| format!(" ({z})"))
            .unwrap_or_default();
    let next = v.next_run.as_deref().unwrap_or("none");
    format!("{}: {when}{tz}, next run {next}", v.name)
}

#[async_trait::async_trait]
impl TaskScheduler for UserTasks {
    async fn schedule(&self, req: TaskRequest) -> Result<String, String> {
        self.tasks
            .add_delivering(&self.user, &req, self.origin.as_ref())
            .map(|v| format!("scheduled {}", describe(&v)))
            .map_err(|e| e.to_string())
    }

    async fn list(&self) -> Result<String, String> {
        let all = self.tasks.list(&self.user).map_err(|e| e.to_string())?;
        if all.is_empty() {
            return Ok("no scheduled tasks".into());
        }
        Ok(all.iter().map(describe).collect::<Vec<_>>().join("\n"))
    }

    async fn cancel(&self, name: &str) -> Result<String, String> {
        self.tasks
            .remove(&self.user, name)
            .map(|_| format!("cancelled {name}"))
            .map_err(|e| e.to_string())
    }
}
