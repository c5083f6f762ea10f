//! `/v1/channels` (admin: channels are the operator's), the inbound
//! endpoint each channel's service calls (`/v1/channels/NAME/events`, no
//! bearer token: the channel checks the service's signature), and
//! `/v1/pairings/approve`.

use crate::error::Query;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ironclaw_api as api;

use super::convert;
use crate::auth::Caller;
use crate::channels::AddChannel;
use crate::error::{ApiError, Json};
use crate::AppState;

#[utoipa::path(get, path = "/v1/channels", operation_id = "listChannels", tag = "channels",
    summary = "Chat channels with their status: connected, last error, queue depth (admin)",
    responses((status = 200, description = "success", body = api::ChannelList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<api::ChannelList>, ApiError> {
    caller.require_admin()?;
    let channels = st.channels.list()?.into_iter().map(Into::into).collect();
    Ok(axum::Json(api::ChannelList { channels }))
}

#[utoipa::path(post, path = "/v1/channels", operation_id = "addChannel", tag = "channels",
    summary = "Add a chat channel; its credentials are named env vars of the daemon (admin)",
    request_body = api::AddChannel,
    responses((status = 201, description = "success", body = api::Channel),
        (status = "default", description = "error", body = api::Error)))]
pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<api::AddChannel>,
) -> Result<(StatusCode, axum::Json<api::Channel>), ApiError> {
    caller.require_admin()?;
    // The channel's own settings type checks the rest (env var names...).
    let req: AddChannel = convert::reparse(&req)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(st.channels.add(&caller.user, req)?.into()),
    ))
}

#[utoipa::path(get, path = "/v1/channels/{name}", operation_id = "getChannel", tag = "channels",
    summary = "A channel's status (admin)",
    params(("name" = String, Path)),
    responses((status = 200, description = "success", body = api::Channel),
        (status = "default", description = "error", body = api::Error)))]
pub async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<api::Channel>, ApiError> {
    caller.require_admin()?;
    Ok(axum::Json(st.channels.show(&name)?.into()))
}

#[utoipa::path(delete, path = "/v1/channels/{name}", operation_id = "deleteChannel", tag = "channels",
    summary = "Remove a channel with its messages and queue (admin)",
    params(("name" = String, Path)),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    st.channels.remove(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/channels/{name}/messages", operation_id = "listChannelMessages", tag = "channels",
    summary = "Inbound messages, newest first, each with its reply parts and their delivery log (admin)",
    params(("name" = String, Path), api::LimitQuery),
    responses((status = 200, description = "success", body = api::ChannelMessages),
        (status = "default", description = "error", body = api::Error)))]
pub async fn messages(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<api::LimitQuery>,
) -> Result<axum::Json<api::ChannelMessages>, ApiError> {
    caller.require_admin()?;
    let v = st
        .channels
        .messages(&name, q.limit.unwrap_or(50).clamp(1, 500))?;
    // The channel module's JSON of store records, in the API's shape.
    let list = serde_json::from_value(v)
        .map_err(|e| ApiError::Internal(format!("channel messages: {e}")))?;
    Ok(axum::Json(list))
}

/// Largest inbound request a channel takes.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

#[utoipa::path(post, path = "/v1/channels/{name}/events", operation_id = "channelEvents", tag = "channels",
    summary = "Inbound endpoint the chat service calls (signed: webhook X-Ironclaw-Signature, Slack X-Slack-Signature v0)",
    params(("name" = String, Path)), request_body = Object, security(()),
    responses((status = 200, description = "success"),
        (status = "default", description = "error")))]
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

#[utoipa::path(post, path = "/v1/pairings/approve", operation_id = "approvePairing", tag = "channels",
    summary = "Link the sender waiting with a pairing code to a user (admin)",
    request_body = api::Approve,
    responses((status = 200, description = "success", body = api::Pairing),
        (status = "default", description = "error", body = api::Error)))]
pub async fn approve(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<api::Approve>,
) -> Result<axum::Json<api::Pairing>, ApiError> {
    caller.require_admin()?;
    Ok(axum::Json(convert::pairing(
        st.channels.approve(&req.code, &req.user)?,
    )))
}
