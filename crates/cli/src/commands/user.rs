//! `ironclaw user add|ls|token|rm`.

use anyhow::Result;
use serde_json::{json, Value};

use crate::args::UserCmd;
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

pub async fn run(c: &Client, cmd: UserCmd) -> Result<i32> {
    match cmd {
        UserCmd::Add { name } => {
            let v = c
                .post(
                    "/v1/users",
                    &json!({ "name": name }),
                    &format!("user '{name}'"),
                )
                .await?;
            println!("added user {name}; their token (shown once):");
            println!("{}", v["token"].as_str().unwrap_or_default());
            Ok(0)
        }
        UserCmd::Ls(j) => {
            let v = c.get("/v1/users", "users").await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let empty = vec![];
            let rows: Vec<Vec<String>> = v["users"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|u| {
                    vec![
                        u["name"].as_str().unwrap_or_default().to_string(),
                        if u["admin"].as_bool().unwrap_or(false) {
                            "admin"
                        } else {
                            "user"
                        }
                        .to_string(),
                        u["tokens"].to_string(),
                        u["usage"]["turns"].to_string(),
                        format!(
                            "{}/{}",
                            u["usage"]["input_tokens"].as_u64().unwrap_or(0),
                            u["usage"]["output_tokens"].as_u64().unwrap_or(0)
                        ),
                        u["usage"]["cache_read_tokens"]
                            .as_u64()
                            .unwrap_or(0)
                            .to_string(),
                        format!("${:.4}", u["usage"]["cost_usd"].as_f64().unwrap_or(0.0)),
                    ]
                })
                .collect();
            print!(
                "{}",
                render_table(
                    &[
                        "NAME",
                        "ROLE",
                        "TOKENS",
                        "TURNS",
                        "TOKENS(in/out)",
                        "CACHED",
                        "COST"
                    ],
                    &rows
                )
            );
            Ok(0)
        }
        UserCmd::Token {
            name, revoke: true, ..
        } => {
            let v: Value = c
                .json(
                    reqwest::Method::DELETE,
                    &format!("/v1/users/{}/tokens", seg(&name)),
                    None,
                    &format!("user '{name}'"),
                )
                .await?;
            println!(
                "revoked {} token(s) of {name}",
                v["revoked"].as_u64().unwrap_or(0)
            );
            Ok(0)
        }
        UserCmd::Token { name, label, .. } => {
            let v = c
                .post(
                    &format!("/v1/users/{}/tokens", seg(&name)),
                    &json!({ "label": label }),
                    &format!("user '{name}'"),
                )
                .await?;
            println!("{}", v["token"].as_str().unwrap_or_default());
            Ok(0)
        }
        UserCmd::Rm { names } => {
            for n in &names {
                c.delete(&format!("/v1/users/{}", seg(n)), &format!("user '{n}'"))
                    .await?;
                println!("removed user {n}");
            }
            Ok(0)
        }
    }
}
