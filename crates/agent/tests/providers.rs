//! Both providers against the mock LLM over real HTTP: streaming, retries,
//! errors, garbage, and model resolution.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_agent::provider::complete;
use ironclaw_agent::{
    LlmEvent, LlmRequest, Message, ProviderError, ProvidersConfig, Registry, Secrets, Usage,
};
use serde_json::json;

fn request() -> LlmRequest {
    LlmRequest {
        model: "mock-model-v1".into(),
        system: "be brief".into(),
        messages: vec![Message::user("hello")],
        tools: ironclaw_agent::tools::specs(),
        max_tokens: 100,
    }
}

#[tokio::test]
async fn streams_text_deltas_in_order_with_usage() {
    for wire in BOTH {
        let mock = MockLlm::start([MockReply::text("one two three four")]).await;
        let p = provider(&mock, wire, fast_retry());
        let mut s = p.stream(&request()).await.unwrap();
        let mut deltas = Vec::new();
        let mut rest = Vec::new();
        while let Some(ev) = s.next().await {
            match ev.unwrap() {
                LlmEvent::TextDelta(t) => deltas.push(t),
                other => rest.push(other),
            }
        }
        assert_eq!(deltas, ["one ", "two ", "three ", "four"], "{wire:?}");
        assert!(
            matches!(rest[0], LlmEvent::Usage(Usage { input_tokens, output_tokens: 5, .. }) if input_tokens > 0),
            "{wire:?}: {rest:?}"
        );
        assert!(
            matches!(rest.last(), Some(LlmEvent::Done { .. })),
            "{rest:?}"
        );

        // The request was the real wire format, with the key in the right
        // header.
        let req = &mock.requests()[0];
        assert_eq!(req.body["stream"], true);
        assert_eq!(req.body["model"], "mock-model-v1");
        match wire {
            Wire::OpenAi => {
                assert_eq!(req.path, "/v1/chat/completions");
                assert_eq!(
                    req.header("authorization"),
                    Some(format!("Bearer {KEY}").as_str())
                );
                assert_eq!(req.body["stream_options"]["include_usage"], true);
                assert_eq!(req.body["messages"][0]["role"], "system");
                assert_eq!(req.body["tools"][0]["function"]["name"], "bash");
            }
            Wire::Anthropic => {
                assert_eq!(req.path, "/v1/messages");
                assert_eq!(req.header("x-api-key"), Some(KEY));
                assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
                assert_eq!(req.body["system"][0]["text"], "be brief");
                assert_eq!(req.body["tools"][0]["name"], "bash");
            }
        }
    }
}

#[tokio::test]
async fn tool_calls_arrive_whole() {
    for wire in BOTH {
        let mock = MockLlm::start([MockReply::TextAndTools(
            "Looking.".into(),
            vec![
                ("bash".into(), json!({"command": "ls -la /tmp"})),
                (
                    "read_file".into(),
                    json!({"path": "/etc/hostname", "limit": 3}),
                ),
            ],
        )])
        .await;
        let p = provider(&mock, wire, fast_retry());
        let c = complete(&*p, &request()).await.unwrap();
        assert_eq!(c.text, "Looking.");
        let calls: Vec<_> = c
            .tool_calls
            .iter()
            .map(|(_, n, i)| (n.as_str(), i.clone()))
            .collect();
        assert_eq!(
            calls,
            [
                ("bash", json!({"command": "ls -la /tmp"})),
                ("read_file", json!({"path": "/etc/hostname", "limit": 3}))
            ],
            "{wire:?}"
        );
        assert_ne!(c.tool_calls[0].0, c.tool_calls[1].0);
        assert!(["tool_calls", "tool_use"].contains(&c.stop_reason.as_str()));
    }
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    for wire in BOTH {
        let mock = MockLlm::start([
            MockReply::error(503, r#"{"error":{"message":"overloaded"}}"#),
            MockReply::error(502, "<html><body>Bad gateway</body></html>"),
            MockReply::text("finally"),
        ])
        .await;
        let p = provider(&mock, wire, fast_retry());
        let c = complete(&*p, &request()).await.unwrap();
        assert_eq!(c.text, "finally");
        assert_eq!(mock.requests().len(), 3, "{wire:?}");
    }
}

#[tokio::test]
async fn retries_exhausted_is_a_clear_error() {
    for wire in BOTH {
        let mock = MockLlm::start(
            std::iter::repeat_n(
                MockReply::error(503, r#"{"error":{"message":"overloaded"}}"#),
                4,
            )
            .chain([MockReply::text("never reached")]),
        )
        .await;
        let p = provider(&mock, wire, fast_retry());
        let e = p.stream(&request()).await.err().unwrap();
        assert_eq!(
            e.to_string(),
            "provider returned 503 after 3 attempts: overloaded"
        );
        assert_eq!(mock.requests().len(), 3);
        assert_eq!(mock.remaining(), 2);
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mock = MockLlm::start([
        MockReply::error(401, r#"{"error":{"message":"invalid api key"}}"#),
        MockReply::text("unused"),
    ])
    .await;
    let p = provider(&mock, Wire::OpenAi, fast_retry());
    let e = p.stream(&request()).await.err().unwrap();
    assert_eq!(
        e.to_string(),
        "provider returned 401 after 1 attempt: invalid api key"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn honours_retry_after() {
    let mock = MockLlm::start([
        MockReply::Error {
            status: 429,
            body: r#"{"error":{"message":"slow down"}}"#.into(),
            retry_after: Some(1),
        },
        MockReply::text("ok"),
    ])
    .await;
    // Backoff alone would wait ~10 ms; the header says a second.
    let p = provider(&mock, Wire::Anthropic, fast_retry());
    let t = Instant::now();
    let c = complete(&*p, &request()).await.unwrap();
    assert_eq!(c.text, "ok");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn garbage_is_malformed() {
    let cases = [
        "data: this is not json\n\n",
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        "data: [1, 2, 3]\n\n",
    ];
    for wire in BOTH {
        for g in cases {
            if wire == Wire::Anthropic && g.contains("[1, 2") {
                continue; // an array has no "type": ignored like an unknown event
            }
            let mock = MockLlm::start([MockReply::Garbage(g.into())]).await;
            let p = provider(&mock, wire, fast_retry());
            let e = p.stream(&request()).await.err().unwrap();
            assert!(
                matches!(e, ProviderError::Malformed(_)),
                "{wire:?} {g}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with("malformed response from the provider"),
                "{e}"
            );
            // Garbage is not retried: it would be garbage again.
            assert_eq!(mock.requests().len(), 1);
        }
    }
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_an_error() {
    let mock = MockLlm::start([MockReply::Garbage(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n".into(),
    )])
    .await;
    let p = provider(&mock, Wire::OpenAi, fast_retry());
    let mut s = p.stream(&request()).await.unwrap();
    assert_eq!(
        s.next().await.unwrap().unwrap(),
        LlmEvent::TextDelta("Hel".into())
    );
    let e = s.next().await.unwrap().unwrap_err();
    assert!(matches!(e, ProviderError::Stream(_)), "{e}");
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn stalled_stream_times_out() {
    let mock = MockLlm::start([
        MockReply::Slow {
            chunks: vec!["late".into()],
            delay: Duration::from_secs(3),
        },
        MockReply::Slow {
            chunks: vec!["late".into()],
            delay: Duration::from_secs(3),
        },
    ])
    .await;
    let mut policy = fast_retry();
    policy.max_attempts = 2;
    policy.idle_timeout = Duration::from_millis(300);
    let p = provider(&mock, Wire::Anthropic, policy);
    // message_start arrives at once, the stall is before the first text:
    // no event reached the caller yet, so the stall is retried.
    let e = p.stream(&request()).await.err().unwrap();
    assert!(
        matches!(e, ProviderError::Timeout { attempts: 2, .. }),
        "{e}"
    );
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn unreachable_provider_is_a_clear_error() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let p = ironclaw_agent::provider::openai::OpenAi::new(
        "down",
        format!("http://127.0.0.1:{port}/v1"),
        None,
        fast_retry(),
    );
    let e = ironclaw_agent::Provider::stream(&p, &request())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .starts_with("cannot reach the provider after 3 attempts"),
        "{e}"
    );
}

#[tokio::test]
async fn registry_resolves_configured_models_and_lists_them_when_unknown() {
    let mock = MockLlm::start([MockReply::text("from config")]).await;
    let toml = format!(
        r#"
[[providers]]
name = "local"
kind = "openai"
base_url = "{}"
models = [{{ name = "small", id = "mock-model-v1", context_window = 4096 }}]

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{}"
api_key_env = "IRONCLAW_AGENT_TEST_KEY"
models = [{{ name = "sonnet" }}]
"#,
        mock.openai_base(),
        mock.anthropic_base()
    );
    let cfg = ProvidersConfig::from_toml_str(&toml).unwrap();
    let reg = Registry::new(&cfg, &Secrets::parse("IRONCLAW_AGENT_TEST_KEY=k").unwrap()).unwrap();
    let e = reg.resolve("gpt-9").err().unwrap();
    assert_eq!(
        e.to_string(),
        "unknown model \"gpt-9\"; available: small, sonnet"
    );
    let (p, m) = reg.resolve("small").unwrap();
    let mut req = request();
    req.model = m.id.clone();
    let c = complete(&*p, &req).await.unwrap();
    assert_eq!(c.text, "from config");
    assert_eq!(mock.requests()[0].body["model"], "mock-model-v1");
    assert!(mock.requests()[0].header("authorization").is_none());
}

#[tokio::test]
async fn mock_answers_without_streaming_too() {
    let mock = MockLlm::start([
        MockReply::TextAndTools("hi".into(), vec![("bash".into(), json!({"command": "ls"}))]),
        MockReply::text("plain"),
    ])
    .await;
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("{}/chat/completions", mock.openai_base()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hi");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"command\":\"ls\"}"
    );
    let v: serde_json::Value = http
        .post(format!("{}/v1/messages", mock.anthropic_base()))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0], json!({"type": "text", "text": "plain"}));
    assert_eq!(v["stop_reason"], "end_turn");
}

#[tokio::test]
async fn mock_rejects_what_the_real_apis_reject() {
    let mock = MockLlm::start([MockReply::text("unused")]).await;
    let http = reqwest::Client::new();
    // A tool result with no tool call before it.
    let r = http
        .post(format!("{}/v1/messages", mock.anthropic_base()))
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/chat/completions", mock.openai_base()))
        .json(&json!({"model": "m", "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function",
              "function": {"name": "bash", "arguments": "{}"}}]},
            {"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(mock.remaining(), 1);
}
