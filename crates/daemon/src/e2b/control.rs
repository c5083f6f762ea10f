//! E2B's control plane: create, show, list, kill, set the timeout, pause
//! and connect (resume). Errors are E2B's `{"code": STATUS, "message"}`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ironclaw_store::{E2bRecord, SandboxRecord, SandboxState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{api_caller, ENVD_VERSION};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::manager::CreateRequest;
use crate::AppState;

/// E2B's default sandbox lifetime.
const DEFAULT_TIMEOUT_SECS: i64 = 300;
/// The longest timeout accepted (E2B's own limit for Pro teams).
pub const MAX_TIMEOUT_SECS: i64 = 24 * 3600;
/// The end time of a paused sandbox: it does not time out.
pub const NEVER: i64 = i64::MAX / 2;

pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    let message = e.to_string();
    let status = e.into_response().status();
    error(status, &message)
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Invalid API key")
}

/// The caller of a control-plane request, under their request rate
/// (`requests_per_minute`, counted per key like the `/v1` API's).
fn authorize(st: &AppState, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let Some(caller) = api_caller(st, headers) else {
        return Err(Box::new(unauthorized()));
    };
    let rpm = st
        .manager
        .config
        .quotas
        .for_user(&caller.user, caller.admin)
        .requests_per_minute;
    if let (Some(rpm), Some(key)) = (rpm, headers.get("x-api-key").and_then(|v| v.to_str().ok())) {
        let bucket = ironclaw_store::users::hash_token(key.trim());
        if let Err(wait) = st.limiter.take(&bucket, rpm) {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "rate limit exceeded: requests_per_minute {rpm} for user {}; retry in {wait} s",
                    caller.user
                ),
            );
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(wait));
            return Err(Box::new(r));
        }
    }
    Ok(caller)
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("sandbox {id} not found"))
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs.min(253_402_300_799), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The caller's E2B sandbox `id`: [`authorize`], then [`lookup`].
fn owned(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(E2bRecord, SandboxRecord), Box<Response>> {
    lookup(st, &authorize(st, headers)?, id)
}

/// The caller's E2B sandbox `id` (another user's is the same 404).
fn lookup(
    st: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(E2bRecord, SandboxRecord), Box<Response>> {
    let rec = match st.manager.store.e2b_by_id(id) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(Box::new(not_found(id))),
        Err(e) => return Err(Box::new(api_error(e.into()))),
    };
    let sb = st
        .manager
        .by_id(&rec.sandbox_id)
        .map_err(|_| Box::new(not_found(id)))?;
    if !caller.can_see(&sb.owner) {
        return Err(Box::new(not_found(id)));
    }
    Ok((rec, sb))
}

fn state_of(sb: &SandboxRecord) -> &'static str {
    match sb.state {
        SandboxState::Running | SandboxState::Creating => "running",
        _ => "paused",
    }
}

/// `Sandbox`: what create and connect answer.
fn sandbox_json(rec: &E2bRecord) -> Value {
    json!({
        "templateID": rec.template_id,
        "sandboxID": rec.e2b_id,
        "clientID": "ironclaw",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": rec.access_token,
        // What the SDKs send to the sandbox's other ports (port::proxy).
        "trafficAccessToken": rec.access_token,
        "domain": null,
    })
}

/// `ListedSandbox` (and, with the token, `SandboxDetail`).
fn detail_json(rec: &E2bRecord, sb: &SandboxRecord, with_token: bool) -> Value {
    let started = sb
        .started_at
        .clone()
        .unwrap_or_else(|| sb.created_at.clone());
    let end = if rec.end_at >= NEVER {
        started.clone()
    } else {
        rfc3339(rec.end_at)
    };
    let mut v = json!({
        "templateID": rec.template_id,
        "alias": rec.template_id,
        "sandboxID": rec.e2b_id,
        "clientID": "ironclaw",
        "startedAt": started,
        "endAt": end,
        "cpuCount": sb.vcpus,
        "memoryMB": sb.memory_mib,
        "diskSizeMB": sb.disk_mib,
        "envdVersion": ENVD_VERSION,
        "state": state_of(sb),
        "metadata": rec.metadata,
    });
    if with_token {
        v["envdAccessToken"] = json!(rec.access_token);
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<i64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    auto_pause: Option<bool>,
    #[serde(default)]
    allow_internet_access: Option<bool>,
}

fn check_timeout(t: Option<i64>) -> Result<i64, Box<Response>> {
    match t.unwrap_or(DEFAULT_TIMEOUT_SECS) {
        t if !(0..=MAX_TIMEOUT_SECS).contains(&t) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("timeout must be between 0 and {MAX_TIMEOUT_SECS} seconds"),
        ))),
        t => Ok(t),
    }
}

/// The IronClaw image a template names: an image of that name; for E2B's
/// default template `base` the daemon's default image when no image is
/// called `base`; for the Code Interpreter SDK's templates an image named
/// `code-interpreter`, else the first one built from that source.
fn image_for(st: &AppState, template: &str) -> String {
    use ironclaw_sandbox::image::{self, ImageSource};
    let dir = st.manager.images_dir();
    if image::get(&dir, template).is_ok() {
        return template.to_string();
    }
    match template {
        "base" => st.manager.config.default_image.clone(),
        t if CODE_INTERPRETER_TEMPLATES.contains(&t) => {
            let source = ImageSource::CodeInterpreter;
            if image::get(&dir, source.as_str()).is_ok() {
                return source.as_str().to_string();
            }
            image::list(&dir)
                .ok()
                .and_then(|all| all.into_iter().find(|m| m.source == source))
                .map(|m| m.name)
                .unwrap_or_else(|| template.to_string())
        }
        t => t.to_string(),
    }
}

/// The templates of E2B's Code Interpreter SDK (its default first).
const CODE_INTERPRETER_TEMPLATES: &[&str] = &["code-interpreter-v1", "code-interpreter"];

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `POST /sandboxes` and `POST /v2/sandboxes`.
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = match authorize(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let req: NewSandbox = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    let timeout = match check_timeout(req.timeout) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let template = req.template_id.unwrap_or_else(|| "base".into());
    let e2b_id = format!("i{}", random_hex(10));
    let create = CreateRequest {
        name: e2b_id.clone(),
        image: Some(image_for(&st, &template)),
        network: req
            .allow_internet_access
            .map(|a| if a { "internet" } else { "none" }.to_string()),
        ..Default::default()
    };
    let sb = match st.manager.create(create, &caller.user).await {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    let rec = E2bRecord {
        sandbox_id: sb.id.clone(),
        e2b_id,
        template_id: template,
        metadata: req.metadata.unwrap_or_default(),
        env_vars: req.env_vars.unwrap_or_default(),
        access_token: random_hex(24),
        end_at: now_secs() + timeout,
        on_timeout: if req.auto_pause == Some(true) {
            "pause"
        } else {
            "kill"
        }
        .into(),
    };
    if let Err(e) = st.manager.store.insert_e2b(&rec) {
        let _ = st.manager.remove(&sb.id).await;
        return api_error(e.into());
    }
    (StatusCode::CREATED, axum::Json(sandbox_json(&rec))).into_response()
}

/// `GET /sandboxes/{id}`.
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match owned(&st, &headers, &id) {
        Ok((rec, sb)) => axum::Json(detail_json(&rec, &sb, true)).into_response(),
        Err(r) => *r,
    }
}

/// `DELETE /sandboxes/{id}`.
pub async fn kill(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (rec, _) = match owned(&st, &headers, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    st.e2b.forget_sandbox(&rec.sandbox_id);
    match st.manager.remove(&rec.sandbox_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct TimeoutBody {
    timeout: i64,
}

/// `POST /sandboxes/{id}/timeout`: the sandbox ends `timeout` s from now.
pub async fn set_timeout(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let caller = match authorize(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let t: TimeoutBody = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    let timeout = match check_timeout(Some(t.timeout)) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let (rec, sb) = match lookup(&st, &caller, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if state_of(&sb) != "running" {
        return error(StatusCode::CONFLICT, &format!("sandbox {id} is paused"));
    }
    match st
        .manager
        .store
        .set_e2b_end(&rec.sandbox_id, now_secs() + timeout)
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e.into()),
    }
}

/// `POST /sandboxes/{id}/pause`: stopped, its disk kept; no timeout runs
/// while paused.
pub async fn pause(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (rec, sb) = match owned(&st, &headers, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if state_of(&sb) == "paused" {
        return error(
            StatusCode::CONFLICT,
            &format!("sandbox {id} is already paused"),
        );
    }
    st.e2b.forget_sandbox(&rec.sandbox_id);
    if let Err(e) = st.manager.stop(&rec.sandbox_id).await {
        return api_error(e);
    }
    match st.manager.store.set_e2b_end(&rec.sandbox_id, NEVER) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ConnectBody {
    timeout: Option<i64>,
}

/// `POST /v2/sandboxes/{id}/connect` (and the older resume): starts a
/// paused sandbox (201) or extends a running one's timeout (200).
pub async fn connect(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let caller = match authorize(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let b: ConnectBody = if body.is_empty() {
        ConnectBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
        }
    };
    let timeout = match check_timeout(b.timeout) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let (rec, sb) = match lookup(&st, &caller, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let end = now_secs() + timeout;
    let (status, end) = if state_of(&sb) == "running" {
        (StatusCode::OK, rec.end_at.max(end))
    } else {
        if let Err(e) = st.manager.start(&rec.sandbox_id).await {
            return api_error(e);
        }
        (StatusCode::CREATED, end)
    };
    if let Err(e) = st.manager.store.set_e2b_end(&rec.sandbox_id, end) {
        return api_error(e.into());
    }
    (status, axum::Json(sandbox_json(&rec))).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// `k=v&k2=v2`, each part percent-encoded.
    metadata: Option<String>,
    /// Comma-separated `running`, `paused`.
    state: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

/// Parse E2B's metadata filter (`k=v&k2=v2`, keys and values quoted).
pub fn metadata_filter(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(&k), dec(&v))
        })
        .collect()
}

fn list(st: &AppState, caller: &Caller, q: ListQuery, default_states: &[&str]) -> Response {
    let recs = match st.manager.store.e2b_of(&caller.user) {
        Ok(r) => r,
        Err(e) => return api_error(e.into()),
    };
    let states: Vec<String> = match &q.state {
        Some(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
        None => default_states.iter().map(|s| s.to_string()).collect(),
    };
    let want = q
        .metadata
        .as_deref()
        .map(metadata_filter)
        .unwrap_or_default();
    let all: Vec<Value> = recs
        .iter()
        .filter_map(|rec| {
            let sb = st.manager.by_id(&rec.sandbox_id).ok()?;
            let ok = states.iter().any(|s| s == state_of(&sb))
                && want.iter().all(|(k, v)| rec.metadata.get(k) == Some(v));
            ok.then(|| detail_json(rec, &sb, false))
        })
        .collect();
    let start: usize = match q.next_token.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "invalid nextToken"),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let mut resp = axum::Json(page).into_response();
    if start + limit < all.len() {
        if let Ok(v) = HeaderValue::from_str(&(start + limit).to_string()) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    resp
}

/// `GET /v2/sandboxes`: running and paused ones unless `state` says.
pub async fn list_v2(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    match authorize(&st, &headers) {
        Ok(c) => list(&st, &c, q, &["running", "paused"]),
        Err(r) => *r,
    }
}

/// `GET /sandboxes`: the running ones.
pub async fn list_v1(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    match authorize(&st, &headers) {
        Ok(c) => list(&st, &c, q, &["running"]),
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_decode_twice() {
        // What the SDK sends: urlencode({quote(k): quote(v)}).
        let m = metadata_filter("user%2Fid=a%20b&k=v");
        assert_eq!(m.get("user/id").map(String::as_str), Some("a b"));
        assert_eq!(m.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(check_timeout(None).unwrap(), DEFAULT_TIMEOUT_SECS);
        assert!(check_timeout(Some(-1)).is_err());
        assert!(check_timeout(Some(MAX_TIMEOUT_SECS + 1)).is_err());
        assert_eq!(check_timeout(Some(5)).unwrap(), 5);
    }
}
