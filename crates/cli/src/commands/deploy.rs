//! `ironclaw deploy init | ls | logs | rollback`. The push itself is plain
//! `git push` to the remote `init` prints.

use anyhow::{Context, Result};
use futures::StreamExt;
use ironclaw_api as api;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::sandbox::{ctx, path};
use crate::args::DeployCmd;
use crate::client::Client;
use crate::output::{print_json, render_table};

pub async fn run(c: &Client, cmd: DeployCmd) -> Result<i32> {
    match cmd {
        DeployCmd::Init { name, port, json } => init(c, &name, port, json.json).await,
        DeployCmd::Ls { name, json } => ls(c, &name, json.json).await,
        DeployCmd::Logs {
            name,
            follow,
            lines,
        } => logs(c, &name, follow, lines).await,
        DeployCmd::Rollback { name } => rollback(c, &name).await,
    }
}

async fn init(c: &Client, name: &str, port: u16, json: bool) -> Result<i32> {
    let req = api::DeployInit {
        port: Some(port.into()),
    };
    let v: api::DeployTarget = c
        .post_as(&format!("{}/deploy", path(name)), &req, &ctx(name))
        .await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let remote = v.remote.as_str();
    let ssh = ssh_remote(c, name).await;
    // The remotes alone on stdout (HTTP, then SSH when the endpoint is
    // on), for scripts; the rest is for people.
    println!("{remote}");
    if let Some(s) = &ssh {
        println!("{s}");
    }
    let served = v.port;
    if served != port {
        eprintln!("note: {name} already deploys to port {served}; the port stays");
    }
    if let Some(s) = &ssh {
        eprintln!(
            "push over SSH with a key added by `ironclaw key add`:\n  \
             git remote add ironclaw {s}\n  git push ironclaw main"
        );
    }
    eprintln!(
        "or over HTTP with your API token as the password (any user name), e.g.\n  \
         git push {} main\n\
         or without keeping the token in .git/config:\n  \
         git -c http.extraHeader=\"Authorization: Bearer $IRONCLAW_TOKEN\" push {remote} main\n\
         the tree needs a Procfile with `web: COMMAND` listening on $PORT; the app is served at port {served}'s URL",
        remote.replacen("http://", "http://x:TOKEN@", 1)
    );
    Ok(0)
}

/// `ssh://NAME@HOST:PORT/NAME.git` on the host the daemon is reached by
/// and the SSH endpoint's port; `None` when the endpoint is off.
async fn ssh_remote(c: &Client, name: &str) -> Option<String> {
    let v = c.host().await.ok()?;
    let listen: std::net::SocketAddr = v.ssh?.listen.parse().ok()?;
    let url = reqwest::Url::parse(&c.base).ok()?;
    // IPv6 comes bracketed, as the URL needs it.
    let host = url.host_str()?;
    Some(format!("ssh://{name}@{host}:{}/{name}.git", listen.port()))
}

async fn ls(c: &Client, name: &str, json: bool) -> Result<i32> {
    let v: api::ReleaseList = c
        .get_as(&format!("{}/deploy/releases", path(name)), &ctx(name))
        .await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let list = v.releases;
    if list.is_empty() {
        eprintln!("no releases yet; git push to the remote `ironclaw deploy init {name}` prints");
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.commit.chars().take(12).collect(),
                r.status.clone(),
                r.created_at.clone(),
                r.web.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["RELEASE", "COMMIT", "STATUS", "CREATED", "WEB"], &rows)
    );
    Ok(0)
}

async fn logs(c: &Client, name: &str, follow: bool, lines: u32) -> Result<i32> {
    let rb = c.request(
        Method::GET,
        &format!("{}/deploy/logs?follow={follow}&lines={lines}", path(name)),
    );
    let resp = c.send(rb, &ctx(name)).await?;
    let mut out = tokio::io::stdout();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        out.write_all(&chunk.context("log stream interrupted")?)
            .await?;
        out.flush().await?;
    }
    Ok(0)
}

async fn rollback(c: &Client, name: &str) -> Result<i32> {
    let v: api::Rollback = c
        .post_as(
            &format!("{}/deploy/rollback", path(name)),
            &serde_json::json!({}),
            &ctx(name),
        )
        .await?;
    for l in &v.output {
        eprintln!("{l}");
    }
    println!("{}", v.url);
    Ok(0)
}
