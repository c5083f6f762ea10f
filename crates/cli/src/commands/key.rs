//! `ironclaw key add|ls|rm`: SSH public keys for the daemon's SSH endpoint.

use anyhow::{Context, Result};
use serde_json::json;

use crate::args::KeyCmd;
use crate::client::{seg, Client};
use crate::output::{print_json, render_table};

pub async fn run(c: &Client, cmd: KeyCmd) -> Result<i32> {
    match cmd {
        KeyCmd::Add { file, label } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the key from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let v = c
                .post(
                    "/v1/keys",
                    &json!({ "key": text, "label": label }),
                    "SSH key",
                )
                .await?;
            println!(
                "added key {} {} ({})",
                v["id"].as_str().unwrap_or_default(),
                v["fingerprint"].as_str().unwrap_or_default(),
                v["algorithm"].as_str().unwrap_or_default()
            );
            Ok(0)
        }
        KeyCmd::Ls(j) => {
            let v = c.get("/v1/keys", "SSH keys").await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let empty = vec![];
            let s = |k: &serde_json::Value, f: &str| k[f].as_str().unwrap_or("-").to_string();
            let rows: Vec<Vec<String>> = v["keys"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|k| {
                    vec![
                        s(k, "id"),
                        s(k, "fingerprint"),
                        s(k, "algorithm"),
                        s(k, "label"),
                        s(k, "created_at"),
                    ]
                })
                .collect();
            print!(
                "{}",
                render_table(&["ID", "FINGERPRINT", "TYPE", "LABEL", "ADDED"], &rows)
            );
            Ok(0)
        }
        KeyCmd::Rm { ids } => {
            for id in &ids {
                c.delete(&format!("/v1/keys/{}", seg(id)), &format!("SSH key '{id}'"))
                    .await?;
                println!("removed key {id}");
            }
            Ok(0)
        }
    }
}
