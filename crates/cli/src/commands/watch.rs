//! `ironclaw watch NAME PATH`: print changes in a sandbox directory as
//! they happen (one line each: KIND PATH, or the JSON with --json), from
//! the daemon's Server-Sent Events.

use anyhow::{Context, Result};
use futures::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::sandbox::{ctx, path};
use crate::args::WatchArgs;
use crate::client::{encode, Client};

/// The `data:` payloads of complete SSE events in `buf`, removing them.
pub fn take_events(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

pub async fn run(c: &Client, a: WatchArgs) -> Result<i32> {
    let rb = c.request(
        Method::GET,
        &format!(
            "{}/watch?path={}&recursive={}",
            path(&a.name),
            encode(&a.path),
            a.recursive
        ),
    );
    let resp = c.send(rb, &ctx(&a.name)).await?;
    let mut s = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = tokio::io::stdout();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.context("watch stream interrupted")?;
        buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        for data in take_events(&mut buf) {
            let Ok(v) = serde_json::from_str::<ironclaw_api::WatchEvent>(&data) else {
                continue;
            };
            let line = if a.json.json {
                data
            } else if v.kind == "ready" {
                eprintln!("watching {}", v.path);
                continue;
            } else {
                format!("{} {}", v.kind, v.path)
            };
            out.write_all(format!("{line}\n").as_bytes()).await?;
            out.flush().await?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_split_and_keepalives_skip() {
        let mut b =
            String::from("event: create\ndata: {\"a\":1}\n\n:keep-alive\n\nevent: x\ndata: {\"b\"");
        assert_eq!(take_events(&mut b), vec!["{\"a\":1}".to_string()]);
        b.push_str(":2}\n\n");
        assert_eq!(take_events(&mut b), vec!["{\"b\":2}".to_string()]);
        assert!(b.is_empty());
    }
}
