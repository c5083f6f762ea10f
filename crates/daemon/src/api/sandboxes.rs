//! Sandbox lifecycle routes. Names live in their owner's namespace; the
//! routes under `/v1/sandboxes/NAME` get the resolved sandbox as a
//! [`Target`] (see [`crate::auth::sandbox_access`]).

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use ironclaw_api as api;

use super::convert;
use crate::auth::{namespace_of, owner_param, Caller, Target};
use crate::error::{ApiError, Json};
use crate::manager::CreateRequest;
use crate::AppState;

/// Create in the caller's namespace; the admin may create in another
/// user's with `?owner=USER`.
#[utoipa::path(post, path = "/v1/sandboxes", operation_id = "createSandbox", tag = "sandboxes",
    summary = "Create and start a sandbox",
    params(api::OwnerQuery), request_body = api::CreateSandbox,
    responses((status = 201, description = "success", body = api::Sandbox),
        (status = "default", description = "error", body = api::Error)))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
    Json(req): Json<api::CreateSandbox>,
) -> Result<(StatusCode, axum::Json<api::Sandbox>), ApiError> {
    let owner = namespace_of(&caller, owner_param(&uri)?).ok_or_else(|| {
        ApiError::Forbidden("only the admin creates sandboxes for another user".into())
    })?;
    if owner != caller.user {
        st.manager.store.user(&owner)?;
    }
    // The daemon's own request parses CIDRs and the like.
    let req: CreateRequest = convert::reparse(&req)?;
    let r = st.manager.create(req, &owner).await?;
    Ok((StatusCode::CREATED, axum::Json(st.manager.view(&r).into())))
}

/// The caller's sandboxes; for the admin everyone's (each with its
/// `owner`), or one user's with `?owner=USER`.
#[utoipa::path(get, path = "/v1/sandboxes", operation_id = "listSandboxes", tag = "sandboxes",
    summary = "List the caller's sandboxes (the admin: everyone's, or one user's with ?owner=)",
    params(api::OwnerQuery),
    responses((status = 200, description = "success", body = api::SandboxList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<axum::Json<api::SandboxList>, ApiError> {
    let records = match (caller.admin, owner_param(&uri)?) {
        (true, None) => st.manager.store.sandboxes()?,
        (_, owner) => match namespace_of(&caller, owner) {
            Some(o) => st.manager.store.sandboxes_of(&o)?,
            None => Vec::new(),
        },
    };
    let sandboxes = records.iter().map(|r| st.manager.view(r).into()).collect();
    Ok(axum::Json(api::SandboxList { sandboxes }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}", operation_id = "getSandbox", tag = "sandboxes",
    summary = "Show a sandbox",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::Sandbox),
        (status = "default", description = "error", body = api::Error)))]
pub async fn show(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::Sandbox>, ApiError> {
    let r = st.manager.by_id(&t.id)?;
    Ok(axum::Json(st.manager.view(&r).into()))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{name}", operation_id = "deleteSandbox", tag = "sandboxes",
    summary = "Stop and remove a sandbox and its disk",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(State(st): State<AppState>, t: Target) -> Result<StatusCode, ApiError> {
    st.manager.remove(&t.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/start", operation_id = "startSandbox", tag = "sandboxes",
    summary = "Start a stopped sandbox",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::Sandbox),
        (status = "default", description = "error", body = api::Error)))]
pub async fn start(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::Sandbox>, ApiError> {
    let r = st.manager.start(&t.id).await?;
    Ok(axum::Json(st.manager.view(&r).into()))
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/stop", operation_id = "stopSandbox", tag = "sandboxes",
    summary = "Stop a sandbox (its disk is kept)",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::Sandbox),
        (status = "default", description = "error", body = api::Error)))]
pub async fn stop(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::Sandbox>, ApiError> {
    let r = st.manager.stop(&t.id).await?;
    Ok(axum::Json(st.manager.view(&r).into()))
}

/// Replace the egress policy (`ironclaw sandbox policy`).
#[utoipa::path(put, path = "/v1/sandboxes/{name}/egress", operation_id = "setSandboxEgress", tag = "sandboxes",
    summary = "Replace the sandbox's egress policy (applied at once while it runs)",
    params(("name" = String, Path), api::OwnerQuery), request_body = api::Egress,
    responses((status = 200, description = "success", body = api::Sandbox),
        (status = "default", description = "error", body = api::Error)))]
pub async fn set_egress(
    State(st): State<AppState>,
    t: Target,
    Json(policy): Json<api::Egress>,
) -> Result<axum::Json<api::Sandbox>, ApiError> {
    let policy: ironclaw_net::EgressPolicy = convert::reparse(&policy)?;
    let r = st.manager.set_egress(&t.id, policy).await?;
    Ok(axum::Json(st.manager.view(&r).into()))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/info", operation_id = "sandboxInfo", tag = "sandboxes",
    summary = "Guest agent info",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::GuestInfo),
        (status = "default", description = "error", body = api::Error)))]
pub async fn info(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::GuestInfo>, ApiError> {
    let agent = st.manager.agent(&t.id).await?;
    Ok(axum::Json(convert::guest_info(agent.info().await?)))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/logs", operation_id = "sandboxLogs", tag = "sandboxes",
    summary = "Recent console (and VMM) log, text",
    params(("name" = String, Path), api::OwnerQuery, api::LogsQuery),
    responses((status = 200, description = "success", body = String, content_type = "text/plain"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn logs(
    State(st): State<AppState>,
    t: Target,
    crate::error::Query(q): crate::error::Query<api::LogsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let text = st
        .manager
        .logs(&t.id, q.bytes.unwrap_or(64 * 1024).min(16 << 20))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    ))
}
