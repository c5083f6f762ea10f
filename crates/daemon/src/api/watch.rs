//! `GET /v1/sandboxes/NAME/watch?path=P[&recursive=true]`: changes in a
//! sandbox directory as Server-Sent Events (`event: create|write|remove|
//! rename|chmod|overflow`, data `{"type", "path"}`), until the client
//! leaves (or `timeout_secs` pass).

use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use ironclaw_sandbox::types::WatchKind;

use crate::auth::Target;
use crate::error::{ApiError, Query};
use crate::AppState;

pub use ironclaw_api::WatchQuery;

pub fn kind_name(k: WatchKind) -> &'static str {
    match k {
        WatchKind::Ready => "ready",
        WatchKind::Create => "create",
        WatchKind::Write => "write",
        WatchKind::Remove => "remove",
        WatchKind::Rename => "rename",
        WatchKind::Chmod => "chmod",
        WatchKind::Overflow => "overflow",
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/watch", operation_id = "watchDir", tag = "files",
    summary = "Changes in a directory as Server-Sent Events (event create, write, remove, rename, chmod or overflow; data {type, path}), after a first ready event",
    params(("name" = String, Path), ironclaw_api::OwnerQuery, WatchQuery),
    responses((status = 200, description = "success", body = String, content_type = "text/event-stream"),
        (status = "default", description = "error", body = ironclaw_api::Error)))]
pub async fn watch(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<WatchQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if q.path.is_empty() || q.path.contains('\0') {
        return Err(ApiError::BadRequest(
            "path must be a non-empty path without NUL bytes".into(),
        ));
    }
    let agent = st.manager.agent(&t.id).await?;
    // Errors (no such directory) before the stream starts, as statuses.
    let w = agent.watch(&q.path, q.recursive).await?;
    let ready = serde_json::json!({"type": "ready", "path": q.path});
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("ready").data(ready.to_string()))
    });
    let rest = futures::stream::unfold(w, |mut w| async move {
        match w.next().await {
            Some(Ok(e)) => {
                let name = kind_name(e.kind);
                let data = serde_json::json!({"type": name, "path": e.path});
                Some((Ok(Event::default().event(name).data(data.to_string())), w))
            }
            _ => None,
        }
    });
    use futures::StreamExt;
    let events = first.chain(rest);
    let events: futures::stream::BoxStream<'static, _> = match q.timeout_secs {
        Some(s) => {
            let end = tokio::time::sleep(Duration::from_secs(s));
            events.take_until(end).boxed()
        }
        None => events.boxed(),
    };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
