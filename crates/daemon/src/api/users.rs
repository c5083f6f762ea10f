//! Users and their tokens (admin only), and `GET /v1/me`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, Json, OptionalJson};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    label: Option<String>,
}

/// A fresh random token; shown once, stored only as a hash.
pub fn new_token() -> String {
    let hex: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    format!("icu_{hex}")
}

pub async fn me(State(st): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
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
    Ok(axum::Json(serde_json::json!({
        "user": caller.user, "admin": caller.admin, "usage": usage, "sandbox": sandbox,
        "quota": quota
    })))
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let mut out = Vec::new();
    for u in st.manager.store.users()? {
        let usage = st.manager.store.usage_for_user(&u.name)?;
        let mut v = serde_json::to_value(&u).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["usage"] = serde_json::to_value(usage).unwrap_or_default();
        out.push(v);
    }
    Ok(axum::Json(serde_json::json!({ "users": out })))
}

/// Create a user and their first token.
pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<AddUser>,
) -> Result<impl IntoResponse, ApiError> {
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
        axum::Json(serde_json::json!({"user": user, "token": token, "token_id": info.id})),
    ))
}

pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
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

pub async fn tokens(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    st.manager.store.user(&name)?;
    Ok(axum::Json(
        serde_json::json!({ "tokens": st.manager.store.tokens(&name)? }),
    ))
}

pub async fn issue_token(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalJson(body): OptionalJson<IssueToken>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let label = body.and_then(|b| b.label);
    let token = new_token();
    let info = st
        .manager
        .store
        .add_token(&name, &token, label.as_deref())?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"token": token, "token_id": info.id, "user": name})),
    ))
}

pub async fn revoke_all(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    st.manager.store.user(&name)?;
    let n = st.manager.store.revoke_tokens(&name, None)?;
    Ok(axum::Json(serde_json::json!({ "revoked": n })))
}

pub async fn revoke(
    State(st): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    st.manager.store.revoke_tokens(&name, Some(&id))?;
    Ok(StatusCode::NO_CONTENT)
}
