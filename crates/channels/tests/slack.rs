//! The Slack channel against the fake Web API over loopback, and Events
//! API requests as Slack signs them: url_verification, signature v0 and
//! timestamp checks, message normalization, rate limits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclaw_channels::fake::slack::{message_event, signed_headers, FakeSlack, SlackAnswer};
use ironclaw_channels::{
    build, Channel, Host, Inbound, Kind, Outbound, SendError, Spec, WebhookRequest,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "xoxb-fake-slack-token";
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

#[derive(Default)]
struct TestHost {
    accepted: Mutex<Vec<Inbound>>,
    statuses: Mutex<Vec<(bool, Option<String>)>>,
}

#[async_trait::async_trait]
impl Host for TestHost {
    async fn accept(&self, msg: Inbound) -> Result<bool, String> {
        let mut a = self.accepted.lock().unwrap();
        let new = !a.iter().any(|m| m.message_id == msg.message_id);
        if new {
            a.push(msg);
        }
        Ok(new)
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn req(body: &Value, ts: i64, secret: &str) -> WebhookRequest {
    let b = body.to_string().into_bytes();
    WebhookRequest {
        headers: signed_headers(secret, ts, &b),
        body: b,
    }
}

#[tokio::test]
async fn events_are_verified_and_normalized_and_sends_honour_rate_limits() {
    let fake = FakeSlack::start(TOKEN).await;
    let ch: Arc<dyn Channel> = build(
        Kind::Slack,
        Spec {
            api_base: Some(fake.url.clone()),
            token: TOKEN.into(),
            secret: Some(SECRET.into()),
            ..Default::default()
        },
    )
    .unwrap();
    let host = Arc::new(TestHost::default());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (ch, host, cancel) = (ch.clone(), host.clone(), cancel.clone());
        async move { ch.run(host, cancel).await }
    });
    for _ in 0..100 {
        if host.statuses.lock().unwrap().iter().any(|s| s.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.calls("auth.test").len(), 1);

    let verify = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let r = ch.webhook(host.clone(), req(&verify, now(), SECRET)).await;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["challenge"], verify["challenge"]);

    let ev = message_event(
        "D024BE91L",
        "im",
        "U2147483697",
        "1355517523.000005",
        "Hello *there*",
    );
    // Wrong secret, stale timestamp, no signature: 401, nothing stored.
    for bad in [
        req(&ev, now(), "wrong-secret"),
        req(&ev, now() - 600, SECRET),
        WebhookRequest {
            headers: vec![],
            body: ev.to_string().into_bytes(),
        },
    ] {
        assert_eq!(ch.webhook(host.clone(), bad).await.status, 401);
    }
    assert!(host.accepted.lock().unwrap().is_empty());
    // Signed: stored; Slack's retry of it is the same message.
    for _ in 0..2 {
        assert_eq!(
            ch.webhook(host.clone(), req(&ev, now(), SECRET))
                .await
                .status,
            200
        );
    }
    let grp = message_event(
        "C0GROUP",
        "channel",
        "U2147483697",
        "1355517524.000001",
        "hey <@UBOT1> help",
    );
    assert_eq!(
        ch.webhook(host.clone(), req(&grp, now(), SECRET))
            .await
            .status,
        200
    );
    // Our own messages are not answered.
    let own = message_event(
        "C0GROUP",
        "channel",
        "UBOT1",
        "1355517525.000001",
        "my reply",
    );
    assert_eq!(
        ch.webhook(host.clone(), req(&own, now(), SECRET))
            .await
            .status,
        200
    );
    let acc = host.accepted.lock().unwrap().clone();
    assert_eq!(acc.len(), 2, "{acc:?}");
    assert_eq!(acc[0].message_id, "D024BE91L:1355517523.000005");
    assert!(!acc[0].is_group && acc[0].mentioned);
    assert!(acc[1].is_group && acc[1].mentioned);

    let out = Outbound {
        chat: "C0GROUP".into(),
        thread: Some("1355517524.000001".into()),
        text: "**done** see [x](https://e.x)".into(),
        key: "k".into(),
        plain: false,
    };
    fake.script(SlackAnswer::TooMany(2));
    match ch.send(&out).await {
        Err(SendError::RetryAfter(d, _)) => assert_eq!(d, Duration::from_secs(2)),
        other => panic!("{other:?}"),
    }
    fake.script(SlackAnswer::RateLimited);
    assert!(matches!(
        ch.send(&out).await,
        Err(SendError::RetryAfter(..))
    ));
    let ts = ch.send(&out).await.unwrap();
    assert!(ts.starts_with("1700000000."));
    let sent = fake.calls("chat.postMessage").last().unwrap().clone();
    assert_eq!(sent["text"], "*done* see <https://e.x|x>");
    assert_eq!(sent["thread_ts"], "1355517524.000001");
    let mut bad = out.clone();
    bad.chat = String::new();
    bad.text = String::new();
    assert!(matches!(ch.send(&bad).await, Err(SendError::Permanent(_))));
    cancel.cancel();
    run.await.unwrap();
}
