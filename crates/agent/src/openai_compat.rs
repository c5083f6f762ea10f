//! The daemon's OpenAI-compatible endpoint, library half: turn a client's
//! Chat Completions request into a history and a user message (with a
//! clear error for anything malformed), and turn a turn's output back into
//! Chat Completions responses, whole or as stream chunks.

use serde_json::{json, Value};

use crate::model::{validate_history, Block, Message, Role, Usage};

/// A client's request, understood.
#[derive(Debug, Clone, PartialEq)]
pub struct CompatRequest {
    pub model: String,
    /// The messages before the last one.
    pub history: Vec<Message>,
    /// The last message, which must be the user's.
    pub user_text: String,
    /// The client's own system messages, joined: the daemon may append them
    /// to the agent's prompt or ignore them.
    pub system: Option<String>,
    pub stream: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompatError(pub String);

fn bad(msg: impl Into<String>) -> CompatError {
    CompatError(msg.into())
}

/// Text of a `content` that is a string or an array of text parts.
fn content_text(v: &Value, at: &str) -> Result<String, CompatError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push_str(p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            bad(format!("{at}.content[{j}].text must be a string"))
                        })?)
                    }
                    Some(other) => {
                        return Err(bad(format!(
                            "{at}.content[{j}]: {other:?} parts are not supported, only text"
                        )))
                    }
                    None => return Err(bad(format!("{at}.content[{j}] has no type"))),
                }
            }
            Ok(out)
        }
        _ => Err(bad(format!(
            "{at}.content must be a string or an array of parts"
        ))),
    }
}

/// Parse a Chat Completions request body.
pub fn parse_request(body: &Value) -> Result<CompatRequest, CompatError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model is required"))?
        .to_string();
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages must be an array"))?;
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream must be true or false")),
    };
    let mut system = Vec::new();
    let mut out: Vec<Message> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}.role is required")))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(content_text(content, &at)?),
            "user" => {
                let text = content_text(content, &at)?;
                if text.is_empty() {
                    return Err(bad(format!("{at}: empty user message")));
                }
                out.push(Message::user(text));
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = content_text(content, &at)?;
                if !text.is_empty() {
                    blocks.push(Block::Text { text });
                }
                for (j, c) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let f = &c["function"];
                    let (Some(id), Some(name)) = (c["id"].as_str(), f["name"].as_str()) else {
                        return Err(bad(format!(
                            "{at}.tool_calls[{j}] needs id and function.name"
                        )));
                    };
                    let input = crate::provider::openai::parse_arguments(
                        f["arguments"].as_str().unwrap_or(""),
                    );
                    blocks.push(Block::ToolUse {
                        id: id.into(),
                        name: name.into(),
                        input,
                    });
                }
                if blocks.is_empty() {
                    return Err(bad(format!("{at}: assistant message with no content")));
                }
                out.push(Message {
                    role: Role::Assistant,
                    content: blocks,
                });
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}.tool_call_id is required")))?;
                let block = Block::ToolResult {
                    tool_use_id: id.into(),
                    content: content_text(content, &at)?,
                    is_error: false,
                };
                // Consecutive tool messages answer one assistant message.
                match out.last_mut() {
                    Some(last) if last.is_tool_results() => last.content.push(block),
                    _ => out.push(Message {
                        role: Role::User,
                        content: vec![block],
                    }),
                }
            }
            other => return Err(bad(format!("{at}: unknown role {other:?}"))),
        }
    }
    let last = out
        .pop()
        .ok_or_else(|| bad("messages has no user message"))?;
    if last.role != Role::User || last.is_tool_results() {
        return Err(bad("the last message must be the user's"));
    }
    validate_history(&out).map_err(|e| bad(format!("messages: {e}")))?;
    Ok(CompatRequest {
        model,
        history: out,
        user_text: last.text(),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        stream,
    })
}

/// A whole (non-streaming) `chat.completion`.
pub fn completion(id: &str, model: &str, created: u64, text: &str, usage: Usage) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": usage_json(usage),
    })
}

/// OpenAI's usage object, cached prompt tokens in `prompt_tokens_details`.
pub fn usage_json(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
           "total_tokens": usage.total(),
           "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens}})
}

/// One `chat.completion.chunk` carrying `text` (the first should carry the
/// role: pass `first`), for `data: <chunk>\n\n` framing.
pub fn chunk(id: &str, model: &str, created: u64, text: &str, first: bool) -> Value {
    let mut delta = json!({"content": text});
    if first {
        delta["role"] = json!("assistant");
    }
    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

/// The closing chunk, with usage; `data: [DONE]` follows it.
pub fn final_chunk(id: &str, model: &str, created: u64, finish: &str, usage: Usage) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
           "usage": usage_json(usage)})
}

/// An error body in OpenAI's shape.
pub fn error_body(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_conversation() {
        let r = parse_request(&json!({
            "model": "agent", "stream": true,
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "a.txt"},
                {"role": "assistant", "content": "There is a.txt"},
                {"role": "user", "content": "thanks"}
            ]
        }))
        .unwrap();
        assert_eq!(r.user_text, "thanks");
        assert_eq!(r.system.as_deref(), Some("be nice"));
        assert_eq!(r.history.len(), 4);
        assert!(r.stream);
    }

    #[test]
    fn malformed_requests_get_clear_errors() {
        let e = |v: Value| parse_request(&v).unwrap_err().to_string();
        assert_eq!(e(json!({"messages": []})), "model is required");
        assert_eq!(
            e(json!({"model": "m", "messages": "hi"})),
            "messages must be an array"
        );
        assert_eq!(
            e(json!({"model": "m", "messages": []})),
            "messages has no user message"
        );
        assert_eq!(
            e(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            "messages[0]: unknown role \"wizard\""
        );
        assert_eq!(
            e(
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
            ),
            "messages[0].content[0]: \"image_url\" parts are not supported, only text"
        );
        assert_eq!(
            e(
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
            ),
            "the last message must be the user's"
        );
        assert!(e(json!({"model": "m", "messages": [
            {"role": "tool", "tool_call_id": "x", "content": "r"}, {"role": "user", "content": "a"}]}))
        .starts_with("messages: message 0: tool result"));
    }
}
