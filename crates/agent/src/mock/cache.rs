//! The mock's prompt cache, modelled on the real services' so a test or a
//! benchmark sees the numbers a real bill would show.
//!
//! Tokens are counted the mock's way (a token per 4 bytes of the prompt's
//! canonical text: tool definitions, system prompt, then messages, each as
//! compact JSON without `cache_control`), the same way whether caching is
//! on or off, so a run with caching and one without compare fairly.
//!
//! - Anthropic caches only at the blocks the request marks with
//!   `cache_control` (at most 4), and only prefixes of at least 1024
//!   tokens. A request reads the longest marked prefix an earlier request
//!   wrote, writes the prefix up to its last breakpoint, and reports
//!   `cache_read_input_tokens`, `cache_creation_input_tokens` and the rest
//!   as `input_tokens`.
//! - OpenAI caches every prompt automatically and reports, in
//!   `usage.prompt_tokens_details.cached_tokens`, the longest prefix shared
//!   with an earlier prompt, from 1024 tokens on and in steps of 128.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use serde_json::Value;

/// Shortest prefix either service caches.
pub const MIN_CACHED_TOKENS: u64 = 1024;
/// OpenAI's cache granularity beyond the first 1024 tokens.
pub const OPENAI_STEP: u64 = 128;
/// Anthropic's limit on `cache_control` blocks per request.
pub const MAX_BREAKPOINTS: usize = 4;
/// Earlier prompts remembered for OpenAI-style prefix matching.
const REMEMBERED: usize = 256;

/// What one request's prompt cost in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptTokens {
    /// The whole prompt, cached parts included.
    pub total: u64,
    pub cache_read: u64,
    /// Anthropic only.
    pub cache_write: u64,
}

impl PromptTokens {
    /// Anthropic's `input_tokens`: what was neither read nor written.
    pub fn uncached(&self) -> u64 {
        self.total - self.cache_read - self.cache_write
    }
}

#[derive(Debug, Default)]
pub struct PromptCache {
    /// Off: count, but never report anything cached (the reference run).
    pub enabled: bool,
    /// Anthropic: hashes of the prefixes written, up to a breakpoint.
    written: HashSet<u64>,
    /// OpenAI: the canonical text of earlier prompts.
    prompts: VecDeque<String>,
}

fn tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

fn key(prefix: &str) -> u64 {
    let mut h = DefaultHasher::new();
    prefix.hash(&mut h);
    h.finish()
}

/// `v` as compact JSON without its `cache_control` fields, and whether it
/// had one at the top.
fn canonical(v: &Value) -> (String, bool) {
    match v {
        Value::Object(m) => {
            let mut m = m.clone();
            let marked = m.remove("cache_control").is_some();
            (Value::Object(m).to_string(), marked)
        }
        other => (other.to_string(), false),
    }
}

impl PromptCache {
    pub fn new(enabled: bool) -> PromptCache {
        PromptCache {
            enabled,
            ..Default::default()
        }
    }

    /// A Messages request. Err is the API's 400 message.
    pub fn anthropic(&mut self, body: &Value) -> Result<PromptTokens, String> {
        // (text, marked) segments in the order the API renders them.
        let mut segs: Vec<(String, bool)> = Vec::new();
        for t in body["tools"].as_array().into_iter().flatten() {
            segs.push(canonical(t));
        }
        match &body["system"] {
            Value::String(s) => segs.push((Value::String(s.clone()).to_string(), false)),
            Value::Array(blocks) => segs.extend(blocks.iter().map(canonical)),
            _ => {}
        }
        for m in body["messages"].as_array().into_iter().flatten() {
            segs.push((format!("[{}]", m["role"]), false));
            match &m["content"] {
                Value::Array(blocks) => segs.extend(blocks.iter().map(canonical)),
                other => segs.push((other.to_string(), false)),
            }
        }
        let marks = segs.iter().filter(|(_, m)| *m).count();
        if marks > MAX_BREAKPOINTS {
            return Err(format!(
                "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {marks}."
            ));
        }
        let mut prompt = String::new();
        let mut breakpoints: Vec<(u64, u64)> = Vec::new(); // (tokens, key)
        for (text, marked) in &segs {
            prompt.push_str(text);
            if *marked {
                breakpoints.push((tokens(prompt.len()), key(&prompt)));
            }
        }
        let total = tokens(prompt.len());
        if !self.enabled {
            return Ok(PromptTokens {
                total,
                ..Default::default()
            });
        }
        let cacheable = |t: u64| t >= MIN_CACHED_TOKENS;
        let read = breakpoints
            .iter()
            .rev()
            .find(|(t, k)| cacheable(*t) && self.written.contains(k))
            .map_or(0, |(t, _)| *t);
        let last = breakpoints
            .iter()
            .rev()
            .find(|(t, _)| cacheable(*t))
            .map_or(0, |(t, _)| *t);
        for (t, k) in &breakpoints {
            if cacheable(*t) {
                self.written.insert(*k);
            }
        }
        Ok(PromptTokens {
            total,
            cache_read: read,
            cache_write: last.saturating_sub(read),
        })
    }

    /// A Chat Completions request.
    pub fn openai(&mut self, body: &Value) -> PromptTokens {
        let mut prompt = String::new();
        for t in body["tools"].as_array().into_iter().flatten() {
            prompt.push_str(&t.to_string());
        }
        for m in body["messages"].as_array().into_iter().flatten() {
            prompt.push_str(&m.to_string());
        }
        let total = tokens(prompt.len());
        if !self.enabled {
            return PromptTokens {
                total,
                ..Default::default()
            };
        }
        let shared = self
            .prompts
            .iter()
            .map(|p| common_prefix(p, &prompt))
            .max()
            .unwrap_or(0);
        // Whole tokens only: a partly shared token is not cached.
        let shared = (shared / 4) as u64;
        let cached = if shared >= MIN_CACHED_TOKENS {
            MIN_CACHED_TOKENS + (shared - MIN_CACHED_TOKENS) / OPENAI_STEP * OPENAI_STEP
        } else {
            0
        };
        if self.prompts.len() == REMEMBERED {
            self.prompts.pop_front();
        }
        self.prompts.push_back(prompt);
        PromptTokens {
            total,
            cache_read: cached.min(total),
            cache_write: 0,
        }
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn big(n: usize) -> String {
        "x".repeat(n)
    }

    #[test]
    fn anthropic_reads_only_at_marked_prefixes() {
        let mut c = PromptCache::new(true);
        let sys =
            json!([{"type": "text", "text": big(6000), "cache_control": {"type": "ephemeral"}}]);
        let msg = |t: &str, mark: bool| {
            let mut b = json!({"type": "text", "text": t});
            if mark {
                b["cache_control"] = json!({"type": "ephemeral"});
            }
            json!({"role": "user", "content": [b]})
        };
        let first = json!({"system": sys, "messages": [msg("hello", true)]});
        let a = c.anthropic(&first).unwrap();
        assert_eq!(a.cache_read, 0);
        assert_eq!(
            a.cache_write, a.total,
            "all of it up to the last breakpoint"
        );
        // The same system prompt, another message, no breakpoint on it:
        // the system prefix is read, the rest is full price.
        let second = json!({"system": sys, "messages": [msg("other", false)]});
        let b = c.anthropic(&second).unwrap();
        let sys_tokens = tokens(json!({"type": "text", "text": big(6000)}).to_string().len());
        assert_eq!(b.cache_read, sys_tokens);
        assert!(b.cache_read > 1000 && b.cache_write == 0 && b.uncached() > 0);
        // Under 1024 tokens nothing is cached.
        let small = json!({"system": "hi", "messages": [msg("hello", true)]});
        c.anthropic(&small).unwrap();
        assert_eq!(c.anthropic(&small).unwrap().cache_read, 0);
        // Five breakpoints are refused.
        let five: Vec<Value> = (0..5).map(|i| msg(&format!("m{i}"), true)).collect();
        let e = c.anthropic(&json!({"messages": five})).unwrap_err();
        assert!(e.contains("maximum of 4"), "{e}");
        // Off: counted the same, nothing cached.
        let mut off = PromptCache::new(false);
        off.anthropic(&first).unwrap();
        let o = off.anthropic(&first).unwrap();
        assert_eq!((o.total, o.cache_read, o.cache_write), (a.total, 0, 0));
    }

    #[test]
    fn openai_caches_prefixes_in_steps() {
        let mut c = PromptCache::new(true);
        let m = |t: String| json!({"role": "user", "content": t});
        let first = json!({"messages": [m(big(5000)), m("a".into())]});
        assert_eq!(c.openai(&first).cache_read, 0);
        let second = json!({"messages": [m(big(5000)), m("b".into())]});
        let s = c.openai(&second);
        // ~1254 shared tokens: 1024 plus one step of 128.
        assert_eq!(s.cache_read, 1024 + 128);
        // Shorter than 1024 shared tokens: none.
        let third = json!({"messages": [m(big(3000))]});
        c.openai(&third);
        let fourth = json!({"messages": [m(big(3000) + "y")]});
        assert_eq!(c.openai(&fourth).cache_read, 0);
    }
}
