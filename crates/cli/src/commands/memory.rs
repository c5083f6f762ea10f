//! `ironclaw memory status|search|reindex`.

use anyhow::Result;
use serde_json::{json, Value};

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

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub async fn run(c: &Client, cmd: MemoryCmd) -> Result<i32> {
    match cmd {
        MemoryCmd::Status { user, json } => {
            let v = c.get(&scoped("/v1/memory/status", &user), "memory").await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            println!("user:      {}", v["user"].as_str().unwrap_or("-"));
            println!(
                "search:    {}{}",
                v["mode"].as_str().unwrap_or("-"),
                v["embedder"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            if let Some(f) = v["fallback"].as_str() {
                println!("fallback:  {f}");
            }
            println!(
                "indexed:   {} files, {} chunks, {} with vectors",
                n(&v["files"]),
                n(&v["chunks"]),
                n(&v["with_vectors"])
            );
            let paths: Vec<&str> = v["paths"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("paths:     {}", paths.join(", "));
            Ok(0)
        }
        MemoryCmd::Search {
            query,
            max,
            user,
            json,
        } => {
            let v = c
                .post(
                    &scoped("/v1/memory/search", &user),
                    &json!({"query": query.join(" "), "max_results": max}),
                    "memory",
                )
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            if let Some(f) = v["fallback"].as_str() {
                eprintln!("note: {f}");
            }
            let empty = vec![];
            let hits = v["hits"].as_array().unwrap_or(&empty);
            if hits.is_empty() {
                eprintln!("no matches");
            }
            for h in hits {
                println!(
                    "{}:{}-{}  score {:.3}",
                    h["path"].as_str().unwrap_or("-"),
                    n(&h["start_line"]),
                    n(&h["end_line"]),
                    h["score"].as_f64().unwrap_or(0.0)
                );
                for line in h["snippet"].as_str().unwrap_or("").lines() {
                    println!("    {line}");
                }
                println!();
            }
            Ok(0)
        }
        MemoryCmd::Reindex { user, json } => {
            let v = c
                .post(&scoped("/v1/memory/reindex", &user), &json!({}), "memory")
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            if let Some(note) = v["note"].as_str() {
                println!("{note}");
                return Ok(0);
            }
            println!(
                "{} files: {} indexed, {} unchanged, {} removed; {} chunks embedded",
                n(&v["files"]),
                n(&v["indexed"]),
                n(&v["unchanged"]),
                n(&v["removed"]),
                n(&v["embedded"])
            );
            for p in v["problems"].as_array().unwrap_or(&vec![]) {
                eprintln!("warning: {}", p.as_str().unwrap_or_default());
            }
            Ok(0)
        }
    }
}
