//! `ironclaw sandbox expose | unexpose | ports`.

use anyhow::Result;
use serde_json::json;

use super::sandbox::{ctx, path, Exposure};
use crate::client::Client;
use crate::output::{print_json, render_table};

pub async fn expose(c: &Client, name: &str, port: u16, public: bool, json: bool) -> Result<i32> {
    let v = c
        .post(
            &format!("{}/ports", path(name)),
            &json!({"port": port, "public": public}),
            &ctx(name),
        )
        .await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let e: Exposure = serde_json::from_value(v)?;
    // The URL alone on stdout, for scripts; the rest is for people.
    println!("{}", e.url);
    if !e.public {
        eprintln!(
            "private: send `Authorization: Bearer <token>`, or open it in a browser and log in; \
             `ironclaw sandbox expose {name} {port} --public` opens it to anyone"
        );
    }
    Ok(0)
}

pub async fn unexpose(c: &Client, name: &str, port: u16) -> Result<i32> {
    c.delete(&format!("{}/ports/{port}", path(name)), &ctx(name))
        .await?;
    println!("unexposed port {port} of {name}");
    Ok(0)
}

pub async fn list(c: &Client, name: &str, json: bool) -> Result<i32> {
    let v = c.get(&format!("{}/ports", path(name)), &ctx(name)).await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let list: Vec<Exposure> =
        serde_json::from_value(v.get("ports").cloned().unwrap_or_default()).unwrap_or_default();
    if list.is_empty() {
        eprintln!("no exposed ports; expose one with: ironclaw sandbox expose {name} PORT");
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.port.to_string(),
                if e.public { "public" } else { "private" }.into(),
                e.url.clone(),
            ]
        })
        .collect();
    print!("{}", render_table(&["PORT", "ACCESS", "URL"], &rows));
    Ok(0)
}
