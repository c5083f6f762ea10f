//! E2B-compatible API benchmark: the official Python SDK's
//! `commands.run("true")` round trip (envd Start over Connect, streamed
//! events) against IronClaw's own exec API (`POST .../exec`, JSON) on the
//! same sandbox, both from one warm Python process (httpx keep-alive for
//! the reference) in the same run. Run: `scripts/bench.sh --e2b [--quick]`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Daemon;

const SCRIPT: &str = r#"
import json, os, statistics, time
import httpx
from e2b import Sandbox
runs = int(os.environ["RUNS"])
sb = Sandbox.create()
ic = httpx.Client(base_url=os.environ["E2B_API_URL"], headers={"Authorization": "Bearer " + os.environ["E2B_API_KEY"]})
def e2b():
    assert sb.commands.run("true").exit_code == 0
def own():
    r = ic.post(f"/v1/sandboxes/{sb.sandbox_id}/exec", json={"argv": ["true"]})
    assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
out = {}
for name, f in [("e2b", e2b), ("own", own)] * 2:
    f()
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        f()
        t.append((time.perf_counter() - s) * 1e3)
    t.sort()
    out[name] = {"p50": statistics.median(t), "p95": t[int(0.95 * (len(t) - 1))]}
sb.kill()
print(json.dumps(out))
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (sandboxes)");
        return;
    }
    let runs = if std::env::args().any(|a| a == "--quick") {
        20
    } else {
        200
    };
    let d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    let key = d.add_user("bench").await;
    let out = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .env("E2B_API_URL", &d.url)
        .env("E2B_SANDBOX_URL", &d.url)
        .env("E2B_API_KEY", &key)
        .env("RUNS", runs.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = |k: &str, p: &str| v[k][p].as_f64().unwrap();
    println!("e2b SDK commands.run(\"true\") vs IronClaw exec API (same sandbox, same Python process, {runs} runs each)");
    println!(
        "  e2b commands.run   p50 {:7.2} ms  p95 {:7.2} ms",
        f("e2b", "p50"),
        f("e2b", "p95")
    );
    println!(
        "  ironclaw exec API  p50 {:7.2} ms  p95 {:7.2} ms",
        f("own", "p50"),
        f("own", "p95")
    );
    println!(
        "  ratio (e2b / own)  p50 {:5.2}x     p95 {:5.2}x",
        f("e2b", "p50") / f("own", "p50"),
        f("e2b", "p95") / f("own", "p95")
    );
}
