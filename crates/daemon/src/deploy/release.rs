//! One release: export the pushed tree, copy it into the sandbox, install
//! dependencies, start its web process, wait until it listens, switch.
//! Also rollback, which is the same switch to an earlier release.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ironclaw_sandbox::agent::AgentClient;
use ironclaw_sandbox::types::ExecRequest;
use ironclaw_sandbox::{AgentError, SessionEvent};
use ironclaw_store::{DeployApp, ReleaseRecord, ReleaseStatus, SandboxRecord};
use tokio::sync::mpsc::UnboundedSender;

use super::supervisor::{self, quote, release_dir, Supervisor};
use crate::manager::Manager;

/// How long a new release has to listen on its port.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// A release whose process exited this often before listening has failed.
const MAX_EARLY_EXITS: u32 = 2;
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// Where the release's output goes (the pusher's `remote:` lines).
pub type Out = UnboundedSender<String>;

fn say(out: &Out, line: impl Into<String>) {
    let _ = out.send(line.into());
}

/// Run `git` on the bare repository with the hook's object directories
/// (a pre-receive hook sees the pushed objects in quarantine).
async fn git(repo: &Path, env: &[(String, String)], args: &[&str]) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .current_dir(repo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .map_err(|e| format!("running git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// The `web:` command of a Procfile.
pub fn procfile_web(procfile: &str) -> Option<String> {
    procfile.lines().find_map(|l| {
        let (name, cmd) = l.split_once(':')?;
        (name.trim() == "web" && !cmd.trim().is_empty()).then(|| cmd.trim().to_string())
    })
}

/// Run a script in the sandbox, its output line by line to `out`.
async fn stream_sh(
    agent: &AgentClient,
    script: &str,
    out: &Out,
    timeout: Duration,
) -> Result<i32, String> {
    let mut s = agent
        .exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout_ms: Some(timeout.as_millis() as u64),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("exec in the sandbox: {e}"))?;
    let mut pending = Vec::new();
    loop {
        match s.next().await.unwrap_or(Err(AgentError::Closed)) {
            Ok(SessionEvent::Stdout(d) | SessionEvent::Stderr(d)) => {
                pending.extend_from_slice(&d);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    say(out, String::from_utf8_lossy(&line[..i]).into_owned());
                }
            }
            Ok(SessionEvent::Started { .. }) => {}
            Ok(SessionEvent::Exited(st)) => {
                if !pending.is_empty() {
                    say(out, String::from_utf8_lossy(&pending).into_owned());
                }
                if st.timed_out {
                    return Err(format!("timed out after {} s", timeout.as_secs()));
                }
                return Ok(st.code);
            }
            Err(AgentError::Guest { message, .. }) => return Err(message),
            Err(AgentError::Protocol(m)) => return Err(format!("unexpected reply {m}")),
            Ok(other) => return Err(format!("unexpected reply {other:?}")),
            Err(e) => return Err(format!("exec: {e}")),
        }
    }
}

/// Install dependencies by what the tree holds, when the image has the tool.
const INSTALL_DEPS: &str = r#"
has() { command -v "$1" >/dev/null 2>&1; }
if [ -f requirements.txt ] || [ -f pyproject.toml ]; then
  pip=; for p in pip3 pip; do has $p && { pip=$p; break; }; done
  if [ -z "$pip" ]; then echo "-----> Python dependencies found but the image has no pip: skipped"
  elif [ -f requirements.txt ]; then echo "-----> pip install -r requirements.txt"; $pip install --no-input --target .deps -r requirements.txt || exit 1
  else echo "-----> pip install ."; $pip install --no-input --target .deps . || exit 1
  fi
fi
if [ -f package.json ]; then
  if has npm; then echo "-----> npm install"; npm install --omit=dev || exit 1
  else echo "-----> package.json found but the image has no npm: skipped"; fi
fi
[ -f requirements.txt ] || [ -f pyproject.toml ] || [ -f package.json ] || [ -f Gemfile ] ||
  echo "-----> No requirements.txt, pyproject.toml, package.json or Gemfile: no dependencies to install"
if [ -f Gemfile ]; then
  if has bundle; then echo "-----> bundle install"; bundle config set --local path vendor/bundle && bundle install || exit 1
  else echo "-----> Gemfile found but the image has no bundler: skipped"; fi
fi
"#;

/// Where a release's port is reached from the host.
fn address(m: &Manager, r: &SandboxRecord, port: u16) -> Result<SocketAddr, String> {
    m.sandbox_address(r)
        .map(|ip| SocketAddr::new(ip.into(), port))
        .ok_or_else(|| {
            format!(
                "sandbox '{}' has no network (created with --network none): a deployed app cannot be served",
                r.name
            )
        })
}

/// Start release `rel` and wait until it listens; on failure it is stopped
/// and the error carries its log tail.
async fn start_and_wait(
    m: &Manager,
    sup: &Supervisor<'_>,
    r: &SandboxRecord,
    rel: &ReleaseRecord,
    out: &Out,
) -> Result<(), String> {
    let addr = address(m, r, rel.port)?;
    sup.start(rel.number).await?;
    say(
        out,
        format!(
            "-----> Waiting for the web process to listen on PORT={} (up to {} s)",
            rel.port,
            LISTEN_TIMEOUT.as_secs()
        ),
    );
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    let why = loop {
        if ironclaw_net::ports::wait_accepting(addr, Duration::from_millis(300))
            .await
            .is_ok()
        {
            return Ok(());
        }
        let exits = sup.restarts(rel.number).await?;
        if exits >= MAX_EARLY_EXITS {
            break format!("the web process exited {exits} times before listening");
        }
        if tokio::time::Instant::now() >= deadline {
            break format!(
                "nothing listened on PORT={} within {} s",
                rel.port,
                LISTEN_TIMEOUT.as_secs()
            );
        }
    };
    let _ = sup.stop(rel.number).await;
    let tail = supervisor::log_tail(sup.agent(), rel.number, 20).await;
    Err(format!(
        "{why}; last lines of its log:\n{}",
        tail.trim_end()
    ))
}

/// Point /app/current at `rel`, make it live (the old live one becomes
/// `previous`), then stop the old one's process.
async fn switch(
    m: &Manager,
    sup: &Supervisor<'_>,
    rel: &ReleaseRecord,
    previous: ReleaseStatus,
) -> Result<(), String> {
    let old = m
        .store
        .live_release(&rel.sandbox_id)
        .map_err(|e| e.to_string())?;
    let o = supervisor::sh(
        sup.agent(),
        &format!("ln -sfn {} /app/current", quote(&release_dir(rel.number))),
        None,
        Duration::from_secs(10),
    )
    .await?;
    if o.status.code != 0 {
        return Err(format!(
            "pointing /app/current at the release: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    // From here the app's port is proxied to the new release.
    m.store
        .switch_release(&rel.sandbox_id, rel.number, previous)
        .map_err(|e| e.to_string())?;
    if let Some(old) = old.filter(|o| o.number != rel.number) {
        sup.stop(old.number).await?;
    }
    Ok(())
}

/// Expose the app's port (private unless it already is exposed) and say
/// its URL the way `sandbox expose` does.
fn announce(m: &Manager, r: &SandboxRecord, app: &DeployApp, out: &Out) -> Result<String, String> {
    let existing = m
        .store
        .exposures_of(&r.id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|e| e.port == app.port);
    let e = match existing {
        Some(e) => e,
        None => {
            let label = ironclaw_net::ports::label(app.port, &r.name);
            m.store
                .put_exposure(&r.id, app.port, &label, false)
                .map_err(|e| match e {
                    ironclaw_store::StoreError::Conflict(_) => format!(
                        "the app's host {label} is taken by another user's sandbox named '{}'",
                        r.name
                    ),
                    e => e.to_string(),
                })?
                .0
        }
    };
    let url = crate::exposure::url(&m.config, &e.label);
    if !e.public {
        say(
            out,
            format!(
                "private: send `Authorization: Bearer <token>`, or open it in a browser and log in; \
                 `ironclaw sandbox expose {} {} --public` opens it to anyone",
                r.name, app.port
            ),
        );
    }
    Ok(url)
}

/// The sandbox's agent, starting the sandbox if it is stopped.
async fn running_agent(m: &Arc<Manager>, id: &str, out: &Out) -> Result<AgentClient, String> {
    let r = m.by_id(id).map_err(|e| e.to_string())?;
    if r.state != ironclaw_store::SandboxState::Running {
        say(out, format!("-----> Starting sandbox '{}'", r.name));
        m.start(id).await.map_err(|e| e.to_string())?;
    }
    m.agent(id).await.map_err(|e| e.to_string())
}

/// Release commit `sha` of the push. `Ok(url)` when it is live.
pub async fn deploy(
    m: &Arc<Manager>,
    sandbox_id: &str,
    sha: &str,
    git_env: &[(String, String)],
    out: &Out,
) -> Result<String, String> {
    let app = m
        .store
        .deploy_app(sandbox_id)
        .map_err(|e| e.to_string())?
        .ok_or("this sandbox is not a deploy target; run `ironclaw deploy init`")?;
    let repo = super::repo_path(&m.data_dir, sandbox_id);
    let short = &sha[..sha.len().min(12)];
    let procfile = git(&repo, git_env, &["show", &format!("{sha}:Procfile")])
        .await
        .map_err(|_| {
            "the pushed tree has no Procfile (it needs a line `web: COMMAND`)".to_string()
        })?;
    let web = procfile_web(&String::from_utf8_lossy(&procfile))
        .ok_or("the Procfile has no `web:` process")?;
    let agent = running_agent(m, sandbox_id, out).await?;
    let r = m.by_id(sandbox_id).map_err(|e| e.to_string())?;
    let rel = m
        .store
        .new_release(sandbox_id, sha, super::RELEASE_PORT_BASE)
        .map_err(|e| e.to_string())?;
    let dir = release_dir(rel.number);
    say(
        out,
        format!("-----> Release {} of {short} to {dir}", rel.number),
    );
    let result = async {
        let tar = git(&repo, git_env, &["archive", "--format=tar", sha]).await?;
        let limit = m.config.max_upload_bytes;
        if tar.len() as u64 > limit {
            return Err(format!(
                "the tree is {} bytes, over max_upload_bytes ({limit})",
                tar.len()
            ));
        }
        let o = supervisor::sh(
            &agent,
            &format!(
                "rm -rf {d} && mkdir -p {d} && tar -x -f - -C {d}",
                d = quote(&dir)
            ),
            Some(tar),
            Duration::from_secs(120),
        )
        .await?;
        if o.status.code != 0 {
            return Err(format!(
                "unpacking the tree in the sandbox: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let code = stream_sh(
            &agent,
            &format!("cd {} && {INSTALL_DEPS}", quote(&dir)),
            out,
            INSTALL_TIMEOUT,
        )
        .await
        .map_err(|e| format!("installing dependencies: {e}"))?;
        if code != 0 {
            return Err(format!("installing dependencies failed (status {code})"));
        }
        supervisor::install(&agent, &rel, &web).await?;
        m.store
            .set_release(
                sandbox_id,
                rel.number,
                ReleaseStatus::Building,
                Some(&web),
                None,
            )
            .map_err(|e| e.to_string())?;
        say(out, format!("-----> Starting web: {web}"));
        let sup = Supervisor::detect(&agent).await?;
        start_and_wait(m, &sup, &r, &rel, out).await?;
        switch(m, &sup, &rel, ReleaseStatus::Superseded).await?;
        clean_up(m, &agent, sandbox_id, out).await;
        announce(m, &r, &app, out)
    }
    .await;
    match result {
        Ok(url) => {
            say(out, format!("-----> Release {} is live", rel.number));
            say(out, url.clone());
            Ok(url)
        }
        Err(e) => {
            let _ = m.store.set_release(
                sandbox_id,
                rel.number,
                ReleaseStatus::Failed,
                None,
                Some(&tail_lines(&e, 20)),
            );
            let kept = match m.store.live_release(sandbox_id) {
                Ok(Some(l)) => format!("\nrelease {} keeps serving", l.number),
                _ => String::new(),
            };
            Err(format!("release {} failed: {e}{kept}", rel.number))
        }
    }
}

/// Remove old release directories; a failure only says so (the release
/// is live already).
async fn clean_up(m: &Manager, agent: &AgentClient, sandbox_id: &str, out: &Out) {
    let all = match m.store.releases(sandbox_id) {
        Ok(a) => a,
        Err(e) => return say(out, format!("-----> Old releases not removed: {e}")),
    };
    match super::prune::prune(agent, &all, m.config.deploy_keep_releases).await {
        Ok(gone) if gone.is_empty() => {}
        Ok(gone) => {
            let list: Vec<String> = gone.iter().map(u32::to_string).collect();
            say(
                out,
                format!(
                    "-----> Removed old releases {} (deploy_keep_releases = {})",
                    list.join(", "),
                    m.config.deploy_keep_releases
                ),
            );
        }
        Err(e) => say(out, format!("-----> Old releases not removed: {e}")),
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Switch back to the newest good release before the live one.
pub async fn rollback(m: &Arc<Manager>, sandbox_id: &str, out: &Out) -> Result<String, String> {
    let app = m
        .store
        .deploy_app(sandbox_id)
        .map_err(|e| e.to_string())?
        .ok_or("this sandbox is not a deploy target; run `ironclaw deploy init`")?;
    let all = m.store.releases(sandbox_id).map_err(|e| e.to_string())?;
    let live = all
        .iter()
        .find(|r| r.status == ReleaseStatus::Live)
        .ok_or("no release is live; push one first")?;
    let agent = running_agent(m, sandbox_id, out).await?;
    // Releases whose directory was removed (deploy_keep_releases) are
    // skipped.
    let target = super::prune::rollback_target(&agent, &all, live.number)
        .await
        .ok_or_else(|| {
            format!(
                "no earlier good release than the live release {}",
                live.number
            )
        })?;
    let r = m.by_id(sandbox_id).map_err(|e| e.to_string())?;
    say(
        out,
        format!(
            "-----> Rolling back from release {} to release {}",
            live.number, target.number
        ),
    );
    let sup = Supervisor::detect(&agent).await?;
    start_and_wait(m, &sup, &r, &target, out).await?;
    switch(m, &sup, &target, ReleaseStatus::RolledBack).await?;
    let url = announce(m, &r, &app, out)?;
    say(out, format!("-----> Release {} is live", target.number));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::procfile_web;

    #[test]
    fn procfile() {
        assert_eq!(
            procfile_web("worker: x\nweb: httpd -f -p $PORT\n").as_deref(),
            Some("httpd -f -p $PORT")
        );
        assert_eq!(procfile_web("web:\n"), None);
        assert_eq!(procfile_web("webby: x"), None);
    }
}
