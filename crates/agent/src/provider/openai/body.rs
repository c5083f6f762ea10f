//! The request body of a streaming Chat Completions call, serialised
//! straight from the typed history.
//!
//! A long session sends hundreds of messages at every model call; building
//! a `serde_json::Value` tree of them first cost more than the rest of a
//! turn. The bytes are the same as that tree's would be: top-level fields
//! in a fixed order with the prompt last, and every object inside with its
//! keys sorted, so one turn's body is a byte prefix of the next one's up
//! to the end of its last message (what prompt caches key on).

use std::borrow::Cow;

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::model::{Block, Message, Role};
use crate::provider::{LlmRequest, ToolSpec};

/// The request as sent (see the module doc for why its bytes are stable).
pub fn request_bytes(req: &LlmRequest) -> bytes::Bytes {
    let body = Body {
        model: &req.model,
        max_tokens: req.max_tokens,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        tools: (!req.tools.is_empty()).then_some(Tools(&req.tools)),
        messages: Messages(req),
    };
    serde_json::to_vec(&body)
        .expect("strings, numbers and JSON values always serialize")
        .into()
}

/// The body as a JSON value, for callers that inspect it.
pub fn request_body(req: &LlmRequest) -> Value {
    serde_json::from_slice(&request_bytes(req)).expect("request_bytes writes JSON")
}

/// The `tools` array of a request.
pub fn tools_json(tools: &[ToolSpec]) -> Value {
    serde_json::to_value(Tools(tools)).expect("tool specs always serialize")
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Tools<'a>>,
    messages: Messages<'a>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

struct Tools<'a>(&'a [ToolSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Function<'a> {
            description: &'a str,
            name: &'a str,
            parameters: &'a Value,
        }
        #[derive(Serialize)]
        struct Tool<'a> {
            function: Function<'a>,
            r#type: &'static str,
        }
        s.collect_seq(self.0.iter().map(|t| Tool {
            function: Function {
                description: &t.description,
                name: &t.name,
                parameters: &t.input_schema,
            },
            r#type: "function",
        }))
    }
}

/// One message as the format has it; fields in sorted order.
#[derive(Serialize)]
#[serde(untagged)]
enum Wire<'a> {
    Tool {
        content: Cow<'a, str>,
        role: &'static str,
        tool_call_id: &'a str,
    },
    Plain {
        content: Cow<'a, str>,
        role: &'static str,
    },
    Assistant {
        content: Option<Cow<'a, str>>,
        role: &'static str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<Call<'a>>,
    },
}

#[derive(Serialize)]
struct Call<'a> {
    function: CallFunction<'a>,
    id: &'a str,
    r#type: &'static str,
}

#[derive(Serialize)]
struct CallFunction<'a> {
    /// The format carries arguments as a string of JSON.
    arguments: String,
    name: &'a str,
}

/// The system prompt, then each history message as one or more wire
/// messages, written as they are produced.
struct Messages<'a>(&'a LlmRequest);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let req = self.0;
        let mut seq = s.serialize_seq(None)?;
        if !req.system.is_empty() {
            seq.serialize_element(&Wire::Plain {
                content: Cow::Borrowed(&req.system),
                role: "system",
            })?;
        }
        for m in &req.messages {
            match m.role {
                Role::User => {
                    // Tool results answer the previous assistant message,
                    // so they come first, as `tool` messages.
                    for b in &m.content {
                        if let Block::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                        } = b
                        {
                            // The format has no error flag; say it in the text.
                            let content = if *is_error {
                                Cow::Owned(format!("Error: {content}"))
                            } else {
                                Cow::Borrowed(content.as_str())
                            };
                            seq.serialize_element(&Wire::Tool {
                                content,
                                role: "tool",
                                tool_call_id: tool_use_id,
                            })?;
                        }
                    }
                    let text = text_of(m);
                    if !text.is_empty() {
                        seq.serialize_element(&Wire::Plain {
                            content: text,
                            role: "user",
                        })?;
                    }
                }
                Role::Assistant => {
                    let text = text_of(m);
                    let tool_calls: Vec<Call> = m
                        .tool_uses()
                        .map(|(id, name, input)| Call {
                            function: CallFunction {
                                arguments: input.to_string(),
                                name,
                            },
                            id,
                            r#type: "function",
                        })
                        .collect();
                    // Nothing to say (e.g. a reply cut off before any text).
                    if text.is_empty() && tool_calls.is_empty() {
                        continue;
                    }
                    seq.serialize_element(&Wire::Assistant {
                        content: (!text.is_empty()).then_some(text),
                        role: "assistant",
                        tool_calls,
                    })?;
                }
            }
        }
        seq.end()
    }
}

/// A message's text blocks joined; borrowed when there is one (the usual case).
fn text_of(m: &Message) -> Cow<'_, str> {
    let mut texts = m.content.iter().filter_map(|b| match b {
        Block::Text { text } => Some(text.as_str()),
        _ => None,
    });
    match (texts.next(), texts.next()) {
        (None, _) => Cow::Borrowed(""),
        (Some(one), None) => Cow::Borrowed(one),
        (Some(_), Some(_)) => Cow::Owned(m.text()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What the body was before it was written directly: a JSON tree with
    /// sorted keys, serialised in the fixed top-level order.
    fn via_value_tree(req: &LlmRequest) -> Vec<u8> {
        let mut messages = Vec::new();
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        for m in &req.messages {
            if m.role == Role::User {
                for b in &m.content {
                    if let Block::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } = b
                    {
                        let content = if *is_error {
                            format!("Error: {content}")
                        } else {
                            content.clone()
                        };
                        messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                    }
                }
                if !m.text().is_empty() {
                    messages.push(json!({"role": "user", "content": m.text()}));
                }
                continue;
            }
            let calls: Vec<Value> = m
                .tool_uses()
                .map(|(id, name, input)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}))
                .collect();
            if m.text().is_empty() && calls.is_empty() {
                continue;
            }
            let text = m.text();
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            messages.push(msg);
        }
        let mut out = format!(
            "{{\"model\":{},\"max_tokens\":{},\"stream\":true,\"stream_options\":{{\"include_usage\":true}}",
            Value::String(req.model.clone()),
            req.max_tokens
        );
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req.tools.iter().map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}})).collect();
            out += &format!(",\"tools\":{}", Value::Array(tools));
        }
        out += &format!(",\"messages\":{}}}", Value::Array(messages));
        out.into_bytes()
    }

    #[test]
    fn bytes_are_those_of_the_sorted_json_tree() {
        let text = |t: &str| Block::Text { text: t.into() };
        let req = LlmRequest {
            model: "m\"odel".into(),
            system: "sys \u{1F600} \n".into(),
            messages: vec![
                Message::user("hi \"there\"\t"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        text("let me "),
                        text("look"),
                        Block::ToolUse {
                            id: "c1".into(),
                            name: "bash".into(),
                            input: json!({"z": 1, "command": "ls \\ /"}),
                        },
                        Block::ToolUse {
                            id: "c2".into(),
                            name: "read_file".into(),
                            input: json!({}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Block::ToolResult {
                            tool_use_id: "c1".into(),
                            content: "boom".into(),
                            is_error: true,
                        },
                        Block::ToolResult {
                            tool_use_id: "c2".into(),
                            content: "ok\u{0}".into(),
                            is_error: false,
                        },
                        text("and then"),
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![],
                },
                Message::assistant("done"),
            ],
            tools: vec![ToolSpec {
                name: "bash".into(),
                description: "run \"it\"".into(),
                input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}}}),
            }],
            max_tokens: 4096,
        };
        assert_eq!(
            String::from_utf8(request_bytes(&req).to_vec()).unwrap(),
            String::from_utf8(via_value_tree(&req)).unwrap()
        );
        let bare = LlmRequest {
            system: String::new(),
            tools: vec![],
            ..req
        };
        assert_eq!(request_bytes(&bare).to_vec(), via_value_tree(&bare));
    }
}
