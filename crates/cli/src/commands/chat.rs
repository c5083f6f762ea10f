//! `ironclaw ask` and `ironclaw chat`: talk to your agent over the chat
//! WebSocket. Answers stream to stdout; tool calls are shown on stderr.

use std::io::Write;

use anyhow::{bail, Result};
use futures::{SinkExt, StreamExt};
use ironclaw_api as api;
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::args::{AskArgs, ChatArgs};
use crate::client::{Client, Ws};

async fn open(c: &Client, session: Option<&str>, new: bool) -> Result<(Ws, String)> {
    let path = match session {
        Some(s) => format!("/v1/chat/ws?session={}", crate::client::seg(s)),
        None => "/v1/chat/ws".to_string(),
    };
    let mut ws = c.ws(&path, "chat").await?;
    let mut id = session_id(next_event(&mut ws).await?);
    if new {
        send(&mut ws, &api::ChatCommand::New).await?;
        id = session_id(next_event(&mut ws).await?);
    }
    Ok((ws, id))
}

fn session_id(ev: api::ChatEvent) -> String {
    match ev {
        api::ChatEvent::Session { id, .. } => id,
        _ => String::new(),
    }
}

async fn send(ws: &mut Ws, c: &api::ChatCommand) -> Result<()> {
    ws.send(Message::Text(serde_json::to_string(c)?)).await?;
    Ok(())
}

async fn next_event(ws: &mut Ws) -> Result<api::ChatEvent> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            return Ok(serde_json::from_str(&t)?);
        }
    }
    bail!("the daemon closed the chat connection")
}

/// A tool's input (any JSON) or output, on one line, cut at `max`.
fn short(v: &serde_json::Value, max: usize) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    } else {
        one_line
    }
}

/// Send one message and print the turn as it happens. Returns the error
/// message of a failed turn. `stop` resolving cancels the turn.
async fn run_turn(
    ws: &mut Ws,
    text: &str,
    model: Option<&str>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<String>> {
    let msg = api::ChatCommand::Message {
        text: text.into(),
        model: model.map(str::to_string),
    };
    send(ws, &msg).await?;
    tokio::pin!(stop);
    let mut stopped = false;
    let mut err = None;
    loop {
        let ev = tokio::select! {
            ev = next_event(ws) => ev?,
            _ = &mut stop, if !stopped => {
                stopped = true;
                send(ws, &api::ChatCommand::Stop).await?;
                continue;
            }
        };
        let mut out = std::io::stdout();
        match ev {
            api::ChatEvent::TextDelta { text } => {
                print!("{text}");
                out.flush()?;
            }
            api::ChatEvent::ToolStart { name, input, .. } => {
                eprintln!("\n[{name}] {}", short(&input, 120))
            }
            api::ChatEvent::ToolEnd {
                output, is_error, ..
            } => {
                let mark = if is_error { "error" } else { "ok" };
                eprintln!("[{mark}] {}", short(&output.into(), 200));
            }
            api::ChatEvent::Compacted { .. } => eprintln!("[earlier conversation summarised]"),
            api::ChatEvent::Error { message } => err = Some(message),
            api::ChatEvent::Done { stopped, .. } => {
                println!();
                if stopped.as_deref() == Some("cancelled") {
                    eprintln!("[stopped]");
                }
                return Ok(err);
            }
            _ => {}
        }
    }
}

pub async fn ask(c: &Client, a: AskArgs) -> Result<i32> {
    let (mut ws, _) = open(c, a.session.as_deref(), a.new).await?;
    let text = a.text.join(" ");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match run_turn(&mut ws, &text, a.model.as_deref(), stop).await? {
        None => Ok(0),
        Some(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

pub async fn repl(c: &Client, a: ChatArgs) -> Result<i32> {
    let (mut ws, id) = open(c, a.session.as_deref(), a.new).await?;
    eprintln!("session {id}; /new starts a fresh one, Ctrl-C stops a turn, Ctrl-D quits");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next_line().await? else {
            return Ok(0);
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/new" {
            send(&mut ws, &api::ChatCommand::New).await?;
            let id = session_id(next_event(&mut ws).await?);
            eprintln!("session {id}");
            continue;
        }
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        if let Some(e) = run_turn(&mut ws, line, None, stop).await? {
            eprintln!("error: {e}");
        }
    }
}
