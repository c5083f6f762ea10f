//! The `pre-receive` hook's line back to the daemon. For each push the
//! HTTP handler opens a unix socket (in the data dir, mode 0700) that
//! accepts one connection presenting a one-time secret; both reach the
//! hook through the environment of `git http-backend`, which runs on the
//! host: nothing of it enters the sandbox. The hook (`ironclawd
//! deploy-hook`, the daemon binary in hook mode) sends one JSON line, the
//! daemon answers with `o TEXT` lines (shown to the pusher as `remote:`
//! lines) and a final `x CODE`, the hook's exit status.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::manager::Manager;

pub const ENV_SOCKET: &str = "IRONCLAW_DEPLOY_SOCKET";
pub const ENV_SECRET: &str = "IRONCLAW_DEPLOY_SECRET";
pub const ENV_BIN: &str = "IRONCLAW_DEPLOY_BIN";
/// git's variables that locate a pre-receive hook's quarantined objects.
const GIT_OBJECT_ENV: &[&str] = &[
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
];

#[derive(Debug, Serialize, Deserialize)]
struct HookRequest {
    secret: String,
    /// `OLD NEW REF` lines as git gave them on stdin.
    updates: Vec<String>,
    git_env: Vec<(String, String)>,
}

/// One push's socket; removed when dropped.
pub struct PushSocket {
    pub path: PathBuf,
    pub secret: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Open the socket for one push to the repository of `sandbox_id`.
pub fn open(m: Arc<Manager>, sandbox_id: String) -> std::io::Result<PushSocket> {
    let dir = super::root(&m.data_dir).join("run");
    std::fs::create_dir_all(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let token = || -> String {
        (0..16)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect()
    };
    let path = dir.join(format!("{}.sock", token()));
    let secret = token();
    let listener = tokio::net::UnixListener::bind(&path)?;
    let want = secret.clone();
    let task = tokio::spawn(async move {
        // One hook run per push; a wrong secret is dropped and the next
        // connection is heard. The release runs in its own task: the
        // pusher hanging up (which ends this one) does not cut it short.
        while let Ok((conn, _)) = listener.accept().await {
            if let Some((req, wr)) = authorize(conn, &want).await {
                tokio::spawn(respond(m, sandbox_id, req, wr));
                break;
            }
        }
    });
    Ok(PushSocket { path, secret, task })
}

async fn authorize(
    conn: tokio::net::UnixStream,
    secret: &str,
) -> Option<(HookRequest, tokio::net::unix::OwnedWriteHalf)> {
    let (rd, wr) = conn.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let mut line = String::new();
    // The request is one line; a peer that never ends it is cut off.
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), rd.read_line(&mut line));
    if !matches!(read.await, Ok(Ok(n)) if n > 0) {
        return None;
    }
    let req = serde_json::from_str::<HookRequest>(&line).ok()?;
    crate::auth::constant_time_eq(req.secret.as_bytes(), secret.as_bytes()).then_some((req, wr))
}

async fn respond(
    m: Arc<Manager>,
    sandbox_id: String,
    req: HookRequest,
    mut wr: tokio::net::unix::OwnedWriteHalf,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let run = async move {
        let lock = super::lock_for(&sandbox_id);
        let _g = lock.lock().await;
        run_push(&m, &sandbox_id, &req, &tx).await
    };
    tokio::pin!(run);
    // Write errors (the pusher went away) are ignored: the release still
    // finishes and is recorded.
    let code = loop {
        tokio::select! {
            Some(l) = rx.recv() => {
                let _ = wr.write_all(format!("o {}\n", l.replace('\n', " ")).as_bytes()).await;
            }
            code = &mut run => break code,
        }
    };
    while let Ok(l) = rx.try_recv() {
        let _ = wr
            .write_all(format!("o {}\n", l.replace('\n', " ")).as_bytes())
            .await;
    }
    let _ = wr.write_all(format!("x {code}\n").as_bytes()).await;
    let _ = wr.shutdown().await;
}

async fn run_push(
    m: &Arc<Manager>,
    sandbox_id: &str,
    req: &HookRequest,
    out: &super::release::Out,
) -> i32 {
    // The pushed objects sit in quarantine under the repository until
    // this hook succeeds: refusing here stores nothing of them.
    let repo = super::repo_path(&m.data_dir, sandbox_id);
    let size = tokio::task::spawn_blocking(move || super::repo_bytes(&repo))
        .await
        .unwrap_or(0);
    let limit = m.config.deploy_repo_max_bytes;
    if size > limit {
        let _ = out.send(format!(
            "!      push refused: the repository would take {size} bytes, over the limit of {limit} (deploy_repo_max_bytes); nothing was stored"
        ));
        return 1;
    }
    // Deploy the last branch update of the push; deletions deploy nothing.
    let update = req.updates.iter().rev().find_map(|u| {
        let mut f = u.split_whitespace();
        let (_old, new, name) = (f.next()?, f.next()?, f.next()?);
        let is_sha = new.len() >= 40 && new.bytes().all(|b| b.is_ascii_hexdigit());
        (name.starts_with("refs/heads/") && is_sha && new.bytes().any(|b| b != b'0'))
            .then(|| new.to_string())
    });
    let Some(sha) = update else {
        let _ = out.send("no branch update to deploy".into());
        return 0;
    };
    match super::release::deploy(m, sandbox_id, &sha, &req.git_env, out).await {
        Ok(_) => 0,
        Err(e) => {
            for l in e.lines() {
                let _ = out.send(format!("!      {l}"));
            }
            let _ = out.send("!      push rejected: the release failed".into());
            1
        }
    }
}

/// `ironclawd deploy-hook`: run as git's pre-receive hook. Exit status is
/// the release's.
pub fn hook_main() -> i32 {
    let (Ok(socket), Ok(secret)) = (std::env::var(ENV_SOCKET), std::env::var(ENV_SECRET)) else {
        eprintln!("deploy-hook: not run by ironclawd's git endpoint");
        return 1;
    };
    let updates: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let git_env = GIT_OBJECT_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let req = HookRequest {
        secret,
        updates,
        git_env,
    };
    let mut conn = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deploy-hook: connecting to ironclawd: {e}");
            return 1;
        }
    };
    let mut line = serde_json::to_string(&req).unwrap_or_default();
    line.push('\n');
    if let Err(e) = conn.write_all(line.as_bytes()) {
        eprintln!("deploy-hook: {e}");
        return 1;
    }
    let mut err = std::io::stderr();
    for l in std::io::BufReader::new(conn).lines() {
        let Ok(l) = l else { break };
        if let Some(text) = l.strip_prefix("o ") {
            let _ = writeln!(err, "{text}");
        } else if let Some(code) = l.strip_prefix("x ") {
            return code.trim().parse().unwrap_or(1);
        }
    }
    eprintln!("deploy-hook: ironclawd went away during the release");
    1
}
