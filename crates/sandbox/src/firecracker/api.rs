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
    Io {
        method: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("firecracker API {method} {path} timed out")]
    Timeout { method: &'static str, path: String },
    #[error("firecracker rejected {method} {path} ({status}): {body}")]
    Rejected {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("firecracker API {method} {path}: malformed response {0:?}", .response)]
    Malformed {
        method: &'static str,
        path: String,
        response: String,
    },
}

/// Send one request; returns the response body on 2xx.
pub async fn request(
    socket: &Path,
    method: &'static str,
    path: &str,
    body: Option<&Value>,
) -> Result<String, ApiError> {
    let fut = async {
        let mut s = UnixStream::connect(socket)
            .await
            .map_err(|e| ApiError::Connect(socket.display().to_string(), e))?;
        let io = |source| ApiError::Io {
            method,
            path: path.to_string(),
            source,
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        // Firecracker keeps the connection open: read the head, then exactly
        // Content-Length bytes of body.
        let mut resp = Vec::new();
        let head_end = loop {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.map_err(|e| ApiError::Io {
                method,
                path: path.to_string(),
                source: e,
            })?;
            if n == 0 {
                break None;
            }
            resp.extend_from_slice(&buf[..n]);
            if let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(i + 4);
            }
        };
        let malformed = |resp: &[u8]| ApiError::Malformed {
            method,
            path: path.to_string(),
            response: String::from_utf8_lossy(resp).chars().take(200).collect(),
        };
        let head_end = head_end.ok_or_else(|| malformed(&resp))?;
        let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| malformed(&resp))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while resp.len() < head_end + length {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.map_err(|e| ApiError::Io {
                method,
                path: path.to_string(),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            resp.extend_from_slice(&buf[..n]);
        }
        let body = String::from_utf8_lossy(&resp[head_end..]).into_owned();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ApiError::Rejected {
                method,
                path: path.to_string(),
                status,
                body,
            })
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::Timeout {
                method,
                path: path.to_string(),
            })
        })
}

pub async fn put(socket: &Path, path: &str, body: &Value) -> Result<(), ApiError> {
    request(socket, "PUT", path, Some(body)).await.map(|_| ())
}
