//! Agents end to end: a real daemon, a real sandbox, and a scripted LLM
//! (`ironclaw_agent::mock::MockLlm`) speaking the OpenAI wire format over
//! real HTTP with SSE.

mod common;

use std::time::Duration;

use common::chat::{self, connect as chat_ws, next_event, turn};
use common::Daemon;
use futures::SinkExt;
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = chat::MOCK_KEY;

async fn daemon_with(mock: &MockLlm, config: &str) -> Daemon {
    chat::mock_daemon(mock, config).await
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "text_delta")
        .map(|e| e["text"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_changes_files_in_the_users_sandbox_and_is_stored() {
    let mock = MockLlm::start([
        MockReply::text("Hello from the mock."),
        MockReply::tool(
            "write_file",
            json!({"path": "/root/notes/plan.txt", "content": "step one\n"}),
        ),
        MockReply::tool(
            "edit_file",
            json!({"path": "/root/notes/plan.txt", "old_text": "one", "new_text": "two"}),
        ),
        MockReply::tool(
            "bash",
            json!({"command": "cat /root/notes/plan.txt; echo $((6*7))"}),
        ),
        MockReply::text("The plan now says step two."),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let (mut ws, session) = chat_ws(&d, &d.token, None).await;

    let first = turn(&mut ws, "hi").await;
    assert_eq!(text_of(&first), "Hello from the mock.");
    assert!(
        first.iter().filter(|e| e["type"] == "text_delta").count() > 1,
        "text should stream in pieces: {first:?}"
    );

    let events = turn(&mut ws, "write a plan").await;
    let starts: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "tool_start")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["write_file", "edit_file", "bash"], "{events:?}");
    let bash_end = events.iter().rfind(|e| e["type"] == "tool_end").unwrap();
    assert_eq!(bash_end["is_error"], false, "{bash_end}");
    let output = bash_end["output"].as_str().unwrap();
    assert!(
        output.contains("step two") && output.contains("42"),
        "{output}"
    );
    assert_eq!(text_of(&events), "The plan now says step two.");
    let done = events.last().unwrap();
    assert!(
        done["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );

    // The file really changed inside the user's own sandbox.
    let out = d
        .exec("agent-admin", &["cat", "/root/notes/plan.txt"])
        .await;
    assert_eq!(out["stdout"], "step two\n");

    // Everything is stored: user, assistant tool calls, tool results, final answer.
    let (st, v) = d.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(st, 200);
    let msgs = v["messages"].as_array().unwrap();
    let roles: Vec<_> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
    assert_eq!(msgs[2]["content"][0]["text"], "write a plan");
    assert!(v["usage"]["turns"].as_u64().unwrap() >= 2);
    let (_, me) = d.get("/v1/me").await;
    assert_eq!(me["sandbox"], "agent-admin");
    assert!(me["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The model saw the tool results.
    let reqs = mock.requests();
    let last = reqs.last().unwrap().raw.clone();
    assert!(
        last.contains("step two"),
        "tool output not sent back to the model"
    );
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_enter_the_sandbox() {
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "env; cat /proc/1/environ; echo"})),
        MockReply::text("ok"),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let (mut ws, _) = chat_ws(&d, &d.token, None).await;
    let events = turn(&mut ws, "show me your environment").await;
    let out = events.iter().find(|e| e["type"] == "tool_end").unwrap()["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains("PATH="), "the command ran: {out}");
    assert!(
        !out.contains(KEY),
        "the provider key leaked into the sandbox environment"
    );
    // Nowhere on the sandbox's filesystem either. A canary file proves the
    // search itself works: it must be the only hit.
    let script = format!(
        "echo canary-7d1e > /root/canary; for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rl -e '{KEY}' -e canary-7d1e $d 2>/dev/null;; esac; done"
    );
    let v = d.exec("agent-admin", &["sh", "-c", &script]).await;
    assert_eq!(
        v["stdout"], "/root/canary\n",
        "found the key in the sandbox (or the search failed): {v}"
    );
    for pid in ["1", "self"] {
        let v = d
            .exec("agent-admin", &["cat", &format!("/proc/{pid}/environ")])
            .await;
        assert!(!v["stdout"].as_str().unwrap().contains(KEY));
    }
    // ... while the provider did get it.
    assert!(mock
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cancels_mid_stream_and_history_stays_consistent() {
    let slow: Vec<String> = (0..40).map(|i| format!("word{i} ")).collect();
    let mock = MockLlm::start([
        MockReply::Slow {
            chunks: slow,
            delay: Duration::from_millis(100),
        },
        MockReply::text("after the stop"),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let (mut ws, session) = chat_ws(&d, &d.token, None).await;
    ws.send(Message::Text(
        json!({"type": "message", "text": "talk slowly"}).to_string(),
    ))
    .await
    .unwrap();
    let first = next_event(&mut ws).await;
    assert_eq!(first["type"], "text_delta", "{first}");
    ws.send(Message::Text(json!({"type": "stop"}).to_string()))
        .await
        .unwrap();
    let mut events = vec![first];
    loop {
        let e = next_event(&mut ws).await;
        let done = e["type"] == "done";
        events.push(e);
        if done {
            break;
        }
    }
    assert_eq!(events.last().unwrap()["stopped"], "cancelled");
    assert!(
        text_of(&events).len() < 40 * 6,
        "the stream should have been cut short"
    );
    // The next turn works and the history alternates properly.
    let next = turn(&mut ws, "go on").await;
    assert_eq!(text_of(&next), "after the stop");
    let (_, v) = d.get(&format!("/v1/sessions/{session}")).await;
    let roles: Vec<_> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert!(v["messages"][1]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_retries_and_garbage_are_clear() {
    let mock = MockLlm::start([
        MockReply::error(503, "overloaded"),
        MockReply::text("recovered"),
        // Four attempts (the default retry policy), all failing.
        MockReply::error(500, "boom"),
        MockReply::error(500, "boom"),
        MockReply::error(500, "boom"),
        MockReply::error(500, "boom"),
        MockReply::Garbage("data: {not json\n\n".into()),
        MockReply::text("fine again"),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let (mut ws, session) = chat_ws(&d, &d.token, None).await;
    assert_eq!(
        text_of(&turn(&mut ws, "one").await),
        "recovered",
        "a 503 is retried"
    );

    let failed = turn(&mut ws, "two").await;
    let err = failed
        .iter()
        .find(|e| e["type"] == "error")
        .unwrap_or_else(|| panic!("an error event: {failed:?}"));
    assert!(err["message"].as_str().unwrap().contains("500"), "{err}");

    let garbage = turn(&mut ws, "three").await;
    let err = garbage
        .iter()
        .find(|e| e["type"] == "error")
        .unwrap_or_else(|| panic!("an error event: {garbage:?}"));
    assert!(!err["message"].as_str().unwrap().is_empty());

    assert_eq!(
        text_of(&turn(&mut ws, "four").await),
        "fine again",
        "the session still works"
    );
    let (_, v) = d.get(&format!("/v1/sessions/{session}")).await;
    let users: Vec<_> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        users,
        ["one", "two", "three", "four"],
        "every acknowledged message is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_private_and_new_starts_fresh() {
    let mock = MockLlm::start([MockReply::text("a"), MockReply::text("b")]).await;
    let d = daemon_with(&mock, "").await;
    let (_, alice) = d.post("/v1/users", json!({"name": "alice"})).await;
    let alice_token = alice["token"].as_str().unwrap().to_string();
    let (mut ws, first) = chat_ws(&d, &alice_token, None).await;
    turn(&mut ws, "hello").await;
    ws.send(Message::Text(
        json!({"type": "message", "text": "/new"}).to_string(),
    ))
    .await
    .unwrap();
    let e = next_event(&mut ws).await;
    assert_eq!(e["type"], "session");
    assert_ne!(e["id"].as_str().unwrap(), first);
    turn(&mut ws, "again").await;

    let list: Value = d
        .http
        .get(d.u("/v1/sessions"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    // The admin (another user) does not see Alice's session, nor her sandbox through chat.
    let (st, _) = d.get(&format!("/v1/sessions/{first}")).await;
    assert_eq!(st, 404);
    let (_, mine) = d.get("/v1/sessions").await;
    assert!(mine["sessions"].as_array().unwrap().is_empty());
    let r = d
        .http
        .get(d.u("/v1/sandboxes/agent-alice"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "alice owns her agent sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_endpoint_and_bad_input() {
    let mock = MockLlm::start([
        MockReply::text("forty-two"),
        MockReply::tool("bash", json!({"command": "echo streamed-tool"})),
        MockReply::text("streamed answer"),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let (st, v) = d.get("/v1/models").await;
    assert_eq!((st, v["data"][0]["id"].as_str()), (200, Some("ironclaw")));

    let (st, v) = d
        .post(
            "/v1/chat/completions",
            json!({"model": "ironclaw", "messages": [{"role": "user", "content": "6*7?"}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "forty-two");

    let resp = d
        .http
        .post(d.u("/v1/chat/completions"))
        .bearer_auth(&d.token)
        .json(&json!({"model": "ironclaw", "stream": true, "messages": [{"role": "user", "content": "stream it"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let content: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "streamed answer");

    // Bad input: each a clear error, nothing run.
    let (st, v) = d
        .post(
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(st, 404);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ironclaw"),
        "lists the available ones: {v}"
    );
    let (st, _) = d
        .post(
            "/v1/chat/completions",
            json!({"model": "ironclaw", "messages": []}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = d
        .post(
            "/v1/chat/completions",
            json!({"model": "ironclaw", "messages": [{"role": "user", "content": 5}]}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = d.post("/v1/chat/completions", json!({"model": "ironclaw", "messages": [{"role": "user", "content": "x".repeat(300_000)}]})).await;
    assert!(st == 413, "oversized message: {st}");
    assert_eq!(mock.remaining(), 0, "bad requests never reached the model");
}

/// The official `openai` Python package, unchanged, against IronClaw
/// (installed by scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_client_works() {
    let mock = MockLlm::start([
        MockReply::text("plain answer"),
        MockReply::tool("bash", json!({"command": "echo from-the-sandbox"})),
        MockReply::text("streamed answer"),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let script = r#"
import os, openai
c = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["TOKEN"])
print("models:", [m.id for m in c.models.list().data])
r = c.chat.completions.create(model="ironclaw", messages=[{"role": "user", "content": "hi"}])
print("reply:", r.choices[0].message.content)
s = c.chat.completions.create(model="ironclaw", messages=[{"role": "user", "content": "run it"}], stream=True)
print("stream:", "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices))
try:
    c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    print("error:", e.status_code)
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("BASE", &d.url)
        .env("TOKEN", &d.token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("models: ['ironclaw']"), "{stdout}");
    assert!(stdout.contains("reply: plain answer"), "{stdout}");
    assert!(stdout.contains("stream: streamed answer"), "{stdout}");
    assert!(stdout.contains("error: 404"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_ask_and_chat() {
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "echo from-cli-tool"})),
        MockReply::text("asked and answered"),
        MockReply::text("first reply"),
        MockReply::text("second reply"),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let out = d.cli(&["ask", "what", "is", "up?"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "asked and answered"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[bash]") && stderr.contains("from-cli-tool"),
        "tool calls shown on stderr: {stderr}"
    );

    // The REPL reads lines from stdin until EOF.
    let mut child = d
        .cli_command(&["chat", "--new"])
        .env("IRONCLAW_TOKEN", &d.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\n").unwrap();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("first reply") && stdout.contains("second reply"),
        "{stdout}"
    );
    let (_, v) = d.get("/v1/sessions").await;
    assert_eq!(
        v["sessions"].as_array().unwrap().len(),
        2,
        "ask used one session, chat --new another"
    );
}

/// The user's sandbox is stopped when idle and started again (files kept)
/// by the next message; a long conversation is compacted with the summary
/// stored and nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sandbox_stops_and_restarts_and_history_compacts() {
    let mock = MockLlm::start([
        MockReply::tool(
            "write_file",
            json!({"path": "/root/keep.txt", "content": "kept across stops\n"}),
        ),
        MockReply::text("written"),
        MockReply::tool("bash", json!({"command": "cat /root/keep.txt"})),
        MockReply::text("read it"),
    ])
    .await;
    let config = format!(
        "agent_idle_stop_secs = 1\n\n[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [{{ name = \"tiny\", id = \"mock-model\", context_window = 4000, max_output_tokens = 256 }}]\n",
        mock.openai_base()
    );
    let d = Daemon::start_with(&config).await;
    d.build_image("mini", "busybox").await;
    let (mut ws, session) = chat_ws(&d, &d.token, None).await;
    turn(&mut ws, "write it").await;
    assert_eq!(
        d.get("/v1/sandboxes/agent-admin").await.1["state"],
        "running"
    );

    let mut state = Value::Null;
    for _ in 0..100 {
        state = d.get("/v1/sandboxes/agent-admin").await.1["state"].clone();
        if state == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        state, "stopped",
        "the idle sandbox should have been stopped"
    );

    let events = turn(&mut ws, "read it back").await;
    let out = events.iter().find(|e| e["type"] == "tool_end").unwrap()["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        out.contains("kept across stops"),
        "started again with its files: {out}"
    );

    // Long messages fill the 4000-token window; the summariser's answer and
    // the turns' answers all come from the script (a turn and, at most, one
    // compaction before it: two replies a turn).
    for i in 0..16 {
        mock.push(MockReply::text(format!("answer {i}")));
    }
    let long = "lorem ipsum dolor sit amet ".repeat(100);
    let mut compacted = false;
    for i in 0..8 {
        let events = turn(&mut ws, &format!("{i}: {long}")).await;
        assert!(
            events.last().unwrap()["error"].is_null(),
            "{:?}",
            events.last()
        );
        compacted |= events.iter().any(|e| e["type"] == "compacted");
    }
    assert!(compacted, "a compacted event was streamed");
    let (_, v) = d.get(&format!("/v1/sessions/{session}")).await;
    let msgs = v["messages"].as_array().unwrap();
    let summary = msgs
        .iter()
        .find(|m| {
            m["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with(ironclaw_agent::compaction::SUMMARY_PREFIX))
        })
        .expect("the summary is stored");
    let covered = msgs
        .iter()
        .filter(|m| m["summarized_by"] == summary["id"])
        .count();
    assert!(
        covered >= 2,
        "the summarised messages are marked, not deleted"
    );
    assert_eq!(
        msgs.iter()
            .filter(|m| m["role"] == "user"
                && m["content"][0]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("lorem")))
            .count(),
        8
    );
}

/// Prompt caching through the daemon: the provider's cached prompt tokens
/// reach the turn's `done` event and are stored with the usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_prompt_tokens_are_recorded_with_the_usage() {
    let mock = MockLlm::start_caching([
        MockReply::tool("bash", json!({"command": "seq 1 400"})),
        MockReply::text("Counted to 400."),
        MockReply::text("Still 400."),
    ])
    .await;
    let d = daemon_with(&mock, "").await;
    let (mut ws, session) = chat_ws(&d, &d.token, None).await;
    turn(&mut ws, "count to 400").await;
    let events = turn(&mut ws, "and now?").await;
    let done = events.last().unwrap();
    let cached = done["usage"]["cache_read_tokens"].as_u64().unwrap();
    let input = done["usage"]["input_tokens"].as_u64().unwrap();
    assert!(cached >= 1024 && cached < input, "{done}");
    // The mock reported them in OpenAI's shape; the daemon stored them.
    let (_, me) = d.get("/v1/me").await;
    assert!(
        me["usage"]["cache_read_tokens"].as_u64().unwrap() >= cached,
        "{me}"
    );
    let (_, v) = d.get(&format!("/v1/sessions/{session}")).await;
    assert!(v["usage"]["cache_read_tokens"].as_u64().unwrap() >= cached);
    assert_eq!(
        v["usage"]["cache_write_tokens"], 0,
        "OpenAI reports no writes"
    );
}
