//! Sandbox ownership: names live in their owner's namespace, a user's agent
//! works only in the sandbox bound to them, and nothing of another user's
//! can be seen, reached or influenced by any name or id. The admin sees all
//! (with owners) and reaches another user's sandbox with `?owner=USER`.

mod common;

use std::time::Duration;

use common::chat::{self, chat_turn, next_event};
use common::Daemon;
use futures::SinkExt;
use ironclaw_agent::mock::{MockLlm, MockReply};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn daemon_with(mock: &MockLlm) -> Daemon {
    chat::mock_daemon(mock, "").await
}

async fn create(d: &Daemon, token: &str, name: &str) {
    let (st, v) = d
        .call_as(
            token,
            Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": name, "image": "mini"})),
        )
        .await;
    assert_eq!(st, 201, "create {name}: {v}");
}

async fn exec(d: &Daemon, token: &str, path: &str, argv: &[&str]) -> Value {
    let (st, v) = d
        .call_as(token, Method::POST, path, Some(json!({"argv": argv})))
        .await;
    assert_eq!(st, 200, "exec {path} {argv:?}: {v}");
    v
}

/// The status and body of a refused WebSocket upgrade.
async fn ws_refusal(d: &Daemon, token: &str, path: &str) -> (u16, Value) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", d.url.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("WebSocket {path} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(e) => panic!("WebSocket {path}: {e}"),
    }
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every sandbox route, REST and WebSocket, for `name` (and an extra query).
async fn every_route(
    d: &Daemon,
    token: &str,
    name: &str,
    query: &str,
) -> Vec<(String, u16, Value)> {
    let q = |rest: &str| {
        let p = format!("/v1/sandboxes/{name}{rest}");
        if query.is_empty() {
            p
        } else if p.contains('?') {
            format!("{p}&{query}")
        } else {
            format!("{p}?{query}")
        }
    };
    let rest: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, q(""), None),
        (Method::GET, q("/info"), None),
        (Method::GET, q("/logs"), None),
        (Method::POST, q("/exec"), Some(json!({"argv": ["true"]}))),
        (Method::GET, q("/files?path=/etc/hostname"), None),
        (
            Method::PUT,
            q("/files?path=/root/planted"),
            Some(json!("x")),
        ),
        (Method::GET, q("/fs/stat?path=/"), None),
        (Method::GET, q("/fs/list?path=/root"), None),
        (
            Method::POST,
            q("/fs/mkdir"),
            Some(json!({"path": "/root/x"})),
        ),
        (
            Method::POST,
            q("/fs/remove"),
            Some(json!({"path": "/root", "recursive": true})),
        ),
        (
            Method::POST,
            q("/fs/rename"),
            Some(json!({"from": "/root", "to": "/gone"})),
        ),
        (Method::GET, q("/console"), None),
        (Method::DELETE, q("/console/main"), None),
        (Method::POST, q("/stop"), Some(json!({}))),
        (Method::POST, q("/start"), Some(json!({}))),
        (Method::DELETE, q(""), None),
    ];
    let mut out = Vec::new();
    for (m, path, body) in rest {
        let (st, v) = d.call_as(token, m.clone(), &path, body).await;
        out.push((format!("{m} {path}"), st, v));
    }
    for path in [q("/exec/ws"), q("/console/ws?session=main")] {
        let (st, v) = ws_refusal(d, token, &path).await;
        out.push((format!("WS {path}"), st, v));
    }
    out
}

/// Every route answers exactly what it answers for a name nobody has.
async fn assert_unreachable(d: &Daemon, token: &str, name: &str, query: &str) {
    let missing = "no-such-sandbox-zz";
    let reference = every_route(d, token, missing, "").await;
    let got = every_route(d, token, name, query).await;
    for ((what, st, v), (_, ref_st, ref_v)) in got.iter().zip(&reference) {
        assert_eq!(*st, 404, "{what}: {v}");
        assert_eq!(*ref_st, 404, "reference {what}: {ref_v}");
        assert_eq!(
            message(ref_v),
            format!("sandbox '{missing}' not found"),
            "{what}"
        );
        assert_eq!(
            message(v),
            message(ref_v).replace(missing, name),
            "{what}: the answer differs from a missing name's"
        );
        assert_eq!(v["error"]["code"], ref_v["error"]["code"], "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_use_only_their_bound_sandbox_and_others_are_unreachable() {
    let mock = MockLlm::start([
        MockReply::tool(
            "write_file",
            json!({"path": "/root/owner.txt", "content": "alice was here\n"}),
        ),
        MockReply::text("written"),
    ])
    .await;
    let d = daemon_with(&mock).await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;

    // Bob squats on the names Alice's (and the admin's) agent would get,
    // and other likely ones.
    for name in ["agent-alice", "agent-admin", "alice", "ironclaw"] {
        create(&d, &bob, name).await;
    }
    // A name another user has is simply free in one's own namespace.
    create(&d, &alice, "alice-box").await;
    create(&d, &bob, "alice-box").await;
    exec(
        &d,
        &bob,
        "/v1/sandboxes/alice-box/exec",
        &["sh", "-c", "echo bob > /root/who"],
    )
    .await;
    exec(
        &d,
        &alice,
        "/v1/sandboxes/alice-box/exec",
        &["sh", "-c", "echo alice > /root/who"],
    )
    .await;
    let v = exec(
        &d,
        &bob,
        "/v1/sandboxes/alice-box/exec",
        &["cat", "/root/who"],
    )
    .await;
    assert_eq!(v["stdout"], "bob\n");

    // Alice chats: her tool call runs in HER sandbox, bound to her.
    let (session, events) = chat_turn(&d, &alice, "write it down").await;
    let end = events.iter().find(|e| e["type"] == "tool_end").unwrap();
    assert_eq!(end["is_error"], false, "{end}");
    let (_, me) = d.call_as(&alice, Method::GET, "/v1/me", None).await;
    let bound = me["sandbox"].as_str().unwrap().to_string();
    assert_eq!(bound, "agent-alice", "display name in her own namespace");
    let v = exec(
        &d,
        &alice,
        &format!("/v1/sandboxes/{bound}/exec"),
        &["cat", "/root/owner.txt"],
    )
    .await;
    assert_eq!(v["stdout"], "alice was here\n");
    // Bob's `agent-alice` never saw the tool call.
    let v = exec(
        &d,
        &bob,
        "/v1/sandboxes/agent-alice/exec",
        &["cat", "/root/owner.txt"],
    )
    .await;
    assert_ne!(
        v["exit_code"], 0,
        "the tool call landed in Bob's sandbox: {v}"
    );
    // Bob has no agent sandbox yet (his `agent-admin` is not the admin's either).
    let (_, me) = d.call_as(&bob, Method::GET, "/v1/me", None).await;
    assert_eq!(me["sandbox"], Value::Null);

    // Bob guesses Alice's names and the internal ids (which the API never
    // shows; taken from the data dir here): every route is the 404 of a
    // name that does not exist, with ?owner=alice too.
    let mut guesses = vec!["alice-only".to_string()];
    create(&d, &alice, "alice-only").await;
    for e in std::fs::read_dir(d.data_dir().join("sandboxes")).unwrap() {
        guesses.push(e.unwrap().file_name().to_string_lossy().to_string());
    }
    assert!(guesses.len() > 5, "{guesses:?}");
    for name in &guesses {
        assert_unreachable(&d, &bob, name, "").await;
    }
    assert_unreachable(&d, &bob, "alice-only", "owner=alice").await;
    assert_unreachable(&d, &bob, "agent-alice", "owner=alice").await;
    assert_unreachable(&d, &bob, "alice-box", "owner=alice").await;
    // Alice's things are intact after all that.
    let v = exec(
        &d,
        &alice,
        "/v1/sandboxes/alice-box/exec",
        &["cat", "/root/who"],
    )
    .await;
    assert_eq!(v["stdout"], "alice\n");
    let (st, v) = d
        .call_as(&alice, Method::GET, "/v1/sandboxes/alice-only", None)
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("running")), "{v}");
    // Bob's listing holds only his own, with ?owner=alice too.
    for q in ["", "?owner=alice"] {
        let (st, list) = d
            .call_as(&bob, Method::GET, &format!("/v1/sandboxes{q}"), None)
            .await;
        assert_eq!(st, 200);
        let list = list["sandboxes"].as_array().unwrap();
        assert!(list.iter().all(|s| s["owner"] == "bob"), "{list:?}");
    }
    // Image listings count only one's own sandboxes (Bob has 5 on `mini`,
    // Alice 3 more); the admin's count is everyone's.
    let (_, imgs) = d.call_as(&bob, Method::GET, "/v1/images", None).await;
    let mini = |v: &Value| {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "mini")
            .unwrap()["in_use"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(mini(&imgs), 5, "{imgs}");
    let (_, imgs) = d.get("/v1/images").await;
    assert_eq!(mini(&imgs), 8, "{imgs}");
    // Bob cannot create in Alice's namespace.
    let (st, _) = d
        .call_as(
            &bob,
            Method::POST,
            "/v1/sandboxes?owner=alice",
            Some(json!({"name": "planted", "image": "mini"})),
        )
        .await;
    assert_eq!(st, 403);

    // Chat sessions: Alice's id is a 404 for Bob, like a made-up one.
    let made_up = "ses_0000000000000000";
    for (m, p) in [
        (Method::GET, "/v1/sessions/"),
        (Method::DELETE, "/v1/sessions/"),
    ] {
        let (st, v) = d
            .call_as(&bob, m.clone(), &format!("{p}{session}"), None)
            .await;
        let (ref_st, ref_v) = d
            .call_as(&bob, m.clone(), &format!("{p}{made_up}"), None)
            .await;
        assert_eq!((st, ref_st), (404, 404), "{m} {p}: {v}");
        assert_eq!(message(&v), message(&ref_v).replace(made_up, &session));
    }
    let (st, _) = ws_refusal(&d, &bob, &format!("/v1/chat/ws?session={session}")).await;
    assert_eq!(st, 404);
    let (_, list) = d.call_as(&bob, Method::GET, "/v1/sessions", None).await;
    assert!(list["sessions"].as_array().unwrap().is_empty(), "{list}");
    let (st, v) = d
        .call_as(
            &alice,
            Method::GET,
            &format!("/v1/sessions/{session}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "Alice's session survived Bob's delete: {v}");

    // The OpenAI-compatible endpoint: models are agents, not sandboxes or
    // users; any other name is the same 404.
    let completion =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let (ref_st, ref_v) = d
        .call_as(
            &bob,
            Method::POST,
            "/v1/chat/completions",
            Some(completion("no-such-model")),
        )
        .await;
    assert_eq!(ref_st, 404, "{ref_v}");
    for model in ["agent-alice", "alice", "alice-only", &session] {
        let (st, v) = d
            .call_as(
                &bob,
                Method::POST,
                "/v1/chat/completions",
                Some(completion(model)),
            )
            .await;
        assert_eq!(st, 404, "{model}: {v}");
        assert_eq!(message(&v), message(&ref_v).replace("no-such-model", model));
    }

    // The admin sees everyone's, each with its owner...
    let (_, all) = d.get("/v1/sandboxes").await;
    let mut seen: Vec<(String, String)> = all["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["owner"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = [
        ("alice", "agent-alice"),
        ("alice", "alice-box"),
        ("alice", "alice-only"),
        ("bob", "agent-admin"),
        ("bob", "agent-alice"),
        ("bob", "alice"),
        ("bob", "alice-box"),
        ("bob", "ironclaw"),
    ]
    .iter()
    .map(|(o, n)| (o.to_string(), n.to_string()))
    .collect();
    assert_eq!(seen, want);
    let (_, only) = d.get("/v1/sandboxes?owner=alice").await;
    assert_eq!(only["sandboxes"].as_array().unwrap().len(), 3, "{only}");
    // ...and reaches them with ?owner=; without it he means his own.
    let v = exec(
        &d,
        &d.token,
        "/v1/sandboxes/agent-alice/exec?owner=alice",
        &["cat", "/root/owner.txt"],
    )
    .await;
    assert_eq!(v["stdout"], "alice was here\n");
    let v = exec(
        &d,
        &d.token,
        "/v1/sandboxes/alice-box/exec?owner=bob",
        &["cat", "/root/who"],
    )
    .await;
    assert_eq!(v["stdout"], "bob\n");
    let (st, v) = d.get("/v1/sandboxes/alice-only").await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = d.get("/v1/sandboxes/alice-only?owner=alice").await;
    assert_eq!((st, v["owner"].as_str()), (200, Some("alice")), "{v}");
    // The admin creates in a user's namespace with ?owner= (a known user only).
    let (st, v) = d
        .post(
            "/v1/sandboxes?owner=alice",
            json!({"name": "from-admin", "image": "mini"}),
        )
        .await;
    assert_eq!((st, v["owner"].as_str()), (201, Some("alice")), "{v}");
    let (st, _) = d
        .post(
            "/v1/sandboxes?owner=nobody",
            json!({"name": "from-admin", "image": "mini"}),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = d
        .req(Method::DELETE, "/v1/sandboxes/from-admin?owner=alice", None)
        .await;
    assert_eq!(st, 204);

    // The CLI: an OWNER column, `owner` in --json, and --owner.
    let out = d.cli(&["sandbox", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("OWNER"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["agent-alice", "bob"])),
        "{text}"
    );
    let out = d.cli(&["sandbox", "ls", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 8);
    assert!(v["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["owner"].is_string()));
    let out = d.cli(&[
        "--owner",
        "alice",
        "exec",
        "alice-box",
        "--",
        "cat",
        "/root/who",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\n", "{out:?}");
    let out = d.cli(&["exec", "alice-box", "--", "cat", "/root/who"]);
    assert!(
        !out.status.success(),
        "the admin's own namespace has no alice-box"
    );
    let out = d.cli(&["sandbox", "show", "alice-box", "--owner", "bob", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["owner"], "bob");
    let local = d.data_dir().join("who.txt");
    let out = d.cli(&[
        "--owner",
        "alice",
        "cp",
        "alice-box:/root/who",
        local.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "alice\n");
    let out = d.cli(&["--owner", "alice", "console", "ls", "alice-box"]);
    assert!(out.status.success(), "{out:?}");

    // A user's agent works in the bound sandbox even when its name is
    // taken in the user's own namespace first.
    let carol = d.add_user("carol").await;
    create(&d, &carol, "agent-carol").await;
    mock.push(MockReply::tool(
        "write_file",
        json!({"path": "/root/owner.txt", "content": "carol\n"}),
    ));
    mock.push(MockReply::text("ok"));
    chat_turn(&d, &carol, "write").await;
    let (_, me) = d.call_as(&carol, Method::GET, "/v1/me", None).await;
    let bound = me["sandbox"].as_str().unwrap().to_string();
    assert_ne!(bound, "agent-carol");
    let v = exec(
        &d,
        &carol,
        &format!("/v1/sandboxes/{bound}/exec"),
        &["cat", "/root/owner.txt"],
    )
    .await;
    assert_eq!(v["stdout"], "carol\n");
    let v = exec(
        &d,
        &carol,
        "/v1/sandboxes/agent-carol/exec",
        &["cat", "/root/owner.txt"],
    )
    .await;
    assert_ne!(v["exit_code"], 0, "{v}");
}

/// Two first turns at once (two sessions) make one agent sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_turns_make_one_agent_sandbox() {
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "echo ok"})),
        MockReply::tool("bash", json!({"command": "echo ok"})),
        MockReply::text("one"),
        MockReply::text("two"),
    ])
    .await;
    let d = daemon_with(&mock).await;
    let dave = d.add_user("dave").await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let (st, s) = d
            .call_as(&dave, Method::POST, "/v1/sessions", Some(json!({})))
            .await;
        assert_eq!(st, 201, "{s}");
        let url = format!(
            "{}/v1/chat/ws?token={dave}&session={}",
            d.url.replacen("http", "ws", 1),
            s["id"].as_str().unwrap()
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(next_event(&mut ws).await["type"], "session");
        sockets.push(ws);
    }
    for ws in &mut sockets {
        ws.send(Message::Text(
            json!({"type": "message", "text": "hi"}).to_string(),
        ))
        .await
        .unwrap();
    }
    for ws in &mut sockets {
        loop {
            let e = next_event(ws).await;
            if e["type"] == "tool_end" {
                assert_eq!(e["is_error"], false, "{e}");
            }
            if e["type"] == "done" {
                assert_eq!(e["error"], Value::Null, "{e}");
                break;
            }
        }
    }
    let (_, list) = d.call_as(&dave, Method::GET, "/v1/sandboxes", None).await;
    let names: Vec<_> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["agent-dave"]);
}

/// Same names under two owners survive a daemon restart and a crash: each
/// is re-adopted (or restarted, or left stopped) as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_names_under_two_owners_reconcile_after_restarts() {
    let mut d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    for (token, who) in [(&alice, "alice"), (&bob, "bob")] {
        create(&d, token, "dev").await;
        create(&d, token, "idle").await;
        exec(
            &d,
            token,
            "/v1/sandboxes/dev/exec",
            &["sh", "-c", &format!("echo {who} > /root/who")],
        )
        .await;
    }
    let (st, _) = d
        .call_as(
            &bob,
            Method::POST,
            "/v1/sandboxes/idle/stop",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200);
    let pid = |v: &Value| v["pid"].as_i64();
    let (_, a_before) = d
        .call_as(&alice, Method::GET, "/v1/sandboxes/dev", None)
        .await;
    let (_, b_before) = d
        .call_as(&bob, Method::GET, "/v1/sandboxes/dev", None)
        .await;
    assert_ne!(pid(&a_before), pid(&b_before));

    d.stop_daemon();
    d.spawn();
    let (_, a_after) = d
        .call_as(&alice, Method::GET, "/v1/sandboxes/dev", None)
        .await;
    let (_, b_after) = d
        .call_as(&bob, Method::GET, "/v1/sandboxes/dev", None)
        .await;
    assert_eq!(pid(&a_after), pid(&a_before), "re-adopted: {a_after}");
    assert_eq!(pid(&b_after), pid(&b_before), "re-adopted: {b_after}");
    for (token, who) in [(&alice, "alice"), (&bob, "bob")] {
        let v = exec(&d, token, "/v1/sandboxes/dev/exec", &["cat", "/root/who"]).await;
        assert_eq!(v["stdout"], format!("{who}\n"));
    }
    let (_, v) = d
        .call_as(&bob, Method::GET, "/v1/sandboxes/idle", None)
        .await;
    assert_eq!(v["state"], "stopped", "{v}");
    let (_, v) = d
        .call_as(&alice, Method::GET, "/v1/sandboxes/idle", None)
        .await;
    assert_eq!(v["state"], "running", "{v}");

    // Kill Bob's dev while the daemon is down: it is restarted, Alice's re-adopted.
    d.kill_daemon();
    unsafe { libc::kill(pid(&b_before).unwrap() as i32, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.spawn();
    let (_, a) = d
        .call_as(&alice, Method::GET, "/v1/sandboxes/dev", None)
        .await;
    let (_, b) = d
        .call_as(&bob, Method::GET, "/v1/sandboxes/dev", None)
        .await;
    assert_eq!(pid(&a), pid(&a_before), "{a}");
    assert_eq!(b["state"], "running", "{b}");
    assert_ne!(pid(&b), pid(&b_before), "{b}");
    let v = exec(&d, &bob, "/v1/sandboxes/dev/exec", &["cat", "/root/who"]).await;
    assert_eq!(v["stdout"], "bob\n", "files kept across the restart");
    let (_, all) = d.get("/v1/sandboxes").await;
    assert_eq!(all["sandboxes"].as_array().unwrap().len(), 4);
}
