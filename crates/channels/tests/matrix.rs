//! The Matrix channel against the fake homeserver over loopback: the
//! first sync skips history, `since` persisted and resumed, invites
//! joined, txnId idempotency, 429 retry_after_ms, typing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_channels::fake::matrix::{FakeMatrix, BOT};
use ironclaw_channels::{build, Channel, Host, Inbound, Kind, Outbound, SendError, Spec};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "syt_fake_matrix_token";

#[derive(Default)]
struct TestHost {
    accepted: Mutex<Vec<Inbound>>,
    cursor: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Host for TestHost {
    async fn accept(&self, msg: Inbound) -> Result<bool, String> {
        self.accepted.lock().unwrap().push(msg);
        Ok(true)
    }
    fn cursor(&self) -> Option<String> {
        self.cursor.lock().unwrap().clone()
    }
    fn set_cursor(&self, c: &str) -> Result<(), String> {
        *self.cursor.lock().unwrap() = Some(c.into());
        Ok(())
    }
    fn status(&self, _: bool, _: Option<String>) {}
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sync_in_send_out_with_txn_ids() {
    let fake = FakeMatrix::start(TOKEN).await;
    fake.message(
        "!dm:fake.local",
        2,
        "@pat:fake.local",
        "$old",
        "history, not answered",
    );
    let ch: Arc<dyn Channel> = build(
        Kind::Matrix,
        Spec {
            api_base: Some(fake.url.clone()),
            token: TOKEN.into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(ch.idempotent());
    let host = Arc::new(TestHost::default());
    let start = |host: Arc<TestHost>| {
        let cancel = CancellationToken::new();
        let ch = ch.clone();
        let c = cancel.clone();
        (cancel, tokio::spawn(async move { ch.run(host, c).await }))
    };
    let (cancel, run) = start(host.clone());
    until("the first sync", || host.cursor().is_some()).await;
    assert_eq!(host.cursor().as_deref(), Some("s1"));
    fake.message("!dm:fake.local", 2, "@pat:fake.local", "$e1", "hello");
    fake.message("!grp:fake.local", 5, "@pat:fake.local", "$e2", "chatter");
    fake.message(
        "!grp:fake.local",
        5,
        "@pat:fake.local",
        "$e3",
        &format!("{BOT}: help"),
    );
    fake.message("!grp:fake.local", 5, BOT, "$e4", "my own reply");
    fake.invite("!new:fake.local");
    until("three messages", || {
        host.accepted.lock().unwrap().len() == 3
    })
    .await;
    until("the invite joined", || !fake.joined().is_empty()).await;
    cancel.cancel();
    run.await.unwrap();
    let acc = host.accepted.lock().unwrap().clone();
    assert_eq!(acc[0].message_id, "$e1");
    assert!(!acc[0].is_group && acc[0].mentioned);
    assert!(acc[1].is_group && !acc[1].mentioned);
    assert!(acc[2].is_group && acc[2].mentioned);
    assert_eq!(fake.joined(), ["!new:fake.local"]);

    // A new poller resumes from the stored token.
    let before = fake.syncs().len();
    fake.message("!dm:fake.local", 2, "@pat:fake.local", "$e5", "later");
    let (cancel, run) = start(host.clone());
    until("the later message", || {
        host.accepted.lock().unwrap().len() == 4
    })
    .await;
    // Without summaries (Synapse's answer to a client that does not
    // lazy-load members), the member count comes from joined_members.
    fake.no_summaries();
    fake.message("!dm2:fake.local", 2, "@pat:fake.local", "$e6", "a DM");
    fake.message("!grp2:fake.local", 3, "@pat:fake.local", "$e7", "a group");
    until("two more", || host.accepted.lock().unwrap().len() == 6).await;
    let acc = host.accepted.lock().unwrap().clone();
    assert!(!acc[4].is_group && acc[4].mentioned, "{:?}", acc[4]);
    assert!(acc[5].is_group && !acc[5].mentioned, "{:?}", acc[5]);
    cancel.cancel();
    run.await.unwrap();
    assert!(fake.syncs()[before].is_some(), "{:?}", fake.syncs());

    let out = Outbound {
        chat: "!dm:fake.local".into(),
        thread: None,
        text: "**done**".into(),
        key: "icmx-7".into(),
        plain: false,
    };
    fake.limit(700);
    match ch.send(&out).await {
        Err(SendError::RetryAfter(d, _)) => assert_eq!(d, Duration::from_millis(700)),
        other => panic!("{other:?}"),
    }
    let a = ch.send(&out).await.unwrap();
    let b = ch.send(&out).await.unwrap();
    assert_eq!(a, b, "the same txnId is the same event");
    assert_eq!(fake.puts(), 3);
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "!dm:fake.local");
    assert_eq!(sent[0].1["body"], "**done**");
    assert_eq!(sent[0].1["formatted_body"], "<b>done</b>");
    ch.typing("!dm:fake.local", None).await.unwrap();
    assert_eq!(fake.typing(), ["!dm:fake.local"]);
}
