//! Sandbox lifecycle routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::auth::Caller;
use crate::error::{ApiError, Json};
use crate::manager::CreateRequest;
use crate::AppState;

pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.create(req, &caller.user).await?;
    Ok((StatusCode::CREATED, axum::Json(st.manager.view(&r))))
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let all = st.manager.store.sandboxes()?;
    let views: Vec<_> = all
        .iter()
        .filter(|r| caller.can_see(&r.owner))
        .map(|r| st.manager.view(r))
        .collect();
    Ok(axum::Json(serde_json::json!({ "sandboxes": views })))
}

pub async fn show(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.get(&name)?;
    Ok(axum::Json(st.manager.view(&r)))
}

pub async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.manager.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.start(&name).await?;
    Ok(axum::Json(st.manager.view(&r)))
}

pub async fn stop(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.stop(&name).await?;
    Ok(axum::Json(st.manager.view(&r)))
}

pub async fn info(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let agent = st.manager.agent(&name).await?;
    Ok(axum::Json(agent.info().await?))
}

#[derive(Debug, serde::Deserialize)]
pub struct LogsQuery {
    /// Most bytes of log to return (default 64 KiB).
    bytes: Option<u64>,
}

pub async fn logs(
    State(st): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let text = st
        .manager
        .logs(&name, q.bytes.unwrap_or(64 * 1024).min(16 << 20))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    ))
}
