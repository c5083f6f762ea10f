//! `ironclaw image build|ls|rm`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ironclaw_api as api;
use reqwest::Method;
use time::OffsetDateTime;

use crate::args::ImageCmd;
use crate::client::{seg, Client};
use crate::output::{age_since, format_bytes, print_json, render_table};
use crate::term;

pub async fn run(c: &Client, cmd: ImageCmd) -> Result<i32> {
    match cmd {
        ImageCmd::Build { name, from } => build(c, &name, &from).await,
        ImageCmd::Ls(j) => {
            let v = c.images().await?;
            if j.json {
                print_json(&v);
            } else {
                print!("{}", images_table(&v.images, OffsetDateTime::now_utc()));
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

pub fn images_table(images: &[api::Image], now: OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.source.clone(),
                format_bytes(i.size_bytes),
                i.in_use.to_string(),
                age_since(Some(&i.created_at), now),
            ]
        })
        .collect();
    render_table(&["NAME", "SOURCE", "SIZE", "IN USE", "AGE"], &rows)
}

/// Final line printed after a successful build.
pub fn done_line(image: Option<&api::Image>, name: &str, from: &str) -> String {
    match image {
        Some(i) => format!(
            "built image '{}' from {}, {}",
            i.name,
            i.source,
            format_bytes(i.size_bytes)
        ),
        None => format!("built image '{name}' from {from}"),
    }
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
        .json(&api::BuildImage {
            name: name.into(),
            from: from.into(),
        });
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
    let mut finished: Option<Result<Option<api::Image>>> = None;
    let mut handle = |line: String, finished: &mut Option<Result<Option<api::Image>>>| {
        // A line of a newer daemon's that this client does not know: skipped.
        let Ok(ev) = serde_json::from_str::<api::BuildEvent>(&line) else {
            if line.contains("\"done\"") {
                *finished = Some(Ok(None));
            }
            return;
        };
        match ev {
            api::BuildEvent::Progress {
                step,
                message: msg,
                done,
                total,
            } => {
                let text = match (step.is_empty(), msg.is_empty()) {
                    (false, false) => format!("{step}: {msg}"),
                    (false, true) => step.to_string(),
                    _ => msg.to_string(),
                };
                let done = Some(done);
                let total = Some(total).filter(|t| *t > 0);
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
            api::BuildEvent::Done { image } => {
                *finished = Some(Ok(Some(*image)));
            }
            api::BuildEvent::Error { message } => {
                *finished = Some(Err(anyhow!("{message}")));
            }
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
            println!("{}", done_line(image.as_ref(), name, from));
            Ok(0)
        }
        Some(Err(e)) => Err(e),
        None => bail!("the build stream ended without a result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
        let image = |v| serde_json::from_value::<api::Image>(v).unwrap();
        let t = images_table(
            &[image(
                json!({"name":"base","source":"debian","size_bytes":157286400,"created_at":"2026-11-23T18:00:00Z","in_use":2,
                    "guest_version":"0.1.0","build_seconds":1.5}),
            )],
            now,
        );
        assert_eq!(
            t,
            "NAME   SOURCE   SIZE   IN USE   AGE\nbase   debian   150M   2        1h\n"
        );
        assert_eq!(
            done_line(
                Some(&image(
                    json!({"name":"mini","source":"busybox","size_bytes":2048,"created_at":"",
                        "guest_version":"0.1.0","build_seconds":0.1})
                )),
                "mini",
                "busybox"
            ),
            "built image 'mini' from busybox, 2K"
        );
        assert_eq!(
            done_line(None, "mini", "debian"),
            "built image 'mini' from debian"
        );
    }
}
