//! Git-push deploy of a sandbox: `POST /v1/sandboxes/NAME/deploy` makes
//! it a deploy target (idempotent) and answers its git remote;
//! `GET .../deploy/releases` lists releases, `GET .../deploy/logs` the
//! live release's process log (`?follow=true` streams it), `POST
//! .../deploy/rollback` switches back to the previous good release. The
//! git endpoints themselves are [`crate::deploy::http`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ironclaw_sandbox::types::ExecRequest;
use ironclaw_sandbox::SessionEvent;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Target;
use crate::deploy::{self, release, supervisor};
use crate::error::{ApiError, Query};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Wider than a port so 0 and 70000 get our message.
    port: Option<i64>,
}

fn remote(headers: &HeaderMap, st: &AppState, name: &str) -> String {
    // The host the client reached us by is the one git can reach too.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| st.manager.config.listen.to_string());
    format!("http://{host}/v1/sandboxes/{name}/git")
}

pub async fn init(
    State(st): State<AppState>,
    t: Target,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // The body is optional: empty means the defaults.
    let req: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let port = match req.port {
        None => 8000,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0 && *p < deploy::RELEASE_PORT_BASE)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "port must be between 1 and {}, got {p}",
                    deploy::RELEASE_PORT_BASE - 1
                ))
            })?,
    };
    let existed = st.manager.store.deploy_app(&t.id)?.is_some();
    deploy::init_repo(&st.manager.data_dir, &t.id)
        .await
        .map_err(|e| ApiError::Internal(format!("creating the deploy repository: {e}")))?;
    let app = st.manager.store.put_deploy_app(&t.id, port)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        axum::Json(json!({
            "name": t.name,
            "remote": remote(&headers, &st, &t.name),
            "port": app.port,
            "auth": "HTTP basic auth with your API token as the password (any user name), or `git -c http.extraHeader=\"Authorization: Bearer TOKEN\"`",
        })),
    ))
}

pub async fn releases(
    State(st): State<AppState>,
    t: Target,
) -> Result<impl IntoResponse, ApiError> {
    let app = st
        .manager
        .store
        .deploy_app(&t.id)?
        .ok_or_else(|| not_target(&t.name))?;
    let list = st.manager.store.releases(&t.id)?;
    Ok(axum::Json(json!({
        "port": app.port,
        "releases": list.iter().map(|r| json!({
            "number": r.number,
            "commit": r.commit_sha,
            "status": r.status,
            "created_at": r.created_at,
            "web": r.web,
            "log_tail": r.log_tail,
        })).collect::<Vec<_>>(),
    })))
}

fn not_target(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "sandbox '{name}' is not a deploy target; run `ironclaw deploy init {name}`"
    ))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// Lines of history to start with (default 100).
    lines: Option<u32>,
}

pub async fn logs(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    st.manager
        .store
        .deploy_app(&t.id)?
        .ok_or_else(|| not_target(&t.name))?;
    let live = st.manager.store.live_release(&t.id)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "sandbox '{}' has no live release; push one",
            t.name
        ))
    })?;
    let agent = st.manager.agent(&t.id).await?;
    let lines = q.lines.unwrap_or(100).min(100_000);
    let mut argv = vec!["tail".to_string(), "-n".into(), lines.to_string()];
    if q.follow {
        argv.push("-f".into());
    }
    argv.push(supervisor::log_path(live.number));
    let session = agent
        .exec(ExecRequest {
            argv,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))?;
    // Dropping the body (the client left) drops the session: the guest
    // stops the tail.
    let body = futures::stream::unfold(Some(session), |s| async move {
        let mut s = s?;
        loop {
            match s.next().await {
                Some(Ok(SessionEvent::Stdout(d))) => {
                    return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(d)), Some(s)))
                }
                Some(Ok(SessionEvent::Started { .. } | SessionEvent::Stderr(_))) => {}
                _ => return None,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn rollback(
    State(st): State<AppState>,
    t: Target,
) -> Result<impl IntoResponse, ApiError> {
    st.manager
        .store
        .deploy_app(&t.id)?
        .ok_or_else(|| not_target(&t.name))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let lock = deploy::lock_for(&t.id);
    let res = {
        let _g = lock.lock().await;
        release::rollback(&st.manager, &t.id, &tx).await
    };
    drop(tx);
    let mut output = Vec::new();
    while let Some(l) = rx.recv().await {
        output.push(l);
    }
    match res {
        Ok(url) => {
            let live = st.manager.store.live_release(&t.id)?;
            Ok(axum::Json(json!({
                "release": live.map(|l| l.number),
                "url": url,
                "output": output,
            })))
        }
        Err(e) => Err(ApiError::Conflict(format!("rollback failed: {e}"))),
    }
}
