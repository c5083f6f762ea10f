//! Chat channel benchmark: per channel, the time from an inbound message
//! to its reply reaching the (fake) service with a zero-latency mock LLM,
//! next to the mock's own completion time in the same run; and delivery
//! throughput of 1,000 queued replies per channel next to a bare HTTP
//! client sending the same requests to the same fake, one channel at a
//! time. Run: `scripts/bench.sh --channels`
//! (or `cargo bench -p ironclaw-daemon --bench channels`; `--quick`).
//! Arrival is polled every millisecond: figures have that resolution.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_channels::fake::discord::FakeDiscord;
use ironclaw_channels::fake::matrix::FakeMatrix;
use ironclaw_channels::fake::slack::{message_event, signed_headers, FakeSlack};
use ironclaw_channels::fake::telegram::FakeTelegram;
use serde_json::json;

const TG: &str = "1:bench-telegram";
const TGW: &str = "2:bench-telegram-webhook";
const TGW_SECRET: &str = "bench-hook-secret";
const SL: &str = "xoxb-bench";
const SL_SECRET: &str = "bench-slack-secret";
const DC: &str = "bench-discord";
const MX: &str = "syt_bench";
const WH_SECRET: &str = "bench-webhook-secret";

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A webhook callback receiver counting POSTs.
async fn callback() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let app = axum::Router::new().route(
        "/r",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/r", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    use std::sync::atomic::Ordering;
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 10 } else { 30 };
    let queued = if quick { 200 } else { 1000 };
    let mock = MockLlm::start([]).await;
    let tg = FakeTelegram::start(TG).await;
    let tgw = FakeTelegram::start(TGW).await;
    let sl = FakeSlack::start(SL).await;
    let dc = FakeDiscord::start(DC).await;
    let mx = FakeMatrix::start(MX).await;
    let (cb_url, cb) = callback().await;
    let base = mock.openai_base();
    let mut d = Daemon::start_env(
        "",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", "k"),
            ("IRONCLAW_MODEL", "mock-model"),
            ("TG", TG),
            ("TGW", TGW),
            ("TGW_SECRET", TGW_SECRET),
            ("SL", SL),
            ("SL_SECRET", SL_SECRET),
            ("DC", DC),
            ("MX", MX),
            ("WH_SECRET", WH_SECRET),
        ],
    )
    .await;
    // Turns read the agent's memory file from its sandbox, as in production.
    d.build_image("mini", "busybox").await;
    let public = d.u("");
    for body in [
        json!({"kind": "telegram", "name": "tg", "token_env": "TG", "api_base": tg.url, "access": "open"}),
        json!({"kind": "telegram", "name": "tgw", "token_env": "TGW", "secret_env": "TGW_SECRET",
            "public_url": public, "api_base": tgw.url, "access": "open"}),
        json!({"kind": "slack", "name": "sl", "token_env": "SL", "secret_env": "SL_SECRET", "api_base": sl.url, "access": "open"}),
        json!({"kind": "discord", "name": "dc", "token_env": "DC", "api_base": dc.url, "access": "open"}),
        json!({"kind": "matrix", "name": "mx", "token_env": "MX", "api_base": mx.url, "access": "open"}),
        json!({"kind": "webhook", "name": "wh", "secret_env": "WH_SECRET", "callback_url": cb_url, "access": "open"}),
    ] {
        let (st, v) = d.post("/v1/channels", body).await;
        assert_eq!(st, 201, "{v}");
    }
    until_connected(&d).await;
    let http = reqwest::Client::new();

    // Reference: the mock's own time for one streamed completion.
    let mut mock_t = Vec::new();
    for _ in 0..n {
        mock.push(MockReply::text("ok"));
        let t = Instant::now();
        let r = http
            .post(format!("{base}/chat/completions"))
            .json(&json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
        mock_t.push(t.elapsed());
    }
    let mock_p50 = median(mock_t);
    println!(
        "reference  mock LLM completion (streamed)           p50 {}",
        ms(mock_p50)
    );

    for kind in [
        "telegram",
        "tg-webhook",
        "webhook",
        "slack",
        "discord",
        "matrix",
    ] {
        let mut times = Vec::new();
        for i in 0..n {
            mock.push(MockReply::text("pong"));
            let sent_before = match kind {
                "telegram" => tg.sent_texts().len(),
                "tg-webhook" => tgw.sent_texts().len(),
                "webhook" => cb.load(Ordering::SeqCst),
                "slack" => sl.calls("chat.postMessage").len(),
                "discord" => dc.created().len(),
                _ => mx.sent().len(),
            };
            let t = Instant::now();
            let id = format!("{}", 1000 + i);
            match kind {
                "telegram" => {
                    tg.private(77, 1000 + i as i64, "ping");
                }
                // Pushed by the fake to the daemon's endpoint.
                "tg-webhook" => {
                    tgw.private(77, 1000 + i as i64, "ping");
                }
                "webhook" => {
                    let body = json!({"id": id, "sender": "s", "text": "ping"}).to_string();
                    let r = http
                        .post(d.u("/v1/channels/wh/events"))
                        .header(
                            "x-ironclaw-signature",
                            ironclaw_channels::webhook::sign(WH_SECRET, body.as_bytes()),
                        )
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
                "slack" => {
                    let b = message_event("D1", "im", "U1", &format!("1700000000.{id}"), "ping")
                        .to_string()
                        .into_bytes();
                    let mut r = http.post(d.u("/v1/channels/sl/events"));
                    for (k, v) in signed_headers(SL_SECRET, unix_now(), &b) {
                        r = r.header(k, v);
                    }
                    assert_eq!(r.body(b).send().await.unwrap().status(), 200);
                }
                "discord" => dc.message(FakeDiscord::user_message(
                    &id, "dm-1", None, "42", "ping", false,
                )),
                _ => mx.message(
                    "!dm:fake.local",
                    2,
                    "@pat:fake.local",
                    &format!("$b{id}"),
                    "ping",
                ),
            }
            until(|| {
                let now = match kind {
                    "telegram" => tg.sent_texts().len(),
                    "tg-webhook" => tgw.sent_texts().len(),
                    "webhook" => cb.load(Ordering::SeqCst),
                    "slack" => sl.calls("chat.postMessage").len(),
                    "discord" => dc.created().len(),
                    _ => mx.sent().len(),
                };
                now > sent_before
            })
            .await;
            times.push(t.elapsed());
        }
        let p50 = median(times);
        println!(
            "{kind:<9}  message in -> reply at the service       p50 {}   overhead over the mock p50 {}  ({:.1}x the mock)",
            ms(p50),
            ms(p50.saturating_sub(mock_p50)),
            p50.as_secs_f64() / mock_p50.as_secs_f64()
        );
    }

    // Throughput, one channel at a time: `queued` replies put in the
    // queue while the daemon is down, delivered after it starts, first
    // arrival to last; then a bare client sending the same requests to
    // the same fake, one after another.
    let count = |kind: &str| match kind {
        "telegram" => tg.sent_texts().len(),
        "webhook" => cb.load(Ordering::SeqCst),
        "slack" => sl.calls("chat.postMessage").len(),
        "discord" => dc.created().len(),
        _ => mx.sent().len(),
    };
    for (kind, name, chat) in [
        ("telegram", "tg", "77"),
        ("webhook", "wh", "s"),
        ("slack", "sl", "D1"),
        ("discord", "dc", "dm-1"),
        ("matrix", "mx", "!dm:fake.local"),
    ] {
        d.stop_daemon();
        {
            let store = ironclaw_store::Store::open(&d.data_dir().join("ironclaw.db")).unwrap();
            for i in 0..queued {
                let id = store
                    .insert_inbound(name, &format!("q{i}"), chat, chat, &json!({}))
                    .unwrap()
                    .unwrap();
                let text = format!("queued reply {i}");
                let part = ironclaw_store::NewPart {
                    chat,
                    thread: None,
                    text: &text,
                };
                store
                    .finish_inbound(id, name, "done", None, &[part], 0)
                    .unwrap();
            }
        }
        let before = count(kind);
        d.spawn();
        until_every(5, || count(kind) > before).await;
        let t = Instant::now();
        until_every(5, || count(kind) >= before + queued).await;
        let daemon_rate = (queued - 1) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..queued {
            let text = format!("direct {i}");
            let r = match kind {
                "telegram" => http
                    .post(format!("{}/bot{TG}/sendMessage", tg.url))
                    .json(&json!({"chat_id": chat, "text": text})),
                "webhook" => http
                    .post(&cb_url)
                    .json(&json!({"chat": chat, "text": text})),
                "slack" => http
                    .post(format!("{}/chat.postMessage", sl.url))
                    .bearer_auth(SL)
                    .json(&json!({"channel": chat, "text": text})),
                "discord" => http
                    .post(format!("{}/channels/{chat}/messages", dc.url))
                    .header("authorization", format!("Bot {DC}"))
                    .json(&json!({"content": text, "nonce": format!("direct-{i}"), "enforce_nonce": true})),
                _ => http
                    .put(format!(
                        "{}/_matrix/client/v3/rooms/{}/send/m.room.message/direct-{i}",
                        mx.url,
                        chat.replace('!', "%21").replace(':', "%3A")
                    ))
                    .bearer_auth(MX)
                    .json(&json!({"msgtype": "m.text", "body": text})),
            };
            let r = r.send().await.unwrap();
            assert!(r.status().is_success(), "{kind}: {}", r.status());
            r.bytes().await.unwrap();
        }
        let direct_rate = queued as f64 / t.elapsed().as_secs_f64();
        println!(
            "{kind:<9}  {queued} queued replies delivered          {daemon_rate:>6.0}/s   bare client {direct_rate:>6.0}/s  ({:.3}x)",
            daemon_rate / direct_rate
        );
        assert_eq!(
            count(kind),
            before + 2 * queued,
            "{kind}: each queued reply once"
        );
    }
    println!(
        "(each queued part is two fsync'd commits: `sending` before the call, the outcome after)"
    );
}

async fn until_every(every_ms: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
}

async fn until_connected(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = d.get("/v1/channels").await;
        if v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["connected"] == true)
        {
            return;
        }
        assert!(Instant::now() < deadline, "channels not connected: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
