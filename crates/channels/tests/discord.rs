//! The Discord channel against the fake Gateway and REST API over
//! loopback: Hello/Identify/heartbeats/READY, MESSAGE_CREATE normalized,
//! 429 with retry_after, nonce idempotency, typing; the session resumed
//! after a dropped connection, opcode 7 and a missing heartbeat ACK (the
//! messages missed replayed and handled once), a fresh IDENTIFY after
//! opcode 9 d=false.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_channels::fake::discord::FakeDiscord;
use ironclaw_channels::{build, Channel, Host, Inbound, Kind, Outbound, SendError, Spec};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "MTA-fake.discord.token";

#[derive(Default)]
struct TestHost {
    accepted: Mutex<Vec<Inbound>>,
    statuses: Mutex<Vec<(bool, Option<String>)>>,
}

#[async_trait::async_trait]
impl Host for TestHost {
    async fn accept(&self, msg: Inbound) -> Result<bool, String> {
        self.accepted.lock().unwrap().push(msg);
        Ok(true)
    }
    fn cursor(&self) -> Option<String> {
        None
    }
    fn set_cursor(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn status(&self, c: bool, e: Option<String>) {
        self.statuses.lock().unwrap().push((c, e));
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn channel(fake: &FakeDiscord, token: &str) -> Arc<dyn Channel> {
    build(
        Kind::Discord,
        Spec {
            api_base: Some(fake.url.clone()),
            token: token.into(),
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn gateway_messages_in_rest_replies_out() {
    let fake = FakeDiscord::start(TOKEN).await;
    let ch = channel(&fake, TOKEN);
    assert!(ch.idempotent());
    let host = Arc::new(TestHost::default());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    until("READY", || {
        host.statuses.lock().unwrap().iter().any(|s| s.0)
    })
    .await;
    assert_eq!(fake.identified(), 1);
    fake.message(FakeDiscord::user_message(
        "111",
        "dm-1",
        None,
        "42",
        "hello bot",
        false,
    ));
    fake.message(FakeDiscord::user_message(
        "112",
        "chan-1",
        Some("guild-1"),
        "42",
        "<@800000000000000001> help",
        true,
    ));
    fake.message(FakeDiscord::user_message(
        "113",
        "chan-1",
        Some("guild-1"),
        "42",
        "chatter",
        false,
    ));
    until("three messages", || {
        host.accepted.lock().unwrap().len() == 3
    })
    .await;
    let acc = host.accepted.lock().unwrap().clone();
    assert_eq!(
        (acc[0].message_id.as_str(), acc[0].chat.as_str()),
        ("111", "dm-1")
    );
    assert!(!acc[0].is_group && acc[0].mentioned);
    assert!(acc[1].is_group && acc[1].mentioned);
    assert!(acc[2].is_group && !acc[2].mentioned);
    until("heartbeats", || fake.heartbeats() >= 2).await;

    let out = Outbound {
        chat: "chan-1".into(),
        thread: None,
        text: "**hi**".into(),
        key: "icdc-1".into(),
        plain: false,
    };
    fake.too_many(0.5);
    match ch.send(&out).await {
        Err(SendError::RetryAfter(d, _)) => assert_eq!(d, Duration::from_millis(500)),
        other => panic!("{other:?}"),
    }
    let a = ch.send(&out).await.unwrap();
    // A retry of the same part (after an ambiguous failure) is the same message.
    let b = ch.send(&out).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(fake.posts().len(), 2);
    assert_eq!(
        fake.created(),
        [("chan-1".to_string(), "**hi**".to_string())]
    );
    let nonce = fake.posts()[0].1["nonce"].as_str().unwrap().to_string();
    assert!(nonce.len() <= 25);
    ch.typing("chan-1", None).await.unwrap();
    assert_eq!(fake.typing(), ["chan-1"]);
    let mut long = out.clone();
    long.text = "x".repeat(2001);
    long.key = "icdc-2".into();
    assert!(matches!(ch.send(&long).await, Err(SendError::Permanent(_))));
    cancel.cancel();
    run.await.unwrap();

    // A bad token: the gateway refuses it, and status says so.
    let bad = channel(&fake, "wrong");
    let host = Arc::new(TestHost::default());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (bad, host, cancel) = (bad.clone(), host.clone(), cancel.clone());
        async move { bad.run(host, cancel).await }
    });
    until("the error in status", || {
        host.statuses
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.1.as_deref().is_some_and(|e| e.contains("401")))
    })
    .await;
    cancel.cancel();
    run.await.unwrap();
}

fn ids(host: &TestHost) -> Vec<String> {
    host.accepted
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.message_id.clone())
        .collect()
}

fn dm(fake: &FakeDiscord, id: &str) {
    fake.message(FakeDiscord::user_message(id, "dm-1", None, "42", id, false));
}

#[tokio::test]
async fn gateway_resumes_and_replays_what_was_missed_exactly_once() {
    let fake = FakeDiscord::start(TOKEN).await;
    let ch = channel(&fake, TOKEN);
    let host = Arc::new(TestHost::default());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    until("READY", || {
        host.statuses.lock().unwrap().iter().any(|s| s.0)
    })
    .await;
    dm(&fake, "201");
    until("the first message", || ids(&host) == ["201"]).await;

    // The connection drops; a message is sent while the client cannot
    // reconnect; it arrives once the gateway takes connections again, by
    // replay after RESUME on resume_gateway_url, not a new session.
    fake.close_gateway().await;
    dm(&fake, "202");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ids(&host), ["201"], "nothing while disconnected");
    fake.open_gateway();
    until("the missed message", || ids(&host).len() == 2).await;
    assert_eq!(ids(&host), ["201", "202"]);
    assert_eq!(
        (fake.resumed(), fake.replayed(), fake.identified()),
        (1, 1, 1)
    );
    assert_eq!(fake.connects().last().unwrap(), "/resume/");
    dm(&fake, "203");
    until("a live message after the resume", || ids(&host).len() == 3).await;

    // Opcode 7: reconnect and resume; a message racing it arrives once,
    // live or replayed.
    let r = fake.resumed();
    fake.ask_reconnect();
    dm(&fake, "204");
    until("the second resume", || fake.resumed() > r).await;
    until("the racing message", || ids(&host).len() == 4).await;

    // Heartbeats no longer acknowledged: a zombie connection, closed by
    // the client and resumed.
    let r = fake.resumed();
    fake.skip_acks(1);
    until("the third resume", || fake.resumed() > r).await;
    dm(&fake, "205");
    until("a message after it", || ids(&host).len() == 5).await;
    assert!(
        host.statuses
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.1.as_deref().is_some_and(|e| e.contains("heartbeat ACK"))),
        "the zombie connection is reported"
    );

    // Opcode 9 d=false: the session is gone; a fresh IDENTIFY.
    fake.invalidate(false);
    until("a second IDENTIFY", || fake.identified() == 2).await;
    until("connected", || {
        host.statuses.lock().unwrap().last().map(|s| s.0) == Some(true)
    })
    .await;
    dm(&fake, "206");
    until("a message in the new session", || ids(&host).len() == 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each message handled exactly once across all of it.
    assert_eq!(ids(&host), ["201", "202", "203", "204", "205", "206"]);
    assert_eq!(fake.identified(), 2);
    cancel.cancel();
    run.await.unwrap();
}
