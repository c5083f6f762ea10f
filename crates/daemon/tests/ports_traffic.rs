//! Exposed ports end to end: servers inside networked sandboxes (busybox
//! `httpd` and an `nc` WebSocket stub) reached through the daemon's port
//! proxy at `PORT-NAME.<base_domain>`, woken when stopped, stopped when
//! idle. Traffic goes only to the daemon on loopback and to the sandboxes
//! these tests create, on their own bridge.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const BASE: &str = "127-0-0-1.sslip.io";

fn host(d: &Daemon, port: u16, name: &str) -> String {
    let listen_port = d.url.rsplit(':').next().unwrap();
    format!("{port}-{name}.{BASE}:{listen_port}")
}

async fn get_via(d: &Daemon, host: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut r = d
        .http
        .get(d.u(path))
        .header("host", host)
        .timeout(Duration::from_secs(60));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A networked busybox sandbox serving `body` at /index.html on `port`.
async fn web_sandbox(d: &Daemon, name: &str, port: u16, body: &str) {
    d.sandbox(name, json!({"network": "internet"})).await;
    start_httpd(d, name, port, body).await;
}

/// busybox httpd daemonizes itself, so it outlives the exec.
async fn start_httpd(d: &Daemon, name: &str, port: u16, body: &str) {
    let script = format!(
        "mkdir -p /tmp/www && printf %s '{body}' > /tmp/www/index.html && \
         httpd -p {port} -h /tmp/www && echo started"
    );
    let v = d.exec(name, &["sh", "-c", &script]).await;
    assert_eq!(v["exit_code"], 0, "{v}");
}

async fn state(d: &Daemon, name: &str) -> String {
    let (_, v) = d.get(&format!("/v1/sandboxes/{name}")).await;
    v["state"].as_str().unwrap_or_default().to_string()
}

async fn wait_state(d: &Daemon, name: &str, want: &str, within: Duration) {
    let t0 = Instant::now();
    while state(d, name).await != want {
        assert!(t0.elapsed() < within, "{name} not {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn private_and_public_ports_answer_from_the_sandbox() {
    let d = Daemon::start_with("[network]\n").await;
    let alice = d.add_user("alice").await;
    web_sandbox(&d, "web", 8080, "hello from the sandbox").await;
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let h = host(&d, 8080, "web");
    assert_eq!(get_via(&d, &h, "/", None).await.0, 401);
    assert_eq!(get_via(&d, &h, "/", Some(&alice)).await.0, 404);
    let (st, body) = get_via(&d, &h, "/index.html", Some(&d.token)).await;
    assert_eq!((st, body.as_str()), (200, "hello from the sandbox"));
    // A port nothing listens on: the proxy says so.
    d.post("/v1/sandboxes/web/ports", json!({"port": 9999}))
        .await;
    let (st, body) = get_via(&d, &host(&d, 9999, "web"), "/", Some(&d.token)).await;
    assert_eq!(st, 502, "{body}");
    assert!(body.contains("connection refused"), "{body}");
    // Public: no token needed.
    let (st, _) = d
        .post(
            "/v1/sandboxes/web/ports",
            json!({"port": 8080, "public": true}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, body) = get_via(&d, &h, "/index.html", None).await;
    assert_eq!((st, body.as_str()), (200, "hello from the sandbox"));
    // The CLI prints the URL; after unexpose the host serves nothing.
    let out = d.cli(&["sandbox", "expose", "web", "8080", "--public"]);
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8(out.stdout).unwrap();
    assert_eq!(url.trim(), format!("http://{h}"));
    let out = d.cli(&["sandbox", "ports", "web"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("public"));
    let out = d.cli(&["sandbox", "unexpose", "web", "8080"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get_via(&d, &h, "/index.html", None).await.0, 401);
    assert_eq!(get_via(&d, &h, "/index.html", Some(&d.token)).await.0, 404);
}

/// A WebSocket stub inside: answers the RFC 6455 example handshake, sends
/// one text frame, then records whatever the client sends.
const WS_STUB: &str = r#"#!/bin/sh
while read -r line; do
  [ -z "$(printf %s "$line" | tr -d '\r')" ] && break
done
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'
printf '\201\005hello'
exec cat > /tmp/ws-got
"#;

#[tokio::test]
async fn websockets_reach_the_sandbox() {
    let d = Daemon::start_with("[network]\n").await;
    d.sandbox("wsbox", json!({"network": "internet"})).await;
    let up = d
        .http
        .put(d.u("/v1/sandboxes/wsbox/files?path=/tmp/ws.sh&mode=755"))
        .bearer_auth(&d.token)
        .body(WS_STUB)
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 200);
    let v = d
        .exec(
            "wsbox",
            &[
                "sh",
                "-c",
                "setsid nc -ll -p 8081 -e /tmp/ws.sh </dev/null >/dev/null 2>&1 & echo ok",
            ],
        )
        .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    d.post("/v1/sandboxes/wsbox/ports", json!({"port": 8081}))
        .await;
    let listen_port = d.url.rsplit(':').next().unwrap();
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("ws://127.0.0.1:{listen_port}/chat"))
        .header("host", host(&d, 8081, "wsbox"))
        .header("authorization", format!("Bearer {}", d.token))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    // The stub starts listening a moment after the exec returns.
    let mut ws = None;
    for _ in 0..50 {
        match tokio_tungstenite::connect_async(req.clone()).await {
            Ok((s, resp)) => {
                assert_eq!(resp.status(), 101);
                ws = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut ws = ws.expect("WebSocket through the port proxy");
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Text("hello".into()));
    ws.send(Message::Binary(vec![7u8; 1000])).await.unwrap();
    // The masked frame (1000 bytes + 8 of header and mask) reached the stub.
    let t0 = Instant::now();
    loop {
        let v = d.exec("wsbox", &["sh", "-c", "wc -c < /tmp/ws-got"]).await;
        let n: u64 = v["stdout"].as_str().unwrap().trim().parse().unwrap_or(0);
        if n >= 1008 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "stub got {n} bytes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_wakes_a_stopped_sandbox_or_says_why_not() {
    let d = Daemon::start_with("[network]\nwake_timeout_secs = 8\n").await;
    web_sandbox(&d, "sleepy", 8080, "awake").await;
    d.post("/v1/sandboxes/sleepy/ports", json!({"port": 8080}))
        .await;
    let (st, v) = d.post("/v1/sandboxes/sleepy/stop", json!({})).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("stopped")), "{v}");
    let h = host(&d, 8080, "sleepy");
    let d = std::sync::Arc::new(d);
    let (d2, h2) = (d.clone(), h.clone());
    let pending =
        tokio::spawn(async move { get_via(&d2, &h2, "/index.html", Some(&d2.token)).await });
    // The request started it; its server comes back (as a boot script
    // would start it) and the waiting request gets through.
    wait_state(&d, "sleepy", "running", Duration::from_secs(8)).await;
    start_httpd(&d, "sleepy", 8080, "awake").await;
    let (st, body) = pending.await.unwrap();
    assert_eq!((st, body.as_str()), (200, "awake"));
    // Woken, but nothing listens again within the timeout: 503 and why.
    d.post("/v1/sandboxes/sleepy/stop", json!({})).await;
    let t0 = Instant::now();
    let (st, body) = get_via(&d, &h, "/", Some(&d.token)).await;
    assert_eq!(st, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("nothing accepted on port 8080"), "{msg}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "bounded by the timeout"
    );
    assert_eq!(state(&d, "sleepy").await, "running");
}

#[tokio::test]
async fn idle_exposed_sandboxes_are_stopped() {
    let d = Daemon::start_with("[network]\nexpose_idle_stop_secs = 2\n").await;
    web_sandbox(&d, "idle", 8080, "x").await;
    d.sandbox("plain", json!({})).await;
    d.post("/v1/sandboxes/idle/ports", json!({"port": 8080}))
        .await;
    // Requests keep it up...
    let h = host(&d, 8080, "idle");
    for _ in 0..6 {
        assert_eq!(get_via(&d, &h, "/index.html", Some(&d.token)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(state(&d, "idle").await, "running");
    // ...silence stops it; a sandbox with no exposed port is left alone.
    wait_state(&d, "idle", "stopped", Duration::from_secs(10)).await;
    assert_eq!(state(&d, "plain").await, "running");
}

#[tokio::test]
async fn https_reaches_the_sandbox() {
    let d = Daemon::start_with("ports_tls_listen = \"127.0.0.1:0\"\n[network]\n").await;
    web_sandbox(&d, "tls", 8080, "over tls").await;
    let (st, v) = d
        .post("/v1/sandboxes/tls/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let name = format!("8080-tls.{BASE}");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(&name, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let r = c
        .get(format!("{url}/index.html"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "over tls");
}
