//! Scheduled tasks: `/v1/tasks`, scoped to the caller (the admin may name
//! another user with `?owner=USER`; anyone else naming another user gets
//! what a missing task gets).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ironclaw_agent::TaskRequest;
use ironclaw_api as api;

use super::convert;
use crate::auth::{namespace_of, owner_param, Caller};
use crate::error::{ApiError, Json};
use crate::AppState;

/// The namespace of the request; `Err` (like a missing task) when a
/// non-admin names someone else.
fn owner(caller: &Caller, uri: &axum::http::Uri, name: Option<&str>) -> Result<String, ApiError> {
    namespace_of(caller, owner_param(uri)?).ok_or_else(|| match name {
        Some(n) => ApiError::NotFound(format!("task '{n}' not found")),
        None => ApiError::NotFound("no such user".into()),
    })
}

#[utoipa::path(get, path = "/v1/tasks", operation_id = "listTasks", tag = "tasks",
    summary = "The caller's scheduled tasks",
    params(api::TaskOwnerQuery),
    responses((status = 200, description = "success", body = Vec<api::Task>),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<axum::Json<Vec<api::Task>>, ApiError> {
    let owner = owner(&caller, &uri, None)?;
    let tasks = st.tasks.list(&owner)?;
    Ok(axum::Json(tasks.into_iter().map(Into::into).collect()))
}

#[utoipa::path(post, path = "/v1/tasks", operation_id = "createTask", tag = "tasks",
    summary = "Schedule a task (400 on bad input, 403 at a limit)",
    params(api::TaskOwnerQuery), request_body = api::CreateTask,
    responses((status = 201, description = "success", body = api::Task),
        (status = "default", description = "error", body = api::Error)))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Json(req): Json<api::CreateTask>,
) -> Result<(StatusCode, axum::Json<api::Task>), ApiError> {
    let owner = owner(&caller, &uri, None)?;
    if req.name.is_none() {
        return Err(ApiError::BadRequest("missing name".into()));
    }
    let req = TaskRequest {
        name: req.name,
        prompt: req.prompt,
        at: req.at,
        every: req.every,
        cron: req.cron,
        tz: req.tz,
    };
    // The admin creating for someone: the user must exist.
    st.manager.store.user(&owner)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(st.tasks.add(&owner, &req)?.into()),
    ))
}

#[utoipa::path(get, path = "/v1/tasks/{name}", operation_id = "getTask", tag = "tasks",
    summary = "A scheduled task",
    params(("name" = String, Path), api::TaskOwnerQuery),
    responses((status = 200, description = "success", body = api::Task),
        (status = "default", description = "error", body = api::Error)))]
pub async fn show(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(name): Path<String>,
) -> Result<axum::Json<api::Task>, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    Ok(axum::Json(st.tasks.show(&owner, &name)?.into()))
}

#[utoipa::path(delete, path = "/v1/tasks/{name}", operation_id = "deleteTask", tag = "tasks",
    summary = "Cancel a task (its runs go with it)",
    params(("name" = String, Path), api::TaskOwnerQuery),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    st.tasks.remove(&owner, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/tasks/{name}/runs", operation_id = "listTaskRuns", tag = "tasks",
    summary = "A task's runs, newest first, with their result or failure",
    params(("name" = String, Path), api::TaskOwnerQuery),
    responses((status = 200, description = "success", body = Vec<api::TaskRun>),
        (status = "default", description = "error", body = api::Error)))]
pub async fn runs(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(name): Path<String>,
) -> Result<axum::Json<Vec<api::TaskRun>>, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    let runs = st.tasks.runs(&owner, &name)?;
    Ok(axum::Json(
        runs.into_iter().map(convert::task_run).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/tasks/{name}/runs/{id}", operation_id = "getTaskRun", tag = "tasks",
    summary = "One run with its conversation (messages; null while it runs)",
    params(("name" = String, Path), ("id" = i64, Path), api::TaskOwnerQuery),
    responses((status = 200, description = "success", body = api::TaskRunDetail),
        (status = "default", description = "error", body = api::Error)))]
pub async fn run(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    // Parsed here, not by the extractor: a JSON error, and an id that
    // cannot be a run (not a number, out of range) is simply not found.
    Path((name, id)): Path<(String, String)>,
) -> Result<axum::Json<api::TaskRunDetail>, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("run {id} not found")))?;
    let (run, messages) = st.tasks.run(&owner, &name, id)?;
    Ok(axum::Json(api::TaskRunDetail {
        run: convert::task_run(run),
        messages,
    }))
}
