//! The Telegram channel against the fake Bot API over loopback: offset
//! persisted and resumed, 409 reported in status and recovered from,
//! send failures classified (429 retry_after, can't parse entities,
//! blocked), typing; webhook mode (setWebhook, the secret token checked,
//! stored before the 200, a redelivery accepted once, deleteWebhook on
//! stop).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ironclaw_channels::fake::telegram::{FakeTelegram, SendAnswer};
use ironclaw_channels::{
    build, Channel, Host, Inbound, Kind, Outbound, SendError, Spec, WebhookRequest,
};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:ABC-fake-token";

#[derive(Default)]
struct TestHost {
    /// Storing fails while set (a full disk, say).
    fail: std::sync::atomic::AtomicBool,
    seen: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<Inbound>>,
    cursor: Mutex<Option<String>>,
    statuses: Mutex<Vec<(bool, Option<String>)>>,
}

#[async_trait::async_trait]
impl Host for TestHost {
    async fn accept(&self, msg: Inbound) -> Result<bool, String> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("disk full".into());
        }
        let new = self.seen.lock().unwrap().insert(msg.message_id.clone());
        if new {
            self.accepted.lock().unwrap().push(msg);
        }
        Ok(new)
    }
    fn cursor(&self) -> Option<String> {
        self.cursor.lock().unwrap().clone()
    }
    fn set_cursor(&self, c: &str) -> Result<(), String> {
        *self.cursor.lock().unwrap() = Some(c.to_string());
        Ok(())
    }
    fn status(&self, connected: bool, error: Option<String>) {
        self.statuses.lock().unwrap().push((connected, error));
    }
}

fn channel(fake: &FakeTelegram) -> Arc<dyn Channel> {
    build(
        Kind::Telegram,
        Spec {
            name: "tg".into(),
            api_base: Some(fake.url.clone()),
            token: TOKEN.into(),
            ..Default::default()
        },
    )
    .unwrap()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn out(text: &str) -> Outbound {
    Outbound {
        chat: "42".into(),
        thread: None,
        text: text.into(),
        key: "k1".into(),
        plain: false,
    }
}

#[tokio::test]
async fn polls_with_persisted_offset_and_survives_409() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.conflict(2);
    let host = Arc::new(TestHost::default());
    let ch = channel(&fake);
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    let first = fake.private(42, 1, "hello");
    fake.group(-100777, 43, 9, "hi @Andy_Bot, look");
    fake.group(-100777, 43, 10, "just chatting");
    until("three messages", || {
        host.accepted.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(
        fake.methods()[0],
        "deleteWebhook",
        "deleteWebhook comes first"
    );
    // The 409s were reported, not swallowed.
    let st = host.statuses.lock().unwrap().clone();
    assert!(
        st.iter()
            .any(|(c, e)| !c && e.as_deref().is_some_and(|e| e.contains("409 Conflict"))),
        "{st:?}"
    );
    until("connected again", || {
        host.statuses.lock().unwrap().last().map(|s| s.0) == Some(true)
    })
    .await;
    let acc = host.accepted.lock().unwrap().clone();
    assert_eq!(acc[0].message_id, "42:1");
    assert_eq!((acc[0].sender.as_str(), acc[0].chat.as_str()), ("42", "42"));
    assert!(acc[0].mentioned && !acc[0].is_group);
    assert!(acc[1].is_group && acc[1].mentioned, "{:?}", acc[1]);
    assert!(acc[2].is_group && !acc[2].mentioned);
    // The offset moved past what was stored, and confirms it at the service.
    until("confirmed", || fake.unconfirmed() == 0).await;
    assert_eq!(host.cursor(), Some((first + 3).to_string()));
    cancel.cancel();
    run.await.unwrap();

    // A new poller resumes from the persisted offset: a redelivered
    // message (same chat and message id) is accepted once.
    fake.private(42, 1, "hello");
    fake.private(42, 2, "again");
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    until("the new message", || {
        host.accepted.lock().unwrap().len() == 4
    })
    .await;
    let offsets: Vec<_> = fake
        .calls("getUpdates")
        .iter()
        .filter_map(|b| b["offset"].as_i64())
        .collect();
    assert!(offsets.contains(&(first + 3)), "{offsets:?}");
    cancel.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn sends_classify_failures_and_type() {
    let fake = FakeTelegram::start(TOKEN).await;
    let ch = channel(&fake);
    assert!(!ch.idempotent());
    let id = ch.send(&out("**hi** <there>")).await.unwrap();
    assert_eq!(id, "1");
    let b = fake.calls("sendMessage")[0].clone();
    assert_eq!(b["text"], "<b>hi</b> &lt;there&gt;");
    assert_eq!(b["parse_mode"], "HTML");
    assert_eq!(b["chat_id"], "42");

    fake.script_send(SendAnswer::TooMany(3));
    match ch.send(&out("x")).await {
        Err(SendError::RetryAfter(d, _)) => assert_eq!(d, Duration::from_secs(3)),
        other => panic!("{other:?}"),
    }
    fake.script_send(SendAnswer::CantParse);
    assert!(matches!(
        ch.send(&out("x")).await,
        Err(SendError::Format(_))
    ));
    // The plain retry goes without parse_mode, markers dropped.
    let mut plain = out("**x**");
    plain.plain = true;
    ch.send(&plain).await.unwrap();
    let last = fake.calls("sendMessage").last().unwrap().clone();
    assert!(last["parse_mode"].is_null());
    assert_eq!(last["text"], "x");
    fake.script_send(SendAnswer::Blocked);
    assert!(matches!(
        ch.send(&out("x")).await,
        Err(SendError::Permanent(_))
    ));
    ch.typing("42", None).await.unwrap();
    assert_eq!(fake.calls("sendChatAction")[0]["action"], "typing");

    // A wrong token is permanent; a dead server is transient (not sent).
    let bad = build(
        Kind::Telegram,
        Spec {
            api_base: Some(fake.url.clone()),
            token: "999:wrong".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        bad.send(&out("x")).await,
        Err(SendError::Permanent(_))
    ));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    };
    let gone = build(
        Kind::Telegram,
        Spec {
            api_base: Some(format!("http://{dead}")),
            token: TOKEN.into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        gone.send(&out("x")).await,
        Err(SendError::Transient(_))
    ));
}

/// The daemon's side of webhook mode in miniature: an HTTP endpoint handing
/// each request to the channel put in the slot. Returns its URL.
async fn receiver(host: Arc<TestHost>) -> (String, Arc<OnceLock<Arc<dyn Channel>>>) {
    use axum::http::HeaderMap;
    let slot: Arc<OnceLock<Arc<dyn Channel>>> = Arc::default();
    let ch = slot.clone();
    let app = axum::Router::new().route(
        "/v1/channels/tg/events",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (ch, host) = (ch.get().unwrap().clone(), host.clone());
            async move {
                let req = WebhookRequest {
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                    body: body.to_vec(),
                };
                let r = ch.webhook(host, req).await;
                (axum::http::StatusCode::from_u16(r.status).unwrap(), r.body)
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/channels/tg/events", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, slot)
}

fn webhook_channel(
    fake: &FakeTelegram,
    url: &str,
    secret: Option<&str>,
) -> Result<Arc<dyn Channel>, String> {
    build(
        Kind::Telegram,
        Spec {
            name: "tg".into(),
            api_base: Some(fake.url.clone()),
            token: TOKEN.into(),
            secret: secret.map(String::from),
            webhook_url: Some(url.into()),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn webhook_mode_sets_the_webhook_checks_the_token_and_stores_before_answering() {
    const SECRET: &str = "tg-Hook_secret-42";
    let fake = FakeTelegram::start(TOKEN).await;
    // A secret token Telegram would refuse is refused at build time.
    let long = "x".repeat(257);
    for bad in [None, Some(""), Some("has space"), Some(long.as_str())] {
        let e = webhook_channel(&fake, "http://127.0.0.1:1/", bad).err();
        assert!(e.is_some_and(|e| e.contains("secret token")), "{bad:?}");
    }
    let host = Arc::new(TestHost::default());
    let (url, slot) = receiver(host.clone()).await;
    let ch = webhook_channel(&fake, &url, Some(SECRET)).unwrap();
    let _ = slot.set(ch.clone());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    until("connected", || {
        host.statuses.lock().unwrap().last().map(|s| s.0) == Some(true)
    })
    .await;
    let set = fake.calls("setWebhook");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0]["url"], url.as_str());
    assert_eq!(set[0]["secret_token"], SECRET);
    assert_eq!(set[0]["allowed_updates"], serde_json::json!(["message"]));
    assert_eq!(
        fake.webhook(),
        Some((url.clone(), Some(SECRET.to_string())))
    );

    // An update is pushed, stored, and only then answered 200.
    let first = fake.private(42, 1, "hello by webhook");
    until("the message", || host.accepted.lock().unwrap().len() == 1).await;
    until("acknowledged", || fake.unconfirmed() == 0).await;
    assert_eq!(fake.deliveries(), [(first, 200)]);
    let acc = host.accepted.lock().unwrap()[0].clone();
    assert_eq!(
        (acc.message_id.as_str(), acc.text.as_str()),
        ("42:1", "hello by webhook")
    );
    assert!(!acc.is_group && acc.mentioned);

    // Forged or unsigned: 401, nothing stored.
    let forged = serde_json::json!({"update_id": 9001, "message": {"message_id": 77, "date": 1,
        "from": {"id": 666, "is_bot": false, "first_name": "Eve"},
        "chat": {"id": 666, "type": "private"}, "text": "let me in"}});
    for secret in [
        Some("wrong"),
        Some(&SECRET[..SECRET.len() - 1]),
        Some(""),
        None,
    ] {
        assert_eq!(
            fake.post_to_webhook(&forged, secret).await,
            401,
            "{secret:?}"
        );
    }
    // Not an Update: 400.
    assert_eq!(
        fake.post_to_webhook(&serde_json::json!({"hello": 1}), Some(SECRET))
            .await,
        400
    );
    assert_eq!(host.accepted.lock().unwrap().len(), 1);
    assert_eq!(
        host.seen.lock().unwrap().len(),
        1,
        "the forged one never reached the host"
    );

    // A redelivered update (same update_id) is answered 200 and accepted once.
    fake.redeliver(first);
    until("the redelivery", || fake.deliveries().len() == 2).await;
    assert_eq!(fake.deliveries()[1], (first, 200));
    assert_eq!(host.accepted.lock().unwrap().len(), 1);

    // Storing fails: 500, so Telegram keeps it and sends it again; once
    // storing works the retry is accepted.
    host.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let third = fake.private(42, 2, "while the disk is full");
    until("a refused delivery", || {
        fake.deliveries().contains(&(third, 500))
    })
    .await;
    assert_eq!(fake.unconfirmed(), 1, "kept at the service");
    host.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    until("the retry accepted", || {
        host.accepted.lock().unwrap().len() == 2
    })
    .await;
    until("acknowledged", || fake.unconfirmed() == 0).await;
    assert_eq!(fake.deliveries().last(), Some(&(third, 200)));

    // Never polled; stopping deletes the webhook.
    assert!(fake.calls("getUpdates").is_empty());
    assert!(fake.calls("deleteWebhook").is_empty());
    cancel.cancel();
    run.await.unwrap();
    assert_eq!(fake.calls("deleteWebhook").len(), 1);
    assert_eq!(fake.webhook(), None);
    // A polling channel takes no webhooks.
    let polling = channel(&fake);
    let r = polling
        .webhook(host.clone(), WebhookRequest::default())
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn webhook_mode_reports_undeliverable_updates_and_sets_a_lost_webhook_again() {
    let fake = FakeTelegram::start(TOKEN).await;
    let host = Arc::new(TestHost::default());
    // A public URL nothing answers on: Telegram cannot deliver.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    };
    let url = format!("http://{dead}/v1/channels/tg/events");
    let tg = ironclaw_channels::telegram::Telegram::new(Spec {
        name: "tg".into(),
        api_base: Some(fake.url.clone()),
        token: TOKEN.into(),
        secret: Some("s3cret".into()),
        webhook_url: Some(url.clone()),
        ..Default::default()
    })
    .unwrap()
    .with_webhook_check(Duration::from_millis(200));
    let ch: Arc<dyn Channel> = Arc::new(tg);
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    until("the webhook set", || fake.webhook().is_some()).await;
    fake.private(42, 1, "lost in the post");
    until("the failure in status", || {
        host.statuses.lock().unwrap().iter().any(|(c, e)| {
            !c && e.as_deref().is_some_and(|e| {
                e.contains("could not deliver") && e.contains("Connection refused")
            })
        })
    })
    .await;
    assert!(host.accepted.lock().unwrap().is_empty());

    // Another instance deletes the webhook: it is set again, and said so.
    fake.drop_webhook();
    until("set again", || fake.calls("setWebhook").len() == 2).await;
    assert_eq!(fake.webhook().map(|w| w.0), Some(url));
    until("reported", || {
        host.statuses.lock().unwrap().iter().any(|(_, e)| {
            e.as_deref()
                .is_some_and(|e| e.contains("webhook was deleted"))
        })
    })
    .await;
    cancel.cancel();
    run.await.unwrap();
}
