//! `ironclaw memory status|search|reindex`.

use anyhow::Result;
use ironclaw_api as api;

use crate::args::MemoryCmd;
use crate::client::{encode, Client};
use crate::output::print_json;

/// `path` with `?user=NAME` when one is given.
fn scoped(path: &str, user: &Option<String>) -> String {
    match user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => format!("{path}?user={}", encode(u)),
        None => path.to_string(),
    }
}

pub async fn run(c: &Client, cmd: MemoryCmd) -> Result<i32> {
    match cmd {
        MemoryCmd::Status { user, json } => {
            let v: api::MemoryStatus = c
                .get_as(&scoped("/v1/memory/status", &user), "memory")
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            println!("user:      {}", v.user);
            println!(
                "search:    {}{}",
                v.mode.as_str(),
                v.embedder
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            if let Some(f) = &v.fallback {
                println!("fallback:  {f}");
            }
            println!(
                "indexed:   {} files, {} chunks, {} with vectors",
                v.files, v.chunks, v.with_vectors
            );
            println!("paths:     {}", v.paths.join(", "));
            Ok(0)
        }
        MemoryCmd::Search {
            query,
            max,
            user,
            json,
        } => {
            let req = api::MemorySearchRequest {
                query: query.join(" "),
                max_results: max.map(Into::into),
            };
            let v: api::MemorySearch = c
                .post_as(&scoped("/v1/memory/search", &user), &req, "memory")
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            if let Some(f) = &v.fallback {
                eprintln!("note: {f}");
            }
            if v.hits.is_empty() {
                eprintln!("no matches");
            }
            for h in &v.hits {
                println!(
                    "{}:{}-{}  score {:.3}",
                    h.path, h.start_line, h.end_line, h.score
                );
                for line in h.snippet.lines() {
                    println!("    {line}");
                }
                println!();
            }
            Ok(0)
        }
        MemoryCmd::Reindex { user, json } => {
            let v: api::MemoryReindex = c
                .post_as(
                    &scoped("/v1/memory/reindex", &user),
                    &serde_json::json!({}),
                    "memory",
                )
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            if let Some(note) = &v.note {
                println!("{note}");
                return Ok(0);
            }
            println!(
                "{} files: {} indexed, {} unchanged, {} removed; {} chunks embedded",
                v.files, v.indexed, v.unchanged, v.removed, v.embedded
            );
            for p in &v.problems {
                eprintln!("warning: {p}");
            }
            Ok(0)
        }
    }
}
