//! Exposed ports of a sandbox: `POST /v1/sandboxes/NAME/ports` exposes
//! (or changes `public`), `GET` lists, `DELETE .../ports/PORT` unexposes.
//! The traffic itself is served by [`crate::exposure::gate`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::auth::Target;
use crate::error::{ApiError, Json};
use crate::exposure;
use crate::AppState;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeRequest {
    /// Wider than a port so 0 and 70000 get our message, not serde's.
    port: i64,
    #[serde(default)]
    public: bool,
}

fn port_number(p: i64) -> Result<u16, ApiError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::BadRequest(format!("port must be between 1 and 65535, got {p}")))
}

pub async fn expose(
    State(st): State<AppState>,
    t: Target,
    Json(req): Json<ExposeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let port = port_number(req.port)?;
    let label = ironclaw_net::ports::label(port, &t.name);
    // Browsers and wildcard DNS resolve only labels of up to 63 bytes.
    if label.len() > 63 {
        return Err(ApiError::BadRequest(format!(
            "the host label '{label}' is longer than a DNS label (63 bytes); use a shorter sandbox name"
        )));
    }
    let taken = |label: &str| {
        ApiError::Conflict(format!(
            "the host {} is already taken by another user's sandbox named '{}' exposing port {port}; \
             a sandbox of another name (or another port) gets its own host",
            exposure::url(&st.manager.config, label),
            t.name
        ))
    };
    if let Some(e) = st.manager.store.exposure_by_label(&label)? {
        if e.sandbox_id != t.id {
            return Err(taken(&label));
        }
    }
    let (e, created) = match st
        .manager
        .store
        .put_exposure(&t.id, port, &label, req.public)
    {
        Err(ironclaw_store::StoreError::Conflict(_)) => return Err(taken(&label)),
        other => other?,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(exposure::view(&st.manager.config, &e))))
}

pub async fn list(State(st): State<AppState>, t: Target) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.by_id(&t.id)?;
    Ok(axum::Json(
        serde_json::json!({ "ports": exposure::views(&st.manager, &r) }),
    ))
}

pub async fn unexpose(
    State(st): State<AppState>,
    t: Target,
    Path((_, port)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let port = port
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("port must be a number, got {port:?}")))
        .and_then(port_number)?;
    if !st.manager.store.delete_exposure(&t.id, port)? {
        return Err(ApiError::NotFound(format!(
            "port {port} of sandbox '{}' is not exposed",
            t.name
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
