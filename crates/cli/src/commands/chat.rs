//! `ironclaw ask` and `ironclaw chat`: talk to your agent over the chat
//! WebSocket. Answers stream to stdout; tool calls are shown on stderr.

use std::io::Write;

use anyhow::{bail, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
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
    let mut id = next_event(&mut ws).await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if new {
        ws.send(Message::Text(json!({"type": "new"}).to_string()))
            .await?;
        id = next_event(&mut ws).await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    Ok((ws, id))
}

async fn next_event(ws: &mut Ws) -> Result<Value> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            return Ok(serde_json::from_str(&t)?);
        }
    }
    bail!("the daemon closed the chat connection")
}

fn short(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
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
    ws.send(Message::Text(
        json!({"type": "message", "text": text, "model": model}).to_string(),
    ))
    .await?;
    tokio::pin!(stop);
    let mut stopped = false;
    let mut err = None;
    loop {
        let ev = tokio::select! {
            ev = next_event(ws) => ev?,
            _ = &mut stop, if !stopped => {
                stopped = true;
                ws.send(Message::Text(json!({"type": "stop"}).to_string())).await?;
                continue;
            }
        };
        let mut out = std::io::stdout();
        match ev["type"].as_str().unwrap_or_default() {
            "text_delta" => {
                print!("{}", ev["text"].as_str().unwrap_or_default());
                out.flush()?;
            }
            "tool_start" => eprintln!(
                "\n[{}] {}",
                ev["name"].as_str().unwrap_or("tool"),
                short(&ev["input"], 120)
            ),
            "tool_end" => {
                let mark = if ev["is_error"] == true {
                    "error"
                } else {
                    "ok"
                };
                eprintln!("[{mark}] {}", short(&ev["output"], 200));
            }
            "compacted" => eprintln!("[earlier conversation summarised]"),
            "error" => err = ev["message"].as_str().map(str::to_string),
            "done" => {
                println!();
                if ev["stopped"] == "cancelled" {
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
            ws.send(Message::Text(json!({"type": "new"}).to_string()))
                .await?;
            let ev = next_event(&mut ws).await?;
            eprintln!("session {}", ev["id"].as_str().unwrap_or_default());
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
