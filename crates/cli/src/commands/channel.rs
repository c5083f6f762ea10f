//! `ironclaw channel add|ls|rm|status|log` and `ironclaw pair approve`.

use anyhow::Result;
use serde_json::{json, Value};

use crate::args::{ChannelCmd, PairCmd};
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn cut(t: &str, n: usize) -> String {
    let line = t.lines().next().unwrap_or("");
    if line.chars().count() > n {
        format!("{}...", line.chars().take(n - 3).collect::<String>())
    } else {
        line.to_string()
    }
}

fn status_rows(list: &[Value]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                s(&c["name"]),
                s(&c["kind"]),
                if c["connected"] == true { "yes" } else { "no" }.into(),
                s(&c["queue_depth"]),
                cut(&s(&c["last_error"]), 70),
            ]
        })
        .collect();
    render_table(
        &["NAME", "KIND", "CONNECTED", "QUEUED", "LAST ERROR"],
        &rows,
    )
}

pub async fn run(c: &Client, cmd: ChannelCmd) -> Result<i32> {
    match cmd {
        ChannelCmd::Add(a) => {
            let crate::args::ChannelAddArgs {
                kind,
                name,
                token_env,
                secret_env,
                api_base,
                callback_url,
                public_url,
                access,
                allow,
                groups,
                trigger,
                scope,
                user,
                json,
            } = *a;
            let mut body = json!({"kind": kind, "name": name, "allow": allow, "groups": groups});
            for (k, v) in [
                ("token_env", token_env),
                ("secret_env", secret_env),
                ("api_base", api_base),
                ("callback_url", callback_url),
                ("public_url", public_url),
                ("access", access),
                ("trigger", trigger),
                ("scope", scope),
                ("user", user),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let v = c
                .post("/v1/channels", &body, &format!("channel '{name}'"))
                .await?;
            if json.json {
                print_json(&v);
            } else {
                println!(
                    "added {} channel {name}; inbound endpoint /v1/channels/{name}/events",
                    s(&v["kind"])
                );
            }
            Ok(0)
        }
        ChannelCmd::Ls(j)
        | ChannelCmd::Status {
            name: None,
            json: j,
        } => {
            let v = c.get("/v1/channels", "channels").await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let list = v["channels"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no channels; add one with: ironclaw channel add telegram --name NAME --token-env VAR");
            }
            print!("{}", status_rows(&list));
            Ok(0)
        }
        ChannelCmd::Status {
            name: Some(name),
            json,
        } => {
            let v = c
                .get(
                    &format!("/v1/channels/{}", seg(&name)),
                    &format!("channel '{name}'"),
                )
                .await?;
            if json.json {
                print_json(&v);
            } else {
                print!("{}", status_rows(&[v]));
            }
            Ok(0)
        }
        ChannelCmd::Rm { name } => {
            c.delete(
                &format!("/v1/channels/{}", seg(&name)),
                &format!("channel '{name}'"),
            )
            .await?;
            println!("removed channel {name}");
            Ok(0)
        }
        ChannelCmd::Log { name, limit, json } => {
            let v = c
                .get(
                    &format!("/v1/channels/{}/messages?limit={limit}", seg(&name)),
                    &format!("channel '{name}'"),
                )
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            let mut rows = Vec::new();
            for m in v["messages"].as_array().cloned().unwrap_or_default() {
                let msg = &m["message"];
                let replies = m["replies"].as_array().cloned().unwrap_or_default();
                let delivery = if replies.is_empty() {
                    "-".to_string()
                } else {
                    replies
                        .iter()
                        .map(|r| {
                            format!("{}({})", s(&r["part"]["state"]), s(&r["part"]["attempts"]))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                rows.push(vec![
                    s(&msg["received_at"]),
                    s(&msg["sender"]),
                    s(&msg["state"]),
                    cut(&s(&msg["body"]["text"]), 40),
                    delivery,
                ]);
            }
            print!(
                "{}",
                render_table(
                    &["RECEIVED", "SENDER", "STATE", "TEXT", "REPLY (ATTEMPTS)"],
                    &rows
                )
            );
            Ok(0)
        }
    }
}

pub async fn pair(c: &Client, cmd: PairCmd) -> Result<i32> {
    match cmd {
        PairCmd::Approve { code, user } => {
            let v = c
                .post(
                    "/v1/pairings/approve",
                    &json!({"code": code, "user": user}),
                    &format!("pairing code '{code}'"),
                )
                .await?;
            println!(
                "paired {} sender {} with user {}",
                s(&v["channel"]),
                s(&v["sender"]),
                s(&v["user"])
            );
            Ok(0)
        }
    }
}
