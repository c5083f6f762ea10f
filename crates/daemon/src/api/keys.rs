//! Users' SSH public keys (`ironclaw key add|ls|rm`): one's own, or for
//! the admin another user's with `?owner=USER`, as on sandbox routes.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use ironclaw_api as api;

use super::convert;
use crate::auth::{namespace_of, owner_param, Caller};
use crate::error::{ApiError, Json};
use crate::AppState;

/// Whose keys a request means. A non-admin naming someone else is refused
/// like a user that does not exist.
fn user_of(st: &AppState, caller: &Caller, uri: &Uri) -> Result<String, ApiError> {
    let owner = owner_param(uri)?;
    let user = namespace_of(caller, owner.clone()).ok_or_else(|| {
        ApiError::NotFound(format!("user '{}' not found", owner.unwrap_or_default()))
    })?;
    st.manager.store.user(&user)?;
    Ok(user)
}

#[utoipa::path(get, path = "/v1/keys", operation_id = "listKeys", tag = "keys",
    summary = "The caller's SSH public keys (the admin: a user's with ?owner=)",
    params(api::OwnerQuery),
    responses((status = 200, description = "success", body = api::KeyList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<axum::Json<api::KeyList>, ApiError> {
    let user = user_of(&st, &caller, &uri)?;
    let keys = st
        .manager
        .store
        .ssh_keys(&user)?
        .iter()
        .map(convert::ssh_key)
        .collect();
    Ok(axum::Json(api::KeyList { keys }))
}

#[utoipa::path(post, path = "/v1/keys", operation_id = "addKey", tag = "keys",
    summary = "Register an SSH public key (one line of a .pub file); 409 if already registered",
    params(api::OwnerQuery), request_body = api::AddKey,
    responses((status = 201, description = "success", body = api::SshKey),
        (status = "default", description = "error", body = api::Error)))]
pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
    Json(b): Json<api::AddKey>,
) -> Result<(StatusCode, axum::Json<api::SshKey>), ApiError> {
    let user = user_of(&st, &caller, &uri)?;
    let parsed =
        crate::ssh::pubkey::parse(&b.key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let label = b
        .label
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .or(parsed.comment);
    if label
        .as_ref()
        .is_some_and(|l| l.len() > 200 || l.contains('\n'))
    {
        return Err(ApiError::BadRequest(
            "the label must be one line of at most 200 bytes".into(),
        ));
    }
    let key = st
        .manager
        .store
        .add_ssh_key(
            &user,
            &parsed.fingerprint,
            &parsed.algorithm,
            &parsed.public_key,
            label.as_deref(),
        )
        .map_err(|e| match e {
            ironclaw_store::StoreError::Conflict(_) => ApiError::Conflict(format!(
                "the key {} is already registered",
                parsed.fingerprint
            )),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, axum::Json(convert::ssh_key(&key))))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "deleteKey", tag = "keys",
    summary = "Remove one of the caller's SSH keys",
    params(("id" = String, Path), api::OwnerQuery),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = user_of(&st, &caller, &uri)?;
    st.manager.store.remove_ssh_key(&user, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
