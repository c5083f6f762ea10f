//! envd's HTTP routes: `GET /health`, and `GET`/`POST /files` (download;
//! upload as multipart/form-data or application/octet-stream).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ironclaw_sandbox::types::FileKind;
use serde::Deserialize;
use serde_json::json;

use super::control::error;
use super::multipart;
use super::users::{self, EnvdUser};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
struct FileQuery {
    path: Option<String>,
    /// The user the SDK acts as (`user=`); envd's default without it.
    username: Option<String>,
}

fn query(req: &Request) -> Result<FileQuery, Box<Response>> {
    match req.uri().query() {
        None => Ok(FileQuery::default()),
        Some(_) => axum::extract::Query::<FileQuery>::try_from_uri(req.uri())
            .map(|q| q.0)
            .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &format!("bad query: {e}")))),
    }
}

fn agent_error(e: ironclaw_sandbox::AgentError) -> Response {
    let message = e.to_string();
    let status = crate::error::ApiError::from(e).into_response().status();
    error(status, &message)
}

fn path_of(q: &FileQuery, user: &EnvdUser) -> Result<String, Box<Response>> {
    match q.path.as_deref() {
        Some(p) if !p.is_empty() => user
            .path(p)
            .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &e.message))),
        _ => Err(Box::new(error(StatusCode::BAD_REQUEST, "path is required"))),
    }
}

/// The request's user (see [`users`]); an unknown one is a 400.
async fn user_of(
    agent: &ironclaw_sandbox::AgentClient,
    q: &FileQuery,
) -> Result<EnvdUser, Box<Response>> {
    let explicit = q.username.clone().filter(|u| !u.is_empty());
    users::resolve(agent, explicit)
        .await
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &e.message)))
}

async fn target(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<(ironclaw_store::E2bRecord, ironclaw_sandbox::AgentClient), Box<Response>> {
    let rec = super::envd_target(st, headers).map_err(|r| Box::new(r.into_response()))?;
    let agent = super::envd_agent(st, &rec)
        .await
        .map_err(|e| Box::new(error(StatusCode::BAD_GATEWAY, &e.message)))?;
    Ok((rec, agent))
}

/// `GET /health`: 204 while the sandbox's agent answers.
pub async fn health(st: AppState, req: Request) -> Response {
    match target(&st, req.headers()).await {
        Ok((_, agent)) => match agent.ping(std::time::Duration::from_secs(5)).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
        },
        Err(r) => *r,
    }
}

/// `GET /files?path=P`: the file's bytes.
pub async fn download(st: AppState, req: Request) -> Response {
    let q = match query(&req) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (_, agent) = match target(&st, req.headers()).await {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let path = match user_of(&agent, &q).await {
        Ok(u) => match path_of(&q, &u) {
            Ok(p) => p,
            Err(r) => return *r,
        },
        Err(r) => return *r,
    };
    let stat = match agent.stat(&path).await {
        Ok(s) => s,
        Err(e) => return agent_error(e),
    };
    if stat.kind != FileKind::File {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{path} is not a regular file"),
        );
    }
    let mut reader = match agent.file_reader(&path).await {
        Ok(r) => r,
        Err(e) => return agent_error(e),
    };
    // The first chunk decides the status (an error then is a status, not
    // a truncated body).
    let first = match reader.next().await {
        None => Vec::new(),
        Some(Ok(d)) => d,
        Some(Err(e)) => return agent_error(e),
    };
    let rest = futures::stream::unfold(reader, |mut r| async move {
        r.next()
            .await
            .map(|c| (c.map_err(std::io::Error::other), r))
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, stat.size)
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn write(
    agent: &ironclaw_sandbox::AgentClient,
    user: &EnvdUser,
    path: &str,
    data: Vec<u8>,
) -> Result<serde_json::Value, Box<Response>> {
    let mut w = agent
        .file_writer_as(path, 0o644, true, user.for_guest())
        .await
        .map_err(|e| Box::new(agent_error(e)))?;
    let sent = if data.is_empty() {
        Ok(())
    } else {
        w.write(data).await
    };
    // A refused write's reason comes with finish.
    let stat = w.finish().await.map_err(|e| Box::new(agent_error(e)))?;
    sent.ok();
    let name = path.rsplit('/').next().unwrap_or(path);
    let kind = if stat.kind == FileKind::Dir {
        "dir"
    } else {
        "file"
    };
    Ok(json!({"name": name, "type": kind, "path": path}))
}

/// An octet-stream body, streamed into the file as it arrives (at most
/// `limit` bytes; past it the write is cancelled).
async fn stream_to(
    agent: &ironclaw_sandbox::AgentClient,
    user: &EnvdUser,
    path: &str,
    body: Body,
    limit: u64,
) -> Result<serde_json::Value, Box<Response>> {
    let mut w = agent
        .file_writer_as(path, 0o644, true, user.for_guest())
        .await
        .map_err(|e| Box::new(agent_error(e)))?;
    let mut data = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("reading the upload: {e}"),
            ))
        })?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(Box::new(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("upload exceeds the limit of {limit} bytes"),
            )));
        }
        // Refused by the guest: finish says why.
        if w.write(&chunk).await.is_err() {
            break;
        }
    }
    let stat = w.finish().await.map_err(|e| Box::new(agent_error(e)))?;
    let name = path.rsplit('/').next().unwrap_or(path);
    let kind = if stat.kind == FileKind::Dir {
        "dir"
    } else {
        "file"
    };
    Ok(json!({"name": name, "type": kind, "path": path}))
}

/// `POST /files?path=P`: a body of `application/octet-stream` is the
/// file; `multipart/form-data` carries one or more `file` parts, each
/// written to `path` (one part) or to its filename.
pub async fn upload(st: AppState, req: Request) -> Response {
    let q = match query(&req) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (_, agent) = match target(&st, req.headers()).await {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let user = match user_of(&agent, &q).await {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let limit = st.manager.config.max_upload_bytes;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if req.headers().contains_key(header::CONTENT_ENCODING) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed uploads are not supported",
        );
    }
    if !content_type.starts_with("multipart/") {
        let path = match path_of(&q, &user) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        return match stream_to(&agent, &user, &path, req.into_body(), limit).await {
            Ok(v) => axum::Json(vec![v]).into_response(),
            Err(r) => *r,
        };
    }
    let body = match axum::body::to_bytes(req.into_body(), limit as usize).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("upload exceeds the limit of {limit} bytes"),
            )
        }
    };
    let files: Vec<(String, Vec<u8>)> = {
        let parts =
            match multipart::boundary(&content_type).and_then(|b| multipart::parse(&body, &b)) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
        let parts: Vec<_> = parts
            .into_iter()
            .filter(|p| p.name.as_deref() == Some("file"))
            .collect();
        if parts.is_empty() {
            return error(StatusCode::BAD_REQUEST, "no file part in the upload");
        }
        let single = parts.len() == 1;
        let mut files = Vec::new();
        for p in parts {
            let target = match (&q.path, &p.filename) {
                (Some(path), _) if single && !path.is_empty() => path.clone(),
                (_, Some(f)) if !f.is_empty() => f.clone(),
                _ => return error(StatusCode::BAD_REQUEST, "a file part has no path"),
            };
            match user.path(&target) {
                Ok(t) => files.push((t, p.data)),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.message),
            }
        }
        files
    };
    let mut out = Vec::new();
    for (path, data) in files {
        match write(&agent, &user, &path, data).await {
            Ok(v) => out.push(v),
            Err(r) => return *r,
        }
    }
    axum::Json(out).into_response()
}
