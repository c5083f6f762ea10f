//! Sandbox lifecycle routes. Names live in their owner's namespace; the
//! routes under `/v1/sandboxes/NAME` get the resolved sandbox as a
//! [`Target`] (see [`crate::auth::sandbox_access`]).

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use crate::auth::{namespace_of, owner_param, Caller, Target};
use crate::error::{ApiError, Json};
use crate::manager::CreateRequest;
use crate::AppState;

/// Create in the caller's namespace; the admin may create in another
/// user's with `?owner=USER`.
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
    Json(req): Json<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = namespace_of(&caller, owner_param(&uri)?).ok_or_else(|| {
        ApiError::Forbidden("only the admin creates sandboxes for another user".into())
    })?;
    if owner != caller.user {
        st.manager.store.user(&owner)?;
    }
    let r = st.manager.create(req, &owner).await?;
    Ok((StatusCode::CREATED, axum::Json(st.manager.view(&r))))
}

/// The caller's sandboxes; for the admin everyone's (each with its
/// `owner`), or one user's with `?owner=USER`.
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    let records = match (caller.admin, owner_param(&uri)?) {
        (true, None) => st.manager.store.sandboxes()?,
        (_, owner) => match namespace_of(&caller, owner) {
            Some(o) => st.manager.store.sandboxes_of(&o)?,
            None => Vec::new(),
        },
    };
    let views: Vec<_> = records.iter().map(|r| st.manager.view(r)).collect();
    Ok(axum::Json(serde_json::json!({ "sandboxes": views })))
}

pub async fn show(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.by_id(&t.id)?;
    Ok(axum::Json(st.manager.view(&r)))
}

pub async fn remove(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    st.manager.remove(&t.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.start(&t.id).await?;
    Ok(axum::Json(st.manager.view(&r)))
}

pub async fn stop(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.stop(&t.id).await?;
    Ok(axum::Json(st.manager.view(&r)))
}

/// Replace the egress policy (`ironclaw sandbox policy`).
pub async fn set_egress(
    State(st): State<AppState>,
    t: Target,
    Json(policy): Json<ironclaw_net::EgressPolicy>,
) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.set_egress(&t.id, policy).await?;
    Ok(axum::Json(st.manager.view(&r)))
}

pub async fn info(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    let agent = st.manager.agent(&t.id).await?;
    Ok(axum::Json(agent.info().await?))
}

#[derive(Debug, serde::Deserialize)]
pub struct LogsQuery {
    /// Most bytes of log to return (default 64 KiB).
    bytes: Option<u64>,
}

pub async fn logs(
    State(st): State<AppState>,
    t: Target,
    crate::error::Query(q): crate::error::Query<LogsQuery>,
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
