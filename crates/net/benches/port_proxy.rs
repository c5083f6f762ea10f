//! Port proxy benchmark on loopback: latency (p50/p99) and requests per
//! second to one small HTTP upstream, directly, through our proxy and
//! through Caddy's `reverse_proxy` (when `caddy` is installed), in the
//! same run. `cargo bench -p ironclaw-net --bench port_proxy`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::IntoResponse;
use ironclaw_net::ports::{proxy, Forwarded};

const SEQUENTIAL: usize = 3000;
const CONCURRENCY: usize = 32;
const RPS_FOR: Duration = Duration::from_secs(4);

async fn serve(app: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Caddy in front of `upstream`, or None when it is not installed.
fn caddy(upstream: SocketAddr, dir: &std::path::Path) -> Option<(std::process::Child, SocketAddr)> {
    let port = free_port();
    let cfg = dir.join("Caddyfile");
    std::fs::write(
        &cfg,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{port} {{\n\treverse_proxy {upstream}\n}}\n"
        ),
    )
    .unwrap();
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
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some((child, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(url: &str) -> (Duration, Duration) {
    let c = reqwest::Client::new();
    for _ in 0..200 {
        c.get(url).send().await.unwrap().bytes().await.unwrap();
    }
    let mut v = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let r = c.get(url).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        v.push(t.elapsed());
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

async fn rps(url: &str) -> f64 {
    let n = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + RPS_FOR;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (n, url) = (n.clone(), url.to_string());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                while Instant::now() < end {
                    let r = c.get(&url).send().await.unwrap();
                    r.bytes().await.unwrap();
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

#[tokio::main]
async fn main() {
    let upstream = serve(axum::Router::new().fallback(|| async { "hello from upstream\n" })).await;
    let ours = serve(
        axum::Router::new().fallback(move |req: Request| async move {
            let fwd = Forwarded {
                client: None,
                proto: "http",
            };
            proxy(req, upstream, &fwd)
                .await
                .map(Body::new)
                .into_response()
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let caddy = caddy(upstream, dir.path());
    let mut targets = vec![
        ("direct", format!("http://{upstream}/")),
        ("ironclaw port proxy", format!("http://{ours}/")),
    ];
    match &caddy {
        Some((_, a)) => targets.push(("caddy reverse_proxy", format!("http://{a}/"))),
        None => println!("caddy not installed: no Caddy reference"),
    }
    let mut results = Vec::new();
    for (name, url) in &targets {
        let (p50, p99) = latency(url).await;
        let r = rps(url).await;
        println!(
            "port proxy bench: {name:<20} p50 {} p99 {} | {r:.0} req/s ({CONCURRENCY} concurrent)",
            ms(p50),
            ms(p99)
        );
        results.push((name, p50, p99, r));
    }
    let (_, d50, d99, _) = results[0];
    let (_, o50, o99, orps) = results[1];
    println!(
        "port proxy bench: added latency p50 {} p99 {}",
        ms(o50.saturating_sub(d50)),
        ms(o99.saturating_sub(d99))
    );
    if let Some((_, _, _, crps)) = results.get(2) {
        println!("port proxy bench: ours / caddy req/s = {:.2}x", orps / crps);
    }
    if let Some((mut child, _)) = caddy {
        let _ = child.kill();
        let _ = child.wait();
    }
}
