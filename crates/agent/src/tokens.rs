//! Token counts with a real tokenizer (cl100k_base, embedded in
//! tiktoken-rs: no download at run time). Providers count with their own
//! tokenizers, so these are estimates for decisions (when to compact) and
//! for the prompt-size benchmark, not for billing: billing uses the usage
//! the provider reports.

use crate::model::{Block, Message};
use crate::provider::ToolSpec;

/// Tokens in `text`.
pub fn count(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

/// Framing each message costs on top of its content (role markers).
const PER_MESSAGE: usize = 4;

pub fn message(m: &Message) -> usize {
    PER_MESSAGE
        + m.content
            .iter()
            .map(|b| match b {
                Block::Text { text } => count(text),
                Block::ToolUse { name, input, .. } => 8 + count(name) + count(&input.to_string()),
                Block::ToolResult { content, .. } => 8 + count(content),
            })
            .sum::<usize>()
}

pub fn messages(ms: &[Message]) -> usize {
    ms.iter().map(message).sum()
}

/// The tool specs as the OpenAI format sends them (the larger of the two).
pub fn tools(specs: &[ToolSpec]) -> usize {
    if specs.is_empty() {
        return 0;
    }
    count(&crate::provider::openai::tools_json(specs).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_with_cl100k() {
        // Known cl100k counts.
        assert_eq!(super::count("hello world"), 2);
        assert_eq!(super::count(""), 0);
    }
}
