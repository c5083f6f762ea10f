//! Exposed-port benchmark against a real sandbox: busybox httpd in a
//! networked sandbox, reached directly at its bridge address, through the
//! daemon's port proxy (host routing, token check, pooled forwarding) and
//! through Caddy's `reverse_proxy` to the same address, in the same run.
//! `cargo bench -p ironclaw-daemon --bench ports`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

const SEQUENTIAL: usize = 1000;
const CONCURRENCY: usize = 16;
const RPS_FOR: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct Target {
    url: String,
    host: Option<String>,
    token: Option<String>,
}

impl Target {
    fn get(&self, c: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut r = c.get(&self.url);
        if let Some(h) = &self.host {
            r = r.header("host", h);
        }
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(t: &Target) -> (Duration, Duration) {
    let c = reqwest::Client::new();
    for _ in 0..50 {
        t.get(&c).send().await.unwrap().bytes().await.unwrap();
    }
    let mut v = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t0 = Instant::now();
        let r = t.get(&c).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.unwrap();
        v.push(t0.elapsed());
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

async fn rps(t: &Target) -> f64 {
    let n = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + RPS_FOR;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (n, t) = (n.clone(), t.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                while Instant::now() < end {
                    t.get(&c).send().await.unwrap().bytes().await.unwrap();
                    n.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n.load(Ordering::Relaxed) as f64 / RPS_FOR.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Caddy on a loopback port in front of `upstream`, if installed.
fn caddy(upstream: &str, dir: &std::path::Path) -> Option<(std::process::Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let cfg = dir.join("Caddyfile");
    std::fs::write(
        &cfg,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{port} {{\n\treverse_proxy {upstream}\n}}\n"),
    )
    .ok()?;
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&cfg)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::main]
async fn main() {
    let d = Daemon::start_with("[network]\n").await;
    let v = d.sandbox("bench", json!({"network": "internet"})).await;
    let addr = v["address"].as_str().expect("a bridge address").to_string();
    let out = d
        .exec(
            "bench",
            &[
                "sh",
                "-c",
                "mkdir -p /tmp/w && echo hello > /tmp/w/index.html && httpd -p 8080 -h /tmp/w",
            ],
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let (st, e) = d
        .post("/v1/sandboxes/bench/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{e}");
    let host = e["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let caddy = caddy(&format!("{addr}:8080"), dir.path());
    let mut targets = vec![
        (
            "direct (bridge address)",
            Target {
                url: format!("http://{addr}:8080/index.html"),
                host: None,
                token: None,
            },
        ),
        (
            "ironclaw port proxy",
            Target {
                url: d.u("/index.html"),
                host: Some(host),
                token: Some(d.token.clone()),
            },
        ),
    ];
    if let Some((_, port)) = &caddy {
        targets.push((
            "caddy reverse_proxy",
            Target {
                url: format!("http://127.0.0.1:{port}/index.html"),
                host: None,
                token: None,
            },
        ));
    }
    let mut res = Vec::new();
    for (name, t) in &targets {
        let (p50, p99) = latency(t).await;
        let r = rps(t).await;
        println!(
            "ports bench: {name:<24} p50 {} p99 {} | {r:.0} req/s ({CONCURRENCY} concurrent)",
            ms(p50),
            ms(p99)
        );
        res.push((p50, p99, r));
    }
    println!(
        "ports bench: added by the port proxy p50 {} p99 {}",
        ms(res[1].0.saturating_sub(res[0].0)),
        ms(res[1].1.saturating_sub(res[0].1))
    );
    if let Some(c) = res.get(2) {
        println!(
            "ports bench: port proxy / caddy req/s = {:.2}x",
            res[1].2 / c.2
        );
    }
    if let Some((mut child, _)) = caddy {
        let _ = child.kill();
        let _ = child.wait();
    }
}
