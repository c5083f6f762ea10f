//! `ironclaw sandbox expose | unexpose | ports`.

use anyhow::Result;
use ironclaw_api as api;

use super::sandbox::{ctx, path};
use crate::client::Client;
use crate::output::{print_json, render_table};

pub async fn expose(c: &Client, name: &str, port: u16, public: bool, json: bool) -> Result<i32> {
    let req = api::Expose {
        port: port.into(),
        public,
    };
    let e = c.expose(name, &req).await?;
    if json {
        print_json(&e);
        return Ok(0);
    }
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
    let v = c.ports(name).await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let list = v.ports;
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
