//! `ironclaw mcp`: the daemon's MCP server (`/mcp`, streamable HTTP) on
//! stdin and stdout, for desktop MCP clients that start servers as
//! commands. Each JSON-RPC line read is POSTed with the session id the
//! daemon gave at `initialize`; each message in the answer (a JSON body or
//! the events of an SSE stream) is written back as one line.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use futures::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::client::Client;

const SESSION: &str = "mcp-session-id";
const PROTOCOL: &str = "mcp-protocol-version";

#[derive(Default)]
struct Session {
    id: Option<String>,
    protocol: Option<String>,
}

pub async fn run(c: &Client) -> Result<i32> {
    let c = Arc::new(c.clone());
    let session = Arc::new(Mutex::new(Session::default()));
    let (out, mut out_rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut inflight = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let err = json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": format!("parse error: {e}")}});
                let _ = out.send(err.to_string()).await;
                continue;
            }
        };
        let initialize = msg["method"] == "initialize";
        let exchange = forward(c.clone(), session.clone(), msg, line, out.clone());
        if initialize {
            // The session id arrives with the answer: later messages need it.
            exchange.await;
        } else {
            inflight.spawn(exchange);
        }
    }
    while inflight.join_next().await.is_some() {}
    let id = session.lock().unwrap().id.clone();
    if let Some(id) = id {
        // Tell the daemon the session is over; it would expire anyway.
        let _ = c
            .request(Method::DELETE, "/mcp")
            .header(SESSION, id)
            .send()
            .await;
    }
    drop(out);
    let _ = writer.await;
    Ok(0)
}

/// Send one message and write its answers.
async fn forward(
    c: Arc<Client>,
    session: Arc<Mutex<Session>>,
    msg: Value,
    line: String,
    out: mpsc::Sender<String>,
) {
    if let Err(e) = post(&c, &session, &line, &out).await {
        eprintln!("ironclaw mcp: {e:#}");
        // A request gets an answer even when the daemon could not give
        // one, so the client does not wait forever.
        if let Some(id) = msg.get("id").filter(|_| msg.get("method").is_some()) {
            let err = json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32603, "message": format!("{e:#}")}});
            let _ = out.send(err.to_string()).await;
        }
    }
}

async fn post(
    c: &Client,
    session: &Mutex<Session>,
    line: &str,
    out: &mpsc::Sender<String>,
) -> Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, "application/json, text/event-stream".parse()?);
    headers.insert(CONTENT_TYPE, "application/json".parse()?);
    {
        let s = session.lock().unwrap();
        if let Some(id) = &s.id {
            headers.insert(SESSION, id.parse()?);
        }
        if let Some(p) = &s.protocol {
            headers.insert(PROTOCOL, p.parse()?);
        }
    }
    let rb = c
        .request(Method::POST, "/mcp")
        .headers(headers)
        .body(line.to_string());
    let resp = c.send(rb, "MCP request").await?;
    if let Some(id) = resp.headers().get(SESSION).and_then(|v| v.to_str().ok()) {
        session.lock().unwrap().id = Some(id.to_string());
    }
    let kind = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if kind.starts_with("text/event-stream") {
        let mut events = SseLines::default();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            for data in events.push(&chunk.context("reading the MCP event stream")?) {
                deliver(session, data, out).await;
            }
        }
    } else if kind.starts_with("application/json") {
        let body = resp.text().await.context("reading the MCP answer")?;
        deliver(session, body, out).await;
    }
    // Anything else (202 Accepted for a notification) has nothing to pass on.
    Ok(())
}

/// Write one message out, learning the protocol version from the
/// `initialize` answer (later requests must carry it).
async fn deliver(session: &Mutex<Session>, data: String, out: &mpsc::Sender<String>) {
    if let Ok(v) = serde_json::from_str::<Value>(&data) {
        if let Some(p) = v["result"]["protocolVersion"].as_str() {
            session.lock().unwrap().protocol = Some(p.to_string());
        }
    }
    let _ = out.send(data).await;
}

/// Server-sent events split into their `data` payloads (one per event;
/// multi-line data joined with newlines; events without data, such as the
/// priming event, are skipped).
#[derive(Default)]
struct SseLines {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl SseLines {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    done.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                let d = d.strip_prefix(' ').unwrap_or(d);
                if !d.is_empty() {
                    self.data.push(d.to_string());
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::SseLines;

    #[test]
    fn events_split_across_chunks_and_priming_events_are_skipped() {
        let mut s = SseLines::default();
        assert!(s.push(b"id: 0\nretry: 3000\ndata:\n\n").is_empty());
        assert!(s.push(b"event: message\ndata: {\"a\":").is_empty());
        assert_eq!(
            s.push(b"1}\r\n\r\ndata: x\ndata: y\n\n"),
            vec!["{\"a\":1}", "x\ny"]
        );
    }
}
