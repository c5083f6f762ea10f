//! Firecracker's REST API over its Unix socket. Requests are few and small,
//! so a minimal HTTP/1.1 client (one connection per request) is enough.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("firecracker API socket {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("firecracker API {method} {path}: {source}")]
    Io { method: &'static str, path: String, source: std::io::Error },
    #[error("firecracker API {method} {path} timed out")]
    Timeout { method: &'static str, path: String },
    #[error("firecracker rejected {method} {path} ({status}): {body}")]
    Rejected { method: &'static str, path: String, status: u16, body: String },
    #[error("firecracker API {method} {path}: malformed response {0:?}", .response)]
    Malformed { method: &'static str, path: String, response: String },
}

/// Send one request; returns the response body on 2xx.
pub async fn request(socket: &Path, method: &'static str, path: &str, body: Option<&Value>) -> Result<String, ApiError> {
    let fut = async {
        let mut s = UnixStream::connect(socket)
            .await
            .map_err(|e| ApiError::Connect(socket.display().to_string(), e))?;
        let io = |source| ApiError::Io { method, path: path.to_string(), source };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.map_err(|e| ApiError::Io { method, path: path.to_string(), source: e })?;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ApiError::Malformed { method, path: path.to_string(), response: text.chars().take(200).collect() })?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ApiError::Rejected { method, path: path.to_string(), status, body })
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| Err(ApiError::Timeout { method, path: path.to_string() }))
}

pub async fn put(socket: &Path, path: &str, body: &Value) -> Result<(), ApiError> {
    request(socket, "PUT", path, Some(body)).await.map(|_| ())
}
