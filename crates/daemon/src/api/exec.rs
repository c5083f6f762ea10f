//! Running commands: one-shot JSON and streamed over WebSocket.

use std::collections::BTreeMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ironclaw_proto::{ExecRequest, GuestMsg, HostMsg, TtySize};
use serde::Deserialize;

use crate::auth::Target;
use crate::error::{ApiError, Json};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Text fed to the command's stdin (then closed).
    pub stdin: Option<String>,
    pub timeout_ms: Option<u64>,
}

fn validate_argv(argv: &[String]) -> Result<(), ApiError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ApiError::BadRequest("argv must name a command".into()));
    }
    Ok(())
}

pub async fn exec(
    State(st): State<AppState>,
    t: Target,
    Json(body): Json<ExecBody>,
) -> Result<impl IntoResponse, ApiError> {
    validate_argv(&body.argv)?;
    let agent = st.manager.agent(&t.id).await?;
    let req = ExecRequest {
        argv: body.argv,
        env: body.env.into_iter().collect(),
        cwd: body.cwd,
        stdin: false,
        timeout_ms: body.timeout_ms,
        tty: None,
    };
    let out = agent
        .exec_collect(req, body.stdin.map(String::into_bytes))
        .await?;
    Ok(axum::Json(serde_json::json!({
        "exit_code": out.status.code,
        "signal": out.status.signal,
        "timed_out": out.status.timed_out,
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
    })))
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
}

/// Control messages a client sends during an exec or console session.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    Eof,
    Resize { rows: u16, cols: u16 },
    Signal { signal: i32 },
}

pub async fn exec_ws(
    State(st): State<AppState>,
    t: Target,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Fail before the upgrade, so the client sees an HTTP status.
    let agent = st.manager.agent(&t.id).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = run_exec_ws(socket, agent).await {
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
        timeout_ms: start.timeout_ms,
        tty: start.tty,
    };
    let stream = agent.open(HostMsg::Exec(req)).await?;
    pump(socket, stream, Output::Exec).await
}

/// How guest output is framed toward the WebSocket client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Binary messages prefixed by the channel byte (1 stdout, 2 stderr).
    Exec,
    /// Raw terminal bytes.
    Console,
}

/// Shuttle messages between a WebSocket and an agent stream until either ends.
pub async fn pump(
    socket: WebSocket,
    mut stream: ironclaw_sandbox::agent::AgentStream,
    output: Output,
) -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    let sender = stream.sender();
    let input = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let host_msg = match msg {
                Message::Binary(b) => HostMsg::Stdin(b),
                Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                    Ok(Control::Eof) => HostMsg::StdinEof,
                    Ok(Control::Resize { rows, cols }) => HostMsg::Resize(TtySize { rows, cols }),
                    Ok(Control::Signal { signal }) => HostMsg::Signal(signal),
                    Err(_) => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if sender.send(host_msg).await.is_err() {
                break;
            }
        }
    };
    let out = async move {
        loop {
            let msg = match stream.recv().await {
                Ok(m) => m,
                Err(e) => {
                    let _ = ws_tx.send(text_error(&e.to_string())).await;
                    break;
                }
            };
            let ws_msg = match msg {
                GuestMsg::Stdout(d) if output == Output::Console => Message::Binary(d),
                GuestMsg::Stdout(d) => Message::Binary([&[1u8][..], &d].concat()),
                GuestMsg::Stderr(d) => Message::Binary([&[2u8][..], &d].concat()),
                GuestMsg::Exited(s) => {
                    let m = serde_json::json!({"type":"exit","exit_code":s.code,"signal":s.signal,"timed_out":s.timed_out});
                    let _ = ws_tx.send(Message::Text(m.to_string())).await;
                    break;
                }
                GuestMsg::Error { message, .. } => {
                    let _ = ws_tx.send(text_error(&message)).await;
                    break;
                }
                GuestMsg::PtyAttached { created, pid } => Message::Text(
                    serde_json::json!({"type":"attached","created":created,"pid":pid}).to_string(),
                ),
                _ => continue,
            };
            if ws_tx.send(ws_msg).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
        stream
    };
    // Whichever side finishes first ends the session; dropping the agent
    // stream cancels the exec (or detaches the console) in the guest.
    tokio::select! {
        _ = input => {}
        s = out => drop(s),
    }
    Ok(())
}
