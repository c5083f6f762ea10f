//! Files in a sandbox: streamed upload and download, and small operations.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ironclaw_api as api;
use ironclaw_sandbox::types::{FileKind, FileStat};
use ironclaw_sandbox::AgentError;

use crate::auth::Target;
use crate::error::{ApiError, Json, Query};
use crate::AppState;

/// `?path=` (and for an upload `&mode=`, octal permission bits).
pub type PathQuery = api::UploadQuery;

fn check_path(p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.contains('\0') {
        return Err(ApiError::BadRequest(
            "path must be a non-empty path without NUL bytes".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(put, path = "/v1/sandboxes/{name}/files", operation_id = "uploadFile", tag = "files",
    summary = "Upload a file (streamed raw body)",
    params(("name" = String, Path), api::OwnerQuery, api::UploadQuery),
    request_body(content = String, content_type = "application/octet-stream", description = "the file's bytes"),
    responses((status = 200, description = "success", body = api::FileStat),
        (status = "default", description = "error", body = api::Error)))]
pub async fn upload(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&q.path)?;
    let limit = st.manager.config.max_upload_bytes;
    let too_large = || ApiError::TooLarge(format!("upload exceeds the limit of {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mode = match &q.mode {
        Some(m) => u32::from_str_radix(m, 8)
            .map_err(|_| ApiError::BadRequest(format!("mode {m:?} is not octal")))?,
        None => 0o644,
    };
    let agent = st.manager.agent(&t.id).await?;
    let mut writer = agent.file_writer(&q.path, mode, false).await?;
    let mut body = body.into_data_stream();
    let mut total: u64 = 0;
    // A write fails once the guest has ended the stream (it refused the
    // path, the disk is full): `finish` then says why.
    let mut refused = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading upload: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            // Dropping the writer cancels the write; the guest removes its temp file.
            return Err(too_large());
        }
        if writer.write(&chunk).await.is_err() {
            refused = true;
            break;
        }
    }
    if refused {
        // Read the rest of the body (still bounded by the limit) before
        // answering: a reply sent while the client is still writing makes
        // hyper close the connection, and the client sees a broken message
        // instead of the guest's reason.
        while let Some(Ok(chunk)) = body.next().await {
            total += chunk.len() as u64;
            if total > limit {
                break;
            }
        }
    }
    match writer.finish().await {
        Ok(s) => Ok(axum::Json(stat_json(&s))),
        Err(AgentError::Protocol(m)) => Err(ApiError::Internal(format!(
            "unexpected reply from the guest agent: {m}"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub fn stat_json(s: &FileStat) -> api::FileStat {
    super::convert::file_stat(s)
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/files", operation_id = "downloadFile", tag = "files",
    summary = "Download a file (streamed)",
    params(("name" = String, Path), api::OwnerQuery, api::PathQuery),
    responses((status = 200, description = "success", body = String, content_type = "application/octet-stream"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn download(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    check_path(&q.path)?;
    let agent = st.manager.agent(&t.id).await?;
    let stat = agent.stat(&q.path).await?;
    if stat.kind == FileKind::Dir {
        return Err(ApiError::BadRequest(format!("{} is a directory", q.path)));
    }
    // A FIFO would block the read until a writer came, a device never
    // ends or reads as empty: downloads are of regular files (the guest
    // refuses the rest too, should the path change in between).
    if stat.kind == FileKind::Other {
        return Err(ApiError::BadRequest(format!(
            "{} is not a regular file",
            q.path
        )));
    }
    let mut reader = agent.file_reader(&q.path).await?;
    // Look at the first chunk so errors become HTTP statuses, not a truncated body.
    let first = reader.next().await.transpose()?;
    let rest = reader
        .into_stream()
        .map(|c| c.map(bytes::Bytes::from).map_err(std::io::Error::other));
    let body = futures::stream::iter(first.map(|d| Ok(bytes::Bytes::from(d)))).chain(rest);
    let mut resp = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response();
    // The size is the file's only when the path is the file: a symlink's
    // stat (lstat) gives the length of its target's name, which made every
    // download through a symlink an incomplete body.
    if stat.kind == FileKind::File {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(stat.size));
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/fs/stat", operation_id = "statPath", tag = "files",
    summary = "Stat a path",
    params(("name" = String, Path), api::OwnerQuery, api::PathQuery),
    responses((status = 200, description = "success", body = api::FileStat),
        (status = "default", description = "error", body = api::Error)))]
pub async fn stat(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<api::PathQuery>,
) -> Result<axum::Json<api::FileStat>, ApiError> {
    check_path(&q.path)?;
    let s = st.manager.agent(&t.id).await?.stat(&q.path).await?;
    Ok(axum::Json(stat_json(&s)))
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/fs/list", operation_id = "listDir", tag = "files",
    summary = "List a directory",
    params(("name" = String, Path), api::OwnerQuery, api::PathQuery),
    responses((status = 200, description = "success", body = api::DirList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<api::PathQuery>,
) -> Result<axum::Json<api::DirList>, ApiError> {
    check_path(&q.path)?;
    let entries = st.manager.agent(&t.id).await?.list(&q.path).await?;
    let entries = entries.iter().map(super::convert::dir_entry).collect();
    Ok(axum::Json(api::DirList { entries }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/fs/mkdir", operation_id = "makeDir", tag = "files",
    summary = "Make a directory",
    params(("name" = String, Path), api::OwnerQuery), request_body = api::Mkdir,
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn mkdir(
    State(st): State<AppState>,
    t: Target,
    Json(b): Json<api::Mkdir>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&b.path)?;
    let agent = st.manager.agent(&t.id).await?;
    agent.mkdir(&b.path, b.parents, 0o755).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/fs/remove", operation_id = "removePath", tag = "files",
    summary = "Remove a path",
    params(("name" = String, Path), api::OwnerQuery), request_body = api::Remove,
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    t: Target,
    Json(b): Json<api::Remove>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&b.path)?;
    let agent = st.manager.agent(&t.id).await?;
    agent.remove(&b.path, b.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{name}/fs/rename", operation_id = "renamePath", tag = "files",
    summary = "Rename a path",
    params(("name" = String, Path), api::OwnerQuery), request_body = api::Rename,
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn rename(
    State(st): State<AppState>,
    t: Target,
    Json(b): Json<api::Rename>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&b.from)?;
    check_path(&b.to)?;
    let agent = st.manager.agent(&t.id).await?;
    agent.rename(&b.from, &b.to).await?;
    Ok(StatusCode::NO_CONTENT)
}
