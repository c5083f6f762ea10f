//! Persistent PTY sessions ("consoles") that survive disconnects.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ironclaw_sandbox::types::{PtyOpen, TtySize};
use ironclaw_sandbox::AgentError;

use super::exec::{pump, Output};
use crate::auth::Target;
use crate::error::{ApiError, Query, WebSocketUpgrade};
use crate::AppState;

pub use ironclaw_api::AttachQuery;

#[utoipa::path(get, path = "/v1/sandboxes/{name}/console/ws", operation_id = "consoleWebSocket", tag = "exec",
    summary = "Attach to a persistent console session over WebSocket; a plain GET is a 400",
    params(("name" = String, Path), ironclaw_api::OwnerQuery, AttachQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = "default", description = "error", body = ironclaw_api::Error)))]
pub async fn attach(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<AttachQuery>,
    WebSocketUpgrade(ws): WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let session = q.session.unwrap_or_else(|| "main".into());
    ironclaw_sandbox::name::validate(&session).map_err(|e| ApiError::InvalidName(e.to_string()))?;
    let agent = st.manager.agent(&t.id).await?;
    let open = PtyOpen {
        name: session,
        size: TtySize {
            rows: q.rows.unwrap_or(24),
            cols: q.cols.unwrap_or(80),
        },
        user: q.user,
        ..Default::default()
    };
    let session = agent.pty_open(open).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = pump(socket, session, Output::Console).await {
            tracing::debug!("console websocket ended: {e}");
        }
    }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/console", operation_id = "listConsoles", tag = "exec",
    summary = "List persistent console sessions",
    params(("name" = String, Path), ironclaw_api::OwnerQuery),
    responses((status = 200, description = "success", body = ironclaw_api::ConsoleList),
        (status = "default", description = "error", body = ironclaw_api::Error)))]
pub async fn list(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    let agent = st.manager.agent(&t.id).await?;
    let sessions: Vec<_> = agent
        .pty_list()
        .await
        .map_err(|e| match e {
            AgentError::Protocol(m) => ApiError::Internal(format!("unexpected reply {m}")),
            e => e.into(),
        })?
        .into_iter()
        .map(|p| serde_json::json!({"name":p.name,"pid":p.pid,"alive":p.alive,"attached":p.attached,"rows":p.size.rows,"cols":p.size.cols}))
        .collect();
    Ok(axum::Json(serde_json::json!({ "sessions": sessions })))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{name}/console/{session}", operation_id = "killConsole", tag = "exec",
    summary = "Kill a console session",
    params(("name" = String, Path), ("session" = String, Path), ironclaw_api::OwnerQuery),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = ironclaw_api::Error)))]
pub async fn kill(
    State(st): State<AppState>,
    t: Target,
    Path((_, session)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let agent = st.manager.agent(&t.id).await?;
    agent.pty_kill(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}
