//! Keeping a long conversation inside the model's context window: when the
//! prompt nears the limit, the older turns are summarised by the model and
//! the summary takes their place in the prompt.
//!
//! Nothing is dropped silently: the result says which messages the summary
//! replaces, and the daemon keeps those (archived) and stores the summary
//! in front of the rest. Later compactions summarise the earlier summary
//! along with the turns after it.

use serde::{Deserialize, Serialize};

use crate::config::ModelInfo;
use crate::model::{Block, Message, Role, Usage};
use crate::provider::{complete, LlmRequest, Provider, ProviderError};
use crate::tokens;

/// The first line of every summary message.
pub const SUMMARY_PREFIX: &str = "[Summary of earlier conversation]";

#[derive(Debug, Clone, PartialEq)]
pub struct CompactionPolicy {
    /// Compact when the prompt estimate exceeds this share of the context
    /// window.
    pub threshold: f64,
    /// Turns (a user message and everything up to the next one) kept
    /// verbatim after the summary.
    pub keep_turns: usize,
    /// Budget for the summary itself.
    pub summary_max_tokens: u32,
    /// Each tool result is shortened to this many characters in the text
    /// given to the summariser: its gist matters, not its bulk.
    pub tool_result_chars: usize,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            threshold: 0.75,
            keep_turns: 2,
            summary_max_tokens: 1024,
            tool_result_chars: 1500,
        }
    }
}

/// A summary standing in for the first `replaced` messages of the history
/// the turn was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// A user message starting with [`SUMMARY_PREFIX`].
    pub summary: Message,
    pub replaced: usize,
    /// What the summary request cost.
    pub usage: Usage,
}

pub fn is_summary(m: &Message) -> bool {
    m.role == Role::User && m.text().starts_with(SUMMARY_PREFIX)
}

/// True when a prompt of `estimate` tokens is too close to the window.
pub fn needed(estimate: usize, model: &ModelInfo, policy: &CompactionPolicy) -> bool {
    estimate as f64 > policy.threshold * model.context_window as f64
}

/// Index of the first message to keep verbatim, or None when there is
/// nothing older than the last `keep_turns` turns worth summarising. Only
/// splits where a turn starts, so no tool call is parted from its result.
pub fn split_point(history: &[Message], keep_turns: usize) -> Option<usize> {
    let starts: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User && !m.is_tool_results())
        .map(|(i, _)| i)
        .collect();
    let split = if keep_turns == 0 {
        history.len()
    } else if starts.len() > keep_turns {
        starts[starts.len() - keep_turns]
    } else {
        return None;
    };
    // A lone earlier summary needs no summary of its own.
    if split == 0 || (split == 1 && is_summary(&history[0])) {
        return None;
    }
    Some(split)
}

/// The messages as a plain transcript. Sent as text rather than as native
/// messages so the request needs no tools and cannot be rejected for tool
/// pairing.
pub fn transcript(messages: &[Message], tool_result_chars: usize) -> String {
    let mut out = String::new();
    for m in messages {
        for b in &m.content {
            match (m.role, b) {
                (Role::User, Block::Text { text }) => out.push_str(&format!("User: {text}\n\n")),
                (Role::Assistant, Block::Text { text }) => {
                    out.push_str(&format!("Assistant: {text}\n\n"))
                }
                (_, Block::ToolUse { name, input, .. }) => {
                    out.push_str(&format!("Assistant called {name} {input}\n\n"))
                }
                (
                    _,
                    Block::ToolResult {
                        content, is_error, ..
                    },
                ) => {
                    let mut c: String = content.chars().take(tool_result_chars).collect();
                    if c.len() < content.len() {
                        c.push_str(" [...]");
                    }
                    let label = if *is_error {
                        "Tool error"
                    } else {
                        "Tool result"
                    };
                    out.push_str(&format!("{label}: {c}\n\n"));
                }
            }
        }
    }
    out
}

const INSTRUCTIONS: &str = "Summarise the conversation above so you can continue it without the original. Keep: what the user wants and their preferences, decisions made, facts learned, files created or changed (with paths), commands that matter, and unfinished tasks. Be concise: bullet points, under 400 words.";

/// Ask the model for a summary of `messages`.
pub async fn summarise(
    provider: &dyn Provider,
    model: &ModelInfo,
    messages: &[Message],
    policy: &CompactionPolicy,
) -> Result<(Message, Usage), ProviderError> {
    let mut text = transcript(messages, policy.tool_result_chars);
    // The summariser must fit in the window too; when even the shortened
    // transcript does not, its start gives way (the most recent turns
    // before the kept ones matter most), and the summary says so.
    let budget = (model.context_window as usize)
        .saturating_sub(policy.summary_max_tokens as usize)
        .saturating_sub(200)
        * 9
        / 10;
    let mut omitted = false;
    while tokens::count(&text) > budget && text.len() > 1000 {
        let cut = text.len() / 4;
        let cut = (cut..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text.replace_range(..cut, "");
        omitted = true;
    }
    if omitted {
        text.insert_str(0, "[the beginning is omitted]\n");
    }
    let req = LlmRequest {
        model: model.id.clone(),
        system:
            "You write summaries of conversations between a user and an AI assistant with tools."
                .into(),
        messages: vec![Message::user(format!(
            "<conversation>\n{text}</conversation>\n\n{INSTRUCTIONS}"
        ))],
        tools: vec![],
        max_tokens: policy.summary_max_tokens.min(model.max_output_tokens),
    };
    let c = complete(provider, &req).await?;
    let summary = c.text.trim();
    if summary.is_empty() {
        return Err(ProviderError::Malformed(
            "the model returned an empty summary".into(),
        ));
    }
    Ok((
        Message::user(format!("{SUMMARY_PREFIX}\n{summary}")),
        c.usage,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool_pair(id: &str) -> [Message; 2] {
        [
            Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: id.into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                }],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_use_id: id.into(),
                    content: "x".repeat(50),
                    is_error: false,
                }],
            },
        ]
    }

    #[test]
    fn splits_only_at_turn_starts() {
        let mut h = vec![Message::user("one")];
        h.extend(tool_pair("a"));
        h.push(Message::assistant("did one"));
        h.push(Message::user("two"));
        h.extend(tool_pair("b"));
        h.push(Message::user("three"));
        assert_eq!(split_point(&h, 2), Some(4));
        assert_eq!(split_point(&h, 1), Some(7));
        assert_eq!(split_point(&h, 3), None);
        assert_eq!(split_point(&h, 0), Some(8));
        let s = vec![
            Message::user(format!("{SUMMARY_PREFIX}\nold")),
            Message::user("a"),
            Message::user("b"),
        ];
        assert_eq!(split_point(&s, 2), None);
    }

    #[test]
    fn transcript_shortens_tool_results() {
        let mut h = vec![Message::user("hi")];
        h.extend(tool_pair("a"));
        let t = transcript(&h, 10);
        assert!(t.contains("User: hi"));
        assert!(t.contains("Assistant called bash {\"command\":\"ls\"}"));
        assert!(t.contains("Tool result: xxxxxxxxxx [...]"));
    }
}
