//! Agent gateway benchmark: what IronClaw adds to a turn, measured against
//! references taken in the same run (the mock LLM's own response time, a raw
//! sandbox exec), plus 200 concurrent chat sessions and the first-turn
//! prompt size. Run: `scripts/bench.sh --gateway` (or `cargo bench -p
//! ironclaw-daemon --bench gateway`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{rss_kib, Daemon};
use futures::{SinkExt, StreamExt};
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn connect(d: &Daemon) -> Ws {
    let url = format!(
        "{}/v1/chat/ws?token={}",
        d.url.replacen("http", "ws", 1),
        d.token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap(); // the session event
    ws
}

/// One turn, message in to `done` out.
async fn turn(ws: &mut Ws, text: &str) -> Duration {
    let t = Instant::now();
    ws.send(Message::Text(
        json!({"type": "message", "text": text}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        if let Message::Text(m) = ws.next().await.unwrap().unwrap() {
            let v: Value = serde_json::from_str(&m).unwrap();
            if v["type"] == "done" {
                assert!(v["error"].is_null(), "turn failed: {v}");
                return t.elapsed();
            }
        }
    }
}

/// The mock's own time for one streamed completion of `body`, from this process.
async fn mock_once(http: &reqwest::Client, mock: &MockLlm, body: &str) -> Duration {
    mock.push(MockReply::text("ok"));
    let t = Instant::now();
    let r = http
        .post(format!("{}/chat/completions", mock.openai_base()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    r.bytes().await.unwrap();
    t.elapsed()
}

/// The mock's p50 for the prompt the daemon sent last: in a long session
/// the mock's own parsing of a prompt of hundreds of messages is part of
/// each completion, and must not be counted as the gateway's.
async fn mock_p50_like_last(
    http: &reqwest::Client,
    mock: &MockLlm,
    n: usize,
) -> (Duration, String) {
    let last = mock.last_request().expect("the daemon called the mock");
    let msgs = last.body["messages"].as_array().map_or(0, Vec::len);
    let mut t = Vec::new();
    for _ in 0..n {
        t.push(mock_once(http, mock, &last.raw).await);
    }
    let what = format!("{msgs} messages, {:.0} KiB", last.raw.len() as f64 / 1024.0);
    (stats(t).0, what)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 30 } else { 200 };
    let mock = MockLlm::start([]).await;
    let base = mock.openai_base();
    let d = Daemon::start_env(
        "",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", "k"),
            ("IRONCLAW_MODEL", "mock-model"),
        ],
    )
    .await;
    d.build_image("mini", "busybox").await;
    let http = reqwest::Client::new();

    println!(
        "first-turn prompt (system + tool schemas + \"What is in /etc/os-release?\"): {} cl100k tokens (limit 1700; other gateways: >13000)",
        ironclaw_agent::prompt::first_turn_prompt_tokens("What is in /etc/os-release?")
    );

    // Warm up: the first message creates the user's sandbox.
    let mut ws = connect(&d).await;
    mock.push(MockReply::text("warm"));
    turn(&mut ws, "warm up").await;

    // References in the same run.
    let mut mock_t = Vec::new();
    let hi = json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    for _ in 0..n {
        mock_t.push(mock_once(&http, &mock, &hi).await);
    }
    let (mock_p50, mock_p99) = stats(mock_t);
    let mut exec_t = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        d.exec("agent-admin", &["true"]).await;
        exec_t.push(t.elapsed());
    }
    let (exec_p50, exec_p99) = stats(exec_t);
    println!(
        "reference  mock LLM completion (streamed)      p50 {}  p99 {}",
        ms(mock_p50),
        ms(mock_p99)
    );
    println!(
        "reference  raw sandbox exec `true` via HTTP    p50 {}  p99 {}",
        ms(exec_p50),
        ms(exec_p99)
    );

    // Turn without tools: gateway overhead = turn - one mock completion.
    let mut plain = Vec::new();
    for _ in 0..n {
        mock.push(MockReply::text("ok"));
        plain.push(turn(&mut ws, "hi").await);
    }
    let (p50, p99) = stats(plain);
    println!(
        "turn, no tools           total p50 {}  p99 {}   overhead p50 {}  p99 {}",
        ms(p50),
        ms(p99),
        ms(p50.saturating_sub(mock_p50)),
        ms(p99.saturating_sub(mock_p99))
    );
    let (mock_last, what) = mock_p50_like_last(&http, &mock, n.min(50)).await;
    println!(
        "  (mock completion of the last turn's prompt, {what}: p50 {}; overhead beyond it p50 {})",
        ms(mock_last),
        ms(p50.saturating_sub(mock_last))
    );

    // Turn with one bash call: overhead = turn - two completions - one exec.
    let mut tool = Vec::new();
    for _ in 0..n {
        mock.push(MockReply::tool("bash", json!({"command": "true"})));
        mock.push(MockReply::text("done"));
        tool.push(turn(&mut ws, "run it").await);
    }
    let (p50, p99) = stats(tool);
    println!(
        "turn, one bash call      total p50 {}  p99 {}   overhead p50 {}  (minus 2 completions + 1 exec)",
        ms(p50),
        ms(p99),
        ms(p50.saturating_sub(mock_p50 * 2 + exec_p50))
    );
    let (mock_last, what) = mock_p50_like_last(&http, &mock, n.min(50)).await;
    println!(
        "  (mock completion of the last turn's prompt, {what}: p50 {}; overhead beyond 2 of those + 1 exec p50 {})",
        ms(mock_last),
        ms(p50.saturating_sub(mock_last * 2 + exec_p50))
    );

    // 200 concurrent sessions, each doing a few turns.
    let sessions = if quick { 50 } else { 200 };
    let turns_each = 5;
    for _ in 0..sessions * turns_each {
        mock.push(MockReply::text("concurrent"));
    }
    let mut sockets = Vec::new();
    for _ in 0..sessions {
        let mut ws = connect(&d).await;
        ws.send(Message::Text(json!({"type": "new"}).to_string()))
            .await
            .unwrap();
        ws.next().await.unwrap().unwrap();
        sockets.push(ws);
    }
    let t = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for _ in 0..turns_each {
                    turn(&mut ws, "hello").await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let wall = t.elapsed();
    let pid = d.child.as_ref().unwrap().id();
    println!(
        "{sessions} concurrent sessions x {turns_each} turns: {:.0} turns/s, daemon RSS {} KiB",
        (sessions * turns_each) as f64 / wall.as_secs_f64(),
        rss_kib(pid)
    );
}
