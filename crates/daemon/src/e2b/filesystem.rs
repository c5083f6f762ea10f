//! envd's `filesystem.Filesystem` service: Stat, ListDir, MakeDir, Move,
//! Remove over the guest agent's file operations.

use axum::extract::Request;
use axum::response::Response;
use ironclaw_sandbox::types::{DirEntry, FileKind, FileStat};
use ironclaw_sandbox::AgentClient;
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use crate::AppState;

/// Deepest ListDir recursion served.
const MAX_DEPTH: u32 = 16;
/// Most entries one ListDir answers with.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Deserialize)]
struct PathRequest {
    #[serde(default)]
    path: String,
}

#[derive(Debug, Deserialize)]
struct ListDirRequest {
    #[serde(default)]
    path: String,
    depth: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct MoveRequest {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

fn file_type(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "FILE_TYPE_FILE",
        FileKind::Dir => "FILE_TYPE_DIRECTORY",
        FileKind::Symlink => "FILE_TYPE_SYMLINK",
        FileKind::Other => "FILE_TYPE_UNSPECIFIED",
    }
}

/// `ls -l` style permissions, as envd reports them.
fn permissions(kind: FileKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'L',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `EntryInfo` (int64 as a JSON string, as protobuf JSON writes it).
pub fn entry(path: &str, kind: FileKind, size: u64, mode: u32, mtime: i64) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({
        "name": if name.is_empty() { "/" } else { name },
        "type": file_type(kind),
        "path": path,
        "size": size.to_string(),
        "mode": mode,
        "permissions": permissions(kind, mode),
        "owner": "root",
        "group": "root",
        "modifiedTime": time(mtime),
    })
}

fn stat_entry(s: &FileStat) -> Value {
    entry(&s.path, s.kind, s.size, s.mode, s.mtime)
}

fn dir_entry(dir: &str, e: &DirEntry) -> Value {
    let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
    entry(&path, e.kind, e.size, e.mode, e.mtime)
}

/// `filesystem.Filesystem/METHOD`.
pub async fn dispatch(st: AppState, method: &str, req: Request) -> Response {
    let streaming = connect::is_streaming(req.headers());
    match run(st, method, req).await {
        Ok(Reply::Unary(v)) => connect::unary(v),
        Ok(Reply::Stream(r)) => r,
        Err(e) => connect::error(streaming, e),
    }
}

enum Reply {
    Unary(Value),
    Stream(Response),
}

async fn run(st: AppState, method: &str, req: Request) -> Result<Reply, ConnectError> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let rec = super::envd_target(&st, &headers).map_err(|r| r.connect_error())?;
    match method {
        "WatchDir" => {
            let r: super::watch::WatchRequest = connect::read_request(&headers, body).await?;
            return Ok(Reply::Stream(
                super::watch::watch_dir(&st, &rec, &headers, r).await?,
            ));
        }
        "CreateWatcher" => {
            let r = connect::read_request(&headers, body).await?;
            return Ok(Reply::Unary(
                super::watch::create(&st, &rec, &headers, r).await?,
            ));
        }
        "GetWatcherEvents" => {
            let r = connect::read_request(&headers, body).await?;
            return Ok(Reply::Unary(super::watch::events(&st, &rec.sandbox_id, r)?));
        }
        "RemoveWatcher" => {
            let r = connect::read_request(&headers, body).await?;
            return Ok(Reply::Unary(super::watch::remove(&st, &rec.sandbox_id, r)?));
        }
        "Stat" | "ListDir" | "MakeDir" | "Move" | "Remove" => {}
        other => {
            return Err(ConnectError::new(
                Code::Unimplemented,
                format!("filesystem.Filesystem/{other} is not implemented"),
            ))
        }
    }
    let body = axum::body::to_bytes(body, connect::MAX_MESSAGE)
        .await
        .map_err(|e| ConnectError::invalid(format!("reading the request: {e}")))?;
    let agent = super::envd_agent(&st, &rec).await?;
    let user = super::users::resolve(&agent, super::users::from_basic_auth(&headers)?).await?;
    let resolve_path = |p: &str| user.path(p);
    let read = |b: &[u8]| -> Result<Value, ConnectError> {
        serde_json::from_slice::<Value>(if b.is_empty() { b"{}" } else { b })
            .map_err(|e| ConnectError::invalid(format!("bad request: {e}")))
    };
    let v = read(&body)?;
    match method {
        "Stat" => {
            let r: PathRequest = parse(v)?;
            let s = agent.stat(&resolve_path(&r.path)?).await?;
            Ok(Reply::Unary(json!({ "entry": stat_entry(&s) })))
        }
        "ListDir" => {
            let r: ListDirRequest = parse(v)?;
            let depth = r.depth.unwrap_or(1).clamp(1, MAX_DEPTH);
            let path = resolve_path(&r.path)?;
            let s = agent.stat(&path).await?;
            if s.kind != FileKind::Dir {
                return Err(ConnectError::invalid(format!("{path} is not a directory")));
            }
            let mut entries = Vec::new();
            list_into(&agent, &path, depth, &mut entries).await?;
            Ok(Reply::Unary(json!({ "entries": entries })))
        }
        "MakeDir" => {
            let r: PathRequest = parse(v)?;
            let path = resolve_path(&r.path)?;
            if agent.stat(&path).await.is_ok() {
                return Err(ConnectError::new(
                    Code::AlreadyExists,
                    format!("{path} already exists"),
                ));
            }
            agent
                .make_dir_as(&path, true, 0o755, user.for_guest())
                .await?;
            let s = agent.stat(&path).await?;
            Ok(Reply::Unary(json!({ "entry": stat_entry(&s) })))
        }
        "Move" => {
            let r: MoveRequest = parse(v)?;
            let (from, to) = (resolve_path(&r.source)?, resolve_path(&r.destination)?);
            agent.rename_path(&from, &to).await?;
            let s = agent.stat(&to).await?;
            Ok(Reply::Unary(json!({ "entry": stat_entry(&s) })))
        }
        _ => {
            let r: PathRequest = parse(v)?;
            agent.remove_path(&resolve_path(&r.path)?, true).await?;
            Ok(Reply::Unary(json!({})))
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ConnectError> {
    serde_json::from_value(v).map_err(|e| ConnectError::invalid(format!("bad request: {e}")))
}

/// Entries of `dir` and, `depth` levels down, of its subdirectories
/// (symlinks are not followed).
async fn list_into(
    agent: &AgentClient,
    dir: &str,
    depth: u32,
    out: &mut Vec<Value>,
) -> Result<(), ConnectError> {
    let mut todo = vec![(dir.to_string(), depth)];
    while let Some((d, left)) = todo.pop() {
        let entries = match agent.list(&d).await {
            Ok(e) => e,
            // A subdirectory gone or unreadable meanwhile is skipped.
            Err(e) if d != dir => {
                tracing::debug!("ListDir: skipping {d}: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for e in &entries {
            out.push(dir_entry(&d, e));
            if out.len() > MAX_ENTRIES {
                return Err(ConnectError::new(
                    Code::ResourceExhausted,
                    format!("more than {MAX_ENTRIES} entries; list with a smaller depth"),
                ));
            }
            if e.kind == FileKind::Dir && left > 1 {
                todo.push((format!("{}/{}", d.trim_end_matches('/'), e.name), left - 1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_look_like_envd_ones() {
        let e = entry("/root/a.txt", FileKind::File, 5, 0o644, 0);
        assert_eq!(e["name"], "a.txt");
        assert_eq!(e["type"], "FILE_TYPE_FILE");
        assert_eq!(e["size"], "5");
        assert_eq!(e["permissions"], "-rw-r--r--");
        assert_eq!(e["modifiedTime"], "1970-01-01T00:00:00Z");
        assert_eq!(permissions(FileKind::Dir, 0o755), "drwxr-xr-x");
    }
}
