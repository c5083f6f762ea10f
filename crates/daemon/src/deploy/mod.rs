//! Git-push deploy. Each deploy target (a sandbox) has a bare repository
//! on the host at `DATA_DIR/deploy/<sandbox id>.git`, served over git's
//! smart HTTP ([`http`]) under the sandbox's API route, so the API token
//! and the ownership check guard it like any other sandbox route. Its
//! `pre-receive` hook calls back into the daemon ([`hook`]), which runs
//! the release ([`release`]) while the push waits and streams the output
//! back as `remote:` lines; a failed release fails the push.
//!
//! Each release's web process listens on its own port inside the sandbox;
//! the app's exposed port is proxied to the live release's port, so the
//! old release keeps serving until the new one listens.

pub mod hook;
pub mod http;
pub mod prune;
pub mod release;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::manager::Manager;

/// Release ports: `RELEASE_PORT_BASE + number % 1000` inside the sandbox.
pub const RELEASE_PORT_BASE: u16 = 20000;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("git: {0}")]
    Git(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("deploy")
}

pub fn repo_path(data_dir: &Path, sandbox_id: &str) -> PathBuf {
    root(data_dir).join(format!("{sandbox_id}.git"))
}

const PRE_RECEIVE: &str = "#!/bin/sh
# Installed by ironclawd: the release runs while the push waits; a failed
# release fails the push (the ref is not updated).
if [ -z \"$IRONCLAW_DEPLOY_SOCKET\" ] || [ -z \"$IRONCLAW_DEPLOY_BIN\" ]; then
  echo 'deploy: push through the ironclawd remote (ironclaw deploy init)' >&2
  exit 1
fi
exec \"$IRONCLAW_DEPLOY_BIN\" deploy-hook
";

/// Create the bare repository (idempotent) and (re)install its hook.
pub async fn init_repo(data_dir: &Path, sandbox_id: &str) -> Result<PathBuf, DeployError> {
    let repo = repo_path(data_dir, sandbox_id);
    std::fs::create_dir_all(root(data_dir))?;
    if !repo.join("HEAD").exists() {
        let out = tokio::process::Command::new("git")
            .args(["init", "--bare", "--quiet", "--initial-branch=main"])
            .arg(&repo)
            .output()
            .await?;
        if !out.status.success() {
            return Err(DeployError::Git(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
    }
    // Pushes to a repository served over HTTP need this (or REMOTE_USER,
    // which the handler sets too).
    let _ = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["config", "http.receivepack", "true"])
        .output()
        .await?;
    let hook = repo.join("hooks/pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap())?;
    std::fs::write(&hook, PRE_RECEIVE)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    Ok(repo)
}

/// git's own cap on one push's pack for a `receive-pack` run (through
/// the environment, which `git http-backend` passes on): a pack bigger
/// than the whole repository limit is cut off while it arrives, before
/// it fills the disk. The hook checks the total ([`hook`]).
pub fn limit_env(cmd: &mut tokio::process::Command, config: &crate::config::Config) {
    cmd.env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "receive.maxInputSize")
        .env(
            "GIT_CONFIG_VALUE_0",
            config.deploy_repo_max_bytes.to_string(),
        );
}

/// Bytes the repository at `repo` takes on disk (quarantined objects of
/// a push in progress included: they live under `objects/`).
pub fn repo_bytes(repo: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            })
            .sum()
    }
    walk(repo)
}

/// One release at a time per sandbox (pushes and rollbacks queue).
pub fn lock_for(sandbox_id: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(sandbox_id.to_string())
        .or_default()
        .clone()
}

/// The port inside the sandbox that its exposed `port` is served from: the
/// live release's port when `port` is the app's, else `port` itself.
pub fn serving_port(m: &Manager, sandbox_id: &str, port: u16) -> u16 {
    match m.store.deploy_app(sandbox_id) {
        Ok(Some(app)) if app.port == port => match m.store.live_release(sandbox_id) {
            Ok(Some(r)) => r.port,
            _ => port,
        },
        _ => port,
    }
}

/// After a sandbox (re)starts or is re-adopted: bring its live release's
/// web process back if it is not running. In the background: the start
/// must not wait for it.
pub fn revive_soon(m: Arc<Manager>, sandbox_id: String) {
    tokio::spawn(async move {
        // Not while a release or rollback switches (it would bring back
        // the release it just stopped).
        let lock = lock_for(&sandbox_id);
        let _g = lock.lock().await;
        let live = match m.store.live_release(&sandbox_id) {
            Ok(Some(r)) => r,
            _ => return,
        };
        let agent = match m.agent(&sandbox_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(sandbox = %sandbox_id, "reviving release {}: {e}", live.number);
                return;
            }
        };
        let res = match supervisor::Supervisor::detect(&agent).await {
            Ok(sup) => sup.ensure_running(&live).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(true) => {
                tracing::info!(sandbox = %sandbox_id, "restarted live release {}", live.number)
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(sandbox = %sandbox_id, "reviving release {}: {e}", live.number)
            }
        }
    });
}
