//! Bearer-token authentication. The admin token is created on first start
//! in DATA_DIR/admin.token with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Read the admin token, creating it (random, 0600) on first start.
pub fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let token = format!("icl_{token}");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    Ok(token)
}

/// Compare without an early exit, so timing does not reveal a prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Routes that are WebSocket upgrades: the only ones where a token may come
/// in the query string (browsers cannot set headers on an upgrade).
fn is_websocket_route(req: &Request) -> bool {
    let path = req.uri().path();
    let ws_path = path == "/v1/chat/ws"
        || (path.starts_with("/v1/sandboxes/")
            && (path.ends_with("/exec/ws") || path.ends_with("/console/ws")));
    let upgrade = req
        .headers()
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    ws_path && upgrade && req.method() == axum::http::Method::GET
}

/// The git endpoints of deploy repositories: git clients send the token as
/// HTTP basic auth (`http://x:TOKEN@host/...`), so there it is accepted as
/// the password too.
fn is_git_route(req: &Request) -> bool {
    let p = req.uri().path();
    p.starts_with("/v1/sandboxes/") && p.contains("/git/")
}

/// The password of `Basic base64(user:password)`.
fn basic_password(h: &str) -> Option<String> {
    use base64::Engine;
    let b = h.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    Some(s.split_once(':')?.1.trim().to_string())
}

/// A `token=` in the query string, if any.
fn query_token(req: &Request) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Q {
        token: Option<String>,
    }
    req.uri().query()?;
    match axum::extract::Query::<Q>::try_from_uri(req.uri()) {
        Ok(q) => q.0.token,
        // Unparseable (e.g. `token` twice): treat as presenting one.
        Err(_) => Some(String::new()),
    }
}

/// The token a request presents. `Err` when it carries one in the query
/// string of a route that is not a WebSocket upgrade: URLs end up in logs
/// and browser history, so such a token is refused even with a header.
fn presented_token(req: &Request) -> Result<Option<String>, ()> {
    let in_query = query_token(req);
    if in_query.is_some() && !is_websocket_route(req) {
        return Err(());
    }
    if let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let h = h.to_str().ok();
        if is_git_route(req) {
            if let Some(t) = h.and_then(basic_password) {
                return Ok(Some(t));
            }
        }
        return Ok(h
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string()));
    }
    Ok(in_query)
}

/// 429 with `Retry-After`, naming the limit.
fn too_many_requests(user: &str, rpm: u32, wait_secs: u64) -> Response {
    let mut resp = (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        axum::Json(crate::error::body(
            "rate_limited",
            &format!(
                "rate limit exceeded: requests_per_minute {rpm} for user {user}; retry in {wait_secs} s"
            ),
        )),
    )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(wait_secs),
    );
    resp
}

/// Who is calling: set by [`require_token`] on every authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
}

impl Caller {
    /// May this caller see a resource owned by `owner`?
    pub fn can_see(&self, owner: &str) -> bool {
        self.admin || self.user == owner
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs the admin token".into()))
        }
    }
}

#[axum::async_trait]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// Who `token` belongs to: the admin token from the data dir, or a user
/// token from the store (compared by hash). `None` for any other.
pub fn resolve_token(state: &AppState, token: &str) -> Option<Caller> {
    credential_of(state, token).map(|(c, _)| c)
}

/// The caller and which credential `token` is: a stored token's id, or
/// `admin-<tag>` for the daemon's own admin token (the tag changes when
/// that token does). What a port cookie is bound to.
pub fn credential_of(state: &AppState, token: &str) -> Option<(Caller, String)> {
    if token.is_empty() {
        return None;
    }
    if constant_time_eq(token.as_bytes(), state.token.as_bytes()) {
        let admin = Caller {
            user: "admin".into(),
            admin: true,
        };
        return Some((admin, admin_credential(state)));
    }
    match state.manager.store.token_owner(token) {
        Ok(Some(owner)) => Some((
            Caller {
                user: owner.user,
                admin: owner.admin,
            },
            owner.token_id,
        )),
        _ => None,
    }
}

/// The caller `user` is now, if `credential` (from [`credential_of`]) is
/// still valid: not revoked, and the user still exists.
pub fn still_valid(state: &AppState, user: &str, credential: &str) -> Option<Caller> {
    if credential.starts_with("admin-") {
        return (user == "admin"
            && constant_time_eq(credential.as_bytes(), admin_credential(state).as_bytes()))
        .then(|| Caller {
            user: "admin".into(),
            admin: true,
        });
    }
    let u = state.manager.store.user(user).ok()?;
    state
        .manager
        .store
        .token_exists(user, credential)
        .ok()?
        .then_some(Caller {
            user: u.name,
            admin: u.admin,
        })
}

fn admin_credential(state: &AppState) -> String {
    let hash = ironclaw_store::users::hash_token(&state.token);
    format!("admin-{}", &hash[..16])
}

/// Resolve the bearer token to a [`Caller`]: the admin token from the data
/// dir, or a user token from the store (compared by hash).
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = match presented_token(&req) {
        Ok(t) => t,
        Err(()) => {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(crate::error::body(
                    "unauthorized",
                    "a token in the query string is accepted only on WebSocket routes; send it as `Authorization: Bearer TOKEN`",
                )),
            )
                .into_response()
        }
    };
    // Rate buckets are per token (by hash: the token itself is not kept).
    let bucket = presented.as_deref().map(ironclaw_store::users::hash_token);
    let caller = presented.as_deref().and_then(|t| resolve_token(&state, t));
    match caller {
        Some(c) => {
            let rpm = state
                .manager
                .config
                .quotas
                .for_user(&c.user, c.admin)
                .requests_per_minute;
            if let (Some(rpm), Some(key)) = (rpm, &bucket) {
                if let Err(wait) = state.limiter.take(key, rpm) {
                    return too_many_requests(&c.user, rpm, wait);
                }
            }
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        None => {
            let mut resp = ApiError::Unauthorized.into_response();
            // git asks for (or sends the URL's) credentials only when told
            // basic auth is wanted.
            if is_git_route(&req) {
                resp.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"ironclaw\""),
                );
            }
            resp
        }
    }
}

/// The sandbox a `/v1/sandboxes/NAME/...` request is about, resolved by
/// [`sandbox_access`] in the caller's namespace (or, for the admin, in the
/// namespace `?owner=USER` names). Handlers act on `id`, never on a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub name: String,
    pub owner: String,
}

#[axum::async_trait]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Target>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("sandbox route without a resolved sandbox".into()))
    }
}

/// The `?owner=` of a request, if any (empty = none). Given twice it is a
/// 400: falling back to the caller's own namespace would make the admin's
/// `DELETE .../dev?owner=bob&owner=bob` remove the admin's own `dev`.
pub fn owner_param(uri: &axum::http::Uri) -> Result<Option<String>, ApiError> {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
        .0;
    let mut owners = pairs.into_iter().filter(|(k, _)| k == "owner");
    let owner = owners.next().map(|(_, v)| v);
    if owners.next().is_some() {
        return Err(ApiError::BadRequest("?owner= given more than once".into()));
    }
    Ok(owner.filter(|o| !o.is_empty()))
}

/// The one answer for a sandbox the caller cannot reach, whether it exists
/// under another owner or nowhere: nothing tells the two apart.
pub fn sandbox_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("sandbox '{name}' not found"))
}

/// Whose namespace a request means: the caller's own, or for the admin the
/// `?owner=` one. `None` when a non-admin names someone else.
pub fn namespace_of(caller: &Caller, owner: Option<String>) -> Option<String> {
    match owner {
        None => Some(caller.user.clone()),
        Some(o) if caller.admin || o == caller.user => Some(o),
        Some(_) => None,
    }
}

/// Sandbox routes: resolve NAME in the caller's namespace (the admin may
/// name another with `?owner=USER`) to a [`Target`]. Another user's
/// sandbox is exactly the 404 of a missing one, so names do not leak.
pub async fn sandbox_access(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return ApiError::Unauthorized.into_response();
    };
    let Some(name) = req
        .uri()
        .path()
        .strip_prefix("/v1/sandboxes/")
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string)
    else {
        return ApiError::NotFound("no such route".into()).into_response();
    };
    let owner = match owner_param(req.uri()) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let Some(owner) = namespace_of(&caller, owner) else {
        return sandbox_not_found(&name).into_response();
    };
    match state.manager.store.sandbox(&owner, &name) {
        Ok(r) => {
            req.extensions_mut().insert(Target {
                id: r.id,
                name: r.name,
                owner: r.owner,
            });
            next.run(req).await
        }
        Err(ironclaw_store::StoreError::NotFound(_)) => sandbox_not_found(&name).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
