//! Chat channels end to end: a real daemon, the fake Telegram Bot API over
//! loopback, the scripted mock LLM, real agent sandboxes. A message in, an
//! agent tool turn in the right user's sandbox, the reply out; pairing;
//! group trigger; redelivery processed once; 409/429/400 handling; a
//! SIGKILL mid-delivery followed by a restart delivering exactly once; and
//! webhook mode (Telegram pushing to the daemon's inbound endpoint).

mod common;

use common::wait_for;

use std::time::Duration;

use common::chat::MOCK_KEY;
use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_channels::fake::telegram::{FakeTelegram, SendAnswer};
use reqwest::Method;
use serde_json::{json, Value};

const TG_TOKEN: &str = "7000001:AAE-secret-tg-token-5b9c2d";
const TG_HOOK: &str = "hook-Secret_token-9f3e";

async fn daemon(mock: &MockLlm) -> Daemon {
    let base = mock.openai_base();
    let d = Daemon::start_env(
        "",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
            ("TG_TOKEN", TG_TOKEN),
            ("TG_HOOK", TG_HOOK),
        ],
    )
    .await;
    d.build_image("mini", "busybox").await;
    d
}

async fn add_channel(d: &Daemon, body: Value) -> Value {
    let (st, v) = d.post("/v1/channels", body).await;
    assert_eq!(st, 201, "{v}");
    v
}

async fn messages(d: &Daemon, name: &str) -> Vec<Value> {
    let (st, v) = d.get(&format!("/v1/channels/{name}/messages")).await;
    assert_eq!(st, 200, "{v}");
    v["messages"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_then_tool_turn_in_the_users_sandbox_and_reply_out() {
    let mock = MockLlm::start([
        MockReply::tool(
            "bash",
            json!({"command": "echo from-telegram > /root/tg.txt; env; cat /proc/1/environ; echo"}),
        ),
        MockReply::text("**Done**: wrote `/root/tg.txt`"),
    ])
    .await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    let d = daemon(&mock).await;
    d.add_user("alice").await;

    // Bad input changes nothing.
    for (body, what) in [
        (json!({"kind": "telegram", "name": "tg"}), "--token-env"),
        (
            json!({"kind": "telegram", "name": "tg", "token_env": "NOT_SET_ANYWHERE_1"}),
            "NOT_SET_ANYWHERE_1",
        ),
        (
            json!({"kind": "irc", "name": "tg", "token_env": "TG_TOKEN"}),
            "unknown channel kind",
        ),
        (
            json!({"kind": "telegram", "name": "Bad Name", "token_env": "TG_TOKEN"}),
            "invalid channel name",
        ),
    ] {
        let (st, v) = d.post("/v1/channels", body).await;
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(what),
            "{v}"
        );
    }
    let (_, list) = d.get("/v1/channels").await;
    assert_eq!(list["channels"].as_array().unwrap().len(), 0);

    // Added through the CLI, as an operator would.
    let out = d.cli(&[
        "channel",
        "add",
        "telegram",
        "--name",
        "tg",
        "--token-env",
        "TG_TOKEN",
        "--api-base",
        &fake.url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, again) = d
        .post(
            "/v1/channels",
            json!({"kind": "telegram", "name": "tg", "token_env": "TG_TOKEN"}),
        )
        .await;
    assert_eq!(st, 409, "{again}");

    // An unknown sender gets a pairing code, and no agent turn.
    fake.private(4242, 1, "hello?");
    wait_for(20, "the pairing code", || async {
        !fake.sent_texts().is_empty()
    })
    .await;
    let text = fake.sent_texts()[0].clone();
    let code = text
        .split("pairing code is ")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(code.len(), 6, "{text}");
    assert!(mock.requests().is_empty());
    // A wrong code is refused; the right one pairs.
    let out = d.cli(&["pair", "approve", "ZZZZZZ", "--user", "alice"]);
    assert!(!out.status.success());
    let out = d.cli(&["pair", "approve", &code, "--user", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));

    // Now the message runs a tool turn as alice, in alice's sandbox.
    fake.private(4242, 2, "please write the file");
    wait_for(120, "the reply", || async { fake.sent_texts().len() >= 2 }).await;
    let sent = fake.calls("sendMessage");
    assert_eq!(sent[1]["chat_id"], "4242");
    assert_eq!(sent[1]["parse_mode"], "HTML");
    assert_eq!(
        sent[1]["text"],
        "<b>Done</b>: wrote <code>/root/tg.txt</code>"
    );
    assert!(!fake.calls("sendChatAction").is_empty(), "typing was shown");
    let (st, v) = d
        .post(
            "/v1/sandboxes/agent-alice/exec?owner=alice",
            json!({"argv": ["cat", "/root/tg.txt"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stdout"], "from-telegram\n");
    let (st, _) = d.get("/v1/sandboxes/agent-admin").await;
    assert_eq!(st, 404, "the admin's agent sandbox was not used");

    // The bot token never entered the sandbox: not in the tool's env, not
    // in any file (a canary proves the search works).
    let tool_out = mock.requests()[1].raw.clone();
    assert!(tool_out.contains("PATH="), "the tool ran");
    assert!(!tool_out.contains(TG_TOKEN) && !tool_out.contains("secret-tg-token"));
    let script = "echo canary-3c1f > /root/canary; for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rl -e secret-tg-token -e canary-3c1f $d 2>/dev/null;; esac; done";
    let (_, v) = d
        .post(
            "/v1/sandboxes/agent-alice/exec?owner=alice",
            json!({"argv": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(v["stdout"], "/root/canary\n", "{v}");

    // A redelivered update (same chat and message id, new update_id) is
    // processed once: no model call, no second reply.
    let calls = mock.requests().len();
    fake.private(4242, 2, "please write the file");
    wait_for(20, "the redelivery confirmed", || async {
        fake.unconfirmed() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.requests().len(), calls);
    assert_eq!(fake.sent_texts().len(), 2);

    // Status and the delivery log.
    let out = d.cli(&["channel", "status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tg = &v["channels"][0];
    assert_eq!(
        (tg["connected"].clone(), tg["queue_depth"].clone()),
        (json!(true), json!(0)),
        "{v}"
    );
    assert_eq!(tg["settings"]["token_env"], "TG_TOKEN");
    assert!(
        !v.to_string().contains(TG_TOKEN),
        "the API never shows the token"
    );
    let log = messages(&d, "tg").await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["message"]["state"], "done");
    assert_eq!(log[0]["message"]["user"], "alice");
    let part = &log[0]["replies"][0];
    assert_eq!(part["part"]["state"], "sent");
    let outcomes: Vec<_> = part["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes, ["queued", "sending", "sent"]);
    assert_eq!(log[1]["message"]["state"], "ignored");
    let out = d.cli(&["channel", "log", "tg"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent(1)"));

    // Removed: polling stops, the channel is gone.
    let out = d.cli(&["channel", "rm", "tg"]);
    assert!(out.status.success());
    let (st, _) = d.get("/v1/channels/tg").await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_trigger_409_429_and_plain_text_retry() {
    let mock = MockLlm::start([MockReply::text("**bold** answer")]).await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    fake.conflict(2);
    let d = daemon(&mock).await;
    add_channel(
        &d,
        json!({"kind": "telegram", "name": "grp", "token_env": "TG_TOKEN", "api_base": fake.url,
               "access": "allowlist", "allow": ["1"], "groups": ["-1001"], "trigger": "@Andy"}),
    )
    .await;
    // The 409s show in status, then it connects.
    wait_for(20, "409 in status", || async {
        let (_, v) = d.get("/v1/channels/grp").await;
        v["last_error"].as_str().is_some_and(|e| e.contains("409"))
    })
    .await;
    wait_for(30, "connected", || async {
        d.get("/v1/channels/grp").await.1["connected"] == true
    })
    .await;

    fake.script_send(SendAnswer::TooMany(1));
    fake.script_send(SendAnswer::CantParse);
    fake.group(-1001, 55, 1, "nobody called the bot");
    fake.group(-2002, 55, 1, "@Andy in a group not allowed");
    fake.private(66, 1, "not on the allowlist");
    fake.group(-1001, 55, 2, "hey @andy, a question");
    wait_for(60, "the reply", || async {
        fake.calls("sendMessage")
            .iter()
            .any(|b| b["parse_mode"].is_null())
    })
    .await;
    assert_eq!(
        mock.requests().len(),
        1,
        "only the triggered message ran a turn"
    );
    assert!(mock.requests()[0].raw.contains("hey @andy, a question"));
    let sends = fake.calls("sendMessage");
    assert_eq!(sends.len(), 3, "429, can't parse, plain: {sends:?}");
    assert_eq!(sends[2]["text"], "bold answer");
    assert_eq!(sends[2]["chat_id"], "-1001");
    let log = messages(&d, "grp").await;
    let states: Vec<_> = log
        .iter()
        .map(|m| (m["message"]["state"].clone(), m["message"]["note"].clone()))
        .collect();
    assert_eq!(states.len(), 4, "{states:?}");
    assert_eq!(states[0].0, "done");
    for (s, note) in &states[1..] {
        assert_eq!(*s, "ignored", "{note}");
    }
    let part = &log[0]["replies"][0];
    let outcomes: Vec<String> = part["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_string())
        .collect();
    assert!(
        outcomes[2].starts_with("rate limited: retry after 1000 ms"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[4], "formatting rejected: retrying as plain text");
    assert_eq!(outcomes.last().unwrap(), "sent");
    assert_eq!(part["part"]["attempts"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_then_restart_delivers_each_reply_once() {
    let mock = MockLlm::start([
        MockReply::text("first reply"),
        MockReply::text("second reply"),
    ])
    .await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    let mut d = daemon(&mock).await;
    add_channel(
        &d,
        json!({"kind": "telegram", "name": "tg", "token_env": "TG_TOKEN", "api_base": fake.url, "access": "open"}),
    )
    .await;
    // The first reply reaches the service, which never answers.
    fake.script_send(SendAnswer::Stall);
    fake.private(9, 1, "one");
    wait_for(120, "the first send", || async {
        fake.sent_texts().len() == 1
    })
    .await;
    // The second turn's reply waits behind it in the queue.
    fake.private(9, 2, "two");
    wait_for(60, "the second turn", || async {
        mock.requests().len() == 2
    })
    .await;
    wait_for(20, "the second reply queued", || async {
        d.get("/v1/channels/tg").await.1["queue_depth"] == 2
    })
    .await;
    d.kill_daemon();
    d.spawn();
    wait_for(30, "the second reply", || async {
        fake.sent_texts().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.sent_texts(),
        ["first reply", "second reply"],
        "each exactly once"
    );
    assert_eq!(mock.requests().len(), 2, "no turn ran twice");
    let log = messages(&d, "tg").await;
    assert_eq!(log[1]["replies"][0]["part"]["state"], "unknown");
    let last = log[1]["replies"][0]["log"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["outcome"].as_str().unwrap().contains("not resent"),
        "{last}"
    );
    assert_eq!(log[0]["replies"][0]["part"]["state"], "sent");
    let (_, v) = d.req(Method::GET, "/v1/channels/tg", None).await;
    assert_eq!(v["queue_depth"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_turn_then_restart_answers_once() {
    let mock = MockLlm::start([
        MockReply::Slow {
            chunks: (0..30).map(|i| format!("w{i} ")).collect(),
            delay: Duration::from_millis(500),
        },
        MockReply::text("answer after the restart"),
    ])
    .await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    let mut d = daemon(&mock).await;
    add_channel(
        &d,
        json!({"kind": "telegram", "name": "tg", "token_env": "TG_TOKEN", "api_base": fake.url, "access": "open"}),
    )
    .await;
    fake.private(9, 1, "a long question");
    wait_for(60, "the turn to start", || async {
        mock.requests().len() == 1
    })
    .await;
    // Stored and acknowledged before the turn: the crash loses nothing.
    wait_for(10, "the update confirmed", || async {
        fake.unconfirmed() == 0
    })
    .await;
    d.kill_daemon();
    d.spawn();
    wait_for(60, "the reply", || async { !fake.sent_texts().is_empty() }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.sent_texts(), ["answer after the restart"]);
    assert_eq!(mock.requests().len(), 2, "the cut turn ran again, once");
    let log = messages(&d, "tg").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["message"]["state"], "done");
    // The session holds the question once: the turn ran again on it.
    let session = log[0]["message"]["session_id"].as_str().unwrap();
    let (st, s) = d.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(st, 200, "{s}");
    let questions = s["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user" && m["content"].to_string().contains("a long question"))
        .count();
    assert_eq!(questions, 1, "{s}");
    // The model saw it once too.
    let seen = &mock.requests()[1].raw;
    assert_eq!(seen.matches("a long question").count(), 1, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_gets_its_own_agent_sandbox_and_sessions() {
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "echo group-one > /root/who.txt"})),
        MockReply::text("noted"),
        MockReply::text("hello other group"),
    ])
    .await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    let d = daemon(&mock).await;
    add_channel(
        &d,
        json!({"kind": "telegram", "name": "tg", "token_env": "TG_TOKEN", "api_base": fake.url,
               "access": "open", "groups": ["-1001", "-1002"]}),
    )
    .await;
    fake.group(-1001, 5, 1, "@andy_bot remember who we are");
    wait_for(120, "the first group's reply", || async {
        fake.sent_texts().len() == 1
    })
    .await;
    fake.group(-1002, 5, 1, "@andy_bot hi");
    wait_for(30, "the second group's reply", || async {
        fake.sent_texts().len() == 2
    })
    .await;
    let log = messages(&d, "tg").await;
    let users: Vec<String> = log
        .iter()
        .map(|m| m["message"]["user"].as_str().unwrap().to_string())
        .collect();
    assert!(users.iter().all(|u| u.starts_with("grp-")), "{users:?}");
    assert_ne!(users[0], users[1], "each group is its own agent");
    let first = &users[1];
    let (st, v) = d
        .post(
            &format!("/v1/sandboxes/agent-{first}/exec?owner={first}"),
            json!({"argv": ["cat", "/root/who.txt"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stdout"], "group-one\n");
    let (st, _) = d.get("/v1/sandboxes/agent-admin").await;
    assert_eq!(st, 404, "the channel owner's sandbox was not used");
    // Its sessions are its own.
    let sessions: Vec<String> = log
        .iter()
        .map(|m| m["message"]["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(sessions[0], sessions[1]);
}

/// A task scheduled from a group's chat posts each result back to that
/// group (issue 10 part 7, issue 11 part 5), once, through the durable
/// queue; the run record has it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_scheduled_in_a_group_posts_its_result_to_the_group() {
    let mock = MockLlm::start([]).await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    let d = daemon(&mock).await;
    add_channel(
        &d,
        json!({"kind": "telegram", "name": "tg", "token_env": "TG_TOKEN", "api_base": fake.url,
               "access": "open", "groups": ["-1001"]}),
    )
    .await;
    // `at` from now, not from before the daemon started: on a loaded
    // machine that start can take longer than the delay.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(12))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    mock.push(MockReply::tool(
        "schedule_task",
        json!({"name": "standup", "prompt": "say the standup line", "at": at}),
    ));
    mock.push(MockReply::text("scheduled it"));
    mock.push(MockReply::text("standup time, everyone"));
    fake.group(-1001, 5, 1, "@andy_bot remind us of the standup");
    wait_for(120, "the reply to the request", || async {
        fake.sent_texts().iter().any(|t| t.contains("scheduled it"))
    })
    .await;
    wait_for(60, "the task's result in the group", || async {
        fake.sent_texts().iter().any(|t| t.contains("standup time"))
    })
    .await;
    // Nothing more arrives: the result was posted once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let results: Vec<Value> = fake
        .calls("sendMessage")
        .into_iter()
        .filter(|b| b["text"].as_str().unwrap_or("").contains("standup time"))
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["chat_id"], "-1001", "{results:?}");
    assert!(
        results[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Task standup:"),
        "{results:?}"
    );
    // The task belongs to the group's agent and says where it posts.
    let log = messages(&d, "tg").await;
    let group_user = log[0]["message"]["user"].as_str().unwrap().to_string();
    let (st, task) = d
        .get(&format!("/v1/tasks/standup?owner={group_user}"))
        .await;
    assert_eq!(st, 200, "{task}");
    assert_eq!(task["deliver_to"]["channel"], "tg", "{task}");
    assert_eq!(task["deliver_to"]["chat"], "-1001", "{task}");
    assert_eq!(task["last_run"]["state"], "ok", "{task}");
    assert_eq!(mock.requests().len(), 3);
}

/// Webhook mode end to end: the channel sets the webhook to the daemon's
/// inbound endpoint; an update Telegram pushes there runs a tool turn and
/// the reply goes out; forged or unsigned requests are 401 and store
/// nothing; a redelivered update (same update_id) is processed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_message_in_tool_turn_reply_out_forgeries_refused() {
    let mock = MockLlm::start([
        MockReply::tool(
            "bash",
            json!({"command": "echo via-webhook > /root/hook.txt"}),
        ),
        MockReply::text("**Stored** it"),
    ])
    .await;
    let fake = FakeTelegram::start(TG_TOKEN).await;
    let d = daemon(&mock).await;
    let public = d.u("");
    // Webhook mode takes both a public URL and a secret token.
    let (st, v) = d
        .post(
            "/v1/channels",
            json!({"kind": "telegram", "name": "tgw", "token_env": "TG_TOKEN", "public_url": public}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("--secret-env"), "{v}");
    let out = d.cli(&[
        "channel",
        "add",
        "telegram",
        "--name",
        "tgw",
        "--token-env",
        "TG_TOKEN",
        "--webhook-secret-env",
        "TG_HOOK",
        "--public-url",
        &public,
        "--api-base",
        &fake.url,
        "--access",
        "open",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(20, "the webhook set", || async { fake.webhook().is_some() }).await;
    let endpoint = d.u("/v1/channels/tgw/events");
    assert_eq!(
        fake.webhook(),
        Some((endpoint.clone(), Some(TG_HOOK.to_string())))
    );
    wait_for(20, "connected", || async {
        d.get("/v1/channels/tgw").await.1["connected"] == true
    })
    .await;

    // Forged or unsigned requests to the endpoint: 401, nothing stored.
    let forged = json!({"update_id": 555, "message": {"message_id": 1, "date": 1,
        "from": {"id": 666, "is_bot": false, "first_name": "Eve"},
        "chat": {"id": 666, "type": "private"}, "text": "run rm -rf /"}});
    let http = reqwest::Client::new();
    for secret in [Some("hook-Secret_token-9f3f"), Some(""), None] {
        let mut r = http.post(&endpoint).json(&forged);
        if let Some(s) = secret {
            r = r.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "{secret:?}");
    }
    assert!(messages(&d, "tgw").await.is_empty());

    // Pushed by the service: a tool turn, the reply out.
    let update = fake.private(31, 1, "write it down");
    wait_for(120, "the reply", || async { !fake.sent_texts().is_empty() }).await;
    let sent = fake.calls("sendMessage");
    assert_eq!(sent[0]["chat_id"], "31");
    assert_eq!(sent[0]["text"], "<b>Stored</b> it");
    assert_eq!(fake.deliveries(), [(update, 200)]);
    let (st, v) = d
        .post(
            "/v1/sandboxes/agent-admin/exec",
            json!({"argv": ["cat", "/root/hook.txt"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stdout"], "via-webhook\n");

    // The same update again (its 200 was lost, say): answered, not rerun.
    let calls = mock.requests().len();
    fake.redeliver(update);
    wait_for(20, "the redelivery answered", || async {
        fake.deliveries().len() == 2
    })
    .await;
    assert_eq!(fake.deliveries()[1], (update, 200));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.requests().len(), calls);
    assert_eq!(fake.sent_texts().len(), 1);
    let log = messages(&d, "tgw").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["message"]["state"], "done");
    assert_eq!(log[0]["replies"][0]["part"]["state"], "sent");
    assert!(fake.calls("getUpdates").is_empty(), "never polled");

    // Removed: the webhook is deleted at the service.
    let out = d.cli(&["channel", "rm", "tgw"]);
    assert!(out.status.success());
    wait_for(10, "the webhook deleted", || async {
        fake.webhook().is_none()
    })
    .await;
}
