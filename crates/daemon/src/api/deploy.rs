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
use ironclaw_api as api;
use ironclaw_sandbox::types::ExecRequest;
use ironclaw_sandbox::SessionEvent;

use crate::auth::Target;
use crate::deploy::{self, release, supervisor};
use crate::error::{ApiError, Query};
use crate::AppState;

fn remote(headers: &HeaderMap, st: &AppState, name: &str) -> String {
    // The host the client reached us by is the one git can reach too.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| st.manager.config.listen.to_string());
    format!("http://{host}/v1/sandboxes/{name}/git")
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/deploy", operation_id = "deployInit", tag = "deploy",
    summary = "Make the sandbox a git-push deploy target (idempotent): answers its git remote (201 new, 200 existing)",
    params(("name" = String, Path), api::OwnerQuery), request_body = Option<api::DeployInit>,
    responses((status = 201, description = "a new deploy target", body = api::DeployTarget),
        (status = 200, description = "already one", body = api::DeployTarget),
        (status = "default", description = "error", body = api::Error)))]
pub async fn init(
    State(st): State<AppState>,
    t: Target,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<(StatusCode, axum::Json<api::DeployTarget>), ApiError> {
    // The body is optional: empty means the defaults.
    let req: api::DeployInit = if body.iter().all(u8::is_ascii_whitespace) {
        api::DeployInit::default()
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
        axum::Json(api::DeployTarget {
            remote: remote(&headers, &st, &t.name),
            name: t.name,
            port: app.port,
            auth: "HTTP basic auth with your API token as the password (any user name), or `git -c http.extraHeader=\"Authorization: Bearer TOKEN\"`".into(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/deploy/releases", operation_id = "deployReleases", tag = "deploy",
    summary = "The sandbox's releases, oldest first",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::ReleaseList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn releases(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::ReleaseList>, ApiError> {
    let app = st
        .manager
        .store
        .deploy_app(&t.id)?
        .ok_or_else(|| not_target(&t.name))?;
    let list = st.manager.store.releases(&t.id)?;
    Ok(axum::Json(api::ReleaseList {
        port: app.port,
        releases: list
            .into_iter()
            .map(|r| api::Release {
                number: r.number,
                commit: r.commit_sha,
                status: r.status.as_str().to_string(),
                created_at: r.created_at,
                web: r.web,
                log_tail: r.log_tail,
            })
            .collect(),
    }))
}

fn not_target(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "sandbox '{name}' is not a deploy target; run `ironclaw deploy init {name}`"
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/deploy/logs", operation_id = "deployLogs", tag = "deploy",
    summary = "The live release's process log (text; streamed with follow)",
    params(("name" = String, Path), api::OwnerQuery, api::DeployLogsQuery),
    responses((status = 200, description = "success", body = String, content_type = "text/plain"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn logs(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<api::DeployLogsQuery>,
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

#[utoipa::path(post, path = "/v1/sandboxes/{name}/deploy/rollback", operation_id = "deployRollback", tag = "deploy",
    summary = "Switch back to the previous good release (started and listening before the switch)",
    params(("name" = String, Path), api::OwnerQuery),
    responses((status = 200, description = "success", body = api::Rollback),
        (status = "default", description = "error", body = api::Error)))]
pub async fn rollback(
    State(st): State<AppState>,
    t: Target,
) -> Result<axum::Json<api::Rollback>, ApiError> {
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
            Ok(axum::Json(api::Rollback {
                release: live.map(|l| l.number),
                url,
                output,
            }))
        }
        Err(e) => Err(ApiError::Conflict(format!("rollback failed: {e}"))),
    }
}
