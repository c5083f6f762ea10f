//! API errors: one enum, one JSON shape, one status per variant.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ironclaw_sandbox::types::ErrorKind;
use ironclaw_sandbox::{AgentError, BackendError};
use ironclaw_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("missing or invalid token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
    /// The sandbox's VMM or init died while it started.
    #[error("{0}")]
    Crashed(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Crashed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "crashed"),
        }
    }
}

pub fn body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!("internal error: {self}");
        }
        (status, axum::Json(body(code, &self.to_string()))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Guest { kind, message } => match kind {
                ErrorKind::NotFound => ApiError::NotFound(message),
                // A mount point, a busy device: the sandbox's state, not a fault.
                ErrorKind::AlreadyExists | ErrorKind::Busy => ApiError::Conflict(message),
                ErrorKind::PermissionDenied => ApiError::Forbidden(message),
                ErrorKind::InvalidInput
                | ErrorKind::NotADirectory
                | ErrorKind::IsADirectory
                | ErrorKind::DirectoryNotEmpty
                | ErrorKind::Unsupported => ApiError::BadRequest(message),
                ErrorKind::ResourceExhausted => ApiError::Unavailable(message),
                ErrorKind::Other => ApiError::Internal(message),
            },
            AgentError::TooLarge(message) => ApiError::TooLarge(message),
            other => ApiError::Unavailable(format!("sandbox agent unreachable: {other}")),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(..) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ironclaw_sandbox::image::ImageError> for ApiError {
    fn from(e: ironclaw_sandbox::image::ImageError) -> Self {
        use ironclaw_sandbox::image::ImageError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::AlreadyExists(_) => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Rejections of axum's JSON extractor become our JSON error shape.
pub struct Json<T>(pub T);

#[axum::async_trait]
impl<T, S> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::TooLarge("request body too large".into()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// An optional JSON body: none (or only whitespace) is `None`; one that is
/// there must be valid (axum's `Option<Json<T>>` silently drops a malformed
/// one, so `[null, null]` or a misspelt field went unnoticed).
pub struct OptionalJson<T>(pub Option<T>);

#[axum::async_trait]
impl<T, S> axum::extract::FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            })
            .unwrap_or(false);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge("request body too large".into())
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json_type {
            return Err(ApiError::BadRequest(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalJson(Some(v)))
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "Failed to deserialize the JSON body into the target type: {e}"
                ))
            })
    }
}

/// Rejections of axum's query-string extractor become our JSON error shape
/// (axum's own answer is a plain-text 400).
pub struct Query<T>(pub T);

#[axum::async_trait]
impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A WebSocket upgrade; a request that is not one is answered in our JSON
/// error shape (axum's own answer is plain text).
pub struct WebSocketUpgrade(pub axum::extract::ws::WebSocketUpgrade);

#[axum::async_trait]
impl<S> axum::extract::FromRequestParts<S> for WebSocketUpgrade
where
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, state).await {
            Ok(ws) => Ok(WebSocketUpgrade(ws)),
            Err(e) => {
                let status = e.status();
                let code = if status == StatusCode::METHOD_NOT_ALLOWED {
                    "method_not_allowed"
                } else {
                    "bad_request"
                };
                Err((
                    status,
                    axum::Json(body(
                        code,
                        &format!("a WebSocket upgrade is expected here: {}", e.body_text()),
                    )),
                )
                    .into_response())
            }
        }
    }
}
