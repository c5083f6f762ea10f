//! The web process of a release, kept up inside the sandbox. Agents that
//! have supervised services ([`AgentClient::service_start`]: the guest agent
//! restarts it with backoff, appends its output to the log) run it as the
//! service `release-N`. Agents built before that (a VM image from an older
//! daemon) never answer the probe; there a small shell supervisor
//! (`/app/releases/N/.ironclaw/run`) started detached in its own session
//! through exec does the same job (restart with backoff 1 s doubling to
//! 30 s, reset after 30 s up, restart count in `.ironclaw/restarts`), so
//! deploy works on every backend and image.

use std::time::Duration;

use ironclaw_sandbox::agent::{AgentClient, AgentError, ExecOutput};
use ironclaw_sandbox::types::{ErrorKind, ExecRequest, ServiceSpec};
use ironclaw_store::ReleaseRecord;

pub fn release_dir(number: u32) -> String {
    format!("/app/releases/{number}")
}

fn state_dir(number: u32) -> String {
    format!("{}/.ironclaw", release_dir(number))
}

/// Shell-quote for `sh`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Run `script` with `sh -c` in the sandbox (stdin optional).
pub async fn sh(
    agent: &AgentClient,
    script: &str,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<ExecOutput, String> {
    agent
        .exec_collect(
            ExecRequest {
                argv: vec!["sh".into(), "-c".into(), script.into()],
                timeout_ms: Some(timeout.as_millis() as u64),
                ..Default::default()
            },
            stdin,
        )
        .await
        .map_err(|e| format!("exec in the sandbox: {e}"))
}

fn run_script(number: u32) -> String {
    let s = state_dir(number);
    format!(
        r#"#!/bin/sh
# ironclaw release supervisor: keeps the web process up (restart with backoff).
S={s}
cd {dir} || exit 1
echo $$ > $S/supervisor.pid
child=
nap=
stop() {{
  touch $S/stopped
  [ -n "$nap" ] && kill $nap 2>/dev/null
  if [ -n "$child" ]; then kill -TERM -$child 2>/dev/null; wait $child; fi
  exit 0
}}
trap stop TERM INT
delay=1
n=0
while :; do
  started=$(date +%s)
  echo "[ironclaw] starting release-{number}: $(cat $S/web)" >> $S/log
  setsid sh $S/web.sh >> $S/log 2>&1 < /dev/null &
  child=$!
  echo $child > $S/web.pid
  wait $child
  rc=$?
  [ -f $S/stopped ] && exit 0
  n=$((n+1))
  echo $n > $S/restarts
  [ $(($(date +%s) - started)) -gt 30 ] && delay=1
  echo "[ironclaw] web process exited (status $rc); restart $n in ${{delay}}s" >> $S/log
  sleep $delay &
  nap=$!
  wait $nap
  nap=
  delay=$((delay * 2))
  [ $delay -gt 30 ] && delay=30
done
"#,
        dir = release_dir(number),
    )
}

fn web_script(web: &str, port: u16) -> String {
    // Dependencies installed with `pip --target` live in .deps. No `exec`:
    // the command may be a list (`a; b`), and stopping signals the whole
    // process group anyway.
    format!(
        "export PORT={port}\n\
         [ -d .deps ] && export PYTHONPATH=\"$PWD/.deps${{PYTHONPATH:+:$PYTHONPATH}}\"\n\
         [ -d .deps/bin ] && export PATH=\"$PWD/.deps/bin:$PATH\"\n\
         {web}\n"
    )
}

/// Write the supervisor and the web command of `rel` into its directory.
pub async fn install(agent: &AgentClient, rel: &ReleaseRecord, web: &str) -> Result<(), String> {
    let s = state_dir(rel.number);
    let files = [
        ("run", run_script(rel.number)),
        ("web.sh", web_script(web, rel.port)),
        ("web", web.to_string()),
    ];
    for (name, body) in files {
        let out = sh(
            agent,
            &format!("mkdir -p {s} && cat > {s}/{name}"),
            Some(body.into_bytes()),
            Duration::from_secs(10),
        )
        .await?;
        if out.status.code != 0 {
            return Err(format!(
                "writing {s}/{name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

fn alive_test(number: u32) -> String {
    let s = state_dir(number);
    // The pid alone could be a recycled one after a sandbox restart.
    format!(
        "p=$(cat {s}/supervisor.pid 2>/dev/null) && [ -n \"$p\" ] && \
         tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q '{s}/run'"
    )
}

/// Start the shell supervisor of release `number`.
async fn shell_start(agent: &AgentClient, number: u32) -> Result<(), String> {
    let s = state_dir(number);
    let out = sh(
        agent,
        &format!(
            "rm -f {s}/stopped {s}/restarts {s}/supervisor.pid; \
             setsid sh {s}/run < /dev/null > /dev/null 2>&1 &"
        ),
        None,
        Duration::from_secs(10),
    )
    .await?;
    if out.status.code != 0 {
        return Err(format!(
            "starting the supervisor: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Stop the shell supervisor and web process of release `number`
/// (SIGTERM, then SIGKILL to the web process group after 5 s).
async fn shell_stop(agent: &AgentClient, number: u32) -> Result<(), String> {
    let s = state_dir(number);
    let script = format!(
        "touch {s}/stopped 2>/dev/null
         if {alive}; then kill -TERM $p; fi
         w=$(cat {s}/web.pid 2>/dev/null)
         i=0
         while [ -n \"$w\" ] && kill -0 -$w 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
         [ -n \"$w\" ] && kill -KILL -$w 2>/dev/null
         true",
        alive = alive_test(number)
    );
    sh(agent, &script, None, Duration::from_secs(15)).await?;
    Ok(())
}

async fn shell_alive(agent: &AgentClient, number: u32) -> Result<bool, String> {
    let out = sh(agent, &alive_test(number), None, Duration::from_secs(10)).await?;
    Ok(out.status.code == 0)
}

async fn shell_restarts(agent: &AgentClient, number: u32) -> Result<u32, String> {
    let out = sh(
        agent,
        &format!("cat {}/restarts 2>/dev/null || echo 0", state_dir(number)),
        None,
        Duration::from_secs(10),
    )
    .await?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

fn service_name(number: u32) -> String {
    format!("release-{number}")
}

fn agent_err(e: AgentError) -> String {
    format!("guest agent: {e}")
}

/// How a sandbox's agent keeps release processes up.
pub struct Supervisor<'a> {
    agent: &'a AgentClient,
    /// The agent supervises services itself.
    services: bool,
}

impl<'a> Supervisor<'a> {
    /// Ask the agent whether it has services (an older one stays silent).
    /// `IRONCLAW_DEPLOY_SHELL_SUPERVISOR=1` in the daemon's environment
    /// forces the shell supervisor (tests of the fallback).
    pub async fn detect(agent: &'a AgentClient) -> Result<Supervisor<'a>, String> {
        if std::env::var_os("IRONCLAW_DEPLOY_SHELL_SUPERVISOR").is_some_and(|v| v == "1") {
            return Ok(Supervisor {
                agent,
                services: false,
            });
        }
        let services = agent
            .service_list(Duration::from_secs(2))
            .await
            .map_err(agent_err)?
            .is_some();
        Ok(Supervisor { agent, services })
    }

    pub fn agent(&self) -> &'a AgentClient {
        self.agent
    }

    /// Start release `number`'s web process (installed by [`install`]).
    pub async fn start(&self, number: u32) -> Result<(), String> {
        if !self.services {
            return shell_start(self.agent, number).await;
        }
        let spec = ServiceSpec {
            name: service_name(number),
            argv: vec!["sh".into(), format!("{}/web.sh", state_dir(number))],
            env: vec![],
            cwd: Some(release_dir(number)),
            log: log_path(number),
        };
        match self.agent.service_start(spec.clone()).await {
            Err(AgentError::Guest {
                kind: ErrorKind::AlreadyExists,
                ..
            }) => {
                // A leftover of an interrupted release: start it afresh.
                self.stop(number).await?;
                self.agent.service_start(spec).await.map_err(agent_err)
            }
            other => other.map_err(agent_err),
        }
    }

    /// Stop release `number`'s web process (nothing if it does not run).
    pub async fn stop(&self, number: u32) -> Result<(), String> {
        if self.services {
            match self.agent.service_stop(&service_name(number)).await {
                Ok(())
                | Err(AgentError::Guest {
                    kind: ErrorKind::NotFound,
                    ..
                }) => {}
                Err(e) => return Err(agent_err(e)),
            }
        }
        // Also what an older daemon's shell supervisor may have started.
        shell_stop(self.agent, number).await
    }

    /// How often the web process exited since it was started.
    pub async fn restarts(&self, number: u32) -> Result<u32, String> {
        if !self.services {
            return shell_restarts(self.agent, number).await;
        }
        let list = self
            .agent
            .service_list(Duration::from_secs(10))
            .await
            .map_err(agent_err)?
            .unwrap_or_default();
        Ok(list
            .iter()
            .find(|s| s.name == service_name(number))
            .map_or(0, |s| s.restarts))
    }

    /// Start release `rel` unless it is supervised already. `true` when
    /// started.
    pub async fn ensure_running(&self, rel: &ReleaseRecord) -> Result<bool, String> {
        if shell_alive(self.agent, rel.number).await? {
            return Ok(false);
        }
        if self.services {
            let list = self
                .agent
                .service_list(Duration::from_secs(10))
                .await
                .map_err(agent_err)?
                .unwrap_or_default();
            if list
                .iter()
                .any(|s| s.name == service_name(rel.number) && s.supervised)
            {
                return Ok(false);
            }
        }
        self.start(rel.number).await?;
        Ok(true)
    }
}

pub fn log_path(number: u32) -> String {
    format!("{}/log", state_dir(number))
}

/// The last `lines` lines of the release's process log.
pub async fn log_tail(agent: &AgentClient, number: u32, lines: u32) -> String {
    match sh(
        agent,
        &format!("tail -n {lines} {} 2>/dev/null", log_path(number)),
        None,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(log unavailable: {e})\n"),
    }
}
