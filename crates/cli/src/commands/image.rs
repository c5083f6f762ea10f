//! `ironclaw image build|ls|rm`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::args::ImageCmd;
use crate::client::{seg, Client};
use crate::output::{age_since, format_bytes, print_json, render_table};
use crate::term;

pub async fn run(c: &Client, cmd: ImageCmd) -> Result<i32> {
    match cmd {
        ImageCmd::Build { name, from } => build(c, &name, &from).await,
        ImageCmd::Ls(j) => {
            let v = c.get("/v1/images", "images").await?;
            if j.json {
                print_json(&v);
            } else {
                let empty = vec![];
                let images = v.get("images").and_then(Value::as_array).unwrap_or(&empty);
                print!("{}", images_table(images, OffsetDateTime::now_utc()));
            }
            Ok(0)
        }
        ImageCmd::Rm { names } => {
            let mut code = 0;
            for n in &names {
                match c
                    .delete(&format!("/v1/images/{}", seg(n)), &format!("image '{n}'"))
                    .await
                {
                    Ok(()) => println!("removed image {n}"),
                    Err(e) if names.len() == 1 => return Err(e),
                    Err(e) => {
                        super::report_error(&e);
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
    }
}

pub fn images_table(images: &[Value], now: OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
            vec![
                s("name"),
                s("source"),
                i.get("size_bytes")
                    .and_then(Value::as_u64)
                    .map_or_else(|| "-".into(), format_bytes),
                i.get("in_use")
                    .and_then(Value::as_u64)
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                age_since(i.get("created_at").and_then(Value::as_str), now),
            ]
        })
        .collect();
    render_table(&["NAME", "SOURCE", "SIZE", "IN USE", "AGE"], &rows)
}

/// Final line printed after a successful build.
pub fn done_line(image: &Value, name: &str, from: &str) -> String {
    let size = image
        .get("size_bytes")
        .and_then(Value::as_u64)
        .map(|b| format!(", {}", format_bytes(b)))
        .unwrap_or_default();
    let n = image.get("name").and_then(Value::as_str).unwrap_or(name);
    let src = image.get("source").and_then(Value::as_str).unwrap_or(from);
    format!("built image '{n}' from {src}{size}")
}

/// Incremental NDJSON splitter.
#[derive(Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Feed bytes, get the complete non-empty lines.
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let s = String::from_utf8_lossy(&line).trim().to_string();
            if !s.is_empty() {
                out.push(s);
            }
        }
        out
    }
    /// What is left at end of stream (a last line without `\n`).
    pub fn finish(&mut self) -> Option<String> {
        let s = String::from_utf8_lossy(&std::mem::take(&mut self.buf))
            .trim()
            .to_string();
        (!s.is_empty()).then_some(s)
    }
}

async fn build(c: &Client, name: &str, from: &str) -> Result<i32> {
    let rb = c
        .request(Method::POST, "/v1/images")
        .json(&json!({"name": name, "from": from}));
    let resp = c.send(rb, &format!("image '{name}'")).await?;
    let fancy = term::stderr_is_tty();
    let pb = if fancy {
        let pb = ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(120));
        pb.set_message(format!("building image '{name}' from {from}"));
        pb
    } else {
        ProgressBar::hidden()
    };
    let bar_style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut last_plain = String::new();
    let mut lines = LineBuf::default();
    let mut stream = resp.bytes_stream();
    let mut finished: Option<Result<Value>> = None;
    let mut handle = |line: String, finished: &mut Option<Result<Value>>| {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            return;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("progress") => {
                let step = v.get("step").and_then(Value::as_str).unwrap_or("");
                let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
                let text = match (step.is_empty(), msg.is_empty()) {
                    (false, false) => format!("{step}: {msg}"),
                    (false, true) => step.to_string(),
                    _ => msg.to_string(),
                };
                let done = v.get("done").and_then(Value::as_u64);
                let total = v.get("total").and_then(Value::as_u64).filter(|t| *t > 0);
                if fancy {
                    if let (Some(d), Some(t)) = (done, total) {
                        if pb.length() != Some(t) {
                            pb.set_style(bar_style.clone());
                            pb.set_length(t);
                        }
                        pb.set_position(d);
                    }
                    pb.set_message(text);
                } else if text != last_plain {
                    match (done, total) {
                        (Some(d), Some(t)) => eprintln!("[{d}/{t}] {text}"),
                        _ => eprintln!("{text}"),
                    }
                    last_plain = text;
                }
            }
            Some("done") => {
                *finished = Some(Ok(v.get("image").cloned().unwrap_or(Value::Null)));
            }
            Some("error") => {
                let m = v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("image build failed");
                *finished = Some(Err(anyhow!("{m}")));
            }
            _ => {}
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk.context("connection to ironclawd lost during the build") {
            Ok(c) => c,
            Err(e) => {
                pb.finish_and_clear();
                return Err(e);
            }
        };
        for l in lines.push(&chunk) {
            handle(l, &mut finished);
        }
        if finished.is_some() {
            break;
        }
    }
    if let Some(l) = lines.finish() {
        handle(l, &mut finished);
    }
    pb.finish_and_clear();
    match finished {
        Some(Ok(image)) => {
            println!("{}", done_line(&image, name, from));
            Ok(0)
        }
        Some(Err(e)) => Err(e),
        None => bail!("the build stream ended without a result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn ndjson_lines() {
        let mut l = LineBuf::default();
        assert_eq!(l.push(b"{\"a\":1}\n{\"b\""), vec!["{\"a\":1}"]);
        assert_eq!(l.push(b":2}\n\n"), vec!["{\"b\":2}"]);
        assert_eq!(l.push(b"{\"c\":3}"), Vec::<String>::new());
        assert_eq!(l.finish().as_deref(), Some("{\"c\":3}"));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn table_and_done() {
        let now = datetime!(2026-11-23 19:00:00 UTC);
        let t = images_table(
            &[
                json!({"name":"base","source":"debian","size_bytes":157286400,"created_at":"2026-11-23T18:00:00Z","in_use":2}),
            ],
            now,
        );
        assert_eq!(
            t,
            "NAME   SOURCE   SIZE   IN USE   AGE\nbase   debian   150M   2        1h\n"
        );
        assert_eq!(
            done_line(
                &json!({"name":"mini","source":"busybox","size_bytes":2048}),
                "mini",
                "busybox"
            ),
            "built image 'mini' from busybox, 2K"
        );
        assert_eq!(
            done_line(&Value::Null, "mini", "debian"),
            "built image 'mini' from debian"
        );
    }
}
