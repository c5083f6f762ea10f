//! Anthropic Messages API, streaming.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::sse::SseEvent;
use super::{
    decode, parse_data, post_sse, retry::stream_with_retry, Decoder, EventStream, LlmEvent,
    LlmRequest, Provider, ProviderError, RetryPolicy,
};
use crate::model::{Block, Role, Usage};

pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    ep: super::Endpoint,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Anthropic").field(&self.ep).finish()
    }
}

impl Anthropic {
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
        policy: RetryPolicy,
    ) -> Anthropic {
        Anthropic {
            ep: super::Endpoint::new(name, base_url, api_key, policy),
        }
    }

    fn endpoint(&self) -> String {
        if self.ep.base_url.ends_with("/v1") {
            format!("{}/messages", self.ep.base_url)
        } else {
            format!("{}/v1/messages", self.ep.base_url)
        }
    }
}

#[async_trait::async_trait]
impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.ep.name
    }

    async fn stream(&self, req: &LlmRequest) -> Result<EventStream, ProviderError> {
        let body = request_body(req);
        stream_with_retry(&self.ep.policy, || {
            let mut http = self
                .ep
                .client
                .post(self.endpoint())
                .header("anthropic-version", API_VERSION)
                .json(&body);
            if let Some(key) = &self.ep.api_key {
                http = http.header("x-api-key", key);
            }
            let policy = self.ep.policy.clone();
            async move {
                let events = post_sse(http, &policy).await?;
                Ok(decode(events, StreamDecoder::default()))
            }
        })
        .await
    }
}

/// The JSON body of a streaming Messages request.
pub fn request_body(req: &LlmRequest) -> Value {
    let mut messages = Vec::new();
    for m in &req.messages {
        let mut blocks: Vec<Value> = Vec::new();
        // The API wants a user message's tool results before its text.
        let mut ordered: Vec<&Block> = m.content.iter().collect();
        ordered.sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
        for b in ordered {
            match b {
                // The API rejects empty text blocks.
                Block::Text { text } if text.is_empty() => {}
                Block::Text { text } => blocks.push(json!({"type": "text", "text": text})),
                Block::ToolUse { id, name, input } => {
                    blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
                }
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    let mut r = json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content});
                    if *is_error {
                        r["is_error"] = Value::Bool(true);
                    }
                    blocks.push(r);
                }
            }
        }
        if blocks.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(json!({"role": role, "content": blocks}));
    }
    mark_history(&mut messages);
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "messages": messages,
        "stream": true,
    });
    if !req.system.is_empty() {
        body["system"] =
            json!([{"type": "text", "text": req.system, "cache_control": ephemeral()}]);
    }
    if !req.tools.is_empty() {
        let mut tools = tools_json(&req.tools);
        if let Some(last) = tools.as_array_mut().and_then(|t| t.last_mut()) {
            last["cache_control"] = ephemeral();
        }
        body["tools"] = tools;
    }
    body
}

/// Most cache breakpoints one request may carry (the API's limit).
pub const MAX_BREAKPOINTS: usize = 4;

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// Prompt caching: the API caches the prompt prefix up to each block
/// marked `cache_control` (tools, then system, then messages, in that
/// order) and reads it back when a later request starts with the same
/// prefix. Four breakpoints at most: the last tool and the system prompt
/// take two; the history takes the other two, on the last message (this
/// request's whole prefix is written to the cache, for the next request
/// to read) and on the message two before that one, which is where the
/// previous request of the conversation ended (a model call adds an
/// assistant message and the user's answer or tool results), so this
/// request reads everything the previous one wrote.
fn mark_history(messages: &mut [Value]) {
    let n = messages.len();
    let mut marks = vec![n.checked_sub(1)];
    marks.push(n.checked_sub(3));
    for i in marks.into_iter().flatten() {
        if let Some(last) = messages[i]["content"]
            .as_array_mut()
            .and_then(|c| c.last_mut())
        {
            last["cache_control"] = ephemeral();
        }
    }
}

/// The `tools` array of a request.
pub fn tools_json(tools: &[super::ToolSpec]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect(),
    )
}

enum OpenBlock {
    Text,
    Tool {
        id: String,
        name: String,
        json: String,
        start_input: Value,
    },
    /// Thinking and block types newer than this code: skipped.
    Other,
}

#[derive(Default)]
struct StreamDecoder {
    blocks: HashMap<u64, OpenBlock>,
    usage: Usage,
    stop_reason: Option<String>,
    done: bool,
}

impl Decoder for StreamDecoder {
    fn event(&mut self, ev: SseEvent) -> Result<Vec<LlmEvent>, ProviderError> {
        if ev.data.trim().is_empty() {
            return Ok(vec![]);
        }
        let v = parse_data(&ev.data)?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(ev.event.as_str())
            .to_string();
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let n = |u: &Value, k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        let mut out = Vec::new();
        match kind.as_str() {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    // Cached prompt tokens are input too (priced differently
                    // by the provider, but still context).
                    self.usage.cache_write_tokens = n(u, "cache_creation_input_tokens");
                    self.usage.cache_read_tokens = n(u, "cache_read_input_tokens");
                    self.usage.input_tokens = n(u, "input_tokens")
                        + self.usage.cache_write_tokens
                        + self.usage.cache_read_tokens;
                    self.usage.output_tokens = n(u, "output_tokens");
                }
            }
            "content_block_start" => {
                let b = &v["content_block"];
                let open = match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            if !t.is_empty() {
                                out.push(LlmEvent::TextDelta(t.to_string()));
                            }
                        }
                        OpenBlock::Text
                    }
                    Some("tool_use") => OpenBlock::Tool {
                        id: b["id"].as_str().unwrap_or_default().to_string(),
                        name: b["name"].as_str().unwrap_or_default().to_string(),
                        json: String::new(),
                        start_input: b.get("input").cloned().unwrap_or(json!({})),
                    },
                    _ => OpenBlock::Other,
                };
                self.blocks.insert(index, open);
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match (
                    d.get("type").and_then(Value::as_str),
                    self.blocks.get_mut(&index),
                ) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = d.get("text").and_then(Value::as_str) {
                            if !t.is_empty() {
                                out.push(LlmEvent::TextDelta(t.to_string()));
                            }
                        }
                    }
                    (Some("input_json_delta"), Some(OpenBlock::Tool { json, .. })) => {
                        json.push_str(d["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(OpenBlock::Tool {
                    id,
                    name,
                    json,
                    start_input,
                }) = self.blocks.remove(&index)
                {
                    let input = if json.trim().is_empty() {
                        start_input
                    } else {
                        super::openai::parse_arguments(&json)
                    };
                    out.push(LlmEvent::ToolCall { id, name, input });
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_ascii_lowercase());
                }
                if let Some(u) = v.get("usage") {
                    // Cumulative counts; input appears here only in newer
                    // API versions.
                    if let Some(o) = u.get("output_tokens").and_then(Value::as_u64) {
                        self.usage.output_tokens = o;
                    }
                    if let Some(i) = u.get("input_tokens").and_then(Value::as_u64) {
                        let (w, r) = (
                            n(u, "cache_creation_input_tokens"),
                            n(u, "cache_read_input_tokens"),
                        );
                        if i + w + r > self.usage.input_tokens {
                            self.usage.input_tokens = i + w + r;
                            self.usage.cache_write_tokens = w;
                            self.usage.cache_read_tokens = r;
                        }
                    }
                }
            }
            "message_stop" => {
                self.done = true;
                out.push(LlmEvent::Usage(self.usage));
                out.push(LlmEvent::Done {
                    stop_reason: self.stop_reason.take().unwrap_or_else(|| "end_turn".into()),
                });
            }
            "error" => {
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)");
                return Err(ProviderError::Api {
                    message: format!("{kind}: {message}"),
                    retryable: matches!(
                        kind,
                        "overloaded_error" | "api_error" | "rate_limit_error"
                    ),
                });
            }
            // ping, and event types newer than this code.
            _ => {}
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<Vec<LlmEvent>, ProviderError> {
        if self.done {
            Ok(vec![])
        } else {
            Err(ProviderError::Stream(
                "the stream ended before message_stop".into(),
            ))
        }
    }

    fn finished(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn run(events: &[(&str, &str)]) -> Result<Vec<LlmEvent>, ProviderError> {
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        for (e, data) in events {
            out.extend(d.event(SseEvent {
                event: e.to_string(),
                data: data.to_string(),
            })?);
        }
        out.extend(d.end()?);
        Ok(out)
    }

    #[test]
    fn decodes_text_and_tool_use() {
        let evs = run(&[
            ("message_start", r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("ping", r#"{"type":"ping"}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me"}}"#),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"bash","input":{}}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\": \"l"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"s\"}"}}"#),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":15}}"#),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ])
        .unwrap();
        assert_eq!(
            evs,
            vec![
                LlmEvent::TextDelta("Let me".into()),
                LlmEvent::ToolCall {
                    id: "toolu_1".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"})
                },
                LlmEvent::Usage(Usage {
                    input_tokens: 25,
                    output_tokens: 15,
                    cache_read_tokens: 5,
                    cache_write_tokens: 0,
                }),
                LlmEvent::Done {
                    stop_reason: "tool_use".into()
                },
            ]
        );
    }

    #[test]
    fn error_events_and_truncation() {
        let e = run(&[(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "provider error: overloaded_error: Overloaded"
        );
        assert!(e.is_retryable());
        let e = run(&[(
            "message_start",
            r#"{"type":"message_start","message":{"usage":{}}}"#,
        )])
        .unwrap_err();
        assert!(matches!(e, ProviderError::Stream(_)));
        let e = run(&[("message", "not json")]).unwrap_err();
        assert!(matches!(e, ProviderError::Malformed(_)));
    }

    #[test]
    fn request_shape() {
        let req = LlmRequest {
            model: "claude".into(),
            system: "sys".into(),
            messages: vec![
                Message::user("hi"),
                Message::assistant(""),
                Message {
                    role: Role::User,
                    content: vec![
                        Block::Text { text: "and".into() },
                        Block::ToolResult {
                            tool_use_id: "t".into(),
                            content: "x".into(),
                            is_error: true,
                        },
                    ],
                },
            ],
            tools: vec![],
            max_tokens: 50,
        };
        let b = request_body(&req);
        assert_eq!(b["system"][0]["text"], "sys");
        assert_eq!(b["system"][0]["cache_control"]["type"], "ephemeral");
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "empty assistant message dropped");
        assert_eq!(msgs[1]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[1]["content"][0]["is_error"], true);
        assert_eq!(msgs[1]["content"][1]["type"], "text");
        // The last block of the last message is a breakpoint.
        assert_eq!(msgs[1]["content"][1]["cache_control"]["type"], "ephemeral");
        assert!(msgs[1]["content"][0].get("cache_control").is_none());
    }

    /// Tools, system, the end of the history and where the previous call
    /// ended: never more than the API's four breakpoints.
    #[test]
    fn cache_breakpoints() {
        let mut messages = vec![Message::user("q0")];
        for i in 0..6 {
            messages.push(Message::assistant(format!("a{i}")));
            messages.push(Message::user(format!("q{}", i + 1)));
        }
        let req = LlmRequest {
            model: "claude".into(),
            system: "sys".into(),
            messages,
            tools: vec![
                super::super::ToolSpec {
                    name: "a".into(),
                    description: "A".into(),
                    input_schema: json!({"type": "object"}),
                },
                super::super::ToolSpec {
                    name: "b".into(),
                    description: "B".into(),
                    input_schema: json!({"type": "object"}),
                },
            ],
            max_tokens: 50,
        };
        let b = request_body(&req);
        let marked = b.to_string().matches("\"cache_control\"").count();
        assert_eq!(marked, MAX_BREAKPOINTS);
        assert!(b["tools"][0].get("cache_control").is_none());
        assert_eq!(b["tools"][1]["cache_control"]["type"], "ephemeral");
        let msgs = b["messages"].as_array().unwrap();
        let at: Vec<usize> = (0..msgs.len())
            .filter(|i| msgs[*i]["content"][0].get("cache_control").is_some())
            .collect();
        assert_eq!(at, vec![msgs.len() - 3, msgs.len() - 1]);
        // A one-message history has one breakpoint there.
        let mut short = req.clone();
        short.messages.truncate(1);
        short.tools.clear();
        let b = request_body(&short);
        assert_eq!(b.to_string().matches("\"cache_control\"").count(), 2);
    }
}
