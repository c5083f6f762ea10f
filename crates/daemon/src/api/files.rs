//! Files in a sandbox: streamed upload and download, and small operations.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ironclaw_sandbox::types::{FileKind, FileStat};
use ironclaw_sandbox::AgentError;
use serde::Deserialize;

use crate::auth::Target;
use crate::error::{ApiError, Json, Query};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: String,
    /// Octal permission bits for an upload, e.g. "644".
    mode: Option<String>,
}

fn check_path(p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.contains('\0') {
        return Err(ApiError::BadRequest(
            "path must be a non-empty path without NUL bytes".into(),
        ));
    }
    Ok(())
}

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

pub fn stat_json(s: &FileStat) -> serde_json::Value {
    serde_json::json!({"path": s.path, "kind": kind_str(s.kind), "size": s.size, "mode": s.mode, "mtime": s.mtime})
}

fn kind_str(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Other => "other",
    }
}

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

#[derive(Debug, Deserialize)]
pub struct StatQuery {
    path: String,
}

pub async fn stat(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<StatQuery>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&q.path)?;
    let s = st.manager.agent(&t.id).await?.stat(&q.path).await?;
    Ok(axum::Json(stat_json(&s)))
}

pub async fn list(
    State(st): State<AppState>,
    t: Target,
    Query(q): Query<StatQuery>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&q.path)?;
    let entries = st.manager.agent(&t.id).await?.list(&q.path).await?;
    let entries: Vec<_> = entries
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "kind": kind_str(e.kind), "size": e.size, "mode": e.mode, "mtime": e.mtime}))
        .collect();
    Ok(axum::Json(serde_json::json!({ "entries": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirBody {
    path: String,
    #[serde(default)]
    parents: bool,
}

pub async fn mkdir(
    State(st): State<AppState>,
    t: Target,
    Json(b): Json<MkdirBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&b.path)?;
    let agent = st.manager.agent(&t.id).await?;
    agent.mkdir(&b.path, b.parents, 0o755).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    path: String,
    #[serde(default)]
    recursive: bool,
}

pub async fn remove(
    State(st): State<AppState>,
    t: Target,
    Json(b): Json<RemoveBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&b.path)?;
    let agent = st.manager.agent(&t.id).await?;
    agent.remove(&b.path, b.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    from: String,
    to: String,
}

pub async fn rename(
    State(st): State<AppState>,
    t: Target,
    Json(b): Json<RenameBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_path(&b.from)?;
    check_path(&b.to)?;
    let agent = st.manager.agent(&t.id).await?;
    agent.rename(&b.from, &b.to).await?;
    Ok(StatusCode::NO_CONTENT)
}
