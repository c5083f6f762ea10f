//! The scripted mock LLM as a process, for tests outside Rust (the web UI's
//! browser test). Usage: `mock_llm SCRIPT.json`; prints its base URL
//! (`http://127.0.0.1:PORT`) on stdout, serves until SIGTERM or stdin-less kill.
//!
//! The script is a JSON array of replies:
//! `{"text": "..."}`, `{"tool_calls": [{"name": "bash", "arguments": {...}}]}`,
//! `{"error": {"status": 503, "body": "..."}}`, `{"garbage": "..."}`,
//! `{"slow": {"chunks": ["a ", "b "], "delay_ms": 100}}`.

use std::time::Duration;

use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::Value;

fn reply(v: &Value) -> Result<MockReply, String> {
    if let Some(t) = v["text"].as_str() {
        return Ok(MockReply::text(t));
    }
    if let Some(calls) = v["tool_calls"].as_array() {
        let calls = calls
            .iter()
            .map(|c| {
                Ok((
                    c["name"]
                        .as_str()
                        .ok_or("tool call without name")?
                        .to_string(),
                    c["arguments"].clone(),
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        return Ok(MockReply::ToolCalls(calls));
    }
    if v["error"].is_object() {
        let status = v["error"]["status"]
            .as_u64()
            .ok_or("error without status")? as u16;
        return Ok(MockReply::error(
            status,
            v["error"]["body"].as_str().unwrap_or(""),
        ));
    }
    if let Some(g) = v["garbage"].as_str() {
        return Ok(MockReply::Garbage(g.into()));
    }
    if v["slow"].is_object() {
        let chunks = v["slow"]["chunks"]
            .as_array()
            .ok_or("slow without chunks")?;
        return Ok(MockReply::Slow {
            chunks: chunks
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            delay: Duration::from_millis(v["slow"]["delay_ms"].as_u64().unwrap_or(100)),
        });
    }
    Err(format!("unknown reply {v}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: mock_llm SCRIPT.json");
        std::process::exit(2);
    };
    let script: Vec<Value> = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mock_llm: {path}: {e}");
            std::process::exit(2);
        }
    };
    let replies: Vec<MockReply> = match script.iter().map(reply).collect() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mock_llm: {path}: {e}");
            std::process::exit(2);
        }
    };
    let mock = MockLlm::start(replies).await;
    println!("{}", mock.url);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
