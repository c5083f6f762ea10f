//! API errors: one enum, one JSON shape, one status per variant.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ironclaw_proto::ErrorKind;
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
                ErrorKind::AlreadyExists => ApiError::Conflict(message),
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
