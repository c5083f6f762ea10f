//! A scripted LLM server for tests, speaking both wire formats over real
//! HTTP: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages`
//! (Anthropic), streamed as server-sent events when the request says
//! `"stream": true`, as one JSON document otherwise.
//!
//! Each request takes the next [`MockReply`] of the script, whichever
//! endpoint it hits, and is recorded so tests can check what was sent. The
//! server also checks requests the way the real APIs do (roles, tool-call
//! pairing, required fields) and answers 400 when they are wrong, so a
//! test passing against the mock means the request would pass for real.
//!
//! [`MockLlm::start_caching`] adds a prompt cache that behaves like the
//! real services' ([`cache`]): usage then reports cached prompt tokens in
//! each API's own fields.
//!
//! ```no_run
//! # async fn demo() {
//! use ironclaw_agent::mock::{MockLlm, MockReply};
//! let mock = MockLlm::start([MockReply::Text("Hello!".into())]).await;
//! // point an OpenAI-kind provider at mock.openai_base(), an Anthropic one at mock.anthropic_base()
//! # }
//! ```

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

pub mod cache;

use cache::{PromptCache, PromptTokens};

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum MockReply {
    /// A text answer, streamed a word at a time.
    Text(String),
    /// Tool calls: (tool name, arguments).
    ToolCalls(Vec<(String, Value)>),
    /// Some text, then tool calls.
    TextAndTools(String, Vec<(String, Value)>),
    /// An HTTP error with this body (JSON or not); `retry_after` in seconds
    /// becomes a Retry-After header.
    Error {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// 200 with `text/event-stream`, and this as the raw body.
    Garbage(String),
    /// Text deltas, each sent after `delay`.
    Slow {
        chunks: Vec<String>,
        delay: Duration,
    },
}

impl MockReply {
    pub fn text(t: impl Into<String>) -> Self {
        MockReply::Text(t.into())
    }

    pub fn tool(name: &str, args: Value) -> Self {
        MockReply::ToolCalls(vec![(name.into(), args)])
    }

    pub fn error(status: u16, body: impl Into<String>) -> Self {
        MockReply::Error {
            status,
            body: body.into(),
            retry_after: None,
        }
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `/v1/chat/completions` or `/v1/messages`.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// The body exactly as received.
    pub raw: String,
}

/// A request as it arrived.
#[derive(Clone)]
struct Received {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Received {
    fn decode(self) -> RecordedRequest {
        let raw = String::from_utf8_lossy(&self.body).into_owned();
        RecordedRequest {
            path: self.path.into(),
            headers: self.headers,
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
        }
    }
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<MockReply>>,
    /// As received; decoded when a test asks ([`MockLlm::requests`]), so
    /// the mock's own time per request stays small with long prompts.
    requests: Mutex<Vec<Received>>,
    ids: AtomicU64,
    /// None: the plain mock (a token per 4 bytes of the body, no cache
    /// fields in usage).
    cache: Mutex<Option<PromptCache>>,
}

/// Usage to report for one answer.
#[derive(Clone, Copy)]
struct MockUsage {
    prompt: PromptTokens,
    output: u64,
    /// Include the cache fields (the caching mock does, as the real APIs).
    cache_fields: bool,
}

pub struct MockLlm {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    OpenAi,
    Anthropic,
}

impl MockLlm {
    /// Listen on a free loopback port and serve `script`.
    pub async fn start(script: impl IntoIterator<Item = MockReply>) -> MockLlm {
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().extend(script);
        let app = Router::new()
            .route(
                "/v1/chat/completions",
                post(|s: State<Arc<Shared>>, h: HeaderMap, b: Bytes| handle(s, h, b, Wire::OpenAi)),
            )
            .route(
                "/v1/messages",
                post(|s: State<Arc<Shared>>, h: HeaderMap, b: Bytes| {
                    handle(s, h, b, Wire::Anthropic)
                }),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock LLM server");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockLlm { url, shared, task }
    }

    /// Like [`MockLlm::start`], with a prompt cache that behaves like the
    /// real services' (see [`cache`]).
    pub async fn start_caching(script: impl IntoIterator<Item = MockReply>) -> MockLlm {
        let m = MockLlm::start(script).await;
        *m.shared.cache.lock().unwrap() = Some(PromptCache::new(true));
        m
    }

    /// With a caching mock: turn caching on or off (off still counts
    /// tokens the same way, and reports nothing cached), forgetting what
    /// was cached.
    pub fn set_caching(&self, enabled: bool) {
        *self.shared.cache.lock().unwrap() = Some(PromptCache::new(enabled));
    }

    /// Base URL for an OpenAI-kind provider.
    pub fn openai_base(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// Base URL for an Anthropic-kind provider.
    pub fn anthropic_base(&self) -> String {
        self.url.clone()
    }

    pub fn push(&self, reply: MockReply) {
        self.shared.script.lock().unwrap().push_back(reply);
    }

    /// Drop the replies not yet used.
    pub fn clear(&self) {
        self.shared.script.lock().unwrap().clear();
    }

    /// Replies not yet used.
    pub fn remaining(&self) -> usize {
        self.shared.script.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        let received = self.shared.requests.lock().unwrap().clone();
        received.into_iter().map(Received::decode).collect()
    }

    /// The last request received, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        let last = self.shared.requests.lock().unwrap().last().cloned();
        last.map(Received::decode)
    }
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn api_error(wire: Wire, status: u16, message: &str) -> Response {
    let v = match wire {
        Wire::OpenAi => json!({"error": {"message": message, "type": "invalid_request_error"}}),
        Wire::Anthropic => {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        }
    };
    json_response(status, &v)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
    wire: Wire,
) -> Response {
    let path = match wire {
        Wire::OpenAi => "/v1/chat/completions",
        Wire::Anthropic => "/v1/messages",
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(Received {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body,
    });
    if parsed.is_null() {
        return api_error(wire, 400, "mock: the body is not JSON");
    }
    let checked = match wire {
        Wire::OpenAi => check_openai(&parsed),
        Wire::Anthropic => check_anthropic(&parsed, &headers),
    };
    if let Err(e) = checked {
        return api_error(wire, 400, &format!("mock: {e}"));
    }
    let prompt = match shared.cache.lock().unwrap().as_mut() {
        None => None,
        Some(c) => match wire {
            Wire::OpenAi => Some(c.openai(&parsed)),
            Wire::Anthropic => match c.anthropic(&parsed) {
                Ok(p) => Some(p),
                Err(e) => return api_error(wire, 400, &e),
            },
        },
    };
    let Some(reply) = shared.script.lock().unwrap().pop_front() else {
        return api_error(wire, 500, "mock: the script is exhausted");
    };
    let model = parsed["model"].as_str().unwrap_or("mock").to_string();
    let stream = parsed["stream"].as_bool().unwrap_or(false);
    let include_usage = parsed.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let cache_fields = prompt.is_some();
    let prompt = prompt.unwrap_or(PromptTokens {
        total: (parsed.to_string().len() / 4) as u64,
        ..Default::default()
    });

    let (text_chunks, calls, delay) = match reply {
        MockReply::Error {
            status,
            body,
            retry_after,
        } => {
            let ctype = if serde_json::from_str::<Value>(&body).is_ok() {
                "application/json"
            } else {
                "text/html"
            };
            let mut r = Response::builder()
                .status(status)
                .header("content-type", ctype);
            if let Some(s) = retry_after {
                r = r.header("retry-after", s.to_string());
            }
            return r.body(Body::from(body)).unwrap();
        }
        MockReply::Garbage(body) => {
            return Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from(body))
                .unwrap();
        }
        MockReply::Text(t) => (words(&t), vec![], Duration::ZERO),
        MockReply::ToolCalls(c) => (vec![], c, Duration::ZERO),
        MockReply::TextAndTools(t, c) => (words(&t), c, Duration::ZERO),
        MockReply::Slow { chunks, delay } => (chunks, vec![], delay),
    };
    let calls: Vec<(String, String, Value)> = calls
        .into_iter()
        .map(|(name, args)| {
            let n = shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
            let id = match wire {
                Wire::OpenAi => format!("call_{n}"),
                Wire::Anthropic => format!("toolu_{n:04}"),
            };
            (id, name, args)
        })
        .collect();
    let usage = MockUsage {
        prompt,
        output: text_chunks.len() as u64 + 10 * calls.len() as u64 + 1,
        cache_fields,
    };

    if !stream {
        if !delay.is_zero() {
            tokio::time::sleep(delay * text_chunks.len() as u32).await;
        }
        let text = text_chunks.concat();
        return json_response(200, &whole(wire, &model, &text, &calls, usage));
    }
    let frames = match wire {
        Wire::OpenAi => openai_frames(&model, &text_chunks, &calls, usage, include_usage),
        Wire::Anthropic => anthropic_frames(&model, &text_chunks, &calls, usage),
    };
    // Delay before each text frame; frames are (is_text, bytes).
    let body = futures::stream::unfold(frames.into_iter(), move |mut it| async move {
        let (is_text, frame) = it.next()?;
        if is_text && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from(frame)), it))
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

/// Words with their trailing spaces, so the deltas concatenate back.
fn words(t: &str) -> Vec<String> {
    t.split_inclusive(' ').map(str::to_string).collect()
}

/// Split a string in two at a char boundary (to exercise argument
/// accumulation across deltas).
fn halves(s: &str) -> (String, String) {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    (s[..mid].to_string(), s[mid..].to_string())
}

fn whole(
    wire: Wire,
    model: &str,
    text: &str,
    calls: &[(String, String, Value)],
    usage: MockUsage,
) -> Value {
    match wire {
        Wire::OpenAi => {
            let mut message = json!({"role": "assistant",
                "content": if text.is_empty() { Value::Null } else { Value::String(text.into()) }});
            if !calls.is_empty() {
                message["tool_calls"] = calls
                    .iter()
                    .map(|(id, name, args)| {
                        json!({"id": id, "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
            }
            json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": message,
                    "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" }}],
                "usage": openai_usage(usage)})
        }
        Wire::Anthropic => {
            let mut content = Vec::new();
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            for (id, name, args) in calls {
                content.push(json!({"type": "tool_use", "id": id, "name": name, "input": args}));
            }
            json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": content,
                "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
                "stop_sequence": null,
                "usage": anthropic_usage(usage, usage.output)})
        }
    }
}

/// Chat Completions' usage object.
fn openai_usage(u: MockUsage) -> Value {
    let mut v = json!({"prompt_tokens": u.prompt.total, "completion_tokens": u.output,
        "total_tokens": u.prompt.total + u.output});
    if u.cache_fields {
        v["prompt_tokens_details"] =
            json!({"cached_tokens": u.prompt.cache_read, "audio_tokens": 0});
        v["completion_tokens_details"] = json!({"reasoning_tokens": 0, "audio_tokens": 0});
    }
    v
}

/// The Messages API's usage object (`input_tokens` excludes the cached).
fn anthropic_usage(u: MockUsage, output: u64) -> Value {
    let mut v = json!({"input_tokens": u.prompt.uncached(), "output_tokens": output});
    if u.cache_fields {
        v["cache_creation_input_tokens"] = json!(u.prompt.cache_write);
        v["cache_read_input_tokens"] = json!(u.prompt.cache_read);
    }
    v
}

fn openai_frames(
    model: &str,
    text: &[String],
    calls: &[(String, String, Value)],
    usage: MockUsage,
    include_usage: bool,
) -> Vec<(bool, String)> {
    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut out = vec![(
        false,
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    for t in text {
        out.push((true, chunk(json!({"content": t}), Value::Null)));
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        out.push((
            false,
            chunk(
                json!({"tool_calls": [{"index": i, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ),
        ));
        let (a, b) = halves(&args.to_string());
        for part in [a, b] {
            out.push((
                false,
                chunk(
                    json!({"tool_calls": [{"index": i,
                "function": {"arguments": part}}]}),
                    Value::Null,
                ),
            ));
        }
    }
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out.push((false, chunk(json!({}), json!(finish))));
    if include_usage {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [], "usage": openai_usage(usage)});
        out.push((false, format!("data: {v}\n\n")));
    }
    out.push((false, "data: [DONE]\n\n".into()));
    out
}

fn anthropic_frames(
    model: &str,
    text: &[String],
    calls: &[(String, String, Value)],
    usage: MockUsage,
) -> Vec<(bool, String)> {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut out = vec![(
        false,
        ev(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null,
            "usage": anthropic_usage(usage, 1)}}),
        ),
    )];
    // Real streams carry pings and comments; clients must skip them.
    out.push((false, ": mock keep-alive\n\n".into()));
    out.push((false, ev("ping", json!({"type": "ping"}))));
    let mut index = 0;
    if !text.is_empty() {
        out.push((
            false,
            ev(
                "content_block_start",
                json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "text", "text": ""}}),
            ),
        ));
        for t in text {
            out.push((
                true,
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "text_delta", "text": t}}),
                ),
            ));
        }
        out.push((
            false,
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ),
        ));
        index += 1;
    }
    for (id, name, args) in calls {
        out.push((false, ev("content_block_start", json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}))));
        let (a, b) = halves(&args.to_string());
        for part in [a, b] {
            out.push((
                false,
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "input_json_delta", "partial_json": part}}),
                ),
            ));
        }
        out.push((
            false,
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ),
        ));
        index += 1;
    }
    let stop = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    out.push((
        false,
        ev(
            "message_delta",
            json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": usage.output}}),
        ),
    ));
    out.push((false, ev("message_stop", json!({"type": "message_stop"}))));
    out
}

/// Roughly what OpenAI validates: roles, and every assistant tool call
/// answered by `tool` messages right after it (and nothing else answered).
fn check_openai(b: &Value) -> Result<(), String> {
    if b["model"].as_str().is_none_or(str::is_empty) {
        return Err("model is required".into());
    }
    let msgs = b["messages"]
        .as_array()
        .ok_or("messages must be an array")?;
    if msgs.is_empty() {
        return Err("messages must not be empty".into());
    }
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != "tool" && !pending.is_empty() {
            return Err(format!(
                "messages[{i}]: tool_calls {pending:?} must be followed by tool messages answering each"
            ));
        }
        match role {
            "system" | "user" => {
                if !(m["content"].is_string() || m["content"].is_array()) {
                    return Err(format!(
                        "messages[{i}]: content must be a string or an array"
                    ));
                }
            }
            "assistant" => {
                let calls = m["tool_calls"].as_array();
                if m["content"].is_null() && calls.is_none_or(Vec::is_empty) {
                    return Err(format!(
                        "messages[{i}]: assistant needs content or tool_calls"
                    ));
                }
                for c in calls.into_iter().flatten() {
                    let args = c.pointer("/function/arguments").and_then(Value::as_str);
                    if args.is_none_or(|a| serde_json::from_str::<Value>(a).is_err()) {
                        return Err(format!(
                            "messages[{i}]: function.arguments must be a JSON string"
                        ));
                    }
                    pending.push(c["id"].as_str().unwrap_or("").to_string());
                }
            }
            "tool" => {
                let id = m["tool_call_id"].as_str().unwrap_or("");
                let Some(pos) = pending.iter().position(|p| p == id) else {
                    return Err(format!(
                        "messages[{i}]: tool message answers no pending tool call ({id:?})"
                    ));
                };
                pending.remove(pos);
                if !m["content"].is_string() {
                    return Err(format!("messages[{i}]: tool content must be a string"));
                }
            }
            other => return Err(format!("messages[{i}]: invalid role {other:?}")),
        }
    }
    if !pending.is_empty() {
        return Err(format!("tool_calls {pending:?} were not answered"));
    }
    for t in b["tools"].as_array().into_iter().flatten() {
        if t["type"] != "function" || t.pointer("/function/name").is_none() {
            return Err("tools must be {type: function, function: {name, ...}}".into());
        }
    }
    Ok(())
}

/// Roughly what Anthropic validates: headers, max_tokens, roles, non-empty
/// text, and tool_use / tool_result pairing between neighbours.
fn check_anthropic(b: &Value, headers: &HeaderMap) -> Result<(), String> {
    if headers.get("anthropic-version").is_none() {
        return Err("anthropic-version header is required".into());
    }
    if b["model"].as_str().is_none_or(str::is_empty) {
        return Err("model is required".into());
    }
    if b["max_tokens"].as_u64().is_none() {
        return Err("max_tokens is required".into());
    }
    let msgs = b["messages"]
        .as_array()
        .ok_or("messages must be an array")?;
    if msgs.is_empty() {
        return Err("messages must not be empty".into());
    }
    if msgs[0]["role"] != "user" {
        return Err("the first message must use the user role".into());
    }
    let mut asked: HashSet<String> = HashSet::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!("messages.{i}: invalid role {role:?}"));
        }
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) if !a.is_empty() => a.clone(),
            _ => {
                return Err(format!(
                    "messages.{i}: content must be a string or a non-empty array"
                ))
            }
        };
        let mut answered = HashSet::new();
        let mut calls = HashSet::new();
        for bl in &blocks {
            match bl["type"].as_str().unwrap_or("") {
                "text" => {
                    if bl["text"].as_str().is_none_or(str::is_empty) {
                        return Err(format!(
                            "messages.{i}: text content blocks must be non-empty"
                        ));
                    }
                }
                "tool_use" if role == "assistant" => {
                    if !bl["input"].is_object() {
                        return Err(format!("messages.{i}: tool_use.input must be an object"));
                    }
                    calls.insert(bl["id"].as_str().unwrap_or("").to_string());
                }
                "tool_result" if role == "user" => {
                    let id = bl["tool_use_id"].as_str().unwrap_or("").to_string();
                    if !asked.contains(&id) {
                        return Err(format!(
                            "messages.{i}: unexpected tool_use_id {id:?} in tool_result blocks: each tool_result must have a corresponding tool_use in the previous message"
                        ));
                    }
                    answered.insert(id);
                }
                other => {
                    return Err(format!(
                        "messages.{i}: unexpected {other:?} block in a {role} message"
                    ))
                }
            }
        }
        if let Some(missing) = asked.iter().find(|id| !answered.contains(*id)) {
            return Err(format!(
                "messages.{i}: tool_use ids were found without tool_result blocks immediately after: {missing}"
            ));
        }
        asked = calls;
    }
    if !asked.is_empty() {
        return Err("the last message has tool_use blocks without results".into());
    }
    Ok(())
}
