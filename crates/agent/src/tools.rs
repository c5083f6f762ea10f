//! The tools the model can call, run in the user's sandbox through its
//! guest agent: bash, read_file, write_file, edit_file, list_dir, grep.
//!
//! Every failure becomes a [`ToolOutput`] with `is_error` set, returned to
//! the model as the tool's result: a wrong path or a failed edit is
//! something the model can recover from, not a reason to end the turn.
//!
//! Descriptions are deliberately terse: they are sent with every request,
//! and the first turn of a conversation must stay small (see
//! [`crate::prompt::first_turn_prompt_tokens`]).

use std::time::Duration;

use ironclaw_sandbox::types::{ExecRequest, FileKind};
use ironclaw_sandbox::{AgentClient, AgentError, SessionEvent};
use serde_json::{json, Value};

use crate::provider::ToolSpec;

/// Where [`crate::provider::openai`] puts arguments that were not a JSON
/// object, so the tool can tell the model.
pub const INVALID_ARGS: &str = "_invalid_arguments";

#[derive(Debug, Clone)]
pub struct ToolConfig {
    /// Working directory of bash and grep, and base of relative paths.
    pub workdir: String,
    pub bash_timeout: Duration,
    /// Upper bound for the timeout the model may ask for.
    pub bash_max_timeout: Duration,
    /// Output kept per tool result; the rest is cut with a note saying how
    /// much.
    pub max_output_bytes: usize,
    /// Largest file read_file and edit_file load.
    pub max_file_bytes: u64,
    /// Entries list_dir shows.
    pub max_entries: usize,
}

impl Default for ToolConfig {
    fn default() -> Self {
        ToolConfig {
            workdir: "/root".into(),
            bash_timeout: Duration::from_secs(60),
            bash_max_timeout: Duration::from_secs(600),
            max_output_bytes: 16 * 1024,
            max_file_bytes: 8 * 1024 * 1024,
            max_entries: 500,
        }
    }
}

/// What a tool call gives back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "unknown tool {0:?}; available: bash, read_file, write_file, edit_file, list_dir, grep"
    )]
    Unknown(String),
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error("{path} is a directory; use list_dir")]
    IsDir { path: String },
    #[error("{path} is {size} bytes, over the {max}-byte limit; use bash (head, tail, sed -n) to read parts of it")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error(
        "{path} looks binary ({size} bytes); not shown. Inspect it with bash (file, xxd | head)"
    )]
    Binary { path: String, size: u64 },
    #[error("old_text not found in {path}; read the file and copy the text exactly, whitespace included")]
    NotFound { path: String },
    #[error("old_text matches {count} times in {path}; include more surrounding lines to make it unique, or set replace_all")]
    NotUnique { path: String, count: usize },
    #[error("old_text must not be empty; use write_file to create a file")]
    EmptyOld,
    #[error("the sandbox is not available: {0}")]
    Sandbox(String),
    #[error("{0}")]
    Failed(String),
}

/// The tools' specs, in the order they are offered.
pub fn specs() -> Vec<ToolSpec> {
    fn spec(name: &str, description: &str, props: Value, required: &[&str]) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            input_schema: json!({"type": "object", "properties": props, "required": required}),
        }
    }
    let path = json!({"type": "string"});
    vec![
        spec(
            "bash",
            "Run a shell command (sh -c) in the user's Linux machine. Returns stdout, stderr and exit code; long output is cut.",
            json!({"command": {"type": "string"},
                   "timeout": {"type": "integer", "description": "seconds, default 60, max 600"}}),
            &["command"],
        ),
        spec(
            "read_file",
            "Read a text file.",
            json!({"path": path,
                   "offset": {"type": "integer", "description": "first line, from 1"},
                   "limit": {"type": "integer", "description": "number of lines"}}),
            &["path"],
        ),
        spec(
            "write_file",
            "Create or overwrite a file, creating parent directories.",
            json!({"path": path, "content": {"type": "string"}}),
            &["path", "content"],
        ),
        spec(
            "edit_file",
            "Replace exact text in a file. old_text must match exactly once, unless replace_all.",
            json!({"path": path, "old_text": {"type": "string"}, "new_text": {"type": "string"},
                   "replace_all": {"type": "boolean"}}),
            &["path", "old_text", "new_text"],
        ),
        spec("list_dir", "List a directory.", json!({"path": path}), &[]),
        spec(
            "grep",
            "Search files under path (default: working dir) for an extended regex; prints file:line:text.",
            json!({"pattern": {"type": "string"}, "path": path,
                   "glob": {"type": "string", "description": "file name filter, e.g. *.py"}}),
            &["pattern"],
        ),
    ]
}

/// Run tool `name` with `input` in the sandbox behind `agent`.
pub async fn execute(
    agent: &AgentClient,
    cfg: &ToolConfig,
    name: &str,
    input: &Value,
) -> ToolOutput {
    match run(agent, cfg, name, input).await {
        Ok(out) => out,
        Err(e) => ToolOutput {
            content: e.to_string(),
            is_error: true,
        },
    }
}

async fn run(
    agent: &AgentClient,
    cfg: &ToolConfig,
    name: &str,
    input: &Value,
) -> Result<ToolOutput, ToolError> {
    if let Some(raw) = input.get(INVALID_ARGS) {
        return Err(ToolError::Args(format!(
            "arguments are not a JSON object: {}",
            raw.as_str().unwrap_or_default()
        )));
    }
    let args = Args(input);
    match name {
        "bash" => bash(agent, cfg, &args).await,
        "read_file" => read_file(agent, cfg, &args).await,
        "write_file" => write_file(agent, cfg, &args).await,
        "edit_file" => edit_file(agent, cfg, &args).await,
        "list_dir" => list_dir(agent, cfg, &args).await,
        "grep" => grep(agent, cfg, &args).await,
        other => Err(ToolError::Unknown(other.to_string())),
    }
}

/// Typed access to a call's arguments with messages the model can act on.
struct Args<'a>(&'a Value);

impl Args<'_> {
    fn str(&self, k: &str) -> Result<&str, ToolError> {
        match self.0.get(k) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ToolError::Args(format!("{k} must be a string"))),
            None => Err(ToolError::Args(format!("missing {k}"))),
        }
    }

    fn opt_str(&self, k: &str) -> Result<Option<&str>, ToolError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(k).map(Some),
        }
    }

    fn opt_u64(&self, k: &str) -> Result<Option<u64>, ToolError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            // Models sometimes quote numbers; accept that.
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ToolError::Args(format!("{k} must be a non-negative integer"))),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| ToolError::Args(format!("{k} must be a non-negative integer"))),
        }
    }

    fn bool(&self, k: &str) -> Result<bool, ToolError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ToolError::Args(format!("{k} must be true or false"))),
        }
    }
}

fn resolve(cfg: &ToolConfig, path: &str) -> Result<String, ToolError> {
    resolve_path(&cfg.workdir, path).map_err(ToolError::Args)
}

/// `path` made absolute: relative paths are under `workdir`.
pub fn resolve_path(workdir: &str, path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let base = workdir.trim_end_matches('/');
    Ok(if path.starts_with('/') {
        path.to_string()
    } else if path == "." || path == "./" {
        base.to_string()
    } else {
        format!("{base}/{}", path.trim_start_matches("./"))
    })
}

/// Keeps the first and the last `cap / 2` bytes of a stream of unknown
/// length, so a command printing gigabytes costs bounded memory and the
/// model still sees how it started and how it ended.
struct Capture {
    head: Vec<u8>,
    tail: Vec<u8>,
    half: usize,
    total: usize,
}

impl Capture {
    fn new(cap: usize) -> Capture {
        Capture {
            head: Vec::new(),
            tail: Vec::new(),
            half: (cap / 2).max(1),
            total: 0,
        }
    }

    fn push(&mut self, mut d: &[u8]) {
        self.total += d.len();
        let room = self.half.saturating_sub(self.head.len()).min(d.len());
        self.head.extend_from_slice(&d[..room]);
        d = &d[room..];
        self.tail.extend_from_slice(d);
        if self.tail.len() > 2 * self.half {
            let cut = self.tail.len() - self.half;
            self.tail.drain(..cut);
        }
    }

    fn finish(self) -> String {
        let shown = self.head.len() + self.tail.len();
        if shown >= self.total {
            let mut all = self.head;
            all.extend_from_slice(&self.tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        let tail = &self.tail[self.tail.len() - self.half.min(self.tail.len())..];
        format!(
            "{}\n[... output truncated: {} bytes in all, {} cut; showing the first {} and the last {} ...]\n{}",
            String::from_utf8_lossy(&self.head),
            self.total,
            self.total - self.head.len() - tail.len(),
            self.head.len(),
            tail.len(),
            String::from_utf8_lossy(tail)
        )
    }
}

struct Ran {
    code: i32,
    signal: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Run argv in the sandbox, keeping bounded output. The guest kills the
/// command at `timeout`; the host waits a little longer in case the guest
/// itself is stuck.
async fn exec(
    agent: &AgentClient,
    cfg: &ToolConfig,
    argv: Vec<String>,
    timeout: Duration,
) -> Result<Ran, ToolError> {
    let req = ExecRequest {
        argv,
        cwd: Some(cfg.workdir.clone()),
        timeout_ms: Some(timeout.as_millis() as u64),
        ..Default::default()
    };
    let mut session = agent.exec(req).await?;
    let mut out = Capture::new(cfg.max_output_bytes);
    let mut err = Capture::new(cfg.max_output_bytes / 2);
    let collect = async {
        loop {
            match session.next().await.unwrap_or(Err(AgentError::Closed)) {
                Ok(SessionEvent::Stdout(d)) => out.push(&d),
                Ok(SessionEvent::Stderr(d)) => err.push(&d),
                Ok(SessionEvent::Exited(st)) => return Ok(st),
                Ok(SessionEvent::Started { .. }) => {}
                Err(AgentError::Guest { message, .. }) => return Err(ToolError::Failed(message)),
                Err(AgentError::Protocol(m)) => {
                    return Err(ToolError::Failed(format!(
                        "unexpected reply from the sandbox: {m}"
                    )))
                }
                Ok(other) => {
                    return Err(ToolError::Failed(format!(
                        "unexpected reply from the sandbox: {other:?}"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let st = match tokio::time::timeout(timeout + Duration::from_secs(10), collect).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ToolError::Failed(format!(
                "the command did not finish within {} s and the sandbox did not stop it",
                timeout.as_secs()
            )))
        }
    };
    Ok(Ran {
        code: st.code,
        signal: st.signal,
        timed_out: st.timed_out,
        stdout: out.finish(),
        stderr: err.finish(),
    })
}

async fn bash(
    agent: &AgentClient,
    cfg: &ToolConfig,
    a: &Args<'_>,
) -> Result<ToolOutput, ToolError> {
    let command = a.str("command")?;
    let timeout = match a.opt_u64("timeout")? {
        Some(0) | None => cfg.bash_timeout,
        Some(s) => Duration::from_secs(s).min(cfg.bash_max_timeout),
    };
    let r = exec(
        agent,
        cfg,
        vec!["/bin/sh".into(), "-c".into(), command.into()],
        timeout,
    )
    .await?;
    let mut text = r.stdout;
    if !r.stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&r.stderr);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let failed = r.timed_out || r.code != 0;
    if r.timed_out {
        text.push_str(&format!(
            "[killed: timed out after {} s]",
            timeout.as_secs()
        ));
    } else if let Some(sig) = r.signal {
        text.push_str(&format!("[killed by signal {sig}]"));
    } else if r.code != 0 {
        text.push_str(&format!("[exit code {}]", r.code));
    } else if text.is_empty() {
        text.push_str("(no output)");
    }
    Ok(ToolOutput {
        content: text.trim_end_matches('\n').to_string(),
        is_error: failed,
    })
}

/// A file's bytes, refusing directories and files over the limit.
async fn load(
    agent: &AgentClient,
    cfg: &ToolConfig,
    path: &str,
) -> Result<(Vec<u8>, u32), ToolError> {
    let st = agent.stat(path).await?;
    if st.kind == FileKind::Dir {
        return Err(ToolError::IsDir { path: path.into() });
    }
    if st.size > cfg.max_file_bytes {
        return Err(ToolError::TooLarge {
            path: path.into(),
            size: st.size,
            max: cfg.max_file_bytes,
        });
    }
    let got = agent
        .read_file(path, cfg.max_file_bytes as usize)
        .await
        .map_err(guest_error)?;
    // The file may have grown since the stat.
    if got.truncated {
        return Err(ToolError::TooLarge {
            path: path.into(),
            size: got.data.len() as u64 + 1,
            max: cfg.max_file_bytes,
        });
    }
    Ok((got.data, st.mode & 0o7777))
}

/// A guest's refusal (no such file, permission denied) as the model
/// should read it: the guest's own message.
fn guest_error(e: AgentError) -> ToolError {
    match e {
        AgentError::Guest { message, .. } => ToolError::Failed(message),
        other => ToolError::Agent(other),
    }
}

fn text_of(path: &str, data: Vec<u8>) -> Result<String, ToolError> {
    let size = data.len() as u64;
    if data[..data.len().min(8192)].contains(&0) {
        return Err(ToolError::Binary {
            path: path.into(),
            size,
        });
    }
    String::from_utf8(data).map_err(|_| ToolError::Binary {
        path: path.into(),
        size,
    })
}

async fn store(agent: &AgentClient, path: &str, mode: u32, data: &[u8]) -> Result<(), ToolError> {
    agent
        .write_file(path, mode, true, data)
        .await
        .map(drop)
        .map_err(guest_error)
}

async fn read_file(
    agent: &AgentClient,
    cfg: &ToolConfig,
    a: &Args<'_>,
) -> Result<ToolOutput, ToolError> {
    let path = resolve(cfg, a.str("path")?)?;
    let offset = a.opt_u64("offset")?.unwrap_or(1).max(1) as usize;
    let limit = a.opt_u64("limit")?.map(|l| l as usize);
    let (data, _) = load(agent, cfg, &path).await?;
    let text = text_of(&path, data)?;
    if text.is_empty() {
        return Ok(ToolOutput::ok("(empty file)"));
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let total = lines.len();
    if offset > total {
        return Err(ToolError::Args(format!(
            "offset {offset} is past the end ({total} lines)"
        )));
    }
    let want_end = limit.map_or(total, |l| (offset - 1 + l).min(total));
    let mut out = String::new();
    let mut end = offset - 1;
    for line in &lines[offset - 1..want_end] {
        if out.len() + line.len() > cfg.max_output_bytes {
            if end < offset {
                // One line longer than the whole budget (minified code,
                // a log without newlines): show its start.
                let mut cut = cfg.max_output_bytes;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push_str(&line[..cut]);
                out.push_str(&format!(
                    "\n[line {offset} cut: {} of its {} bytes shown]",
                    cut,
                    line.len()
                ));
                end += 1;
            }
            break;
        }
        out.push_str(line);
        end += 1;
    }
    if end < want_end || offset > 1 || end < total {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("[lines {offset}-{end} of {total}"));
        if end < total {
            out.push_str(&format!("; offset={} reads on", end + 1));
        }
        out.push(']');
    }
    Ok(ToolOutput::ok(out))
}

async fn write_file(
    agent: &AgentClient,
    cfg: &ToolConfig,
    a: &Args<'_>,
) -> Result<ToolOutput, ToolError> {
    let path = resolve(cfg, a.str("path")?)?;
    let content = a.str("content")?;
    // Keep an existing file's permissions (an executable script stays
    // executable after a rewrite).
    let mode = match agent.stat(&path).await {
        Ok(st) if st.kind == FileKind::Dir => return Err(ToolError::IsDir { path }),
        Ok(st) => st.mode & 0o7777,
        Err(_) => 0o644,
    };
    store(agent, &path, mode, content.as_bytes()).await?;
    Ok(ToolOutput::ok(format!(
        "wrote {} bytes to {path}",
        content.len()
    )))
}

async fn edit_file(
    agent: &AgentClient,
    cfg: &ToolConfig,
    a: &Args<'_>,
) -> Result<ToolOutput, ToolError> {
    let path = resolve(cfg, a.str("path")?)?;
    let old = a.str("old_text")?;
    let new = a.str("new_text")?;
    let all = a.bool("replace_all")?;
    if old.is_empty() {
        return Err(ToolError::EmptyOld);
    }
    let (data, mode) = load(agent, cfg, &path).await?;
    let text = text_of(&path, data)?;
    let count = text.matches(old).count();
    if count == 0 {
        return Err(ToolError::NotFound { path });
    }
    if count > 1 && !all {
        return Err(ToolError::NotUnique { path, count });
    }
    let edited = text.replace(old, new);
    store(agent, &path, mode, edited.as_bytes()).await?;
    Ok(ToolOutput::ok(format!(
        "edited {path}: replaced {count} occurrence{}",
        if count == 1 { "" } else { "s" }
    )))
}

async fn list_dir(
    agent: &AgentClient,
    cfg: &ToolConfig,
    a: &Args<'_>,
) -> Result<ToolOutput, ToolError> {
    let path = resolve(cfg, a.opt_str("path")?.unwrap_or("."))?;
    let mut entries = agent.list(&path).await?;
    if entries.is_empty() {
        return Ok(ToolOutput::ok("(empty directory)"));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let total = entries.len();
    let mut out = String::new();
    for e in entries.iter().take(cfg.max_entries) {
        match e.kind {
            FileKind::Dir => out.push_str(&format!("{}/\n", e.name)),
            FileKind::Symlink => out.push_str(&format!("{}@\n", e.name)),
            _ => out.push_str(&format!("{}  {}\n", e.name, e.size)),
        }
    }
    if total > cfg.max_entries {
        out.push_str(&format!(
            "[{} more entries not shown]\n",
            total - cfg.max_entries
        ));
    }
    Ok(ToolOutput::ok(out.trim_end().to_string()))
}

/// GNU grep when the image has it; BusyBox's lacks --include and
/// --exclude-dir, so fall back to find + grep there. Arguments travel as
/// positional parameters, never spliced into the script.
const GREP_SCRIPT: &str = r#"
if grep --version >/dev/null 2>&1; then
  if [ -n "$3" ]; then exec grep -rnEI --exclude-dir=.git --include="$3" -e "$1" -- "$2"
  else exec grep -rnEI --exclude-dir=.git -e "$1" -- "$2"; fi
else
  exec find "$2" -name .git -prune -o -type f -name "${3:-*}" -exec grep -nHE -e "$1" {} +
fi"#;

async fn grep(
    agent: &AgentClient,
    cfg: &ToolConfig,
    a: &Args<'_>,
) -> Result<ToolOutput, ToolError> {
    let pattern = a.str("pattern")?;
    // Relative to the working directory (grep's cwd) by default, so the
    // matches print as short relative paths.
    let path = match a.opt_str("path")? {
        Some(p) => resolve(cfg, p)?,
        None => ".".to_string(),
    };
    let glob = a.opt_str("glob")?.unwrap_or("");
    let argv = ["/bin/sh", "-c", GREP_SCRIPT, "grep", pattern, &path, glob]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = exec(agent, cfg, argv, cfg.bash_timeout).await?;
    if !r.stdout.is_empty() {
        return Ok(ToolOutput::ok(r.stdout.trim_end().to_string()));
    }
    if r.code <= 1 {
        return Ok(ToolOutput::ok("no matches"));
    }
    Err(ToolError::Failed(format!(
        "grep failed (exit code {}): {}",
        r.code,
        r.stderr.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = Capture::new(10);
        c.push(b"0123");
        c.push(b"456789abcdefghij");
        c.push(b"KLMNO");
        let s = c.finish();
        assert!(
            s.starts_with("01234\n[... output truncated: 25 bytes in all, 15 cut"),
            "{s}"
        );
        assert!(s.ends_with("\nKLMNO"), "{s}");
        let mut c = Capture::new(10);
        c.push(b"0123456789");
        assert_eq!(c.finish(), "0123456789");
    }

    #[test]
    fn specs_are_valid_and_small() {
        let s = specs();
        assert_eq!(s.len(), 6);
        for t in &s {
            assert_eq!(t.input_schema["type"], "object");
            for r in t.input_schema["required"].as_array().unwrap() {
                assert!(t.input_schema["properties"]
                    .get(r.as_str().unwrap())
                    .is_some());
            }
        }
    }

    #[test]
    fn resolves_relative_paths() {
        let cfg = ToolConfig::default();
        assert_eq!(resolve(&cfg, "a/b").unwrap(), "/root/a/b");
        assert_eq!(resolve(&cfg, "/etc/x").unwrap(), "/etc/x");
        assert_eq!(resolve(&cfg, ".").unwrap(), "/root");
        assert_eq!(resolve(&cfg, "./a").unwrap(), "/root/a");
        assert!(resolve(&cfg, "").is_err());
    }
}
