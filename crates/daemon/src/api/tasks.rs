//! Scheduled tasks: `/v1/tasks`, scoped to the caller (the admin may name
//! another user with `?owner=USER`; anyone else naming another user gets
//! what a missing task gets).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ironclaw_agent::TaskRequest;

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

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner(&caller, &uri, None)?;
    Ok(axum::Json(st.tasks.list(&owner)?))
}

pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Json(req): Json<TaskRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner(&caller, &uri, None)?;
    if req.name.is_none() {
        return Err(ApiError::BadRequest("missing name".into()));
    }
    // The admin creating for someone: the user must exist.
    st.manager.store.user(&owner)?;
    Ok((StatusCode::CREATED, axum::Json(st.tasks.add(&owner, &req)?)))
}

pub async fn show(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    Ok(axum::Json(st.tasks.show(&owner, &name)?))
}

pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    st.tasks.remove(&owner, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn runs(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    Ok(axum::Json(st.tasks.runs(&owner, &name)?))
}

pub async fn run(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    // Parsed here, not by the extractor: a JSON error, and an id that
    // cannot be a run (not a number, out of range) is simply not found.
    Path((name, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner(&caller, &uri, Some(&name))?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("run {id} not found")))?;
    Ok(axum::Json(st.tasks.run(&owner, &name, id)?))
}
