//! Exposed ports of a sandbox: `POST /v1/sandboxes/NAME/ports` exposes
//! (or changes `public`), `GET` lists, `DELETE .../ports/PORT` unexposes.
//! The traffic itself is served by [`crate::exposure::gate`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use ironclaw_api as api;

use crate::auth::Target;
use crate::error::{ApiError, Json};
use crate::exposure;
use crate::AppState;

fn port_number(p: i64) -> Result<u16, ApiError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::BadRequest(format!("port must be between 1 and 65535, got {p}")))
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/ports", operation_id = "exposePort", tag = "ports",
    summary = "Expose a port at http://PORT-NAME.<base_domain> (private unless public; posting again changes public)",
    params(("name" = String, Path), api::OwnerQuery), request_body = api::Expose,
    responses((status = 201, description = "exposed", body = api::Exposure),
        (status = 200, description = "changed", body = api::Exposure),
        (status = "default", description = "error", body = api::Error)))]
pub async fn expose(
    State(st): State<AppState>,
    t: Target,
    Json(req): Json<api::Expose>,
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
    let view: api::Exposure = exposure::view(&st.manager.config, &e).into();
    Ok((status, axum::Json(view)))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/ports", operation_id = "listPorts", tag = "ports",
    summary = "The sandbox's exposed ports with their URLs",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::ExposureList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::ExposureList>, ApiError> {
    let r = st.manager.by_id(&t.id)?;
    let ports = exposure::views(&st.manager, &r)
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(axum::Json(api::ExposureList { ports }))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{name}/ports/{port}", operation_id = "unexposePort", tag = "ports",
    summary = "Stop serving an exposed port",
    params(("name" = String, Path), ("port" = u16, Path, minimum = 1, maximum = 65535), api::OwnerQuery),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
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
