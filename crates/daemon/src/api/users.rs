//! Users and their tokens (admin only), and `GET /v1/me`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ironclaw_api as api;

use super::convert;
use crate::auth::Caller;
use crate::error::{ApiError, Json, OptionalJson};
use crate::AppState;

/// A fresh random token; shown once, stored only as a hash.
pub fn new_token() -> String {
    let hex: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    format!("icu_{hex}")
}

#[utoipa::path(get, path = "/v1/me", operation_id = "me", tag = "users",
    summary = "The calling user and their usage",
    responses((status = 200, description = "success", body = api::Me),
        (status = "default", description = "error", body = api::Error)))]
pub async fn me(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<api::Me>, ApiError> {
    let usage = st.manager.store.usage_for_user(&caller.user)?;
    // The agent's sandbox, found through its binding to the user.
    let sandbox = st
        .manager
        .store
        .agent_sandbox(&caller.user)?
        .map(|s| s.name);
    let quota = st
        .manager
        .config
        .quotas
        .for_user(&caller.user, caller.admin);
    Ok(axum::Json(api::Me {
        user: caller.user,
        admin: caller.admin,
        usage: convert::usage(usage),
        sandbox,
        quota: serde_json::to_value(quota).map_err(|e| ApiError::Internal(e.to_string()))?,
    }))
}

#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "users",
    summary = "List users with usage (admin)",
    responses((status = 200, description = "success", body = api::UserList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<api::UserList>, ApiError> {
    caller.require_admin()?;
    let mut users = Vec::new();
    for u in st.manager.store.users()? {
        let usage = st.manager.store.usage_for_user(&u.name)?;
        users.push(convert::user(u, Some(convert::usage(usage))));
    }
    Ok(axum::Json(api::UserList { users }))
}

/// Create a user and their first token.
#[utoipa::path(post, path = "/v1/users", operation_id = "addUser", tag = "users",
    summary = "Add a user; returns their first token (admin)",
    request_body = api::AddUser,
    responses((status = 201, description = "success", body = api::NewUser),
        (status = "default", description = "error", body = api::Error)))]
pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<api::AddUser>,
) -> Result<(StatusCode, axum::Json<api::NewUser>), ApiError> {
    caller.require_admin()?;
    ironclaw_sandbox::name::validate(&b.name).map_err(|e| ApiError::InvalidName(e.to_string()))?;
    let user = st.manager.store.add_user(&b.name, false)?;
    let token = new_token();
    let info = st
        .manager
        .store
        .add_token(&b.name, &token, Some("initial"))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::NewUser {
            user: convert::user(user, None),
            token,
            token_id: info.id,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/users/{name}", operation_id = "deleteUser", tag = "users",
    summary = "Remove a user, their sandboxes, sessions and tokens (admin)",
    params(("name" = String, Path)),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if name == "admin" {
        return Err(ApiError::BadRequest(
            "the admin user cannot be removed".into(),
        ));
    }
    st.manager.store.user(&name)?;
    for s in st.manager.store.sandboxes_of(&name)? {
        st.manager.remove(&s.id).await?;
    }
    st.manager.store.remove_user(&name)?;
    st.memory.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/users/{name}/tokens", operation_id = "listTokens", tag = "users",
    summary = "List a user's tokens (admin)",
    params(("name" = String, Path)),
    responses((status = 200, description = "success", body = api::TokenList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn tokens(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<api::TokenList>, ApiError> {
    caller.require_admin()?;
    st.manager.store.user(&name)?;
    let tokens = st
        .manager
        .store
        .tokens(&name)?
        .into_iter()
        .map(convert::token)
        .collect();
    Ok(axum::Json(api::TokenList { tokens }))
}

#[utoipa::path(post, path = "/v1/users/{name}/tokens", operation_id = "issueToken", tag = "users",
    summary = "Issue a token (admin; body optional)",
    params(("name" = String, Path)), request_body = Option<api::IssueToken>,
    responses((status = 201, description = "success", body = api::NewToken),
        (status = "default", description = "error", body = api::Error)))]
pub async fn issue_token(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalJson(body): OptionalJson<api::IssueToken>,
) -> Result<(StatusCode, axum::Json<api::NewToken>), ApiError> {
    caller.require_admin()?;
    let label = body.and_then(|b| b.label);
    let token = new_token();
    let info = st
        .manager
        .store
        .add_token(&name, &token, label.as_deref())?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::NewToken {
            token,
            token_id: info.id,
            user: name,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/users/{name}/tokens", operation_id = "revokeAllTokens", tag = "users",
    summary = "Revoke all of a user's tokens (admin)",
    params(("name" = String, Path)),
    responses((status = 200, description = "success", body = api::Revoked),
        (status = "default", description = "error", body = api::Error)))]
pub async fn revoke_all(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<api::Revoked>, ApiError> {
    caller.require_admin()?;
    st.manager.store.user(&name)?;
    let n = st.manager.store.revoke_tokens(&name, None)?;
    Ok(axum::Json(api::Revoked { revoked: n as u64 }))
}

#[utoipa::path(delete, path = "/v1/users/{name}/tokens/{id}", operation_id = "revokeToken", tag = "users",
    summary = "Revoke one token (admin)",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn revoke(
    State(st): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    st.manager.store.revoke_tokens(&name, Some(&id))?;
    Ok(StatusCode::NO_CONTENT)
}
