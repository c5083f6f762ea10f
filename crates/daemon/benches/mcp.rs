//! MCP benchmark: one `sandbox_exec` tool call of `true` over the
//! streamable HTTP transport (JSON-RPC POST to `/mcp` in an initialized
//! session, answer as an SSE event) against the same command through
//! IronClaw's own `POST /v1/sandboxes/NAME/exec`, on the same sandbox, one
//! kept-alive HTTP connection each, in the same run.
//! Run: `scripts/bench.sh --mcp [--quick]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{json, Value};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The JSON-RPC message in an MCP answer (a JSON body or SSE events).
fn rpc_answer(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .find_map(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC message in {body:?}"))
}

struct Mcp<'a> {
    d: &'a Daemon,
    session: String,
    protocol: String,
    next_id: u64,
}

impl Mcp<'_> {
    async fn open(d: &Daemon) -> Mcp<'_> {
        let resp = d
            .http
            .post(d.u("/mcp"))
            .bearer_auth(&d.token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"}}}))
            .send()
            .await
            .unwrap();
        let session = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let init = rpc_answer(&resp.text().await.unwrap());
        let protocol = init["result"]["protocolVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let m = Mcp {
            d,
            session,
            protocol,
            next_id: 1,
        };
        m.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        m
    }

    async fn post(&self, msg: Value) -> String {
        let resp = self
            .d
            .http
            .post(self.d.u("/mcp"))
            .bearer_auth(&self.d.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", &self.protocol)
            .json(&msg)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
        resp.text().await.unwrap()
    }

    async fn exec_true(&mut self) {
        self.next_id += 1;
        let body = self
            .post(json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                "params": {"name": "sandbox_exec", "arguments": {"sandbox": "bench", "argv": ["true"]}}}))
            .await;
        let v = rpc_answer(&body);
        let text = v["result"]["content"][0]["text"].as_str().unwrap_or("");
        assert!(text.contains("\"exit_code\":0"), "{v}");
    }
}

async fn api_exec_true(d: &Daemon) {
    let v = d.exec("bench", &["true"]).await;
    assert_eq!(v["exit_code"], 0, "{v}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (sandboxes)");
        return;
    }
    let runs = if std::env::args().any(|a| a == "--quick") {
        50
    } else {
        500
    };
    let d = Daemon::start().await;
    let sb = d.sandbox("bench", json!({})).await;
    let backend = sb["backend"].as_str().unwrap_or("?").to_string();
    let mut mcp = Mcp::open(&d).await;
    for _ in 0..10 {
        api_exec_true(&d).await;
        mcp.exec_true().await;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        api_exec_true(&d).await;
        a.push(t.elapsed());
        let t = Instant::now();
        mcp.exec_true().await;
        b.push(t.elapsed());
    }
    let (a50, a99) = (pct(&mut a, 0.5), pct(&mut a, 0.99));
    let (b50, b99) = (pct(&mut b, 0.5), pct(&mut b, 0.99));
    println!("`true` in a {backend} sandbox, {runs} calls each, interleaved:");
    println!(
        "  POST /v1/sandboxes/bench/exec        p50 {:>6.2} ms   p99 {:>6.2} ms   (reference)",
        ms(a50),
        ms(a99)
    );
    println!(
        "  MCP tools/call sandbox_exec (/mcp)   p50 {:>6.2} ms   p99 {:>6.2} ms   {:.2}x, +{:.2} ms at p50",
        ms(b50),
        ms(b99),
        b50.as_secs_f64() / a50.as_secs_f64(),
        ms(b50) - ms(a50)
    );
}
