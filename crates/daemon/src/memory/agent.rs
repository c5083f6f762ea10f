//! The agent's view of a user's memory: [`ironclaw_agent::AgentMemory`]
//! over [`Memory`] and the user's agent sandbox.

use std::sync::Arc;

use ironclaw_agent::{AgentMemory, MemoryHit, MemoryHits, SandboxAccess};

use super::Memory;

/// Most text one `memory_get` returns.
const MAX_GET_BYTES: usize = 16 * 1024;

pub struct UserMemory {
    pub memory: Arc<Memory>,
    pub user: String,
    pub sandbox: Arc<dyn SandboxAccess>,
}

#[async_trait::async_trait]
impl AgentMemory for UserMemory {
    async fn search(&self, query: &str, max_results: usize) -> Result<MemoryHits, String> {
        // Files changed by bash since the last look are picked up here.
        match self.sandbox.agent().await {
            Ok(agent) => {
                if let Err(e) = self.memory.refresh(&self.user, &agent, false).await {
                    tracing::warn!(user = %self.user, "memory: refresh before a search: {e}");
                }
            }
            Err(e) => tracing::warn!(user = %self.user, "memory: searching without a refresh: {e}"),
        }
        let r = self
            .memory
            .search(&self.user, query, max_results)
            .await
            .map_err(|e| e.to_string())?;
        Ok(MemoryHits {
            mode: serde_json::to_value(r.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            fallback: r.fallback,
            hits: r
                .hits
                .into_iter()
                .map(|h| MemoryHit {
                    path: h.path,
                    start_line: h.start_line,
                    end_line: h.end_line,
                    snippet: h.snippet,
                    score: h.score,
                })
                .collect(),
        })
    }

    async fn get(&self, path: &str, from: usize, lines: Option<usize>) -> Result<String, String> {
        if !self.memory.paths.contains(path) {
            return Err(format!(
                "{path} is not a memory file (memory: {}); use read_file for other files",
                self.memory.paths.roots().join(", ")
            ));
        }
        let agent = self.sandbox.agent().await?;
        let got = agent
            .read_file(path, self.memory.max_file_bytes)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&got.data);
        Ok(slice_lines(&text, from, lines))
    }

    async fn written(&self, path: &str) {
        if !self.memory.paths.contains(path) {
            return;
        }
        match self.sandbox.agent().await {
            Ok(agent) => self.memory.file_written(&self.user, &agent, path).await,
            Err(e) => tracing::warn!(user = %self.user, "memory: not reindexed after a write: {e}"),
        }
    }

    fn daily_note(&self) -> String {
        format!(
            "{}/{}.md",
            super::files::DAILY_DIR,
            chrono::Utc::now().format("%Y-%m-%d")
        )
    }
}

/// Lines `from..from + lines` (from 1) of `text`, cut at [`MAX_GET_BYTES`],
/// with a footer when not all of it is shown.
fn slice_lines(text: &str, from: usize, lines: Option<usize>) -> String {
    let all: Vec<&str> = text.split_inclusive('\n').collect();
    let total = all.len();
    if total == 0 {
        return "(empty file)".into();
    }
    if from > total {
        return format!("[line {from} is past the end: {total} lines]");
    }
    let want = lines.map_or(total, |l| (from - 1 + l.max(1)).min(total));
    let mut out = String::new();
    let mut end = from - 1;
    for l in &all[from - 1..want] {
        if out.len() + l.len() > MAX_GET_BYTES {
            break;
        }
        out.push_str(l);
        end += 1;
    }
    if from > 1 || end < total {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("[lines {from}-{end} of {total}]"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::slice_lines;

    #[test]
    fn slices_lines_with_a_footer() {
        let t = "a\nb\nc\n";
        assert_eq!(slice_lines(t, 1, None), t);
        assert_eq!(slice_lines(t, 2, Some(1)), "b\n[lines 2-2 of 3]");
        assert_eq!(slice_lines(t, 5, None), "[line 5 is past the end: 3 lines]");
        assert_eq!(slice_lines("", 1, None), "(empty file)");
    }
}
