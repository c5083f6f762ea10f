//! Every channel kind through a real daemon, each against its fake
//! service over loopback: a message in (signed webhook POST, signed Slack
//! event, Discord Gateway dispatch, Matrix sync), an agent turn, the reply
//! out through the service's API. The webhook's callback fails once
//! ambiguously (500 after receiving) and the retry carries the same
//! idempotency key.

mod common;

use common::wait_for;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::chat::MOCK_KEY;
use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_channels::fake::discord::FakeDiscord;
use ironclaw_channels::fake::matrix::FakeMatrix;
use ironclaw_channels::fake::slack::{message_event, signed_headers, FakeSlack};
use serde_json::{json, Value};

const WH_SECRET: &str = "wh-secret-0c7d";
const SL_TOKEN: &str = "xoxb-daemon-slack";
const SL_SECRET: &str = "slack-signing-secret-77";
const DC_TOKEN: &str = "discord-daemon-token";
const MX_TOKEN: &str = "syt_daemon_matrix";

/// The webhook channel's callback receiver: checks the signature, answers
/// 500 to the first POST (after taking it), dedupes by Idempotency-Key.
#[derive(Default)]
struct Callback {
    posts: Mutex<Vec<(String, Value)>>,
    failed_once: Mutex<bool>,
}

async fn callback_server(cb: Arc<Callback>) -> String {
    let app = axum::Router::new().route(
        "/replies",
        axum::routing::post(move |h: HeaderMap, body: axum::body::Bytes| {
            let cb = cb.clone();
            async move {
                let sig = h
                    .get("x-ironclaw-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if sig != ironclaw_channels::webhook::sign(WH_SECRET, &body) {
                    return StatusCode::UNAUTHORIZED;
                }
                let key = h
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                cb.posts
                    .lock()
                    .unwrap()
                    .push((key, serde_json::from_slice(&body).unwrap()));
                let mut f = cb.failed_once.lock().unwrap();
                if !*f {
                    *f = true;
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/replies", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_slack_discord_and_matrix_end_to_end() {
    let mock = MockLlm::start((0..4).map(|_| MockReply::text("reply from the **agent**"))).await;
    mock.push(MockReply::text("answer to the missed one"));
    let cb = Arc::new(Callback::default());
    let cb_url = callback_server(cb.clone()).await;
    let slack = FakeSlack::start(SL_TOKEN).await;
    let discord = FakeDiscord::start(DC_TOKEN).await;
    let matrix = FakeMatrix::start(MX_TOKEN).await;
    let base = mock.openai_base();
    let d = Daemon::start_env(
        "",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
            ("WH_SECRET", WH_SECRET),
            ("SL_TOKEN", SL_TOKEN),
            ("SL_SECRET", SL_SECRET),
            ("DC_TOKEN", DC_TOKEN),
            ("MX_TOKEN", MX_TOKEN),
        ],
    )
    .await;
    for body in [
        json!({"kind": "webhook", "name": "hook", "secret_env": "WH_SECRET", "callback_url": cb_url, "access": "open"}),
        json!({"kind": "slack", "name": "sl", "token_env": "SL_TOKEN", "secret_env": "SL_SECRET", "api_base": slack.url, "access": "open"}),
        json!({"kind": "discord", "name": "dc", "token_env": "DC_TOKEN", "api_base": discord.url, "access": "open"}),
        json!({"kind": "matrix", "name": "mx", "token_env": "MX_TOKEN", "api_base": matrix.url, "access": "open"}),
    ] {
        let (st, v) = d.post("/v1/channels", body).await;
        assert_eq!(st, 201, "{v}");
    }
    // A slack channel without its signing secret is refused.
    let (st, _) = d
        .post(
            "/v1/channels",
            json!({"kind": "slack", "name": "sl2", "token_env": "SL_TOKEN"}),
        )
        .await;
    assert_eq!(st, 400);

    // Webhook: signed POSTs only; a redelivery is a duplicate.
    let body = json!({"id": "evt-1", "sender": "u-1", "text": "hello over webhook"}).to_string();
    let post = |sig: String, body: String| {
        let http = d.http.clone();
        let url = d.u("/v1/channels/hook/events");
        async move {
            let r = http
                .post(url)
                .header("x-ironclaw-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or_default(),
            )
        }
    };
    let (st, _) = post("sha256=00".into(), body.clone()).await;
    assert_eq!(st, 401);
    let (st, v) = post("sha256=zz".into(), "not json".into()).await;
    assert_eq!(st, 401, "{v}");
    let bad_json = "{\"id\": 1}".to_string();
    let (st, _) = post(
        ironclaw_channels::webhook::sign(WH_SECRET, bad_json.as_bytes()),
        bad_json,
    )
    .await;
    assert_eq!(st, 400);
    let sig = ironclaw_channels::webhook::sign(WH_SECRET, body.as_bytes());
    let (st, v) = post(sig.clone(), body.clone()).await;
    assert_eq!((st, v["duplicate"].clone()), (200, json!(false)), "{v}");
    let (st, v) = post(sig, body).await;
    assert_eq!((st, v["duplicate"].clone()), (200, json!(true)), "{v}");
    let (st, _) = d
        .http
        .post(d.u("/v1/channels/nope/events"))
        .body("{}")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(st, 404);

    // Slack: url_verification and a signed message event.
    let events = d.u("/v1/channels/sl/events");
    let send_slack = |v: Value| {
        let http = d.http.clone();
        let url = events.clone();
        async move {
            let b = v.to_string().into_bytes();
            let mut r = http.post(url);
            for (k, v) in signed_headers(SL_SECRET, unix_now(), &b) {
                r = r.header(k, v);
            }
            let r = r.body(b).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or_default(),
            )
        }
    };
    let (st, v) =
        send_slack(json!({"type": "url_verification", "challenge": "chal-123", "token": "t"}))
            .await;
    assert_eq!((st, v["challenge"].clone()), (200, json!("chal-123")));
    let (st, _) = send_slack(message_event(
        "D0DM",
        "im",
        "U777",
        "1700000001.000100",
        "hello over slack",
    ))
    .await;
    assert_eq!(st, 200);

    // Discord and Matrix once connected.
    wait_for(30, "discord and matrix connected", || async {
        let (_, v) = d.get("/v1/channels").await;
        v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["connected"] == true)
            .count()
            == 4
    })
    .await;
    discord.message(FakeDiscord::user_message(
        "5001",
        "dm-9",
        None,
        "42",
        "hello over discord",
        false,
    ));
    matrix.message(
        "!dm:fake.local",
        2,
        "@pat:fake.local",
        "$m1",
        "hello over matrix",
    );

    wait_for(60, "four replies", || async {
        cb.posts.lock().unwrap().len() >= 2
            && !slack.calls("chat.postMessage").is_empty()
            && !discord.created().is_empty()
            && !matrix.sent().is_empty()
    })
    .await;
    assert_eq!(mock.requests().len(), 4, "one turn per message");
    // Webhook: the ambiguous 500 was retried with the same key.
    let posts = cb.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0].0, posts[1].0);
    assert_eq!(posts[1].1["text"], "reply from the **agent**");
    assert_eq!(posts[1].1["chat"], "u-1");
    let sl = slack.calls("chat.postMessage")[0].clone();
    assert_eq!(
        (sl["channel"].clone(), sl["text"].clone()),
        (json!("D0DM"), json!("reply from the *agent*"))
    );
    assert_eq!(
        discord.created(),
        [("dm-9".to_string(), "reply from the **agent**".to_string())]
    );
    let mx = matrix.sent();
    assert_eq!(mx[0].0, "!dm:fake.local");
    assert_eq!(mx[0].1["formatted_body"], "reply from the <b>agent</b>");
    let (_, v) = d.get("/v1/channels/hook/messages").await;
    let outcomes: Vec<_> = v["messages"][0]["replies"][0]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        outcomes,
        [
            "queued",
            "sending",
            "transient: retrying",
            "sending",
            "sent"
        ]
    );
    let mut by_kind = HashMap::new();
    let (_, v) = d.get("/v1/channels").await;
    for c in v["channels"].as_array().unwrap() {
        by_kind.insert(
            c["kind"].as_str().unwrap().to_string(),
            c["queue_depth"].clone(),
        );
    }
    assert_eq!(by_kind.len(), 4);
    assert!(by_kind.values().all(|q| *q == 0), "{by_kind:?}");

    // Discord: a message sent while the gateway connection was down comes
    // in by replay after RESUME and runs one turn; nothing else repeats.
    discord.close_gateway().await;
    discord.message(FakeDiscord::user_message(
        "5002",
        "dm-9",
        None,
        "42",
        "sent while disconnected",
        false,
    ));
    discord.open_gateway();
    wait_for(60, "the missed message's reply", || async {
        discord.created().len() == 2
    })
    .await;
    assert!(discord.resumed() >= 1 && discord.replayed() >= 1);
    assert_eq!(discord.identified(), 1, "the session was resumed, not new");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.requests().len(), 5, "one more turn, once");
    let (_, v) = d.get("/v1/channels/dc/messages").await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{v}");
}
