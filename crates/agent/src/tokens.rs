//! Token counts with a real tokenizer (cl100k_base, embedded in
//! tiktoken-rs: no download at run time). Providers count with their own
//! tokenizers, so these are estimates for decisions (when to compact) and
//! for the prompt-size benchmark, not for billing: billing uses the usage
//! the provider reports.

use crate::model::{Block, Message};
use crate::provider::ToolSpec;

/// Tokens in `text`. Counts are remembered: every turn estimates the whole
/// history, and tokenizing it anew each time cost milliseconds a turn on a
/// long session (even a two-word text costs microseconds of regex setup).
pub fn count(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let key = memo_key(text);
    if let Some(n) = memo().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return *n;
    }
    let n = encode_len(text);
    let mut m = memo().lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= MEMO_MAX_ENTRIES {
        // Cheaper than an LRU and good enough: live sessions refill it.
        m.clear();
    }
    m.insert(key, n);
    n
}

fn encode_len(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

/// ~2 MiB of memo at most.
const MEMO_MAX_ENTRIES: usize = 65_536;

/// (length, two independent 64-bit hashes): a collision would only skew an
/// estimate, and needs both to collide at the same length.
type MemoKey = (usize, u64, u64);

fn memo_key(text: &str) -> MemoKey {
    use std::hash::{BuildHasher, Hasher};
    let hash = |seed: u64| {
        let mut h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .build_hasher();
        h.write_u64(seed);
        h.write(text.as_bytes());
        h.finish()
    };
    (
        text.len(),
        hash(0x9e37_79b9_7f4a_7c15),
        hash(0xc2b2_ae3d_27d4_eb4f),
    )
}

fn memo() -> &'static std::sync::Mutex<std::collections::HashMap<MemoKey, usize>> {
    static MEMO: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<MemoKey, usize>>> =
        std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default)
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
/// A tool's schema is fixed by its name, so the count is remembered by the
/// names: serialising every schema to look the text up cost more than the
/// rest of a turn's token estimate.
pub fn tools(specs: &[ToolSpec]) -> usize {
    if specs.is_empty() {
        return 0;
    }
    static BY_NAMES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<Vec<String>, usize>>,
    > = std::sync::OnceLock::new();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let memo = BY_NAMES.get_or_init(Default::default);
    if let Some(n) = memo.lock().unwrap_or_else(|p| p.into_inner()).get(&names) {
        return *n;
    }
    let n = count(&crate::provider::openai::tools_json(specs).to_string());
    let mut m = memo.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= 1024 {
        m.clear();
    }
    m.insert(names, n);
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_with_cl100k() {
        // Known cl100k counts.
        assert_eq!(super::count("hello world"), 2);
        assert_eq!(super::count(""), 0);
    }

    #[test]
    fn remembered_counts_match_fresh_ones() {
        let long = "the quick brown fox jumps over the lazy dog. ".repeat(40);
        let fresh = super::encode_len(&long);
        assert_eq!(super::count(&long), fresh);
        // The second count comes from the memo, and must be the same.
        assert_eq!(super::count(&long), fresh);
        let other = format!("{long}!");
        assert_eq!(super::count(&other), super::encode_len(&other));
    }
}
