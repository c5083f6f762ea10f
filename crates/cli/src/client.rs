//! HTTP/WebSocket client for the ironclawd API, and error mapping.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::{Token, TokenSource};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An error answered by the daemon (`{"error":{"code","message"}}`).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for ApiError {}

/// The daemon could not be reached at all.
#[derive(Debug)]
pub struct ConnectError {
    pub url: String,
    pub detail: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach ironclawd at {}: {}; is ironclawd running?",
            self.url, self.detail
        )
    }
}
impl std::error::Error for ConnectError {}

/// A mistake in how the command was invoked (exit status 2, like clap).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Build an [`ApiError`] from a status and a response body. Falls back to a
/// generic message when the body is not the documented error envelope.
pub fn api_error_from_body(status: u16, body: &[u8], context: &str) -> ApiError {
    let parsed: Option<(String, String)> = serde_json::from_slice::<ironclaw_api::Error>(body)
        .ok()
        .map(|e| (e.error.code, e.error.message));
    let (code, mut message) = parsed.unwrap_or_default();
    if message.is_empty() {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        message = match status {
            401 => "missing or invalid token".to_string(),
            404 => format!("not found: {context}"),
            _ if !text.is_empty() && text.len() < 300 => format!("HTTP {status}: {text}"),
            _ => format!(
                "HTTP {status} {}",
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("")
            )
            .trim_end()
            .to_string(),
        };
    }
    ApiError {
        status,
        code,
        message,
        hint: None,
    }
}

/// Exit status for an error: 2 for usage errors, 1 otherwise.
pub fn exit_code_for_error(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// Percent-encode a query value or path segment (RFC 3986 unreserved kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Encode one path segment (like [`encode`] but `/` is escaped too).
pub fn seg(s: &str) -> String {
    encode(s).replace('/', "%2F")
}

pub fn query_string(q: &[(&str, String)]) -> String {
    q.iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `path` with `owner=USER` added to its query when it is a sandbox,
/// SSH key or task route.
pub fn with_owner(path: &str, owner: Option<&str>) -> String {
    let scoped = |base: &str| {
        path == base
            || path.starts_with(&format!("{base}/"))
            || path.starts_with(&format!("{base}?"))
    };
    match owner {
        Some(o) if scoped("/v1/sandboxes") || scoped("/v1/keys") || scoped("/v1/tasks") => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}owner={}", encode(o))
        }
        _ => path.to_string(),
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    token: Option<Token>,
    /// `--owner`: whose sandboxes `/v1/sandboxes...` requests mean (admin).
    owner: Option<String>,
}

impl Client {
    pub fn new(base: String, token: Option<Token>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ironclaw-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building HTTP client")?;
        Ok(Client {
            base,
            http,
            token,
            owner: None,
        })
    }

    /// Send `?owner=USER` with every sandbox request.
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner.filter(|o| !o.is_empty());
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, with_owner(path, self.owner.as_deref()))
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(&t.value),
            None => rb,
        }
    }

    fn hint_for(&self, e: &ApiError) -> Option<String> {
        match (e.status, e.code.as_str()) {
            (401, _) => Some(self.unauthorized_hint()),
            (_, "invalid_name") if !e.message.contains("a-z") => Some(
                "names are DNS labels: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
                    .into(),
            ),
            _ => None,
        }
    }

    fn unauthorized_hint(&self) -> String {
        match &self.token {
            None => "no token found: pass --token, set IRONCLAW_TOKEN or IRONCLAW_TOKEN_FILE, or put it in ~/.config/ironclaw/token (the daemon writes DATA_DIR/admin.token on first start; set IRONCLAW_DATA_DIR if that is not /var/lib/ironclaw)".into(),
            Some(Token { source: TokenSource::FlagOrEnv, .. }) => {
                "the token from --token / IRONCLAW_TOKEN was rejected".into()
            }
            Some(Token { source: TokenSource::File(p), .. }) => {
                format!("the token read from {} was rejected", p.display())
            }
        }
    }

    fn map_send_error(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() && e.status().is_none() {
            ConnectError {
                url: self.base.clone(),
                detail: root_cause(&e),
            }
            .into()
        } else {
            anyhow::Error::new(e).context(format!("request to {} failed", self.base))
        }
    }

    /// Send; map transport failures and non-2xx answers to errors.
    pub async fn send(&self, rb: RequestBuilder, context: &str) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.map_send_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let mut err = api_error_from_body(status.as_u16(), &body, context);
        err.hint = self.hint_for(&err);
        Err(err.into())
    }

    pub async fn delete(&self, path: &str, context: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, path, None, context)
            .await
            .map(|_| ())
    }

    /// Open a WebSocket to `path` (already including any query string).
    pub async fn ws(&self, path_and_query: &str, context: &str) -> Result<Ws> {
        let http_url = self.url(path_and_query);
        let ws_url = if let Some(rest) = http_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = http_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            http_url.clone()
        };
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .with_context(|| format!("invalid WebSocket URL {ws_url}"))?;
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {}", t.value))
                .context("token contains invalid characters")?;
            req.headers_mut().insert("authorization", v);
        }
        use tokio_tungstenite::tungstenite::Error as WsErr;
        match tokio_tungstenite::connect_async_with_config(req, None, true).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsErr::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().clone().unwrap_or_default();
                let mut err = api_error_from_body(status, &body, context);
                err.hint = self.hint_for(&err);
                Err(err.into())
            }
            Err(WsErr::Io(e)) => Err(ConnectError {
                url: self.base.clone(),
                detail: root_cause(&e),
            }
            .into()),
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("WebSocket connection to {ws_url} failed")))
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string();
    // io::Error strings look like "Connection refused (os error 111)".
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelope() {
        let e = api_error_from_body(
            404,
            br#"{"error":{"code":"not_found","message":"sandbox 'dev' not found"}}"#,
            "sandbox 'dev'",
        );
        assert_eq!(e.status, 404);
        assert_eq!(e.code, "not_found");
        assert_eq!(e.to_string(), "sandbox 'dev' not found");
        let e = api_error_from_body(404, b"", "sandbox 'dev'");
        assert_eq!(e.to_string(), "not found: sandbox 'dev'");
        let e = api_error_from_body(502, b"bad gateway", "x");
        assert_eq!(e.to_string(), "HTTP 502: bad gateway");
        let e = api_error_from_body(500, b"", "x");
        assert_eq!(e.to_string(), "HTTP 500 Internal Server Error");
    }

    #[test]
    fn exit_codes_for_errors() {
        assert_eq!(exit_code_for_error(&usage("bad")), 2);
        let api: anyhow::Error = api_error_from_body(409, b"", "x").into();
        assert_eq!(exit_code_for_error(&api), 1);
        assert_eq!(exit_code_for_error(&anyhow::anyhow!("other")), 1);
    }

    #[test]
    fn owner_goes_on_sandbox_routes_only() {
        assert_eq!(
            with_owner("/v1/sandboxes", Some("bob")),
            "/v1/sandboxes?owner=bob"
        );
        assert_eq!(
            with_owner("/v1/sandboxes/dev/files?path=/x", Some("bob")),
            "/v1/sandboxes/dev/files?path=/x&owner=bob"
        );
        assert_eq!(with_owner("/v1/sandboxes/dev", None), "/v1/sandboxes/dev");
        assert_eq!(with_owner("/v1/images", Some("bob")), "/v1/images");
        assert_eq!(with_owner("/v1/sandboxesx", Some("bob")), "/v1/sandboxesx");
        assert_eq!(with_owner("/v1/keys", Some("bob")), "/v1/keys?owner=bob");
        assert_eq!(
            with_owner("/v1/keys/key_1", Some("bob")),
            "/v1/keys/key_1?owner=bob"
        );
        assert_eq!(with_owner("/v1/keysx", Some("bob")), "/v1/keysx");
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("/root/a b.py"), "/root/a%20b.py");
        assert_eq!(encode("a&b=c"), "a%26b%3Dc");
        assert_eq!(seg("a/b"), "a%2Fb");
        assert_eq!(
            query_string(&[("session", "main".into()), ("rows", "24".into())]),
            "session=main&rows=24"
        );
    }
}
