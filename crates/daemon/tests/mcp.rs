//! The MCP server at `/mcp` with the official MCP Python SDK (`mcp` from
//! PyPI, installed by scripts/test.sh) as the client, over streamable HTTP
//! and over stdio through `ironclaw mcp`: every tool, refusals as tool
//! errors, and one user never reaching another's sandbox.

mod common;

use std::path::PathBuf;

use common::chat;
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py")
}

/// Run the SDK scenario as `token`; what it saw.
async fn run_client(
    d: &common::Daemon,
    transport: &str,
    token: &str,
    box_name: &str,
    other: &str,
    ask: bool,
) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(client_script())
        .args([transport, box_name, other])
        .env("BASE", &d.url)
        .env("TOKEN", token)
        .env("IRONCLAW_BIN", common::workspace_bin("ironclaw"))
        .kill_on_drop(true);
    if ask {
        cmd.env("ASK", "1");
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.output())
        .await
        .expect("the MCP client finished within 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python MCP client ({transport}) failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {stdout}"))
}

fn check_scenario(seen: &Value, box_name: &str, other: &str) {
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "ask_agent",
            "file_read",
            "file_write",
            "sandbox_create",
            "sandbox_exec",
            "sandbox_list",
            "sandbox_remove"
        ]
    );
    assert_eq!(seen["create"]["error"], false, "{seen}");
    assert_eq!(seen["create"]["body"]["name"], box_name);
    assert_eq!(seen["exec"]["exit_code"], 3, "{seen}");
    assert_eq!(seen["exec"]["stdout"], "hi\n");
    assert_eq!(seen["exec"]["stderr"], "oops\n");
    assert_eq!(seen["exec_stdin"]["stdout"], "fed");
    assert_eq!(seen["exec_bad"]["error"], true);
    assert!(
        seen["exec_bad"]["text"].as_str().unwrap().contains("argv"),
        "{seen}"
    );
    assert_eq!(seen["write"]["size"], 10);
    assert_eq!(seen["read"]["content"], "hello mcp\n");
    assert_eq!(seen["read_missing"]["error"], true);
    assert!(seen["list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == box_name));
    assert!(
        !seen["list"].as_array().unwrap().iter().any(|n| n == other),
        "another user's sandbox is listed: {seen}"
    );
    // Another user's sandbox is exactly a missing one.
    for k in ["other", "other_read"] {
        assert_eq!(seen[k]["error"], true, "{seen}");
        assert_eq!(
            seen[k]["text"],
            format!("sandbox '{other}' not found"),
            "{seen}"
        );
    }
    assert_eq!(seen["remove"]["error"], false, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_mcp_python_sdk_over_http_and_stdio() {
    let mock = MockLlm::start([MockReply::text("the agent's answer")]).await;
    let d = chat::mock_daemon(&mock, "").await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    // Bob's sandbox, which Alice's tools must not reach.
    let (st, v) = d
        .call_as(
            &bob,
            reqwest::Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": "bobs", "image": "mini"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");

    let seen = run_client(&d, "http", &alice, "abox", "bobs", true).await;
    check_scenario(&seen, "abox", "bobs");
    assert_eq!(seen["ask"]["error"], false, "{seen}");
    let ask: Value = serde_json::from_str(seen["ask"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(ask["reply"], "the agent's answer");
    assert!(
        ask["session"].as_str().unwrap().starts_with("ses_"),
        "{ask}"
    );

    let seen = run_client(&d, "stdio", &alice, "sbox", "bobs", false).await;
    check_scenario(&seen, "sbox", "bobs");

    // Bob's sandbox is untouched; Alice's are gone.
    let (_, v) = d.get("/v1/sandboxes").await;
    let names: Vec<&str> = v["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["owner"] != "admin" || s["name"] == "bobs")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"bobs"), "{v}");
    assert!(!names.contains(&"abox") && !names.contains(&"sbox"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_refuses_missing_and_wrong_tokens_before_any_session() {
    let d = common::Daemon::start().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    for token in [None, Some("not-a-token")] {
        let mut r = d
            .http
            .post(d.u("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 401, "token {token:?}");
        assert!(resp.headers().get("mcp-session-id").is_none());
    }
    // With the token, the same request opens a session.
    let resp = d
        .http
        .post(d.u("/mcp"))
        .bearer_auth(&d.token)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("mcp-session-id").is_some());
}
