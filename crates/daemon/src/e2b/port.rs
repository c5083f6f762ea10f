//! Requests for a sandbox port other than envd's: what E2B's SDKs send to
//! `sandbox.get_host(port)` (the code interpreter's port 49999 among them)
//! when `E2B_SANDBOX_URL` points at the daemon, marked by the
//! `E2b-Sandbox-Port` header. Each is proxied as plain HTTP/1.1 to
//! 127.0.0.1:PORT inside the caller's own sandbox, over a connection the
//! guest agent opens there ([`AgentClient::tcp_connect`]), the bodies
//! streamed both ways. Credentials are the envd ones plus E2B's traffic
//! access token, and none of them reaches the sandbox.
//!
//! [`AgentClient::tcp_connect`]: ironclaw_sandbox::AgentClient::tcp_connect

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use ironclaw_sandbox::types::ErrorKind;
use ironclaw_sandbox::AgentError;
use serde_json::json;

use super::{api_caller, target_by};
use crate::AppState;

/// The header naming the sandbox port a request is for.
pub const PORT_HEADER: &str = "e2b-sandbox-port";
/// envd's port: requests for it (or with no port) are served by the
/// daemon's envd routes, never proxied.
pub const ENVD_PORT: u16 = 49983;
/// E2B's token for a sandbox's ports; here the sandbox's access token.
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";
/// How long the guest agent may take to open the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers of one hop, not forwarded (RFC 9110 7.6.1), and the ones that
/// address or authenticate this proxy.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    super::SANDBOX_HEADER,
    PORT_HEADER,
    TRAFFIC_TOKEN_HEADER,
    "x-access-token",
    "x-api-key",
];

/// The port a request is for: `None` for envd, an error answer for a
/// header that is not a port.
pub fn requested(headers: &HeaderMap) -> Result<Option<u16>, Box<Response>> {
    let Some(v) = headers.get(PORT_HEADER) else {
        return Ok(None);
    };
    match v.to_str().ok().and_then(|s| s.trim().parse::<u16>().ok()) {
        Some(ENVD_PORT) => Ok(None),
        Some(p) if p > 0 => Ok(Some(p)),
        _ => Err(Box::new(super::control::error(
            StatusCode::BAD_REQUEST,
            "E2b-Sandbox-Port must be a port number (1-65535)",
        ))),
    }
}

fn bad_gateway(sandbox: &str, port: u16, message: String) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(json!({
            "code": 502,
            "message": message,
            "sandboxId": sandbox,
            "port": port,
        })),
    )
        .into_response()
}

/// Proxy `req` to `port` in its sandbox.
pub async fn proxy(st: AppState, port: u16, mut req: Request) -> Response {
    let rec = match target_by(
        &st,
        req.headers(),
        &["x-access-token", TRAFFIC_TOKEN_HEADER],
    ) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    let id = rec.e2b_id.as_str();
    let agent = match st.manager.agent(&rec.sandbox_id).await {
        Ok(a) => a,
        Err(e) => return bad_gateway(id, port, format!("sandbox {id} is not running: {e}")),
    };
    let tunnel = match agent.tcp_connect(port, CONNECT_TIMEOUT).await {
        Ok(t) => t,
        Err(AgentError::Guest {
            kind: ErrorKind::NotFound,
            message,
        }) => {
            return bad_gateway(
                id,
                port,
                format!("the sandbox is running but nothing listens on port {port} ({message})"),
            )
        }
        Err(e) => return bad_gateway(id, port, format!("connecting to port {port}: {e}")),
    };
    let credential_was_bearer = uses_bearer(&st, req.headers());
    // A protocol switch (WebSocket...) is asked for end to end: the
    // headers go on, and a 101 splices the two connections together.
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut up = Request::new(body);
    *up.method_mut() = parts.method;
    *up.version_mut() = Version::HTTP_11;
    *up.uri_mut() = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    let headers = up.headers_mut();
    copy_forwarded(&parts.headers, headers);
    if credential_was_bearer {
        headers.remove(header::AUTHORIZATION);
    }
    if let Ok(host) = HeaderValue::from_str(&format!("127.0.0.1:{port}")) {
        headers.insert(header::HOST, host);
    }
    if let Some(u) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u.clone());
    }
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tunnel)).await
    {
        Ok(c) => c,
        Err(e) => return bad_gateway(id, port, format!("port {port}: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("e2b port proxy connection: {e}");
        }
    });
    let resp = match sender.send_request(up).await {
        Ok(r) => r,
        Err(e) => {
            return bad_gateway(
                id,
                port,
                format!("port {port} did not answer with HTTP: {e}"),
            )
        }
    };
    let mut resp = resp;
    let switched = match client_upgrade {
        Some(client) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            splice(client, hyper::upgrade::on(&mut resp));
            true
        }
        _ => false,
    };
    let (mut parts, body) = resp.into_parts();
    let mut out = HeaderMap::new();
    copy_forwarded(&parts.headers, &mut out);
    if switched {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(u) = parts.headers.get(header::UPGRADE) {
            out.insert(header::UPGRADE, u.clone());
        }
    }
    parts.headers = out;
    Response::from_parts(parts, Body::new(body))
}

/// Once both sides have switched protocols, copy bytes between them until
/// either closes.
fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => return tracing::debug!("e2b port proxy upgrade: {e}"),
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!("e2b port proxy upgraded connection: {e}");
        }
    });
}

/// Was the request's credential an `Authorization: Bearer` IronClaw token
/// (no access token, no `X-API-KEY`)? Then it goes no further; an
/// `Authorization` header that is not ours is the app's and is kept.
fn uses_bearer(st: &AppState, headers: &HeaderMap) -> bool {
    let other = ["x-access-token", TRAFFIC_TOKEN_HEADER, "x-api-key"];
    !other.iter().any(|h| headers.contains_key(*h))
        && headers.contains_key(header::AUTHORIZATION)
        && api_caller(st, headers).is_some()
}

/// `from`'s end-to-end headers, without the ones [`NOT_FORWARDED`] and
/// those the `Connection` header names.
fn copy_forwarded(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || named.iter().any(|c| c == n) {
            continue;
        }
        to.append(HeaderName::clone(name), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_header_picks_envd_or_a_port() {
        let mut h = HeaderMap::new();
        assert_eq!(requested(&h).unwrap(), None);
        h.insert(PORT_HEADER, "49983".parse().unwrap());
        assert_eq!(requested(&h).unwrap(), None);
        h.insert(PORT_HEADER, "49999".parse().unwrap());
        assert_eq!(requested(&h).unwrap(), Some(49999));
        for bad in ["0", "65536", "x", "-1"] {
            h.insert(PORT_HEADER, bad.parse().unwrap());
            assert!(requested(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_headers_and_credentials_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "icl_secret"),
            ("x-access-token", "tok"),
            ("e2b-traffic-access-token", "tok"),
            ("e2b-sandbox-id", "i1"),
            ("e2b-sandbox-port", "8000"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-app", "kept"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        let mut out = HeaderMap::new();
        copy_forwarded(&h, &mut out);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-app"]);
    }
}
