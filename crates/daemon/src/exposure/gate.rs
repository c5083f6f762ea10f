//! The front door for `PORT-NAME.<base_domain>`: authenticate, wake the
//! sandbox if it is stopped, and hand the request to the port proxy.
//!
//! Nothing here tells a label nobody exposed from one the caller may not
//! see: an unauthenticated caller gets 401 (or the login redirect) for
//! both, an authenticated non-owner 404 for both. Only public exposures
//! answer without a token.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ironclaw_net::ports;
use ironclaw_store::{ExposureRecord, SandboxRecord, SandboxState};

use super::cookie;
use crate::auth::{self, resolve_token, Caller};
use crate::error::ApiError;
use crate::AppState;

/// The login page on every exposure host (not forwarded): the cookie it
/// sets is scoped to that host.
pub const LOGIN_PATH: &str = "/.ironclaw/login";

/// Requests for a host under the base domain go to the exposure; all
/// others to the API.
pub async fn route_host(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return next.run(req).await;
    };
    let base = super::base_domain(&st.manager.config);
    match ports::parse_host(&host, &base) {
        Some((port, name)) => serve(st, req, port, name).await,
        None if under(&host, &base) => {
            ApiError::NotFound(format!("no exposed port is served at {host}")).into_response()
        }
        None => next.run(req).await,
    }
}

/// Is `host` a name below `base` (whatever its first label)?
fn under(host: &str, base: &str) -> bool {
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host.trim_end_matches('.')
        .to_ascii_lowercase()
        .ends_with(&format!(".{base}"))
}

async fn serve(st: AppState, req: Request, port: u16, name: String) -> Response {
    let label = ports::label(port, &name);
    if req.uri().path() == LOGIN_PATH {
        return login(&st, &label, req).await;
    }
    let exposure = match st.manager.store.exposure_by_label(&label) {
        Ok(e) => e,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let record = exposure
        .as_ref()
        .and_then(|e| st.manager.store.sandbox_by_id(&e.sandbox_id).ok());
    let (exposure, record) = match (exposure, record) {
        (Some(e), Some(r)) if e.public => (e, r),
        (e, r) => match who(&st, &label, &req) {
            Who::Nobody => return unauthenticated(&req),
            Who::BadToken => return ApiError::Unauthorized.into_response(),
            Who::Caller(c) => match (e, r) {
                (Some(e), Some(r)) if c.can_see(&r.owner) => (e, r),
                _ => return not_exposed(&label),
            },
        },
    };
    forward(st, req, exposure, record).await
}

fn not_exposed(label: &str) -> Response {
    ApiError::NotFound(format!("no exposed port '{label}'")).into_response()
}

enum Who {
    Nobody,
    BadToken,
    Caller(Caller),
}

/// The caller by bearer token, else by our cookie for this label.
fn who(st: &AppState, label: &str, req: &Request) -> Who {
    if let Some(h) = req.headers().get(header::AUTHORIZATION) {
        let token = h
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        return match token.and_then(|t| resolve_token(st, t)) {
            Some(c) => Who::Caller(c),
            None => Who::BadToken,
        };
    }
    let login = cookie::find(req.headers()).and_then(|v| st.ports.key.verify(label, &v));
    // The user may have been removed, or the token revoked, since.
    match login.and_then(|l| auth::still_valid(st, &l.user, &l.credential)) {
        Some(c) => Who::Caller(c),
        None => Who::Nobody,
    }
}

/// A browser is sent to log in; anything else gets the API's 401.
fn unauthenticated(req: &Request) -> Response {
    let html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if !(html && req.method() == Method::GET) {
        return ApiError::Unauthorized.into_response();
    }
    let next = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let to = format!("{LOGIN_PATH}?next={}", encode(&next));
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// Strip our credentials, wake the sandbox if needed, and proxy.
async fn forward(st: AppState, mut req: Request, e: ExposureRecord, r: SandboxRecord) -> Response {
    // The daemon's credentials never reach the sandbox: a private
    // exposure's Authorization is ours; a public one's only if it is a
    // daemon token (the app may use the header itself).
    let strip_auth = !e.public
        || req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| resolve_token(&st, t.trim()).is_some());
    if strip_auth {
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    let rest = cookie::without_ours(req.headers());
    req.headers_mut().remove(header::COOKIE);
    if let Some(v) = rest.and_then(|v| HeaderValue::from_str(&v).ok()) {
        req.headers_mut().insert(header::COOKIE, v);
    }

    let Some(ip) = st.manager.sandbox_address(&r) else {
        return ApiError::Unavailable(format!(
            "sandbox '{}' has no network (created with --network none): its ports cannot be served",
            r.name
        ))
        .into_response();
    };
    // A deployed app's port is served by its live release.
    let port = crate::deploy::serving_port(&st.manager, &r.id, e.port);
    let target = SocketAddr::new(ip.into(), port);
    st.ports.touch(&r.id);
    if let Err(why) = wake(&st, &r, target).await {
        return ApiError::Unavailable(why).into_response();
    }
    let fwd = ports::Forwarded {
        client: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        proto: if req.extensions().get::<super::tls::ViaTls>().is_some() {
            "https"
        } else {
            "http"
        },
    };
    let held = st.ports.begin(&r.id);
    ports::proxy_held(req, target, &fwd, held)
        .await
        .map(axum::body::Body::new)
}

/// Make sure the sandbox runs and `target` accepts, within the wake
/// timeout; a stopped sandbox is started. `Err` says why not.
async fn wake(st: &AppState, r: &SandboxRecord, target: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(st.manager.config.network.wake_timeout_secs);
    match r.state {
        SandboxState::Running => return Ok(()),
        SandboxState::Stopped | SandboxState::Creating => {}
        SandboxState::Crashed | SandboxState::Error => {
            return Err(format!(
                "sandbox '{}' is {}{}; see `ironclaw sandbox logs {}`",
                r.name,
                r.state.as_str(),
                r.state_reason
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
                r.name
            ))
        }
    }
    let started = tokio::time::Instant::now();
    if r.state == SandboxState::Stopped {
        tracing::info!(sandbox = %r.name, owner = %r.owner, "waking on a request to port {}", target.port());
        match tokio::time::timeout(timeout, st.manager.start(&r.id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("sandbox '{}' could not be woken: {e}", r.name)),
            Err(_) => {
                return Err(format!(
                    "sandbox '{}' did not start within wake_timeout_secs ({}s)",
                    r.name,
                    timeout.as_secs()
                ))
            }
        }
    }
    let left = timeout.saturating_sub(started.elapsed());
    ports::wait_accepting(target, left).await.map_err(|e| {
        format!(
            "sandbox '{}' is up but nothing accepted on port {} within wake_timeout_secs ({}s): {e}",
            r.name,
            target.port(),
            timeout.as_secs()
        )
    })
}

#[derive(Debug, Default, serde::Deserialize)]
struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

/// `GET ?token=` (once: the answer redirects to a URL without it) or a
/// POSTed form: set the host's cookie and go on to `next`. Without a token,
/// a form asking for one.
async fn login(st: &AppState, label: &str, req: Request) -> Response {
    let tls = req.extensions().get::<super::tls::ViaTls>().is_some();
    let form: LoginForm = match *req.method() {
        Method::GET => axum::extract::Query::<LoginForm>::try_from_uri(req.uri())
            .map(|q| q.0)
            .unwrap_or_default(),
        Method::POST => {
            use axum::extract::FromRequest;
            match axum::Form::<LoginForm>::from_request(req, &()).await {
                Ok(f) => f.0,
                Err(e) => return ApiError::BadRequest(e.body_text()).into_response(),
            }
        }
        _ => return ApiError::BadRequest("log in with GET or POST".into()).into_response(),
    };
    // Only a path on this host: no open redirect.
    let next = form
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into());
    let Some(token) = form.token.filter(|t| !t.trim().is_empty()) else {
        return login_page(&next);
    };
    let Some((caller, credential)) = auth::credential_of(st, token.trim()) else {
        return ApiError::Unauthorized.into_response();
    };
    let login = cookie::Login {
        user: caller.user,
        credential,
    };
    let value = st.ports.key.issue(label, &login);
    let secure = if tls { "; Secure" } else { "" };
    let set = format!(
        "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        cookie::NAME,
        cookie::LIFETIME_SECS
    );
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, set), (header::LOCATION, next)],
    )
        .into_response()
}

fn login_page(next: &str) -> Response {
    let next = next
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>IronClaw login</title>\
         <form method=post action=\"{LOGIN_PATH}\"><p>This port is private. Paste your IronClaw token:</p>\
         <input type=password name=token autofocus><input type=hidden name=next value=\"{next}\">\
         <button>Open</button></form>"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// Percent-encode a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
