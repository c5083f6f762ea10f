//! `ironclaw task add|ls|rm|runs`.

use anyhow::Result;
use ironclaw_api as api;

use crate::args::TaskCmd;
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

fn s(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn when(t: &api::Task) -> String {
    let tz = t.tz.as_ref().map(|z| format!(" ({z})")).unwrap_or_default();
    let w = if let Some(a) = &t.at {
        format!("at {a}")
    } else if let Some(e) = &t.every {
        format!("every {e}")
    } else {
        format!("cron {}", s(&t.cron))
    };
    format!("{w}{tz}")
}

/// One line: the state and the result or error, cut for a table.
fn outcome(r: &api::TaskRun) -> String {
    let text = match r.state.as_str() {
        "failed" => format!("failed: {}", s(&r.error)),
        "ok" => s(&r.result),
        "" => "-".into(),
        other => other.to_string(),
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
            let req = api::CreateTask {
                name: Some(name.clone()),
                prompt,
                at,
                every,
                cron,
                tz,
            };
            let t = c.create_task(&req).await?;
            if json.json {
                print_json(&t);
            } else {
                println!(
                    "scheduled {name}: {}; next run {}",
                    when(&t),
                    s(&t.next_run)
                );
            }
            Ok(0)
        }
        TaskCmd::Ls(j) => {
            let list = c.tasks().await?;
            if j.json {
                print_json(&list);
                return Ok(0);
            }
            if list.is_empty() {
                eprintln!(
                    "no tasks; add one with: ironclaw task add NAME --prompt TEXT --every 1h"
                );
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        when(t),
                        s(&t.next_run),
                        t.last_run.as_ref().map_or_else(|| "-".into(), outcome),
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
            let runs = c.task_runs(&name).await?;
            if json.json {
                print_json(&runs);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        r.started_at.clone(),
                        r.state.clone(),
                        s(&r.finished_at),
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
