//! `ironclaw key add|ls|rm`: SSH public keys for the daemon's SSH endpoint.

use anyhow::{Context, Result};
use ironclaw_api as api;

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
            let k = c.add_key(&api::AddKey { key: text, label }).await?;
            println!("added key {} {} ({})", k.id, k.fingerprint, k.algorithm);
            Ok(0)
        }
        KeyCmd::Ls(j) => {
            let v = c.keys().await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v
                .keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.fingerprint.clone(),
                        k.algorithm.clone(),
                        k.label.clone().unwrap_or_else(|| "-".into()),
                        k.created_at.clone(),
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
