//! Agent memory end to end: a real daemon, real agent sandboxes whose
//! memory files the agent writes through its tools, the host index, the
//! API and the CLI, with the scripted mock LLM. The local embedder
//! (all-MiniLM-L6-v2) is used when IRONCLAW_MINILM_DIR names its weights
//! (scripts/test.sh sets it); otherwise these run with text search only
//! and say so.

mod common;

use common::chat::{self, chat_turn, MOCK_KEY};
use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use reqwest::Method;
use serde_json::{json, Value};

/// `[memory]` with the local embedder when its weights are there.
fn memory_config() -> (String, bool) {
    match std::env::var("IRONCLAW_MINILM_DIR") {
        Ok(dir) if !dir.is_empty() => (
            format!("[memory]\nembedder = \"local\"\nweights_dir = \"{dir}\"\n"),
            true,
        ),
        _ => {
            eprintln!("local embedder skipped: IRONCLAW_MINILM_DIR is not set (scripts/fetch-minilm.sh); testing with text search only");
            ("[memory]\nembedder = \"none\"\n".into(), false)
        }
    }
}

async fn search(d: &Daemon, token: &str, path: &str, query: &str) -> (u16, Value) {
    d.call_as(token, Method::POST, path, Some(json!({"query": query})))
        .await
}

async fn exec_as(d: &Daemon, token: &str, sandbox: &str, script: &str) {
    let (st, v) = d
        .call_as(
            token,
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/exec"),
            Some(json!({"argv": ["sh", "-c", script]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
}

const NOTE: &str = "# Notes\n\nThe user's boat is called Seagull and is moored in Kiel.\n";
const DAILY: &str = "/root/memory/2026-01-02.md";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_written_by_the_agent_are_searched_reindexed_and_kept_per_user() {
    let (mem, local) = memory_config();
    let mock = MockLlm::start([
        MockReply::tool("write_file", json!({"path": DAILY, "content": NOTE})),
        MockReply::text("Noted."),
    ])
    .await;
    let d = chat::mock_daemon(&mock, &mem).await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    let (_, events) = chat_turn(&d, &alice, "remember: my boat is Seagull, in Kiel").await;
    assert!(events.iter().any(|e| e["type"] == "tool_end"), "{events:?}");

    // Indexed by the write itself, before any search or reindex.
    let (st, s) = d
        .call_as(&alice, Method::GET, "/v1/memory/status", None)
        .await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(
        (s["user"].clone(), s["files"].clone()),
        (json!("alice"), json!(1)),
        "{s}"
    );
    assert!(s["chunks"].as_u64().unwrap() >= 1);
    if local {
        assert_eq!(s["mode"], "hybrid", "{s}");
        assert_eq!(s["with_vectors"], s["chunks"], "{s}");
        assert!(s["fallback"].is_null());
    } else {
        assert_eq!(s["mode"], "text");
        assert!(s["fallback"]
            .as_str()
            .unwrap()
            .contains("no embedder configured"));
    }

    let (st, r) = search(&d, &alice, "/v1/memory/search", "where is the boat Seagull").await;
    assert_eq!(st, 200, "{r}");
    let hit = &r["hits"][0];
    assert_eq!(hit["path"], DAILY, "{r}");
    assert_eq!(hit["start_line"], 1);
    assert!(hit["snippet"].as_str().unwrap().contains("moored in Kiel"));
    assert!(hit["score"].as_f64().unwrap() > 0.0);
    if local {
        assert_eq!(r["mode"], "hybrid");
        // By meaning: no word of the note but "the".
        let (_, r) = search(&d, &alice, "/v1/memory/search", "sailing vessel harbour").await;
        assert_eq!(r["hits"][0]["path"], DAILY, "{r}");
    } else {
        assert!(
            r["fallback"].as_str().unwrap().contains("text search only"),
            "{r}"
        );
    }

    // Reindex on demand: everything reread, nothing changed.
    let (st, x) = d
        .call_as(&alice, Method::POST, "/v1/memory/reindex", None)
        .await;
    assert_eq!(st, 200, "{x}");
    assert_eq!(
        (
            x["files"].clone(),
            x["indexed"].clone(),
            x["unchanged"].clone()
        ),
        (json!(1), json!(0), json!(1)),
        "{x}"
    );
    assert_eq!(x["embedded"], 0);

    // Changed behind the tools' back (bash): the next search stats the
    // files and reindexes what changed.
    exec_as(
        &d,
        &alice,
        "agent-alice",
        "echo 'The car is a red Volvo.' >> /root/memory/2026-01-02.md && printf '# Me\\n\\nPrefers tea over coffee.\\n' > /root/MEMORY.md",
    )
    .await;
    let (_, r) = search(&d, &alice, "/v1/memory/search", "Volvo").await;
    assert_eq!(r["hits"][0]["path"], DAILY, "{r}");
    assert!(r["hits"][0]["snippet"]
        .as_str()
        .unwrap()
        .contains("red Volvo"));
    let (_, r) = search(&d, &alice, "/v1/memory/search", "tea coffee").await;
    assert_eq!(r["hits"][0]["path"], "/root/MEMORY.md", "{r}");
    let (_, x) = d
        .call_as(&alice, Method::POST, "/v1/memory/reindex", None)
        .await;
    assert_eq!(
        (
            x["files"].clone(),
            x["indexed"].clone(),
            x["unchanged"].clone()
        ),
        (json!(2), json!(0), json!(2)),
        "{x}"
    );
    // One more edit and a removal: the reindex counts them.
    exec_as(
        &d,
        &alice,
        "agent-alice",
        "echo 'Lives in Hamburg.' >> /root/MEMORY.md && rm /root/memory/2026-01-02.md",
    )
    .await;
    let (_, x) = d
        .call_as(&alice, Method::POST, "/v1/memory/reindex", None)
        .await;
    assert_eq!(
        (
            x["files"].clone(),
            x["indexed"].clone(),
            x["unchanged"].clone(),
            x["removed"].clone()
        ),
        (json!(1), json!(1), json!(0), json!(1)),
        "{x}"
    );
    let (_, r) = search(&d, &alice, "/v1/memory/search", "Seagull").await;
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["path"] != DAILY),
        "{r}"
    );

    // Bob sees nothing of Alice's, and cannot name her.
    let (st, r) = search(&d, &bob, "/v1/memory/search", "Hamburg tea").await;
    assert_eq!(st, 200);
    assert_eq!(r["hits"], json!([]), "{r}");
    for (m, path) in [
        (Method::GET, "/v1/memory/status?user=alice"),
        (Method::POST, "/v1/memory/reindex?user=alice"),
    ] {
        let (st, v) = d.call_as(&bob, m, path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
    }
    let (st, _) = search(&d, &bob, "/v1/memory/search?user=alice", "Hamburg").await;
    assert_eq!(st, 404);
    // Bob has no agent sandbox: nothing to reindex, said.
    let (st, x) = d
        .call_as(&bob, Method::POST, "/v1/memory/reindex", None)
        .await;
    assert_eq!(st, 200);
    assert!(
        x["note"].as_str().unwrap().contains("no agent sandbox"),
        "{x}"
    );

    // The admin may look at anyone's, through the API and the CLI.
    let (st, s) = d.get("/v1/memory/status?user=alice").await;
    assert_eq!((st, s["files"].clone()), (200, json!(1)), "{s}");
    let out = d.cli(&["memory", "search", "Hamburg", "--user", "alice", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(v["hits"][0]["path"], "/root/MEMORY.md", "{v}");
    let out = d.cli(&["memory", "search", "Hamburg", "--user", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/root/MEMORY.md:1-") && text.contains("Lives in Hamburg."),
        "{text}"
    );
    let out = d.cli(&["memory", "reindex", "--user", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("1 files: 0 indexed, 1 unchanged"),
        "{text}"
    );
    let out = d.cli(&["memory", "status", "--user", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 files,") && text.contains("/root/memory"),
        "{text}"
    );

    // Bad input: a clear error, nothing changed.
    let before = d.get("/v1/memory/status?user=alice").await.1;
    let huge = "x".repeat(1 << 20);
    for (q, want) in [
        (huge.as_str(), "at most 4096"),
        ("", "empty"),
        ("   ", "empty"),
    ] {
        let (st, v) = search(&d, &alice, "/v1/memory/search", q).await;
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{v}"
        );
    }
    let (st, v) = d
        .call_as(
            &alice,
            Method::POST,
            "/v1/memory/search",
            Some(json!({"q": "x"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    for n in [json!(0), json!(51), json!(2.5), json!(-1)] {
        let (st, v) = d
            .call_as(
                &alice,
                Method::POST,
                "/v1/memory/search",
                Some(json!({"query": "tea", "max_results": n})),
            )
            .await;
        assert_eq!(st, 400, "{n}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_results"),
            "{v}"
        );
    }
    let (st, v) = d
        .call_as(
            &alice,
            Method::POST,
            "/v1/memory/search",
            Some(json!({"query": "tea", "max_results": 1.0})),
        )
        .await;
    assert_eq!(
        (st, v["hits"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    for path in [
        "/v1/memory/status?user=ghost",
        "/v1/memory/reindex?user=ghost",
    ] {
        let m = if path.contains("reindex") {
            Method::POST
        } else {
            Method::GET
        };
        let (st, v) = d.req(m, path, None).await;
        assert_eq!(st, 404, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("ghost"),
            "{v}"
        );
    }
    let out = d.cli(&["memory", "status", "--user", "ghost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert_eq!(d.get("/v1/memory/status?user=alice").await.1, before);

    // A removed user's index goes with them.
    let (st, _) = d.req(Method::DELETE, "/v1/users/alice", None).await;
    assert_eq!(st, 204);
    let _ = d.add_user("alice").await;
    let (_, s) = d.get("/v1/memory/status?user=alice").await;
    assert_eq!(s["files"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_embedder_search_is_text_only_and_says_so() {
    let mock = MockLlm::start([
        MockReply::tool(
            "write_file",
            json!({"path": "/root/MEMORY.md", "content": "The wifi password is hunter2.\n"}),
        ),
        MockReply::text("Saved."),
    ])
    .await;
    let d = chat::mock_daemon(&mock, "[memory]\nembedder = \"none\"\n").await;
    chat_turn(&d, &d.token, "remember the wifi password").await;
    let (_, s) = d.get("/v1/memory/status").await;
    assert_eq!(s["mode"], "text", "{s}");
    assert!(s["embedder"].is_null());
    assert!(
        s["fallback"]
            .as_str()
            .unwrap()
            .contains("embedder = \"none\""),
        "{s}"
    );
    let (st, r) = search(&d, &d.token, "/v1/memory/search", "wifi password").await;
    assert_eq!(st, 200);
    assert_eq!(r["mode"], "text");
    assert!(
        r["fallback"].as_str().unwrap().contains("text search only"),
        "{r}"
    );
    assert_eq!(r["hits"][0]["path"], "/root/MEMORY.md", "{r}");
    let out = d.cli(&["memory", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("search:    text") && text.contains("fallback:  text search only"),
        "{text}"
    );
    let out = d.cli(&["memory", "search", "wifi"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: text search only"));

    // A local embedder whose weights are missing: the same, with the reason.
    let d2 = Daemon::start_with(
        "[memory]\nembedder = \"local\"\nweights_dir = \"/nonexistent/minilm\"\n",
    )
    .await;
    let (_, s) = d2.get("/v1/memory/status").await;
    assert_eq!(s["mode"], "text", "{s}");
    let f = s["fallback"].as_str().unwrap();
    assert!(
        f.contains("local embedder unavailable") && f.contains("/nonexistent/minilm"),
        "{f}"
    );
}

/// Today's daily note, as the daemon names it (UTC).
fn today_note() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .unwrap();
    format!(
        "/root/memory/{}.md",
        String::from_utf8(out.stdout).unwrap().trim()
    )
}

/// A fact said early in a long session survives its compaction through the
/// flush turn, and a new session finds it with memory_search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_said_early_survives_compaction_and_is_found_in_a_new_session() {
    let (mem, _) = memory_config();
    let note = today_note();
    let long = |w: &str| format!("{w} ").repeat(300);
    let mock = MockLlm::start([
        MockReply::text(long("red")),
        MockReply::text("ok"),
        MockReply::text("ok"),
        // Turn 4 nears the window: the flush writes the fact...
        MockReply::tool(
            "write_file",
            json!({"path": note, "content": "- The user's locker code is 4711.\n"}),
        ),
        MockReply::text("NO_REPLY"),
        // ...then the summary, then the answer.
        MockReply::text("- The user talked about apples."),
        MockReply::text("Bananas are yellow."),
        // A new session: the model searches memory.
        MockReply::tool("memory_search", json!({"query": "locker code"})),
        MockReply::text("Your locker code is 4711."),
    ])
    .await;
    let base = mock.openai_base();
    let d = Daemon::start_env(
        &mem,
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
            ("IRONCLAW_CONTEXT_WINDOW", "1800"),
            ("IRONCLAW_MAX_OUTPUT_TOKENS", "256"),
        ],
    )
    .await;
    d.build_image("mini", "busybox").await;
    let (mut ws, _) = chat::connect(&d, &d.token, None).await;
    chat::turn(
        &mut ws,
        &format!("My locker code is 4711. Apples: {}", long("apple")),
    )
    .await;
    chat::turn(&mut ws, "pears?").await;
    chat::turn(&mut ws, "cherries?").await;
    let events = chat::turn(&mut ws, "and bananas?").await;
    assert!(
        events.iter().any(|e| e["type"] == "compacted"),
        "{events:?}"
    );
    // Silent: the user saw the answer, not the flush.
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "text_delta")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Bananas are yellow.");
    let reqs = mock.requests();
    assert!(reqs[3].raw.contains("[memory flush]") && reqs[3].raw.contains(&note));
    assert_eq!(
        reqs.iter()
            .filter(|r| r.raw.contains("[memory flush]"))
            .count(),
        2,
        "one flush: its two model calls"
    );

    let (_, events) = chat_turn(&d, &d.token, "what is my locker code?").await;
    assert!(
        events.iter().any(|e| e["type"] == "tool_end"
            && e["output"]
                .as_str()
                .unwrap()
                .contains("locker code is 4711")
            && e["output"]
                .as_str()
                .unwrap()
                .contains(&format!("{note}:1-"))),
        "{events:?}"
    );
    let reqs = mock.requests();
    assert!(reqs.last().unwrap().raw.contains("locker code is 4711."));
    // The new session's history holds no trace of the old one but memory.
    assert!(!reqs[7].raw.contains("apple apple"));
    let (_, r) = search(&d, &d.token, "/v1/memory/search", "locker").await;
    assert_eq!(r["hits"][0]["path"], note.as_str(), "{r}");
}

/// Vectors of a hashed bag of words: deterministic, near for texts that
/// share words.
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 32];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let h = w
            .to_lowercase()
            .bytes()
            .fold(1469598103934665603u64, |h, b| {
                (h ^ b as u64).wrapping_mul(1099511628211)
            });
        v[(h % 32) as usize] += 1.0;
    }
    v
}

/// An OpenAI-compatible `/v1/embeddings` server on loopback that wants
/// `Bearer <key>` (OpenAI's 401 body otherwise); its base URL and the
/// keys it was sent.
async fn embeddings_server(
    key: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(move |h: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let s = s.clone();
            async move {
                let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                s.lock().unwrap().push(auth.clone());
                if auth != format!("Bearer {key}") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}))).into_response();
                }
                let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
                let data: Vec<Value> = inputs.iter().enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": bag_of_words(t)}))
                    .collect();
                axum::Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})).into_response()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, seen)
}

/// `embedder = "openai"`: the daemon embeds through the endpoint with the
/// key from its environment, search is hybrid, and the key never reaches
/// the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_embedder_is_used_and_its_key_stays_on_the_host() {
    const KEY: &str = "sk-embed-secret-77aa01";
    let (url, seen) = embeddings_server(KEY).await;
    let mock = MockLlm::start([
        MockReply::tool("write_file", json!({"path": DAILY, "content": NOTE})),
        MockReply::text("Noted."),
        MockReply::tool(
            "bash",
            json!({"command": "env; cat /proc/1/environ 2>/dev/null | tr '\\\\0' '\\\\n'"}),
        ),
        MockReply::text("done"),
    ])
    .await;
    let base = mock.openai_base();
    let d = Daemon::start_env(
        &format!("[memory]\nembedder = \"openai\"\nbase_url = \"{url}\"\nmodel = \"bag\"\napi_key_env = \"IRONCLAW_TEST_EMBED_KEY\"\n"),
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
            ("IRONCLAW_TEST_EMBED_KEY", KEY),
        ],
    )
    .await;
    d.build_image("mini", "busybox").await;
    chat_turn(&d, &d.token, "remember the boat").await;
    let (_, s) = d.get("/v1/memory/status").await;
    assert_eq!(s["mode"], "hybrid", "{s}");
    assert!(
        s["embedder"].as_str().unwrap().starts_with("openai:bag@"),
        "{s}"
    );
    assert_eq!(s["with_vectors"], s["chunks"], "{s}");
    let (_, r) = search(&d, &d.token, "/v1/memory/search", "boat moored").await;
    assert_eq!(
        (r["mode"].clone(), r["hits"][0]["path"].clone()),
        (json!("hybrid"), json!(DAILY)),
        "{r}"
    );
    assert!(!seen.lock().unwrap().is_empty());
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == &format!("Bearer {KEY}")));
    // The sandbox's environment has no trace of it.
    let (_, events) = chat_turn(&d, &d.token, "show the environment").await;
    let out = events.iter().find(|e| e["type"] == "tool_end").unwrap()["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains("PATH="), "{out}");
    assert!(
        !out.contains(KEY) && !out.contains("IRONCLAW_TEST_EMBED_KEY"),
        "{out}"
    );
}
