//! Sandbox runtime benchmark: prints figures next to a reference measured in
//! the same run (`bwrap --unshare-all ... true` on the same rootfs).
//! Run: `scripts/bench.sh` (or `cargo bench -p ironclaw-daemon --bench sandbox`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{rss_kib, Daemon};
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.95), pct(&v, 0.99))
}

/// Time one `bwrap --unshare-all` spawn of `true` in `rootfs`.
fn bwrap_once(rootfs: &std::path::Path) -> Option<Duration> {
    let t = Instant::now();
    let st = std::process::Command::new("bwrap")
        .args(["--unshare-all", "--die-with-parent", "--ro-bind"])
        .arg(rootfs)
        .args(["/", "--proc", "/proc", "--dev", "/dev", "/bin/true"])
        .status()
        .ok()?;
    st.success().then(|| t.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 50 } else { 500 };
    let d = Daemon::start_with("max_sandboxes = 200\n").await;
    d.build_image("mini", "busybox").await;
    let daemon_pid = d.child.as_ref().unwrap().id();
    let idle = rss_kib(daemon_pid);
    let rootfs = d.data_dir().join("images/mini/rootfs");

    // Reference: bwrap spawn of `true` on the same rootfs.
    let bwrap: Vec<Duration> = (0..n.min(200))
        .filter_map(|_| bwrap_once(&rootfs))
        .collect();
    let bwrap_p50 = if bwrap.is_empty() {
        println!("reference: bwrap not available (apt-get install bubblewrap); ratios against it are skipped");
        None
    } else {
        let (p50, p95, p99) = stats(bwrap.clone());
        println!(
            "reference  bwrap --unshare-all true          p50 {}  p95 {}  p99 {}",
            ms(p50),
            ms(p95),
            ms(p99)
        );
        Some(p50)
    };
    let ratio = |x: Duration| {
        bwrap_p50
            .map(|b| format!("  ({:.2}x bwrap)", x.as_secs_f64() / b.as_secs_f64()))
            .unwrap_or_default()
    };

    // Create to exec-ready.
    let mut create = Vec::new();
    let mut create_exec = Vec::new();
    for i in 0..20 {
        let name = format!("c{i}");
        let t = Instant::now();
        d.sandbox(&name, json!({})).await;
        create.push(t.elapsed());
        d.exec(&name, &["true"]).await;
        create_exec.push(t.elapsed());
        d.req(
            reqwest::Method::DELETE,
            &format!("/v1/sandboxes/{name}"),
            None,
        )
        .await;
    }
    let (p50, p95, _) = stats(create);
    println!(
        "create (busybox) to agent ready          p50 {}  p95 {}{}",
        ms(p50),
        ms(p95),
        ratio(p50)
    );
    let (p50, p95, _) = stats(create_exec);
    println!(
        "create + first exec completed            p50 {}  p95 {}{}",
        ms(p50),
        ms(p95),
        ratio(p50)
    );

    // Exec round trip of `true`, sequential, through the HTTP API.
    d.sandbox("bench", json!({})).await;
    let mut seq = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        d.exec("bench", &["true"]).await;
        seq.push(t.elapsed());
    }
    let (p50, _, p99) = stats(seq);
    println!(
        "exec `true` round trip, sequential       p50 {}  p99 {}{}",
        ms(p50),
        ms(p99),
        ratio(p50)
    );

    // 16 concurrent clients.
    let per = n / 16 + 1;
    let t = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let http = reqwest::Client::new();
            let url = d.u("/v1/sandboxes/bench/exec");
            let token = d.token.clone();
            tokio::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..per {
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"argv": ["true"]}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    v.push(t.elapsed());
                }
                v
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let wall = t.elapsed();
    let count = all.len();
    let (p50, _, p99) = stats(all);
    println!(
        "exec `true`, 16 concurrent clients       p50 {}  p99 {}  {:.0} execs/s",
        ms(p50),
        ms(p99),
        count as f64 / wall.as_secs_f64()
    );

    // 64 MiB upload and download.
    let data = vec![0x5au8; 64 << 20];
    let t = Instant::now();
    let r = d
        .http
        .put(d.u("/v1/sandboxes/bench/files?path=/root/blob"))
        .bearer_auth(&d.token)
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = t.elapsed();
    let t = Instant::now();
    let r = d
        .http
        .get(d.u("/v1/sandboxes/bench/files?path=/root/blob"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), 64 << 20);
    let down = t.elapsed();
    let t = Instant::now();
    std::fs::write(d.data_dir().join("ref-blob"), vec![0x5au8; 64 << 20]).unwrap();
    let _ = std::fs::read(d.data_dir().join("ref-blob")).unwrap();
    let local = t.elapsed();
    println!(
        "64 MiB upload {:.0} MiB/s, download {:.0} MiB/s (reference: local write+read {:.0} MiB/s)",
        64.0 / up.as_secs_f64(),
        64.0 / down.as_secs_f64(),
        64.0 / local.as_secs_f64()
    );
    d.req(reqwest::Method::DELETE, "/v1/sandboxes/bench", None)
        .await;

    // Idle RSS: the daemon (after start and one image build), then 100 idle sandboxes.
    println!(
        "idle daemon RSS                          {idle} KiB (after the runs above: {} KiB)",
        rss_kib(daemon_pid)
    );
    let count = if quick { 20 } else { 100 };
    let t = Instant::now();
    for i in 0..count {
        d.sandbox(&format!("idle{i}"), json!({})).await;
    }
    let created = t.elapsed();
    let (_, v) = d.get("/v1/sandboxes").await;
    let pids: Vec<u32> = v["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    // Each sandbox is its shim plus its init (the shim's only child).
    let mut total = 0;
    for pid in &pids {
        total += rss_kib(*pid);
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            total += children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(rss_kib)
                .sum::<u64>();
        }
    }
    let t = Instant::now();
    let (st, _) = d.get("/v1/health").await;
    let health = t.elapsed();
    assert_eq!(st, 200);
    let t = Instant::now();
    d.exec("idle0", &["true"]).await;
    let exec_loaded = t.elapsed();
    println!(
        "{count} idle sandboxes: created in {:.2} s, RSS per sandbox {} KiB (shim + agent), daemon RSS {} KiB",
        created.as_secs_f64(),
        total / pids.len().max(1) as u64,
        rss_kib(daemon_pid)
    );
    println!(
        "  with {count} running: health {}, exec `true` {}",
        ms(health),
        ms(exec_loaded)
    );
}
