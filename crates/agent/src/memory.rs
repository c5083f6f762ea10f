//! The agent's memory as tools: `memory_search` and `memory_get`, plus the
//! silent flush turn before compaction.
//!
//! Memory is Markdown files in the user's sandbox (`/root/MEMORY.md`,
//! `/root/memory/YYYY-MM-DD.md`, extra paths from the daemon's config),
//! written with the ordinary file tools. The index lives on the host: the
//! daemon implements [`AgentMemory`] for the caller's user and passes it in
//! [`crate::TurnContext::memory`]; without one these tools are not offered
//! and no flush happens.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{Block, Message, Role};
use crate::provider::{LlmRequest, ToolSpec};
use crate::tools::ToolOutput;
use crate::turn::{run_tool, StepEnd, Turn, TurnContext};

/// One chunk a search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryHit {
    /// Absolute path in the sandbox.
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub snippet: String,
    pub score: f32,
}

/// What a search found, and how it ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryHits {
    /// `hybrid`, `vector` or `text`.
    pub mode: String,
    /// Why the ranking is text only, when it is (no embedder, or it failed).
    pub fallback: Option<String>,
    pub hits: Vec<MemoryHit>,
}

/// The user's memory index, as the daemon keeps it. Errors are messages
/// for the model (an empty query, a path outside memory).
#[async_trait::async_trait]
pub trait AgentMemory: Send + Sync {
    /// The best `max_results` chunks for `query`; files changed in the
    /// sandbox since they were indexed are reindexed first.
    async fn search(&self, query: &str, max_results: usize) -> Result<MemoryHits, String>;
    /// Lines `from..from + lines` (from 1) of memory file `path`
    /// (absolute); all of it (up to a cap) without `lines`.
    async fn get(&self, path: &str, from: usize, lines: Option<usize>) -> Result<String, String>;
    /// A tool wrote `path` (absolute): reindex it if it is a memory file.
    async fn written(&self, path: &str);
    /// Today's daily note (absolute path), where the flush writes.
    fn daily_note(&self) -> String;
}

pub const TOOL_NAMES: [&str; 2] = ["memory_search", "memory_get"];

/// Default and largest `max_results`.
pub const DEFAULT_RESULTS: usize = 6;
pub const MAX_RESULTS: usize = 20;

/// The lines the system prompt spends on memory when the tools are there.
pub const PROMPT_LINES: &str = "\
- Memory: {memory} (curated, shown below) and memory/YYYY-MM-DD.md (daily notes, UTC date; append). \
Save facts, preferences and decisions worth keeping there with write_file/edit_file. \
Before answering about earlier work, people, dates or preferences, use memory_search, then memory_get for more lines.";

/// Kept terse: sent with every request (see `prompt::first_turn_prompt_tokens`).
pub fn specs() -> Vec<ToolSpec> {
    let int = json!({"type": "integer"});
    vec![
        ToolSpec {
            name: "memory_search".into(),
            description:
                "Search memory files (MEMORY.md, memory/*.md); returns path, lines, snippet, score."
                    .into(),
            input_schema: json!({"type": "object", "properties": {
                "query": {"type": "string"}, "max_results": int}, "required": ["query"]}),
        },
        ToolSpec {
            name: "memory_get".into(),
            description: "Read lines of a memory file.".into(),
            input_schema: json!({"type": "object", "properties": {
                "path": {"type": "string"}, "from": int, "lines": int}, "required": ["path"]}),
        },
    ]
}

fn out(r: Result<String, String>) -> ToolOutput {
    match r {
        Ok(content) => ToolOutput {
            content,
            is_error: false,
        },
        Err(content) => ToolOutput {
            content,
            is_error: true,
        },
    }
}

/// A non-negative integer argument (models sometimes quote numbers).
fn opt_usize(input: &Value, k: &str) -> Result<Option<usize>, String> {
    match input.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid arguments: {k} must be a non-negative integer")),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("invalid arguments: {k} must be a non-negative integer")),
    }
}

/// Hits as the model reads them: one header line per hit, then its text.
pub fn format_hits(r: &MemoryHits) -> String {
    let mut s = String::new();
    if let Some(f) = &r.fallback {
        s.push_str(&format!("[{f}]\n"));
    }
    if r.hits.is_empty() {
        s.push_str("no matches in memory");
        return s;
    }
    for h in &r.hits {
        s.push_str(&format!(
            "{}:{}-{} (score {:.2})\n{}\n\n",
            h.path,
            h.start_line,
            h.end_line,
            h.score,
            h.snippet.trim_end()
        ));
    }
    s.trim_end().to_string()
}

/// Run memory tool `name` (one of [`TOOL_NAMES`]); relative paths are
/// under `workdir`.
pub async fn execute(m: &dyn AgentMemory, workdir: &str, name: &str, input: &Value) -> ToolOutput {
    if let Some(raw) = input.get(crate::tools::INVALID_ARGS) {
        return out(Err(format!(
            "invalid arguments: not a JSON object: {}",
            raw.as_str().unwrap_or_default()
        )));
    }
    let run = async {
        match name {
            "memory_search" => {
                let query = match input.get("query") {
                    Some(Value::String(q)) => q,
                    Some(_) => return Err("invalid arguments: query must be a string".into()),
                    None => return Err("invalid arguments: missing query".into()),
                };
                let k = opt_usize(input, "max_results")?
                    .unwrap_or(DEFAULT_RESULTS)
                    .clamp(1, MAX_RESULTS);
                m.search(query, k).await.map(|r| format_hits(&r))
            }
            "memory_get" => {
                let path = match input.get("path") {
                    Some(Value::String(p)) => crate::tools::resolve_path(workdir, p)?,
                    Some(_) => return Err("invalid arguments: path must be a string".into()),
                    None => return Err("invalid arguments: missing path".into()),
                };
                let from = opt_usize(input, "from")?.unwrap_or(1).max(1);
                m.get(&path, from, opt_usize(input, "lines")?).await
            }
            other => Err(format!("unknown tool {other:?}")),
        }
    };
    out(run.await)
}

/// The flush turn's instruction: what to save, and where.
pub fn flush_prompt(daily_note: &str) -> String {
    format!(
        "[memory flush] This conversation is about to be compacted: older messages will be replaced by a summary. \
         Save what must not be lost (facts, preferences, decisions, open tasks) now: append it to {daily_note} \
         with edit_file, or write_file if it does not exist yet (read it first). Keep it short. \
         When done, or if nothing is worth saving, reply with just NO_REPLY."
    )
}

/// Model calls the flush turn may make (its tool calls in between).
pub const FLUSH_STEPS: usize = 4;

/// Stopped by the user during the flush.
pub(crate) struct Cancelled;

impl Turn<'_> {
    /// The silent turn before a compaction: the conversation so far, then
    /// [`flush_prompt`]; the model's tool calls run, nothing of it is
    /// shown or kept in the history (its usage is recorded). A failing
    /// model call ends the flush, not the turn.
    pub(crate) async fn flush(
        &mut self,
        memory: &dyn AgentMemory,
        system: &str,
        tools: &[ToolSpec],
        base: &[Message],
    ) -> Result<(), Cancelled> {
        let mut messages: Vec<Message> = base.to_vec();
        messages.extend(self.out.new_messages.iter().cloned());
        messages.push(Message::user(flush_prompt(&memory.daily_note())));
        for _ in 0..FLUSH_STEPS {
            if self.cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let req = LlmRequest {
                model: self.ctx.model.id.clone(),
                system: system.to_string(),
                messages: messages.clone(),
                tools: tools.to_vec(),
                max_tokens: self.ctx.model.max_output_tokens,
            };
            let step = self.model_step(&req, false).await;
            match step.end {
                StepEnd::Done => {}
                StepEnd::Cancelled => return Err(Cancelled),
                StepEnd::Failed(e) => {
                    tracing::warn!("memory flush before compaction failed: {e}");
                    return Ok(());
                }
            }
            if step.calls.is_empty() {
                return Ok(());
            }
            let mut content = Vec::new();
            if !step.text.is_empty() {
                content.push(Block::Text { text: step.text });
            }
            for (id, name, input) in &step.calls {
                content.push(Block::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: input.clone(),
                });
            }
            messages.push(Message {
                role: Role::Assistant,
                content,
            });
            let mut results = Vec::new();
            for (id, name, input) in &step.calls {
                let out = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return Err(Cancelled),
                    o = run_tool(self.ctx, name, input) => o,
                };
                results.push(Block::ToolResult {
                    tool_use_id: id.clone(),
                    content: out.content,
                    is_error: out.is_error,
                });
            }
            messages.push(Message {
                role: Role::User,
                content: results,
            });
        }
        Ok(())
    }
}

/// The curated memory file's text, capped; None when there is none or the
/// sandbox cannot be reached (the turn goes on without it).
pub(crate) async fn read_curated(ctx: &TurnContext, path: &str) -> Option<String> {
    let agent = match ctx.sandbox.agent().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("no memory file: sandbox unavailable: {e}");
            return None;
        }
    };
    let st = agent.stat(path).await.ok()?;
    if st.kind != ironclaw_sandbox::types::FileKind::File || st.size == 0 {
        return None;
    }
    let got = agent.read_file(path, ctx.max_memory_bytes).await.ok()?;
    let mut text = String::from_utf8_lossy(&got.data).into_owned();
    if got.truncated {
        text.push_str(&format!(
            "\n[memory file truncated: it is {} bytes, only the first {} are shown]",
            st.size, ctx.max_memory_bytes
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_format_with_fallback_and_lines() {
        let r = MemoryHits {
            mode: "text".into(),
            fallback: Some("no embedder configured: text search only".into()),
            hits: vec![MemoryHit {
                path: "/root/memory/2026-01-02.md".into(),
                start_line: 3,
                end_line: 5,
                snippet: "The user's cat is called Miso.\n".into(),
                score: 0.5,
            }],
        };
        assert_eq!(
            format_hits(&r),
            "[no embedder configured: text search only]\n/root/memory/2026-01-02.md:3-5 (score 0.50)\nThe user's cat is called Miso."
        );
        let none = MemoryHits {
            mode: "hybrid".into(),
            fallback: None,
            hits: vec![],
        };
        assert_eq!(format_hits(&none), "no matches in memory");
    }

    #[test]
    fn specs_are_valid() {
        for t in specs() {
            for r in t.input_schema["required"].as_array().unwrap() {
                assert!(t.input_schema["properties"]
                    .get(r.as_str().unwrap())
                    .is_some());
            }
        }
    }
}
