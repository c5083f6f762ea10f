//! `/v1/channels` (admin: channels are the operator's), the inbound
//! endpoint each channel's service calls (`/v1/channels/NAME/events`, no
//! bearer token: the channel checks the service's signature), and
//! `/v1/pairings/approve`.

use crate::error::Query;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::auth::Caller;
use crate::channels::AddChannel;
use crate::error::{ApiError, Json};
use crate::AppState;

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    Ok(axum::Json(
        serde_json::json!({"channels": st.channels.list()?}),
    ))
}

pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<AddChannel>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    Ok((
        StatusCode::CREATED,
        axum::Json(st.channels.add(&caller.user, req)?),
    ))
}

pub async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    Ok(axum::Json(st.channels.show(&name)?))
}

pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    st.channels.remove(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<u32>,
}

pub async fn messages(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    Ok(axum::Json(
        st.channels
            .messages(&name, q.limit.unwrap_or(50).clamp(1, 500))?,
    ))
}

/// Largest inbound request a channel takes.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

pub async fn events(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if body.len() > MAX_EVENT_BYTES {
        return ApiError::TooLarge("event larger than 1 MiB".into()).into_response();
    }
    let req = ironclaw_channels::WebhookRequest {
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    let r = st.channels.webhook(&name, req).await;
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r.body,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    code: String,
    user: String,
}

pub async fn approve(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<Approve>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    Ok(axum::Json(st.channels.approve(&req.code, &req.user)?))
}
