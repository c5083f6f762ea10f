//! Agent memory: `/v1/memory/status`, `/v1/memory/search`,
//! `/v1/memory/reindex`, scoped to the caller; the admin may name another
//! user with `?user=NAME` (`?owner=` works too, like the other routes).
//! Anyone else naming another user gets what an unknown user gets (404).

use axum::extract::State;
use ironclaw_sandbox::AgentClient;
use ironclaw_store::SandboxState;

use ironclaw_api as api;

use crate::auth::{namespace_of, Caller};
use crate::error::{ApiError, Json};
use crate::AppState;

/// The user the request is about; 404 for an unknown one (or someone
/// else's, for a non-admin).
fn target(st: &AppState, caller: &Caller, uri: &axum::http::Uri) -> Result<String, ApiError> {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
        .0;
    let mut named: Vec<String> = pairs
        .into_iter()
        .filter(|(k, v)| (k == "user" || k == "owner") && !v.is_empty())
        .map(|(_, v)| v)
        .collect();
    if named.len() > 1 {
        return Err(ApiError::BadRequest(
            "name the user once (?user= or ?owner=)".into(),
        ));
    }
    let unknown = |u: &str| ApiError::NotFound(format!("user '{u}' not found"));
    let asked = named.pop();
    let user = namespace_of(caller, asked.clone())
        .ok_or_else(|| unknown(asked.as_deref().unwrap_or_default()))?;
    st.manager.store.user(&user).map_err(|_| unknown(&user))?;
    Ok(user)
}

/// The user's agent sandbox's agent when it runs (`start`: start it if
/// it is stopped); None when they have none (yet).
async fn agent_of(st: &AppState, user: &str, start: bool) -> Result<Option<AgentClient>, ApiError> {
    let Some(r) = st.manager.store.agent_sandbox(user)? else {
        return Ok(None);
    };
    if r.state != SandboxState::Running {
        if !start {
            return Ok(None);
        }
        st.chat.note_activity(user);
        st.manager.start(&r.id).await?;
    }
    Ok(Some(st.manager.agent(&r.id).await?))
}

#[utoipa::path(get, path = "/v1/memory/status", operation_id = "memoryStatus", tag = "memory",
    summary = "The caller's memory index: files, chunks, vectors, the embedder, and why search is text only when it is",
    params(api::MemoryUserQuery),
    responses((status = 200, description = "success", body = api::MemoryStatus),
        (status = "default", description = "error", body = api::Error)))]
pub async fn status(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<axum::Json<api::MemoryStatus>, ApiError> {
    let user = target(&st, &caller, &uri)?;
    Ok(axum::Json(st.memory.status(&user).await?.into()))
}

/// `max_results` as a count, or a 400 saying what is allowed.
fn max_results(n: Option<&serde_json::Number>) -> Result<usize, ApiError> {
    let max = ironclaw_memory::index::MAX_RESULTS;
    let Some(n) = n else {
        return Ok(ironclaw_agent::memory::DEFAULT_RESULTS);
    };
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (1.0..=max as f64).contains(&f) => Ok(f as usize),
        _ => Err(ApiError::BadRequest(format!(
            "max_results must be a whole number from 1 to {max}, not {n}"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/memory/search", operation_id = "memorySearch", tag = "memory",
    summary = "Search the caller's memory files (hybrid BM25 + vectors, or text only, said in fallback); 400 for an empty or over-4-KiB query",
    params(api::MemoryUserQuery), request_body = api::MemorySearchRequest,
    responses((status = 200, description = "success", body = api::MemorySearch),
        (status = "default", description = "error", body = api::Error)))]
pub async fn search(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Json(req): Json<api::MemorySearchRequest>,
) -> Result<axum::Json<api::MemorySearch>, ApiError> {
    let user = target(&st, &caller, &uri)?;
    // Checked before anything is read.
    st.memory.search_check(&req.query)?;
    let k = max_results(req.max_results.as_ref())?;
    // Fresh results when the sandbox runs; the index as it is otherwise
    // (a search never starts a sandbox).
    if let Some(agent) = agent_of(&st, &user, false).await? {
        if let Err(e) = st.memory.refresh(&user, &agent, false).await {
            tracing::warn!(user, "memory: refresh before a search: {e}");
        }
    }
    let result = st.memory.search(&user, &req.query, k).await?;
    Ok(axum::Json(
        crate::memory::SearchView { user, result }.into(),
    ))
}

#[utoipa::path(post, path = "/v1/memory/reindex", operation_id = "memoryReindex", tag = "memory",
    summary = "Reread the caller's memory files from their agent sandbox (started if stopped) and index what changed",
    params(api::MemoryUserQuery),
    responses((status = 200, description = "success", body = api::MemoryReindex),
        (status = "default", description = "error", body = api::Error)))]
pub async fn reindex(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<axum::Json<api::MemoryReindex>, ApiError> {
    let user = target(&st, &caller, &uri)?;
    match agent_of(&st, &user, true).await? {
        Some(agent) => Ok(axum::Json(
            st.memory.refresh(&user, &agent, true).await?.into(),
        )),
        None => Ok(axum::Json(api::MemoryReindex {
            user,
            note: Some(
                "no agent sandbox yet: it is made on the first chat message; nothing to index"
                    .into(),
            ),
            ..Default::default()
        })),
    }
}
