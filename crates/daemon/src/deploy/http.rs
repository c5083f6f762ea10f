//! Git smart HTTP for a deploy repository: `/v1/sandboxes/NAME/git/...`
//! runs the host's `git http-backend` (CGI), bodies streamed both ways.
//! The route sits behind the token check and the sandbox ownership check,
//! and `PATH_INFO` is built from the resolved sandbox id, so only that
//! sandbox's repository is reachable.

use std::process::Stdio;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::hook;
use crate::auth::{Caller, Target};
use crate::error::ApiError;
use crate::AppState;

/// The smart protocol's endpoints; anything else (the dumb protocol's
/// object paths) is not served.
fn endpoint(rest: &str) -> Option<&'static str> {
    match rest {
        "info/refs" => Some("info/refs"),
        "git-upload-pack" => Some("git-upload-pack"),
        "git-receive-pack" => Some("git-receive-pack"),
        _ => None,
    }
}

/// Largest CGI header block git http-backend writes (a few lines).
const MAX_CGI_HEADER: usize = 16 * 1024;

pub async fn serve(
    State(st): State<AppState>,
    t: Target,
    caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    let rest = path.split_once("/git/").map_or("", |(_, r)| r);
    let Some(ep) = endpoint(rest) else {
        return Err(ApiError::NotFound(format!("no git endpoint '{rest}'")));
    };
    let data_dir = &st.manager.data_dir;
    let repo = super::repo_path(data_dir, &t.id);
    if !repo.join("HEAD").exists() {
        return Err(ApiError::NotFound(format!(
            "sandbox '{}' has no deploy repository; run `ironclaw deploy init {}`",
            t.name, t.name
        )));
    }
    let (parts, body) = req.into_parts();
    let hval = |h: &str| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", super::root(data_dir))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", super::root(data_dir))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{}.git/{ep}", t.id))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", hval("content-type"))
        .env("REMOTE_USER", &caller.user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .current_dir(super::root(data_dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    super::limit_env(&mut cmd, &st.manager.config);
    // No CONTENT_LENGTH (a chunked push): http-backend reads to EOF.
    let length = hval("content-length");
    if !length.is_empty() {
        cmd.env("CONTENT_LENGTH", &length);
    }
    for (h, var) in [
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        let v = hval(h);
        if !v.is_empty() {
            cmd.env(var, v);
        }
    }
    // A push runs the release from the pre-receive hook, which calls back
    // on this push's socket.
    let socket = if ep == "git-receive-pack" && parts.method == axum::http::Method::POST {
        let s = hook::open(st.manager.clone(), t.id.clone())
            .map_err(|e| ApiError::Internal(format!("deploy hook socket: {e}")))?;
        let bin = std::env::current_exe()
            .map_err(|e| ApiError::Internal(format!("locating ironclawd: {e}")))?;
        cmd.env(hook::ENV_SOCKET, &s.path)
            .env(hook::ENV_SECRET, &s.secret)
            .env(hook::ENV_BIN, bin);
        Some(s)
    } else {
        None
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::Internal(format!("running git http-backend: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    tokio::spawn(async move {
        let mut body = body.into_data_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // Dropping stdin is the EOF http-backend reads to.
    });
    let name = t.name.clone();
    tokio::spawn(async move {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        if !err.trim().is_empty() {
            tracing::warn!(sandbox = %name, "git http-backend: {}", err.trim());
        }
    });
    let mut out = BufReader::new(stdout);
    let mut builder = Response::builder().status(StatusCode::OK);
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .await
            .map_err(|e| ApiError::Internal(format!("reading git http-backend: {e}")))?;
        header_bytes += n;
        // It ends before answering only on a request it cannot read (a
        // truncated or bad gzip body, say).
        if n == 0 || header_bytes > MAX_CGI_HEADER {
            return Err(ApiError::BadRequest(
                "git http-backend could not read this request".into(),
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse().ok());
            builder = builder.status(code.unwrap_or(500));
        } else if let Ok(hv) = HeaderValue::from_str(v) {
            builder = builder.header(k, hv);
        }
    }
    // The rest streams as it comes; the child and the push socket live
    // as long as the body does.
    let stream = futures::stream::unfold(
        (out, Some((child, socket))),
        |(mut out, mut keep)| async move {
            let mut buf = vec![0u8; 64 * 1024];
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    if let Some((mut child, _socket)) = keep.take() {
                        let _ = child.wait().await;
                    }
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                        (out, keep),
                    ))
                }
            }
        },
    );
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
