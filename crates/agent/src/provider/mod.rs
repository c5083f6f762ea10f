//! LLM providers behind one streaming interface.
//!
//! Two wire formats cover the field: [`openai::OpenAi`] speaks Chat
//! Completions (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp's server, ...
//! through a base URL) and [`anthropic::Anthropic`] speaks the Messages API.
//! Both stream over SSE, retry transient failures before the first event
//! ([`retry`]), and turn anything they cannot parse into
//! [`ProviderError::Malformed`].

pub mod anthropic;
pub mod openai;
pub mod retry;
pub mod sse;

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::model::{Message, Usage};

pub use retry::RetryPolicy;

/// A tool the model may call: name, one-line description, JSON Schema of
/// its input object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
}

/// One request to a model.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The model's id as the provider knows it.
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

/// What a streaming response yields, in order: text deltas and complete
/// tool calls (in the order the model made them), usage, then `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    TextDelta(String),
    /// Emitted once the call's arguments are complete.
    ToolCall {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    Usage(Usage),
    /// The provider's own stop reason (`end_turn`, `tool_use`, `stop`,
    /// `tool_calls`, `length`, ...), normalised to lower case.
    Done {
        stop_reason: String,
    },
}

pub type EventStream = BoxStream<'static, Result<LlmEvent, ProviderError>>;

/// "1 attempt", "4 attempts".
fn plural_attempts(n: &u32) -> String {
    if *n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("provider returned {status} after {}: {body}", plural_attempts(.attempts))]
    Status {
        status: u16,
        /// An excerpt: the provider's error message when it sent JSON.
        body: String,
        attempts: u32,
        /// From a Retry-After header, honoured by the retry loop.
        retry_after: Option<Duration>,
    },
    #[error("cannot reach the provider after {}: {message}", plural_attempts(.attempts))]
    Connect { message: String, attempts: u32 },
    #[error("provider did not answer within {timeout:?} ({})", plural_attempts(.attempts))]
    Timeout { timeout: Duration, attempts: u32 },
    /// The provider sent something that is not its wire format (an HTML
    /// error page, non-JSON event data, a stream that ends too early).
    #[error("malformed response from the provider: {0}")]
    Malformed(String),
    /// The provider reported an error inside the stream.
    #[error("provider error: {message}")]
    Api { message: String, retryable: bool },
    /// The connection broke after the response started.
    #[error("the provider's stream broke off: {0}")]
    Stream(String),
}

impl ProviderError {
    /// Worth another attempt: rate limits, server errors, overload, and
    /// failures to connect or to get an answer in time.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => {
                *status == 429 || *status == 408 || *status >= 500
            }
            ProviderError::Connect { .. } | ProviderError::Timeout { .. } => true,
            ProviderError::Stream(_) => true,
            ProviderError::Api { retryable, .. } => *retryable,
            ProviderError::Malformed(_) => false,
        }
    }

    pub(crate) fn with_attempts(mut self, n: u32) -> Self {
        match &mut self {
            ProviderError::Status { attempts, .. }
            | ProviderError::Connect { attempts, .. }
            | ProviderError::Timeout { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }

    /// The HTTP status to report to an API client of the daemon.
    pub fn http_status(&self) -> u16 {
        match self {
            ProviderError::Status { status: 429, .. } => 429,
            ProviderError::Timeout { .. } => 504,
            _ => 502,
        }
    }
}

/// One LLM endpoint. Implementations are cheap to share (`Arc<dyn Provider>`).
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The name it was configured under.
    fn name(&self) -> &str;

    /// Start a streaming completion. Transient failures are retried before
    /// this returns; once it returns `Ok`, the stream is not retried (its
    /// events may already have reached the user).
    async fn stream(&self, req: &LlmRequest) -> Result<EventStream, ProviderError>;
}

/// A whole response collected from a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<(String, String, serde_json::Value)>,
    pub usage: Usage,
    pub stop_reason: String,
}

/// Run a request to completion (for summaries and other internal calls
/// nobody watches stream by).
pub async fn complete(
    provider: &dyn Provider,
    req: &LlmRequest,
) -> Result<Completion, ProviderError> {
    let mut s = provider.stream(req).await?;
    let mut out = Completion::default();
    while let Some(ev) = s.next().await {
        match ev? {
            LlmEvent::TextDelta(t) => out.text.push_str(&t),
            LlmEvent::ToolCall { id, name, input } => out.tool_calls.push((id, name, input)),
            LlmEvent::Usage(u) => out.usage.add(u),
            LlmEvent::Done { stop_reason } => out.stop_reason = stop_reason,
        }
    }
    Ok(out)
}

/// Shorten a provider's error body for a message: its `error.message` when
/// it is JSON, else the first few hundred characters on one line.
pub(crate) fn excerpt(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let msg = v
            .pointer("/error/message")
            .or_else(|| v.pointer("/message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()));
        if let Some(m) = msg.and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = one_line.chars().take(300).collect();
    if cut.len() < one_line.len() {
        cut.push_str("...");
    }
    if cut.is_empty() {
        cut.push_str("(empty body)");
    }
    cut
}

/// The HTTP client both providers use. Timeouts for the whole stream are
/// not set here (a long answer may legitimately stream for minutes); the
/// retry policy bounds the wait for the first byte and between chunks.
/// What every HTTP provider holds: its name, where it is, its key, its
/// client and its retry policy.
pub struct Endpoint {
    pub name: String,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Option<String>,
    pub client: reqwest::Client,
    pub policy: RetryPolicy,
}

impl Endpoint {
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
        policy: RetryPolicy,
    ) -> Endpoint {
        Endpoint {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key,
            client: http_client(&policy),
            policy,
        }
    }
}

// By hand, so the key can never reach a log line through `{:?}`.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

pub(crate) fn http_client(policy: &RetryPolicy) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(policy.connect_timeout)
        .build()
        .expect("building the HTTP client (TLS backend) cannot fail")
}

/// The error and its causes on one line (reqwest's top-level message alone
/// says little: "error sending request").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Send `req` and return the response's server-sent events, or the
/// failure classified for the retry loop.
pub(crate) async fn post_sse(
    req: reqwest::RequestBuilder,
    policy: &RetryPolicy,
) -> Result<
    impl futures::Stream<Item = Result<sse::SseEvent, ProviderError>> + Send + 'static,
    ProviderError,
> {
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            ProviderError::Timeout {
                timeout: policy.response_timeout,
                attempts: 1,
            }
        } else {
            ProviderError::Connect {
                message: error_chain(&e),
                attempts: 1,
            }
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = retry::retry_after(resp.headers());
        // Error bodies are small; cap the read anyway so a misbehaving
        // server cannot make us buffer a huge page.
        let body = read_capped(resp, 64 * 1024).await;
        return Err(ProviderError::Status {
            status: status.as_u16(),
            body: excerpt(&body),
            attempts: 1,
            retry_after,
        });
    }
    let ctype = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.contains("text/html") || ctype.contains("json") {
        let body = read_capped(resp, 64 * 1024).await;
        return Err(ProviderError::Malformed(format!(
            "expected an event stream, got {ctype}: {}",
            excerpt(&body)
        )));
    }
    Ok(sse::events(resp, policy.idle_timeout))
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= cap {
            buf.truncate(cap);
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Parse an event's JSON data, or say what arrived instead.
pub(crate) fn parse_data(data: &str) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_str(data).map_err(|e| {
        ProviderError::Malformed(format!("event data is not JSON ({e}): {}", excerpt(data)))
    })
}

/// A wire format's state machine from server-sent events to [`LlmEvent`]s.
pub(crate) trait Decoder: Send + 'static {
    fn event(&mut self, ev: sse::SseEvent) -> Result<Vec<LlmEvent>, ProviderError>;
    /// The body ended: flush, or complain that the answer is incomplete.
    fn end(&mut self) -> Result<Vec<LlmEvent>, ProviderError>;
    /// The terminal event arrived; anything after it is ignored.
    fn finished(&self) -> bool;
}

/// Drive `dec` over `events`. The stream ends after the first error.
pub(crate) fn decode<S, D>(events: S, dec: D) -> EventStream
where
    S: futures::Stream<Item = Result<sse::SseEvent, ProviderError>> + Send + 'static,
    D: Decoder,
{
    use std::collections::VecDeque;
    struct St<S, D> {
        events: std::pin::Pin<Box<S>>,
        dec: D,
        queue: VecDeque<LlmEvent>,
        over: bool,
    }
    let st = St {
        events: Box::pin(events),
        dec,
        queue: VecDeque::new(),
        over: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.over {
                return None;
            }
            let step = if st.dec.finished() {
                st.over = true;
                continue;
            } else {
                match st.events.next().await {
                    Some(Ok(ev)) => st.dec.event(ev),
                    Some(Err(e)) => Err(e),
                    None => {
                        st.over = true;
                        st.dec.end()
                    }
                }
            };
            match step {
                Ok(evs) => st.queue.extend(evs),
                Err(e) => {
                    st.over = true;
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_say_what_happened() {
        let e = ProviderError::Status {
            status: 503,
            body: excerpt(r#"{"error":{"message":"overloaded","type":"x"}}"#),
            attempts: 4,
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "provider returned 503 after 4 attempts: overloaded"
        );
        assert!(e.is_retryable());
        let html = "<html>\n<body>  Bad   gateway </body></html>";
        assert_eq!(excerpt(html), "<html> <body> Bad gateway </body></html>");
        assert_eq!(excerpt(""), "(empty body)");
        assert!(!ProviderError::Malformed("x".into()).is_retryable());
    }
}
