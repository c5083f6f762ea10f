//! OpenAI Chat Completions, streaming: the format OpenAI, OpenRouter,
//! Ollama, vLLM and llama.cpp's server all speak.

use std::collections::BTreeMap;

use serde_json::{json, Value};

mod body;

pub use body::{request_body, request_bytes, tools_json};

use super::sse::SseEvent;
use super::{
    decode, parse_data, post_sse, retry::stream_with_retry, Decoder, EventStream, LlmEvent,
    LlmRequest, Provider, ProviderError, RetryPolicy,
};
use crate::model::Usage;

pub struct OpenAi {
    ep: super::Endpoint,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OpenAi").field(&self.ep).finish()
    }
}

impl OpenAi {
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
        policy: RetryPolicy,
    ) -> OpenAi {
        OpenAi {
            ep: super::Endpoint::new(name, base_url, api_key, policy),
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.ep.base_url)
    }
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.ep.name
    }

    async fn stream(&self, req: &LlmRequest) -> Result<EventStream, ProviderError> {
        let body = request_bytes(req);
        stream_with_retry(&self.ep.policy, || {
            let mut http = self
                .ep
                .client
                .post(self.endpoint())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &self.ep.api_key {
                http = http.bearer_auth(key);
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

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    args: String,
}

#[derive(Default)]
struct StreamDecoder {
    /// Calls being assembled, by their `index` in the deltas.
    calls: BTreeMap<u64, PartialCall>,
    finish: Option<String>,
    /// The last usage seen: some servers repeat a running total in
    /// several chunks, so it is reported once, at the end.
    usage: Option<Usage>,
    done: bool,
}

impl StreamDecoder {
    fn flush_calls(&mut self) -> Vec<LlmEvent> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(i, c)| LlmEvent::ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                name: c.name,
                input: parse_arguments(&c.args),
            })
            .collect()
    }
}

/// Arguments arrive as a JSON string the model wrote; a model can get it
/// wrong. Keep what it wrote so the tool reports the mistake back to it,
/// in an object because Anthropic-style histories require one.
pub(crate) fn parse_arguments(args: &str) -> Value {
    if args.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ crate::tools::INVALID_ARGS: args }),
    }
}

impl Decoder for StreamDecoder {
    fn event(&mut self, ev: SseEvent) -> Result<Vec<LlmEvent>, ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(vec![]);
        }
        if data == "[DONE]" {
            self.done = true;
            let mut out = self.flush_calls();
            out.extend(self.usage.take().map(LlmEvent::Usage));
            out.push(LlmEvent::Done {
                stop_reason: self.finish.take().unwrap_or_else(|| "stop".into()),
            });
            return Ok(out);
        }
        let v = parse_data(data)?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
            let code = err.get("code").and_then(Value::as_u64).unwrap_or(0);
            return Err(ProviderError::Api {
                retryable: code == 429 || code >= 500,
                message,
            });
        }
        if !v.is_object() {
            return Err(ProviderError::Malformed(format!(
                "expected a chat.completion.chunk object, got {}",
                super::excerpt(data)
            )));
        }
        let mut out = Vec::new();
        if let Some(choice) = v.pointer("/choices/0") {
            let delta = &choice["delta"];
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                if !t.is_empty() {
                    out.push(LlmEvent::TextDelta(t.to_string()));
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, c) in calls.iter().enumerate() {
                    let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
                    let p = self.calls.entry(index).or_default();
                    if let Some(id) = c.get("id").and_then(Value::as_str) {
                        p.id = id.to_string();
                    }
                    if let Some(f) = c.get("function") {
                        if let Some(n) = f.get("name").and_then(Value::as_str) {
                            p.name.push_str(n);
                        }
                        match f.get("arguments") {
                            Some(Value::String(a)) => p.args.push_str(a),
                            // Some servers send the arguments as an object.
                            Some(o @ Value::Object(_)) => p.args.push_str(&o.to_string()),
                            _ => {}
                        }
                    }
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(f.to_ascii_lowercase());
                out.extend(self.flush_calls());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            // prompt_tokens counts the cached ones too.
            let cached = u
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            self.usage = Some(Usage {
                input_tokens: n("prompt_tokens"),
                output_tokens: n("completion_tokens"),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
            });
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<Vec<LlmEvent>, ProviderError> {
        if self.done {
            return Ok(vec![]);
        }
        // Some servers close right after the finishing chunk without
        // `[DONE]`; that answer is complete. Without either it is not.
        match self.finish.take() {
            Some(stop_reason) => {
                self.done = true;
                let mut out = self.flush_calls();
                out.extend(self.usage.take().map(LlmEvent::Usage));
                out.push(LlmEvent::Done { stop_reason });
                Ok(out)
            }
            None => Err(ProviderError::Stream(
                "the stream ended before the answer was complete".into(),
            )),
        }
    }

    fn finished(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Block, Message, Role};

    fn feed(d: &mut StreamDecoder, data: &str) -> Vec<LlmEvent> {
        d.event(SseEvent {
            event: "message".into(),
            data: data.into(),
        })
        .unwrap()
    }

    #[test]
    fn accumulates_tool_call_arguments_by_index() {
        let mut d = StreamDecoder::default();
        let mut evs = feed(
            &mut d,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#,
        );
        evs.extend(feed(&mut d, r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"b","type":"function","function":{"name":"list_dir","arguments":""}}]}}]}"#));
        evs.extend(feed(&mut d, r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"bash","arguments":"{\"comm"}}]}}]}"#));
        evs.extend(feed(&mut d, r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"and\":\"ls\"}"}}]}}]}"#));
        evs.extend(feed(
            &mut d,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ));
        evs.extend(feed(
            &mut d,
            r#"{"choices":[],"usage":{"prompt_tokens":2000,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":1024}}}"#,
        ));
        evs.extend(feed(&mut d, "[DONE]"));
        assert_eq!(
            evs,
            vec![
                LlmEvent::TextDelta("Hi".into()),
                LlmEvent::ToolCall {
                    id: "a".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"})
                },
                LlmEvent::ToolCall {
                    id: "b".into(),
                    name: "list_dir".into(),
                    input: json!({})
                },
                LlmEvent::Usage(Usage {
                    input_tokens: 2000,
                    output_tokens: 5,
                    cache_read_tokens: 1024,
                    cache_write_tokens: 0,
                }),
                LlmEvent::Done {
                    stop_reason: "tool_calls".into()
                },
            ]
        );
        assert!(d.finished());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut d = StreamDecoder::default();
        let e = d
            .event(SseEvent {
                event: "message".into(),
                data: "<html>oops</html>".into(),
            })
            .unwrap_err();
        assert!(matches!(e, ProviderError::Malformed(_)), "{e}");
        let mut d = StreamDecoder::default();
        feed(&mut d, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#);
        assert!(matches!(d.end(), Err(ProviderError::Stream(_))));
        let mut d = StreamDecoder::default();
        let e = d
            .event(SseEvent {
                event: "message".into(),
                data: r#"{"error":{"message":"rate limited","code":429}}"#.into(),
            })
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "provider error: rate limited");
    }

    #[test]
    fn bad_arguments_are_kept_for_the_tool_to_report() {
        assert_eq!(
            parse_arguments("{\"a\":1"),
            json!({"_invalid_arguments": "{\"a\":1"})
        );
        assert_eq!(parse_arguments(""), json!({}));
    }

    #[test]
    fn request_maps_tool_results_to_tool_messages() {
        let req = LlmRequest {
            model: "m".into(),
            system: "sys".into(),
            messages: vec![
                Message::user("hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![Block::ToolUse {
                        id: "c1".into(),
                        name: "bash".into(),
                        input: json!({"command": "ls"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Block::ToolResult {
                        tool_use_id: "c1".into(),
                        content: "boom".into(),
                        is_error: true,
                    }],
                },
            ],
            tools: vec![],
            max_tokens: 100,
        };
        let b = request_body(&req);
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0], json!({"role":"system","content":"sys"}));
        assert_eq!(msgs[2]["content"], Value::Null);
        assert_eq!(
            msgs[2]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"ls\"}"
        );
        assert_eq!(
            msgs[3],
            json!({"role":"tool","tool_call_id":"c1","content":"Error: boom"})
        );
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(b.get("tools").is_none());
    }
}
