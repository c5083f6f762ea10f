//! The web process of a release, kept up inside the sandbox by a small
//! shell supervisor (`/app/releases/N/.ironclaw/run`) started detached in
//! its own session through the agent's exec, so it outlives the exec and
//! the push. It restarts the process when it exits, with backoff (1 s
//! doubling to 30 s, reset after 30 s of uptime), counts restarts and
//! appends the process's output to `.ironclaw/log`. Only exec and a POSIX
//! shell are needed, so it works alike on every backend and on images
//! built before deploy existed.

use std::time::Duration;

use ironclaw_proto::ExecRequest;
use ironclaw_sandbox::agent::{AgentClient, ExecOutput};
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
  echo "[ironclaw] starting release {number}: $(cat $S/web)" >> $S/log
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

/// Start the supervisor of `rel` (its log and restart count start over).
pub async fn start(agent: &AgentClient, number: u32) -> Result<(), String> {
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

/// Stop the supervisor and web process of release `number` (SIGTERM, then
/// SIGKILL to the web process group after 5 s).
pub async fn stop(agent: &AgentClient, number: u32) -> Result<(), String> {
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

/// Start the supervisor of `rel` unless it runs. `true` when started.
pub async fn ensure_running(agent: &AgentClient, rel: &ReleaseRecord) -> Result<bool, String> {
    let out = sh(
        agent,
        &alive_test(rel.number),
        None,
        Duration::from_secs(10),
    )
    .await?;
    if out.status.code == 0 {
        return Ok(false);
    }
    start(agent, rel.number).await?;
    Ok(true)
}

/// How often the web process of release `number` exited since its start.
pub async fn restarts(agent: &AgentClient, number: u32) -> Result<u32, String> {
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
