//! `ironclaw task add|ls|rm|runs`.

use anyhow::Result;
use serde_json::{json, Value};

use crate::args::TaskCmd;
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

fn when(t: &Value) -> String {
    let tz = t["tz"]
        .as_str()
        .map(|z| format!(" ({z})"))
        .unwrap_or_default();
    let w = if let Some(a) = t["at"].as_str() {
        format!("at {a}")
    } else if let Some(e) = t["every"].as_str() {
        format!("every {e}")
    } else {
        format!("cron {}", s(&t["cron"]))
    };
    format!("{w}{tz}")
}

/// One line: the state and the result or error, cut for a table.
fn outcome(r: &Value) -> String {
    let text = match r["state"].as_str() {
        Some("failed") => format!("failed: {}", s(&r["error"])),
        Some("ok") => s(&r["result"]),
        Some(other) => other.to_string(),
        None => "-".into(),
    };
    let line = text.lines().next().unwrap_or("").to_string();
    if line.chars().count() > 60 {
        format!("{}...", line.chars().take(57).collect::<String>())
    } else {
        line
    }
}

pub async fn run(c: &Client, cmd: TaskCmd) -> Result<i32> {
    match cmd {
        TaskCmd::Add {
            name,
            prompt,
            at,
            every,
            cron,
            tz,
            json,
        } => {
            let v = c
                .post(
                    "/v1/tasks",
                    &json!({"name": name, "prompt": prompt, "at": at, "every": every, "cron": cron, "tz": tz}),
                    &format!("task '{name}'"),
                )
                .await?;
            if json.json {
                print_json(&v);
            } else {
                println!(
                    "scheduled {name}: {}; next run {}",
                    when(&v),
                    s(&v["next_run"])
                );
            }
            Ok(0)
        }
        TaskCmd::Ls(j) => {
            let v = c.get("/v1/tasks", "tasks").await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let empty = vec![];
            let list = v.as_array().unwrap_or(&empty);
            if list.is_empty() {
                eprintln!(
                    "no tasks; add one with: ironclaw task add NAME --prompt TEXT --every 1h"
                );
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        s(&t["name"]),
                        when(t),
                        s(&t["next_run"]),
                        if t["last_run"].is_null() {
                            "-".into()
                        } else {
                            outcome(&t["last_run"])
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                render_table(&["NAME", "SCHEDULE", "NEXT RUN", "LAST RUN"], &rows)
            );
            Ok(0)
        }
        TaskCmd::Rm { name } => {
            c.delete(
                &format!("/v1/tasks/{}", seg(&name)),
                &format!("task '{name}'"),
            )
            .await?;
            println!("removed task {name}");
            Ok(0)
        }
        TaskCmd::Runs { name, json } => {
            let v = c
                .get(
                    &format!("/v1/tasks/{}/runs", seg(&name)),
                    &format!("task '{name}'"),
                )
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            let empty = vec![];
            let rows: Vec<Vec<String>> = v
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|r| {
                    vec![
                        s(&r["started_at"]),
                        s(&r["state"]),
                        s(&r["finished_at"]),
                        outcome(r),
                    ]
                })
                .collect();
            print!(
                "{}",
                render_table(&["STARTED", "STATE", "FINISHED", "RESULT"], &rows)
            );
            Ok(0)
        }
    }
}
