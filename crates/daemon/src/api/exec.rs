//! Running commands: one-shot JSON and streamed over WebSocket.

use std::collections::BTreeMap;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ironclaw_sandbox::types::{ExecRequest, ExitStatus, TtySize};
use ironclaw_sandbox::{AgentError, Session, SessionEvent};
use serde::Deserialize;

use crate::auth::Target;
use crate::error::{ApiError, Json, WebSocketUpgrade};
use crate::AppState;

/// The body of `POST .../exec` (shared with the MCP `sandbox_exec` tool).
pub type ExecBody = ironclaw_api::Exec;

fn validate_argv(argv: &[String]) -> Result<(), ApiError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ApiError::BadRequest("argv must name a command".into()));
    }
    Ok(())
}

/// The timeout an exec runs with: the request's own, else the configured
/// default; never above the configured maximum.
pub fn effective_timeout_ms(
    config: &crate::config::Config,
    secs: Option<u64>,
    ms: Option<u64>,
) -> Result<u64, ApiError> {
    let asked = match (secs, ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give timeout_secs or timeout_ms, not both".into(),
            ))
        }
        (Some(s), None) => Some(s.saturating_mul(1000)),
        (None, ms) => ms,
    };
    let max_ms = config.exec_timeout_max_secs.saturating_mul(1000);
    match asked {
        None => Ok(config.exec_timeout_secs.saturating_mul(1000).min(max_ms)),
        Some(0) => Err(ApiError::BadRequest("the timeout must be positive".into())),
        Some(t) if t > max_ms => Err(ApiError::BadRequest(format!(
            "the timeout may be at most {} s (exec_timeout_max_secs)",
            config.exec_timeout_max_secs
        ))),
        Some(t) => Ok(t),
    }
}

/// One output stream collected up to a limit; what comes after is dropped.
#[derive(Debug)]
pub struct Capped {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capped {
    pub fn new(limit: usize) -> Self {
        Capped {
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.truncated {
            return;
        }
        let room = self.limit - self.buf.len();
        let take = data.len().min(room);
        let need = self.buf.len() + take;
        if need > self.buf.capacity() {
            // Grow geometrically, but never past the limit.
            let want = (self.buf.capacity() * 2).max(need).min(self.limit);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..take]);
        if take < data.len() {
            self.truncated = true;
        }
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The collected text, with a marker line when output was dropped.
    pub fn finish(self, limit_mib: u64) -> String {
        let mut text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            text.push_str(&format!(
                "\n[ironclaw: output truncated at {limit_mib} MiB]\n"
            ));
        }
        text
    }
}

/// Run a command and collect its output, each stream bounded by
/// `exec_output_limit_mib`, under a timeout (see [`effective_timeout_ms`]).
#[utoipa::path(post, path = "/v1/sandboxes/{name}/exec", operation_id = "execInSandbox", tag = "exec",
    summary = "Run a command to completion",
    params(("name" = String, Path), ironclaw_api::OwnerQuery), request_body = ironclaw_api::Exec,
    responses((status = 200, description = "success", body = ironclaw_api::ExecResult),
        (status = "default", description = "error", body = ironclaw_api::Error)))]
pub async fn exec(
    State(st): State<AppState>,
    t: Target,
    Json(body): Json<ExecBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(run_collected(&st, &t.id, body).await?))
}

/// What a collected exec returns (the `/exec` route's body, and the MCP
/// `sandbox_exec` tool's result).
pub use ironclaw_api::ExecResult;

/// Run a command in sandbox `id` to its end, as [`exec`] does.
pub async fn run_collected(
    st: &AppState,
    id: &str,
    body: ExecBody,
) -> Result<ExecResult, ApiError> {
    validate_argv(&body.argv)?;
    let config = &st.manager.config;
    let timeout_ms = effective_timeout_ms(config, body.timeout_secs, body.timeout_ms)?;
    let agent = st.manager.agent(id).await?;
    let stdin = body.stdin.map(String::into_bytes);
    let req = ExecRequest {
        argv: body.argv,
        env: body.env.into_iter().collect(),
        cwd: body.cwd,
        stdin: stdin.is_some(),
        timeout_ms: Some(timeout_ms),
        tty: None,
        user: body.user,
    };
    let limit_mib = config.exec_output_limit_mib;
    let limit = usize::try_from(limit_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let mut stdout = Capped::new(limit);
    let mut stderr = Capped::new(limit);
    // A stop racing this exec closes the connection under it: answer with
    // the state the sandbox ends in.
    let closed = |e: AgentError| async move {
        match e {
            AgentError::Closed => st.manager.agent_closed(id).await,
            other => other.into(),
        }
    };
    let mut s = match agent.exec(req).await {
        Ok(s) => s,
        Err(e) => return Err(closed(e).await),
    };
    let input = s.control();
    let collect = async {
        if let Some(data) = stdin {
            input.write_stdin(&data).await?;
            input.close_stdin().await?;
        }
        loop {
            match s.next().await {
                Some(Ok(SessionEvent::Stdout(d))) => stdout.push(&d),
                Some(Ok(SessionEvent::Stderr(d))) => stderr.push(&d),
                Some(Ok(SessionEvent::Exited(status))) => return Ok::<_, AgentError>(status),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(AgentError::Closed),
            }
        }
    };
    // The guest kills the command at the timeout; should it not answer,
    // the daemon gives up a little later (dropping the session kills it too).
    let backstop = std::time::Duration::from_millis(timeout_ms.saturating_add(10_000));
    let status = match tokio::time::timeout(backstop, collect).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(closed(e).await),
        Err(_) => ExitStatus {
            code: 137,
            signal: Some(9),
            timed_out: true,
        },
    };
    drop(s);
    Ok(ExecResult {
        exit_code: status.code,
        signal: status.signal,
        timed_out: status.timed_out,
        truncated: stdout.truncated() || stderr.truncated(),
        stdout_truncated: stdout.truncated(),
        stderr_truncated: stderr.truncated(),
        stdout: stdout.finish(limit_mib),
        stderr: stderr.finish(limit_mib),
    })
}

/// The first WebSocket message of an exec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WsExecStart {
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    #[serde(default)]
    stdin: bool,
    timeout_ms: Option<u64>,
    tty: Option<TtySize>,
    user: Option<String>,
}

/// Control messages a client sends during an exec or console session.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    Eof,
    Resize { rows: u16, cols: u16 },
    Signal { signal: i32 },
}

#[utoipa::path(get, path = "/v1/sandboxes/{name}/exec/ws", operation_id = "execWebSocket", tag = "exec",
    summary = "Streamed exec over WebSocket (see docs/api.md); a plain GET is a 400",
    params(("name" = String, Path), ironclaw_api::OwnerQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = "default", description = "error", body = ironclaw_api::Error)))]
pub async fn exec_ws(
    State(st): State<AppState>,
    t: Target,
    WebSocketUpgrade(ws): WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Fail before the upgrade, so the client sees an HTTP status.
    let agent = st.manager.agent(&t.id).await?;
    // Streamed execs (interactive ones included) get no default timeout,
    // but one they ask for is capped like the JSON exec's.
    let max_timeout_ms = st.manager.config.exec_timeout_max_secs.saturating_mul(1000);
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = run_exec_ws(socket, agent, max_timeout_ms).await {
            tracing::debug!("exec websocket ended: {e}");
        }
    }))
}

pub fn text_error(message: &str) -> Message {
    Message::Text(serde_json::json!({ "type": "error", "message": message }).to_string())
}

async fn run_exec_ws(
    mut socket: WebSocket,
    agent: ironclaw_sandbox::AgentClient,
    max_timeout_ms: u64,
) -> anyhow::Result<()> {
    let start: WsExecStart = match socket.recv().await {
        Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
            Ok(s) => s,
            Err(e) => {
                socket
                    .send(text_error(&format!("invalid exec request: {e}")))
                    .await?;
                return Ok(());
            }
        },
        _ => return Ok(()),
    };
    if let Err(e) = validate_argv(&start.argv) {
        socket.send(text_error(&e.to_string())).await?;
        return Ok(());
    }
    let req = ExecRequest {
        argv: start.argv,
        env: start.env.into_iter().collect(),
        cwd: start.cwd,
        stdin: start.stdin,
        timeout_ms: start.timeout_ms.map(|t| t.min(max_timeout_ms)),
        tty: start.tty,
        user: start.user,
    };
    let session = agent.exec(req).await?;
    pump(socket, session, Output::Exec).await
}

/// How guest output is framed toward the WebSocket client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Binary messages prefixed by the channel byte (1 stdout, 2 stderr).
    Exec,
    /// Raw terminal bytes.
    Console,
}

/// Shuttle messages between a WebSocket and a guest session until either ends.
pub async fn pump(socket: WebSocket, mut session: Session, output: Output) -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    let control = session.control();
    let input = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let sent = match msg {
                Message::Binary(b) => control.write_stdin(b).await,
                Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                    Ok(Control::Eof) => control.close_stdin().await,
                    Ok(Control::Resize { rows, cols }) => {
                        control.resize(TtySize { rows, cols }).await
                    }
                    Ok(Control::Signal { signal }) => control.signal(signal).await,
                    Err(_) => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if sent.is_err() {
                break;
            }
        }
    };
    let out = async move {
        while let Some(ev) = session.next().await {
            let ws_msg = match ev {
                Ok(SessionEvent::Stdout(d)) if output == Output::Console => Message::Binary(d),
                Ok(SessionEvent::Stdout(d)) => Message::Binary([&[1u8][..], &d].concat()),
                Ok(SessionEvent::Stderr(d)) => Message::Binary([&[2u8][..], &d].concat()),
                Ok(SessionEvent::Exited(s)) => {
                    let m = serde_json::json!({"type":"exit","exit_code":s.code,"signal":s.signal,"timed_out":s.timed_out});
                    let _ = ws_tx.send(Message::Text(m.to_string())).await;
                    break;
                }
                Ok(SessionEvent::Attached { created, pid }) => Message::Text(
                    serde_json::json!({"type":"attached","created":created,"pid":pid}).to_string(),
                ),
                Ok(SessionEvent::Started { .. }) => continue,
                Err(e) => {
                    let _ = ws_tx.send(text_error(&e.to_string())).await;
                    break;
                }
            };
            if ws_tx.send(ws_msg).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
        session
    };
    // Whichever side finishes first ends the session; dropping it cancels
    // the exec (or detaches the console) in the guest.
    tokio::select! {
        _ = input => {}
        s = out => drop(s),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_the_limit_and_marks_the_rest() {
        let mut c = Capped::new(10);
        c.push(b"hello");
        c.push(b"world");
        assert!(!c.truncated(), "exactly the limit is not truncated");
        c.push(b"!");
        assert!(c.truncated());
        assert!(c.buf.capacity() <= 10);
        assert_eq!(
            c.finish(16),
            "helloworld\n[ironclaw: output truncated at 16 MiB]\n"
        );
        let mut c = Capped::new(4);
        c.push(b"abcdefgh");
        assert_eq!(c.buf, b"abcd");
        assert!(c.truncated());
        let mut c = Capped::new(4);
        c.push(b"ab");
        assert_eq!(c.finish(1), "ab");
    }

    #[test]
    fn timeouts_default_lower_raise_and_cap() {
        let cfg = crate::config::Config {
            exec_timeout_secs: 600,
            exec_timeout_max_secs: 3600,
            ..Default::default()
        };
        let t = |s, m| effective_timeout_ms(&cfg, s, m);
        assert_eq!(t(None, None).unwrap(), 600_000);
        assert_eq!(t(Some(5), None).unwrap(), 5_000);
        assert_eq!(t(Some(1200), None).unwrap(), 1_200_000);
        assert_eq!(t(None, Some(250)).unwrap(), 250);
        assert_eq!(t(Some(3600), None).unwrap(), 3_600_000);
        assert!(t(Some(3601), None).is_err());
        assert!(t(Some(0), None).is_err());
        assert!(t(Some(1), Some(1)).is_err());
    }
}
