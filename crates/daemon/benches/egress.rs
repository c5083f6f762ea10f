//! Egress benchmark: a sandbox downloads from the fake internet (a network
//! namespace this bench creates) straight through NAT (TCP, no proxy) and
//! through the egress proxy (HTTP on port 80: Host check, resolve, dial,
//! streamed body), with the same client (busybox nc) in the same run.
//! Run: `scripts/bench.sh --egress [--quick]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fakenet::{FakeInternet, BULK_BYTES};
use common::Daemon;
use serde_json::json;

async fn timed(d: &Daemon, script: &str) -> Duration {
    let t = Instant::now();
    let v = d.exec("bench", &["sh", "-c", script]).await;
    let took = t.elapsed();
    assert_eq!(v["exit_code"], 0, "{script}: {v}");
    // The whole stream: the body, and a response head when proxied.
    let n: usize = v["stdout"].as_str().unwrap().trim().parse().unwrap_or(0);
    assert!(
        (BULK_BYTES..BULK_BYTES + 4096).contains(&n),
        "{script}: read {n} bytes"
    );
    took
}

fn mib_s(d: Duration) -> f64 {
    BULK_BYTES as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (bridges, veths, nft)");
        return;
    }
    let runs = if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        7
    };
    let mut fake = FakeInternet::start();
    let web = fake.addr(10);
    fake.serve(&[("bulk.test", web)]);
    let d = Daemon::start_with(&format!(
        "[network]\ndefault_mode = \"internet\"\nupstream_dns = [\"{}\"]\n",
        fake.dns()
    ))
    .await;
    d.sandbox("bench", json!({"egress": {"allow_all": true}}))
        .await;
    // HTTP/1.0: the body ends at close, so the client needs no chunk
    // parser. The same pipeline both ways: nc into wc.
    let direct = format!("nc -w 10 {web} 9001 </dev/null | wc -c");
    let proxied = format!(
        "printf 'GET /bulk HTTP/1.0\\r\\nHost: bulk.test\\r\\n\\r\\n' | nc -w 10 {web} 80 | wc -c"
    );
    // Warm both paths (ARP, conntrack, the resolver's cache).
    timed(&d, &direct).await;
    timed(&d, &proxied).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(timed(&d, &direct).await);
        b.push(timed(&d, &proxied).await);
    }
    let (a, b) = (median(a), median(b));
    // What a network costs at create: bridge port, veth, nft transaction.
    let mut creates = [Vec::new(), Vec::new()];
    for i in 0..runs * 3 {
        for (k, mode) in ["none", "internet"].iter().enumerate() {
            let name = format!("c{k}-{i}");
            let t = Instant::now();
            d.sandbox(&name, json!({"network": mode})).await;
            creates[k].push(t.elapsed());
            let (st, _) = d
                .req(
                    reqwest::Method::DELETE,
                    &format!("/v1/sandboxes/{name}"),
                    None,
                )
                .await;
            assert_eq!(st, 204);
        }
    }
    let [none, internet] = creates.map(median);
    println!(
        "egress, {} MiB download into a namespace sandbox (busybox nc), medians of {runs}:",
        BULK_BYTES >> 20
    );
    println!(
        "  direct (veth + NAT, no proxy)          {:>8.1} MiB/s   (reference)",
        mib_s(a)
    );
    println!(
        "  through the egress proxy (HTTP, :80)   {:>8.1} MiB/s   {:.2}x direct (target >= 0.8x)",
        mib_s(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "create to agent ready, median of {}: --network none {:.1} ms (reference), internet {:.1} ms ({:.2}x)",
        runs * 3,
        none.as_secs_f64() * 1e3,
        internet.as_secs_f64() * 1e3,
        internet.as_secs_f64() / none.as_secs_f64()
    );
}
