//! Users, tokens and isolation: a user reaches only their own sandboxes.

mod common;

use common::Daemon;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_sandboxes() {
    let d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    let (st, alice) = d.post("/v1/users", json!({"name": "alice"})).await;
    assert_eq!(st, 201, "{alice}");
    let alice_token = alice["token"].as_str().unwrap().to_string();
    let (_, bob) = d.post("/v1/users", json!({"name": "bob"})).await;
    let bob_token = bob["token"].as_str().unwrap().to_string();
    let (st, _) = d.post("/v1/users", json!({"name": "alice"})).await;
    assert_eq!(st, 409);

    let (st, v) = d
        .call_as(
            &alice_token,
            reqwest::Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": "alice-box"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, me) = d
        .call_as(&alice_token, reqwest::Method::GET, "/v1/me", None)
        .await;
    assert_eq!((st, me["user"].as_str()), (200, Some("alice")));

    // Bob cannot see, exec in, read from or remove Alice's sandbox: 404, as if missing.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/sandboxes/alice-box"),
        (reqwest::Method::DELETE, "/v1/sandboxes/alice-box"),
        (
            reqwest::Method::GET,
            "/v1/sandboxes/alice-box/files?path=/etc/passwd",
        ),
        (reqwest::Method::GET, "/v1/sandboxes/alice-box/console"),
    ] {
        let (st, v) = d.call_as(&bob_token, method.clone(), path, None).await;
        assert_eq!(st, 404, "{method} {path}: {v}");
    }
    let (st, _) = d
        .call_as(
            &bob_token,
            reqwest::Method::POST,
            "/v1/sandboxes/alice-box/exec",
            Some(json!({"argv": ["true"]})),
        )
        .await;
    assert_eq!(st, 404);
    let (_, list) = d
        .call_as(&bob_token, reqwest::Method::GET, "/v1/sandboxes", None)
        .await;
    assert!(list["sandboxes"].as_array().unwrap().is_empty(), "{list}");
    let (_, list) = d
        .call_as(&alice_token, reqwest::Method::GET, "/v1/sandboxes", None)
        .await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1);

    // Admin-only routes refuse users.
    let (st, _) = d
        .call_as(&bob_token, reqwest::Method::GET, "/v1/users", None)
        .await;
    assert_eq!(st, 403);
    let (st, _) = d
        .call_as(
            &bob_token,
            reqwest::Method::POST,
            "/v1/images",
            Some(json!({"name": "x", "from": "busybox"})),
        )
        .await;
    assert_eq!(st, 403);

    // Revoking a token locks its holder out at once.
    let (st, v) = d
        .req(reqwest::Method::DELETE, "/v1/users/bob/tokens", None)
        .await;
    assert_eq!((st, v["revoked"].as_u64()), (200, Some(1)));
    let (st, _) = d
        .call_as(&bob_token, reqwest::Method::GET, "/v1/sandboxes", None)
        .await;
    assert_eq!(st, 401);
    let (st, fresh) = d
        .post("/v1/users/bob/tokens", json!({"label": "new"}))
        .await;
    assert_eq!(st, 201);
    let (st, _) = d
        .call_as(
            fresh["token"].as_str().unwrap(),
            reqwest::Method::GET,
            "/v1/sandboxes",
            None,
        )
        .await;
    assert_eq!(st, 200);

    // Removing a user removes their sandboxes too.
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/users/alice", None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = d.get("/v1/sandboxes/alice-box").await;
    assert_eq!(st, 404);
    let (st, _) = d
        .call_as(&alice_token, reqwest::Method::GET, "/v1/me", None)
        .await;
    assert_eq!(st, 401);

    // The same through the CLI.
    let out = d.cli(&["user", "add", "carol"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("icu_"), "{token}");
    let (st, me) = d
        .call_as(&token, reqwest::Method::GET, "/v1/me", None)
        .await;
    assert_eq!((st, me["user"].as_str()), (200, Some("carol")));
    let ls = String::from_utf8_lossy(&d.cli(&["user", "ls"]).stdout).to_string();
    assert!(ls.contains("carol") && ls.contains("bob"), "{ls}");
    assert!(d
        .cli(&["user", "token", "carol", "--revoke"])
        .status
        .success());
    let (st, _) = d
        .call_as(&token, reqwest::Method::GET, "/v1/me", None)
        .await;
    assert_eq!(st, 401);
    assert!(d.cli(&["user", "rm", "carol"]).status.success());
    let out = d.cli(&["user", "rm", "carol"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("carol"));
}

/// `?token=` is for WebSocket upgrades only (browsers cannot set headers
/// there); anywhere else a token in the URL is refused with 401, even when
/// a valid header comes along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_only_on_websocket_routes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let d = Daemon::start().await;
    d.sandbox("dev", json!({})).await;
    let t = d.token.clone();
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/sandboxes?token={t}")),
        (reqwest::Method::GET, format!("/v1/me?token={t}")),
        (reqwest::Method::GET, format!("/v1/sandboxes/dev?token={t}")),
        (
            reqwest::Method::GET,
            format!("/v1/sandboxes/dev/files?path=/etc/hostname&token={t}"),
        ),
        (reqwest::Method::GET, format!("/v1/users?%74oken={t}")),
        // A WebSocket route, but not an upgrade.
        (
            reqwest::Method::GET,
            format!("/v1/sandboxes/dev/exec/ws?token={t}"),
        ),
        (reqwest::Method::GET, format!("/v1/chat/ws?token={t}")),
    ] {
        let r = d
            .http
            .request(method.clone(), d.u(&path))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(st, 401, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("WebSocket"),
            "{v}"
        );
        // With a valid header too.
        let (st, v) = d.req(method.clone(), &path, None).await;
        assert_eq!(st, 401, "{method} {path} with a header: {v}");
    }
    let (st, _) = d
        .post(
            &format!("/v1/sandboxes/dev/exec?token={t}"),
            json!({"argv": ["true"]}),
        )
        .await;
    assert_eq!(st, 401);
    // The header alone still works.
    let (st, _) = d.get("/v1/sandboxes/dev").await;
    assert_eq!(st, 200);
    // The WebSocket upgrades take it.
    let (mut ws, _) = tokio_tungstenite::connect_async(d.ws_url("/v1/sandboxes/dev/exec/ws"))
        .await
        .expect("exec ws with ?token=");
    ws.send(Message::Text(json!({"argv": ["echo", "hi"]}).to_string()))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) => out.extend_from_slice(&b[1..]),
            Message::Text(t) if t.contains("exit") => break,
            _ => {}
        }
    }
    assert_eq!(out, b"hi\n");
    let ok =
        tokio_tungstenite::connect_async(d.ws_url("/v1/sandboxes/dev/console/ws?session=main"))
            .await;
    assert!(ok.is_ok(), "console ws with ?token=");
    // A wrong query token on a WebSocket route is a plain 401.
    let bad = format!(
        "{}/v1/sandboxes/dev/exec/ws?token=icl_wrong",
        d.url.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("wrong token accepted: {:?}", other.map(|_| ())),
    }
}
