//! The Telegram channel against the fake Bot API over loopback: offset
//! persisted and resumed, 409 reported in status and recovered from,
//! send failures classified (429 retry_after, can't parse entities,
//! blocked), typing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_channels::fake::telegram::{FakeTelegram, SendAnswer};
use ironclaw_channels::{build, Channel, Host, Inbound, Kind, Outbound, SendError, Spec};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:ABC-fake-token";

#[derive(Default)]
struct TestHost {
    seen: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<Inbound>>,
    cursor: Mutex<Option<String>>,
    statuses: Mutex<Vec<(bool, Option<String>)>>,
}

#[async_trait::async_trait]
impl Host for TestHost {
    async fn accept(&self, msg: Inbound) -> Result<bool, String> {
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
