//! Which files in a user's agent sandbox are memory, and reading them
//! through the guest agent's typed file calls.

use ironclaw_sandbox::types::{ErrorKind, FileKind};
use ironclaw_sandbox::{AgentClient, AgentError};

/// The curated memory file.
pub const CURATED: &str = "/root/MEMORY.md";
/// The daily notes' directory.
pub const DAILY_DIR: &str = "/root/memory";
/// Most files one scan looks at (a runaway directory costs bounded time).
const MAX_FILES: usize = 2000;
/// How deep a scan goes below a memory directory.
const MAX_DEPTH: usize = 4;

/// A file's size and modification time: what a cheap refresh compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig {
    pub size: u64,
    pub mtime: i64,
}

/// The memory roots: files, and directories whose `*.md` files count.
#[derive(Debug, Clone)]
pub struct MemoryPaths {
    roots: Vec<String>,
}

/// An extra path from the config that cannot be a memory path.
pub fn check_extra(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|s| s == "..") || p == "/" {
        return Err(format!(
            "[memory] paths: {p:?} must be an absolute path in the sandbox, without '..', not /"
        ));
    }
    Ok(())
}

impl MemoryPaths {
    pub fn new(extra: &[String]) -> MemoryPaths {
        let mut roots = vec![CURATED.to_string(), DAILY_DIR.to_string()];
        for p in extra {
            let p = p.trim_end_matches('/').to_string();
            if !roots.contains(&p) {
                roots.push(p);
            }
        }
        MemoryPaths { roots }
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// True when `path` (absolute) is a memory file: a root itself, or a
    /// `.md` file under a root. `..` never counts.
    pub fn contains(&self, path: &str) -> bool {
        if path.split('/').any(|s| s == ".." || s == ".") || path.contains("//") {
            return false;
        }
        self.roots.iter().any(|r| {
            path == r
                || (path.ends_with(".md")
                    && path
                        .strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }

    /// Every memory file in the sandbox with its signature, sorted by path.
    pub async fn scan(&self, agent: &AgentClient) -> Result<Vec<(String, Sig)>, AgentError> {
        let mut out = Vec::new();
        for root in &self.roots {
            let st = match agent.stat(root).await {
                Ok(st) => st,
                Err(e) if missing(&e) => continue,
                Err(e) => return Err(e),
            };
            match st.kind {
                FileKind::File => out.push((
                    root.clone(),
                    Sig {
                        size: st.size,
                        mtime: st.mtime,
                    },
                )),
                FileKind::Dir => walk(agent, root, 0, &mut out).await?,
                _ => {}
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }
}

fn missing(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::Guest {
            kind: ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::PermissionDenied,
            ..
        }
    )
}

async fn walk(
    agent: &AgentClient,
    dir: &str,
    depth: usize,
    out: &mut Vec<(String, Sig)>,
) -> Result<(), AgentError> {
    let entries = match agent.list(dir).await {
        Ok(e) => e,
        Err(e) if missing(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        if out.len() >= MAX_FILES {
            return Ok(());
        }
        let path = format!("{dir}/{}", e.name);
        match e.kind {
            FileKind::File if e.name.ends_with(".md") => out.push((
                path,
                Sig {
                    size: e.size,
                    mtime: e.mtime,
                },
            )),
            FileKind::Dir if depth < MAX_DEPTH && !e.name.starts_with('.') => {
                Box::pin(walk(agent, &path, depth + 1, out)).await?
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_paths_are_the_roots_and_md_below() {
        let p = MemoryPaths::new(&["/root/notes/".into(), "/srv/todo.txt".into()]);
        assert!(p.contains("/root/MEMORY.md"));
        assert!(p.contains("/root/memory/2026-01-02.md"));
        assert!(p.contains("/root/memory/sub/x.md"));
        assert!(p.contains("/root/notes/a.md"));
        assert!(p.contains("/srv/todo.txt"));
        assert!(!p.contains("/root/memory/x.txt"));
        assert!(!p.contains("/root/memoryx/a.md"));
        assert!(!p.contains("/root/memory/../.ssh/a.md"));
        assert!(!p.contains("/root/other.md"));
        assert!(check_extra("relative").is_err());
        assert!(check_extra("/a/../b").is_err());
        assert!(check_extra("/root/notes").is_ok());
    }
}
