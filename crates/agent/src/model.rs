//! Provider-neutral conversation types. They serialize to plain JSON so the
//! daemon can store a session's history as rows of JSON and hand it back
//! unchanged on the next turn.
//!
//! The shape follows Anthropic's (content blocks, tool results carried in
//! user messages) because it is the stricter of the two wire formats: it
//! maps onto OpenAI's `tool_calls` / `role: "tool"` messages without loss,
//! while the reverse would need extra bookkeeping.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person, and the results of tools the assistant asked for.
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    /// The assistant asks for a tool call; only in assistant messages.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// The answer to the [`Block::ToolUse`] with the same id; only in user
    /// messages, in the message right after the one that asked.
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: vec![Block::Text { text: text.into() }],
        }
    }

    pub fn assistant(text: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![Block::Text { text: text.into() }],
        }
    }

    /// The text blocks joined, for display and for token estimates.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for b in &self.content {
            if let Block::Text { text } = b {
                out.push_str(text);
            }
        }
        out
    }

    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &serde_json::Value)> {
        self.content.iter().filter_map(|b| match b {
            Block::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }

    /// True for a user message that carries only tool results: it continues
    /// the assistant's turn rather than starting a new one.
    pub fn is_tool_results(&self) -> bool {
        self.role == Role::User
            && !self.content.is_empty()
            && self
                .content
                .iter()
                .all(|b| matches!(b, Block::ToolResult { .. }))
    }
}

/// Tokens one request consumed, as reported by the provider.
///
/// `input_tokens` is the whole prompt, cached parts included; the two
/// cache counts say how much of it the provider read from its prompt
/// cache (billed at the cache-read price) and how much it wrote to the
/// cache (Anthropic bills writes at a premium; OpenAI reports none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }

    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Prompt tokens neither read from nor written to a cache: full price.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens + self.cache_write_tokens)
    }
}

/// Why a history cannot be sent to a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("message {index}: empty content")]
    Empty { index: usize },
    #[error("message {index}: a {role:?} message cannot carry a {block} block")]
    WrongRole {
        index: usize,
        role: Role,
        block: &'static str,
    },
    #[error("message {index}: tool call {id:?} has no result in the next message")]
    MissingResult { index: usize, id: String },
    #[error(
        "message {index}: tool result for {id:?} answers no tool call of the previous message"
    )]
    OrphanResult { index: usize, id: String },
    #[error("message {index}: tool call id {id:?} used twice in the message")]
    DuplicateId { index: usize, id: String },
}

/// Check that `history` is something both wire formats accept: blocks in
/// the right roles, and every tool call answered in the very next message
/// (and nothing else answered). The daemon should run this on histories it
/// did not build itself (e.g. from the OpenAI-compatible endpoint).
pub fn validate_history(history: &[Message]) -> Result<(), HistoryError> {
    for (index, m) in history.iter().enumerate() {
        // Ids need only be unique within a message: pairing is between
        // neighbours, and some local servers number calls from 0 each time.
        let mut seen_ids = std::collections::HashSet::new();
        if m.content.is_empty() {
            return Err(HistoryError::Empty { index });
        }
        for b in &m.content {
            let bad = match (m.role, b) {
                (Role::User, Block::ToolUse { .. }) => Some("tool_use"),
                (Role::Assistant, Block::ToolResult { .. }) => Some("tool_result"),
                _ => None,
            };
            if let Some(block) = bad {
                return Err(HistoryError::WrongRole {
                    index,
                    role: m.role,
                    block,
                });
            }
            if let Block::ToolUse { id, .. } = b {
                if !seen_ids.insert(id.clone()) {
                    return Err(HistoryError::DuplicateId {
                        index,
                        id: id.clone(),
                    });
                }
            }
        }
        // Results must answer the previous message's calls exactly.
        let asked: Vec<&str> = match index.checked_sub(1).map(|i| &history[i]) {
            Some(prev) if prev.role == Role::Assistant => {
                prev.tool_uses().map(|(id, _, _)| id).collect()
            }
            _ => vec![],
        };
        let answered: Vec<&str> = m
            .content
            .iter()
            .filter_map(|b| match b {
                Block::ToolResult { tool_use_id, .. } => Some(tool_use_id.as_str()),
                _ => None,
            })
            .collect();
        if let Some(id) = answered.iter().find(|id| !asked.contains(id)) {
            return Err(HistoryError::OrphanResult {
                index,
                id: id.to_string(),
            });
        }
        if let Some(id) = asked.iter().find(|id| !answered.contains(id)) {
            return Err(HistoryError::MissingResult {
                index: index - 1,
                id: id.to_string(),
            });
        }
        // The last message may not leave calls unanswered either.
        if index + 1 == history.len() {
            if let Some((id, _, _)) = m.tool_uses().next() {
                return Err(HistoryError::MissingResult {
                    index,
                    id: id.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![Block::ToolUse {
                id: id.into(),
                name: "bash".into(),
                input: json!({"command": "true"}),
            }],
        }
    }

    fn result(id: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![Block::ToolResult {
                tool_use_id: id.into(),
                content: "ok".into(),
                is_error: false,
            }],
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let m = call("t1");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"bash","input":{"command":"true"}}]})
        );
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        // is_error defaults to false so older rows still load.
        let r: Block =
            serde_json::from_value(json!({"type":"tool_result","tool_use_id":"x","content":"c"}))
                .unwrap();
        assert!(matches!(
            r,
            Block::ToolResult {
                is_error: false,
                ..
            }
        ));
    }

    #[test]
    fn validates_histories() {
        let ok = vec![
            Message::user("hi"),
            call("a"),
            result("a"),
            Message::assistant("done"),
        ];
        validate_history(&ok).unwrap();
        assert!(matches!(
            validate_history(&[Message::user("hi"), call("a")]),
            Err(HistoryError::MissingResult { index: 1, .. })
        ));
        assert!(matches!(
            validate_history(&[Message::user("hi"), call("a"), Message::user("x")]),
            Err(HistoryError::MissingResult { index: 1, .. })
        ));
        assert!(matches!(
            validate_history(&[Message::user("hi"), result("a")]),
            Err(HistoryError::OrphanResult { index: 1, .. })
        ));
        assert!(matches!(
            validate_history(&[Message {
                role: Role::User,
                content: vec![]
            }]),
            Err(HistoryError::Empty { index: 0 })
        ));
        let mut wrong = call("a");
        wrong.role = Role::User;
        assert!(matches!(
            validate_history(&[wrong]),
            Err(HistoryError::WrongRole { .. })
        ));
    }
}
