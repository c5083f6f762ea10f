//! `ironclaw user add|ls|token|rm`.

use anyhow::Result;
use ironclaw_api as api;

use crate::args::UserCmd;
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

fn user_row(u: &api::User) -> Vec<String> {
    let usage = u.usage.clone().unwrap_or_default();
    vec![
        u.name.clone(),
        if u.admin { "admin" } else { "user" }.to_string(),
        u.tokens.to_string(),
        usage.turns.to_string(),
        format!("{}/{}", usage.input_tokens, usage.output_tokens),
        usage.cache_read_tokens.to_string(),
        format!("${:.4}", usage.cost_usd),
    ]
}

pub async fn run(c: &Client, cmd: UserCmd) -> Result<i32> {
    match cmd {
        UserCmd::Add { name } => {
            let new = c.add_user(&name).await?;
            println!("added user {name}; their token (shown once):");
            println!("{}", new.token);
            Ok(0)
        }
        UserCmd::Ls(j) => {
            let list = c.users().await?;
            if j.json {
                print_json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list.users.iter().map(user_row).collect();
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
            let r = c.revoke_tokens(&name).await?;
            println!("revoked {} token(s) of {name}", r.revoked);
            Ok(0)
        }
        UserCmd::Token { name, label, .. } => {
            let t = c.issue_token(&name, label).await?;
            println!("{}", t.token);
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
