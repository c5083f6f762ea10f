//! git over SSH: `git push ssh://NAME@HOST:PORT/NAME.git` (or
//! `NAME@HOST:NAME.git` with the port in ~/.ssh/config). The login already
//! proved the key's owner owns sandbox NAME; the exec request's
//! `git-receive-pack` / `git-upload-pack` then runs on the host against
//! that sandbox's bare repository, with the same pre-receive hook as
//! smart HTTP ([`crate::deploy::http`]), so a push deploys the same way
//! and its release output arrives as `remote:` lines.

use std::process::Stdio;
use std::sync::Arc;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::Target;
use crate::deploy::{self, hook};
use crate::manager::Manager;

/// git's subcommand for an exec request's program, if it is git's.
fn service(program: &str) -> Option<&'static str> {
    match program {
        "git-receive-pack" => Some("receive-pack"),
        "git-upload-pack" => Some("upload-pack"),
        _ => None,
    }
}

/// Whether an exec request is git's.
pub fn is_git_command(command: &str) -> bool {
    service(command.split_whitespace().next().unwrap_or("")).is_some()
}

/// The repository path of git's command line (`git-receive-pack 'PATH'`,
/// single-quoted the way git's ssh transport quotes it).
fn path_arg(command: &str) -> Option<String> {
    let rest = command
        .trim_start()
        .split_once(char::is_whitespace)?
        .1
        .trim();
    match rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => Some(inner.replace("'\\''", "'")),
        None if !rest.contains(['\'', '"', ' ']) => Some(rest.to_string()),
        None => None,
    }
}

/// Whether `path` names the sandbox's repository: `NAME.git` or `NAME`,
/// with or without a leading `/` or `~/`.
fn names_repo(path: &str, name: &str) -> bool {
    let p = path.strip_prefix("~/").unwrap_or(path);
    let p = p.trim_start_matches('/').trim_end_matches('/');
    p.strip_suffix(".git").unwrap_or(p) == name
}

/// The remote `ironclaw deploy init` prints for sandbox `name`.
pub fn remote(host: &str, port: u16, name: &str) -> String {
    format!("ssh://{name}@{host}:{port}/{name}.git")
}

/// Serve git's `command` for `target` on `channel` (its stdin/stdout are
/// git's pack protocol) and end the channel with git's exit status.
pub async fn serve(
    channel: Channel<Msg>,
    manager: &Arc<Manager>,
    target: &Target,
    command: &str,
    env: &[(String, String)],
) {
    let program = command.split_whitespace().next().unwrap_or("");
    let Some(sub) = service(program) else {
        return super::session::refuse(&channel, "not a git command").await;
    };
    let name = &target.name;
    match path_arg(command) {
        Some(p) if names_repo(&p, name) => {}
        _ => {
            let msg = format!("no such repository here; the remote is NAME@HOST:{name}.git (ssh://{name}@HOST:PORT/{name}.git)");
            return super::session::refuse(&channel, &msg).await;
        }
    }
    let data_dir = &manager.data_dir;
    let repo = deploy::repo_path(data_dir, &target.id);
    if !repo.join("HEAD").exists() {
        let msg =
            format!("sandbox '{name}' has no deploy repository; run `ironclaw deploy init {name}`");
        return super::session::refuse(&channel, &msg).await;
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg(sub)
        .arg(&repo)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", deploy::root(data_dir))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .current_dir(deploy::root(data_dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    deploy::limit_env(&mut cmd, &manager.config);
    // Protocol v2 (the client's `SetEnv GIT_PROTOCOL`).
    if let Some((_, v)) = env.iter().find(|(k, _)| k == "GIT_PROTOCOL") {
        cmd.env("GIT_PROTOCOL", v);
    }
    // A push runs the release from the pre-receive hook, which calls back
    // on this push's socket (kept until git is done).
    let socket = if sub == "receive-pack" {
        let s = match hook::open(manager.clone(), target.id.clone()) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("deploy hook socket: {e}");
                return super::session::refuse(&channel, &msg).await;
            }
        };
        let bin = match std::env::current_exe() {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("locating ironclawd: {e}");
                return super::session::refuse(&channel, &msg).await;
            }
        };
        cmd.env(hook::ENV_SOCKET, &s.path)
            .env(hook::ENV_SECRET, &s.secret)
            .env(hook::ENV_BIN, bin);
        Some(s)
    } else {
        None
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("running git {sub}: {e}");
            return super::session::refuse(&channel, &msg).await;
        }
    };
    tracing::info!(sandbox = %name, owner = %target.owner, "git {sub} over ssh");
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut rx, tx) = channel.split();
    let input = async {
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let Some(w) = stdin.as_mut() else { continue };
                    if w.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => return,
                _ => {}
            }
        }
    };
    let output = async {
        let out = async {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 || tx.data_bytes(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        };
        let err = async {
            let mut buf = vec![0u8; 8 * 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 || tx.extended_data_bytes(1, buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(out, err);
        let code = match child.wait().await {
            Ok(st) => st.code().unwrap_or(255),
            Err(_) => 255,
        };
        let _ = tx.exit_status(code.clamp(0, 255) as u32).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    };
    // The client closing the channel first ends git (kill_on_drop); the
    // release a hook started still finishes (it runs in its own task).
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
    drop(socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_git_commands_only() {
        assert!(is_git_command("git-receive-pack 'app.git'"));
        assert!(is_git_command("git-upload-pack '/app.git'"));
        assert!(!is_git_command("git status"));
        assert!(!is_git_command("echo git-receive-pack"));
    }

    #[test]
    fn the_path_must_name_the_sandbox() {
        let p = |c| path_arg(c).unwrap();
        assert_eq!(p("git-receive-pack '/web.git'"), "/web.git");
        assert_eq!(p("git-receive-pack 'it'\\''s'"), "it's");
        assert_eq!(p("git-upload-pack web"), "web");
        assert_eq!(path_arg("git-upload-pack 'a' 'b"), None);
        for ok in [
            "web.git",
            "/web.git",
            "~/web.git",
            "web",
            "/web/",
            "web.git/",
        ] {
            assert!(names_repo(ok, "web"), "{ok}");
        }
        for bad in ["other.git", "/srv/web.git", "../web.git", "web.git.git", ""] {
            assert!(!names_repo(bad, "web"), "{bad}");
        }
        assert_eq!(
            remote("example.org", 2222, "web"),
            "ssh://web@example.org:2222/web.git"
        );
    }
}
