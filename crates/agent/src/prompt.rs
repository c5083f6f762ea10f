//! The system prompt. Short on purpose: it is sent with every request, and
//! a one-line question should not cost thousands of tokens.

use crate::tokens;

/// Fill in `{workdir}`.
const BASE: &str = "\
You are IronClaw, a helpful assistant with a persistent Linux machine of your own. \
Your tools act on it: bash runs shell commands; read_file, write_file, edit_file, list_dir \
and grep work with files. The working directory is {workdir}.

- When a task needs code run, files changed or facts checked, do it with the tools, then say briefly what you did and found.
- Read a file before editing it; edit_file needs the exact text.
- Long output is cut: narrow it (head, tail, grep).
{memory_lines}
- Be concise. Use Markdown when it helps.";

/// Without the memory tools: the curated file only.
const MEMORY_FILE_ONLY: &str =
    "- Notes worth keeping across conversations go in {memory}, which you see at the start of each one.";

/// Where the memory file lives unless configured otherwise.
pub const MEMORY_PATH: &str = "/root/MEMORY.md";

/// The system prompt, with the user's memory file (its contents, already
/// capped by the caller) when there is one; `memory_tools` when the
/// memory tools are offered.
pub fn system_prompt(
    workdir: &str,
    memory_path: &str,
    memory: Option<&str>,
    memory_tools: bool,
) -> String {
    let lines = if memory_tools {
        crate::memory::PROMPT_LINES
    } else {
        MEMORY_FILE_ONLY
    };
    let mut p = BASE
        .replace("{workdir}", workdir)
        .replace("{memory_lines}", lines)
        .replace("{memory}", memory_path);
    if let Some(m) = memory.map(str::trim).filter(|m| !m.is_empty()) {
        p.push_str(&format!("\n\n# Memory ({memory_path})\n{m}"));
    }
    p
}

/// Prompt tokens of a conversation's first turn with the default setup:
/// system prompt, all tool schemas (the task and memory tools included),
/// and `user_text` (cl100k).
pub fn first_turn_prompt_tokens(user_text: &str) -> usize {
    let system = system_prompt("/root", MEMORY_PATH, None, true);
    let mut specs = crate::tools::specs();
    specs.extend(crate::tasks::specs());
    specs.extend(crate::memory::specs());
    specs.extend(crate::mcp::tools::specs());
    tokens::count(&system)
        + tokens::tools(&specs)
        + tokens::message(&crate::model::Message::user(user_text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_section_only_when_present() {
        let p = system_prompt("/root", MEMORY_PATH, None, false);
        assert!(!p.contains("# Memory"));
        assert!(p.contains("working directory is /root"));
        let p = system_prompt("/root", MEMORY_PATH, Some("  \n"), false);
        assert!(!p.contains("# Memory"));
        let p = system_prompt("/root", MEMORY_PATH, Some("likes tea"), false);
        assert!(p.ends_with("# Memory (/root/MEMORY.md)\nlikes tea"));
        let p = system_prompt("/root", MEMORY_PATH, None, true);
        assert!(p.contains("memory_search") && p.contains("/root/MEMORY.md (curated"));
        assert!(!p.contains("{memory"));
    }
}
