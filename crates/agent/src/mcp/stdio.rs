//! A stdio MCP server run inside the user's sandbox: started through the
//! guest agent's exec stream ([`AgentClient::spawn`], stdin and stdout
//! piped), its stdout and stdin bridged to an in-memory duplex pipe that
//! rmcp's async-rw transport reads and writes. Stderr is kept (its tail)
//! for error messages. Dropping the [`Pipe`] ends the bridge tasks, which
//! drops the process's event stream and so kills it in the sandbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ironclaw_sandbox::guest_process::ProcessEvent;
use ironclaw_sandbox::types::ExecRequest;
use ironclaw_sandbox::AgentClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

use super::config::McpServerConfig;

/// Bytes of stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// The last bytes a process wrote to stderr, and how it ended.
#[derive(Default)]
pub struct Tail {
    bytes: VecDeque<u8>,
    pub exit: Option<String>,
}

impl Tail {
    fn push(&mut self, d: &[u8]) {
        self.bytes.extend(d);
        let over = self.bytes.len().saturating_sub(STDERR_TAIL);
        self.bytes.drain(..over);
    }

    /// What to tell the model about a server that failed.
    pub fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes.iter().copied().collect::<Vec<_>>())
            .trim()
            .to_string();
        match (&self.exit, text.is_empty()) {
            (Some(e), true) => format!("; {e}, no stderr output"),
            (Some(e), false) => format!("; {e}; stderr (last lines):\n{text}"),
            (None, true) => String::new(),
            (None, false) => format!("; stderr (last lines):\n{text}"),
        }
    }
}

/// The process's side of the bridge, alive as long as the connection.
pub struct Pipe {
    pub tail: Arc<Mutex<Tail>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub type Halves = (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>);

/// Start `cfg`'s command in the sandbox behind `agent`.
pub async fn spawn(
    agent: &AgentClient,
    cfg: &McpServerConfig,
    workdir: &str,
) -> Result<(Pipe, Halves), String> {
    let mut argv = vec![cfg.command.clone().unwrap_or_default()];
    argv.extend(cfg.args.iter().cloned());
    let req = ExecRequest {
        argv,
        env: cfg
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: Some(cfg.cwd.clone().unwrap_or_else(|| workdir.to_string())),
        stdin: true,
        ..Default::default()
    };
    let spawned = agent
        .spawn(req)
        .await
        .map_err(|e| format!("could not start it in the sandbox: {e}"))?;
    let tail = Arc::new(Mutex::new(Tail::default()));
    if spawned.pid.is_none() {
        let mut t = tail.lock().unwrap();
        for ev in &spawned.early {
            match ev {
                ProcessEvent::Stderr(d) | ProcessEvent::Stdout(d) => t.push(d),
                ProcessEvent::Exited(st) => t.exit = Some(exit_text(st.code, st.signal)),
            }
        }
        return Err(format!("it did not start{}", t.describe()));
    }
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut their_r, mut their_w) = tokio::io::split(theirs);
    let mut events = spawned.events;
    let control = spawned.control;
    let t = tail.clone();
    // Process output -> the client's reader. Ends (EOF to the client)
    // when the process exits or the sandbox goes away.
    let out = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ProcessEvent::Stdout(d)) => {
                    if their_w.write_all(&d).await.is_err() {
                        break;
                    }
                }
                Ok(ProcessEvent::Stderr(d)) => t.lock().unwrap().push(&d),
                Ok(ProcessEvent::Exited(st)) => {
                    t.lock().unwrap().exit = Some(exit_text(st.code, st.signal));
                }
                Err(e) => {
                    t.lock().unwrap().exit = Some(format!("lost it: {e}"));
                    break;
                }
            }
        }
        let _ = their_w.shutdown().await;
    });
    // The client's writes -> process stdin.
    let input = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match their_r.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = control.close_stdin().await;
                    break;
                }
                Ok(n) => {
                    if control.write_stdin(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok((
        Pipe {
            tail,
            tasks: vec![out, input],
        },
        tokio::io::split(ours),
    ))
}

fn exit_text(code: i32, signal: Option<i32>) -> String {
    match signal {
        Some(s) => format!("it was killed by signal {s}"),
        None if code == 127 => "it exited with code 127 (command not found in the sandbox)".into(),
        None => format!("it exited with code {code}"),
    }
}
