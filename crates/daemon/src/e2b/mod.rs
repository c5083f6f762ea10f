//! The E2B-compatible API, so the official `e2b` SDK works unmodified with
//! `E2B_API_URL` and `E2B_SANDBOX_URL` set to the daemon and `E2B_API_KEY`
//! an IronClaw token.
//!
//! - Control plane (`/sandboxes`, `/v2/sandboxes`), authenticated by
//!   `X-API-KEY`: [`control`].
//! - envd, the agent E2B runs in each sandbox: requests carrying an
//!   `E2b-Sandbox-Id` header, authenticated by the envd access token handed
//!   out at create (`X-Access-Token`) or an API key. Connect RPCs for
//!   processes ([`process`]) and the filesystem ([`filesystem`]), and the
//!   `/files` and `/health` routes ([`files`]).
//! - Any other sandbox port (`E2b-Sandbox-Port`, what `get_host(port)`
//!   traffic and the Code Interpreter SDK send): proxied into the
//!   sandbox ([`port`]).
//!
//! Sandboxes made here are IronClaw sandboxes of the token's user, named by
//! their E2B id; [`timeout`] enforces their end time.

pub mod connect;
pub mod control;
pub mod files;
pub mod filesystem;
pub mod multipart;
pub mod port;
pub mod process;
pub mod registry;
pub mod timeout;
pub mod users;
pub mod watch;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ironclaw_store::E2bRecord;

use crate::auth::Caller;
use crate::AppState;

/// The envd version reported to clients: the SDK enables features by it
/// (stdin control, octet-stream uploads, default user).
pub const ENVD_VERSION: &str = "0.5.7";
/// The header that marks a request for a sandbox's envd.
pub const SANDBOX_HEADER: &str = "e2b-sandbox-id";

/// State of the E2B API that lives only while the daemon runs: the
/// processes started through envd.
#[derive(Default)]
pub struct E2b {
    pub procs: process::Registry,
    pub watchers: watch::Watchers,
}

impl E2b {
    /// Forget what ran in a sandbox that stops or goes away.
    pub fn forget_sandbox(&self, sandbox: &str) {
        self.procs.forget_sandbox(sandbox);
        self.watchers.forget_sandbox(sandbox);
    }
}

impl E2b {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }
}

/// The control plane's routes (merged into the daemon's router).
pub fn control_routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes", get(control::list_v1).post(control::create))
        .route("/v2/sandboxes", get(control::list_v2).post(control::create))
        .route("/sandboxes/:id", get(control::show).delete(control::kill))
        .route("/sandboxes/:id/timeout", post(control::set_timeout))
        .route("/sandboxes/:id/pause", post(control::pause))
        .route("/sandboxes/:id/resume", post(control::connect))
        .route("/sandboxes/:id/connect", post(control::connect))
        .route("/v2/sandboxes/:id/connect", post(control::connect))
}

/// Outer layer: a request with the `E2b-Sandbox-Id` header goes to envd,
/// anything else on to the daemon's own routes.
pub async fn route_envd(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !req.headers().contains_key(SANDBOX_HEADER) {
        return next.run(req).await;
    }
    match port::requested(req.headers()) {
        Ok(Some(p)) => return port::proxy(st, p, req).await,
        Ok(None) => {}
        Err(r) => return *r,
    }
    use axum::http::Method;
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => files::health(st, req).await,
        (Method::GET, "/files") => files::download(st, req).await,
        (Method::POST, "/files") => files::upload(st, req).await,
        (Method::POST, p) if p.starts_with("/process.Process/") => {
            process::dispatch(st, &p["/process.Process/".len()..], req).await
        }
        (Method::POST, p) if p.starts_with("/filesystem.Filesystem/") => {
            filesystem::dispatch(st, &p["/filesystem.Filesystem/".len()..], req).await
        }
        _ => connect::ConnectError::new(connect::Code::Unimplemented, "no such envd route")
            .into_response(),
    }
}

/// A router serving only the E2B API (for `--e2b-listen`).
pub fn router(state: AppState) -> Router {
    control_routes()
        .fallback(|| async { control::error(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            route_envd,
        ))
        .with_state(state)
}

/// The caller of a control-plane request: `X-API-KEY` (what the SDK sends),
/// or a bearer token.
pub fn api_caller(st: &AppState, headers: &HeaderMap) -> Option<Caller> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
        })?;
    crate::auth::resolve_token(st, key)
}

/// Why an envd request is refused.
pub enum EnvdRefusal {
    /// No such sandbox, or not the caller's: the same answer either way.
    Unknown(String),
    Unauthenticated,
}

/// The E2B sandbox an envd request is for, if its credential allows it:
/// the sandbox's own access token, or an API key of a user who may see it.
pub fn envd_target(st: &AppState, headers: &HeaderMap) -> Result<E2bRecord, EnvdRefusal> {
    target_by(st, headers, &["x-access-token"])
}

/// [`envd_target`] with the sandbox's access token taken from the first
/// of `token_headers` present.
pub fn target_by(
    st: &AppState,
    headers: &HeaderMap,
    token_headers: &[&str],
) -> Result<E2bRecord, EnvdRefusal> {
    let id = headers
        .get(SANDBOX_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let unknown = || EnvdRefusal::Unknown(format!("sandbox {id} not found"));
    let rec = match st.manager.store.e2b_by_id(&id) {
        Ok(Some(r)) => r,
        _ => return Err(unknown()),
    };
    let token = token_headers
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let Some(t) = token {
        if crate::auth::constant_time_eq(t.as_bytes(), rec.access_token.as_bytes()) {
            return Ok(rec);
        }
        return Err(EnvdRefusal::Unauthenticated);
    }
    match api_caller(st, headers) {
        Some(c) => {
            let owner = st
                .manager
                .by_id(&rec.sandbox_id)
                .map(|r| r.owner)
                .map_err(|_| unknown())?;
            if c.can_see(&owner) {
                Ok(rec)
            } else {
                Err(unknown())
            }
        }
        None => Err(EnvdRefusal::Unauthenticated),
    }
}

impl EnvdRefusal {
    pub fn connect_error(self) -> connect::ConnectError {
        use connect::{Code, ConnectError};
        match self {
            EnvdRefusal::Unknown(m) => ConnectError::new(Code::NotFound, m),
            EnvdRefusal::Unauthenticated => {
                ConnectError::new(Code::Unauthenticated, "missing or invalid access token")
            }
        }
    }
}

impl IntoResponse for EnvdRefusal {
    fn into_response(self) -> Response {
        match self {
            EnvdRefusal::Unknown(m) => control::error(StatusCode::NOT_FOUND, &m),
            EnvdRefusal::Unauthenticated => {
                control::error(StatusCode::UNAUTHORIZED, "missing or invalid access token")
            }
        }
    }
}

/// The guest agent of an envd request's sandbox.
pub async fn envd_agent(
    st: &AppState,
    rec: &E2bRecord,
) -> Result<ironclaw_sandbox::AgentClient, connect::ConnectError> {
    st.manager.agent(&rec.sandbox_id).await.map_err(|e| {
        connect::ConnectError::new(
            connect::Code::Unavailable,
            format!("sandbox {} is not running: {e}", rec.e2b_id),
        )
    })
}
