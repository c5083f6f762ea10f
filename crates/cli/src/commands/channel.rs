//! `ironclaw channel add|ls|rm|status|log` and `ironclaw pair approve`.

use anyhow::Result;
use ironclaw_api as api;

use crate::args::{ChannelCmd, PairCmd};
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

fn s(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// An enum flag's value as the API's type (`pairing`, `chat`...).
fn word<T: serde::de::DeserializeOwned>(v: &str, flag: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(v.into()))
        .map_err(|e| crate::client::usage(format!("{flag} {v}: {e}")))
}

fn cut(t: &str, n: usize) -> String {
    let line = t.lines().next().unwrap_or("");
    if line.chars().count() > n {
        format!("{}...", line.chars().take(n - 3).collect::<String>())
    } else {
        line.to_string()
    }
}

fn status_rows(list: &[api::Channel]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.kind.clone(),
                if c.connected { "yes" } else { "no" }.into(),
                c.queue_depth.to_string(),
                cut(&s(&c.last_error), 70),
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
            let access = access.map(|a| word(&a, "--access")).transpose()?;
            let scope = scope.map(|a| word(&a, "--scope")).transpose()?;
            let body = api::AddChannel {
                kind,
                name: name.clone(),
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
            };
            let v: api::Channel = c
                .post_as("/v1/channels", &body, &format!("channel '{name}'"))
                .await?;
            if json.json {
                print_json(&v);
            } else {
                println!(
                    "added {} channel {name}; inbound endpoint /v1/channels/{name}/events",
                    v.kind
                );
            }
            Ok(0)
        }
        ChannelCmd::Ls(j)
        | ChannelCmd::Status {
            name: None,
            json: j,
        } => {
            let v: api::ChannelList = c.get_as("/v1/channels", "channels").await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let list = v.channels;
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
            let v: api::Channel = c
                .get_as(
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
            let v: api::ChannelMessages = c
                .get_as(
                    &format!("/v1/channels/{}/messages?limit={limit}", seg(&name)),
                    &format!("channel '{name}'"),
                )
                .await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            let mut rows = Vec::new();
            for m in &v.messages {
                let msg = &m.message;
                let delivery = if m.replies.is_empty() {
                    "-".to_string()
                } else {
                    m.replies
                        .iter()
                        .map(|r| format!("{}({})", r.part.state, r.part.attempts))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                // The body is the service's message, normalized: its text
                // is the one field every kind has.
                let text = msg.body["text"].as_str().unwrap_or("-");
                rows.push(vec![
                    msg.received_at.clone(),
                    msg.sender.clone(),
                    msg.state.clone(),
                    cut(text, 40),
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
            let v: api::Pairing = c
                .post_as(
                    "/v1/pairings/approve",
                    &api::Approve {
                        code: code.clone(),
                        user,
                    },
                    &format!("pairing code '{code}'"),
                )
                .await?;
            println!(
                "paired {} sender {} with user {}",
                v.channel,
                v.sender,
                s(&v.user)
            );
            Ok(0)
        }
    }
}
