//! Users' SSH public keys (`ironclaw key add|ls|rm`): one's own, or for
//! the admin another user's with `?owner=USER`, as on sandbox routes.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::auth::{namespace_of, owner_param, Caller};
use crate::error::{ApiError, Json};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    /// One line of a `.pub` file.
    key: String,
    /// A note to remember the key by (default: the key's comment).
    label: Option<String>,
}

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

fn view(k: &ironclaw_store::SshKey) -> serde_json::Value {
    serde_json::json!({"id": k.id, "user": k.user, "fingerprint": k.fingerprint,
        "algorithm": k.algorithm, "label": k.label, "created_at": k.created_at})
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    let user = user_of(&st, &caller, &uri)?;
    let keys: Vec<_> = st.manager.store.ssh_keys(&user)?.iter().map(view).collect();
    Ok(axum::Json(serde_json::json!({ "keys": keys })))
}

pub async fn add(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
    Json(b): Json<AddKey>,
) -> Result<impl IntoResponse, ApiError> {
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
    Ok((StatusCode::CREATED, axum::Json(view(&key))))
}

pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user = user_of(&st, &caller, &uri)?;
    st.manager.store.remove_ssh_key(&user, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
