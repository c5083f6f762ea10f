//! The agent loop end to end: the mock LLM over HTTP, tools run by a real
//! guest agent.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_agent::turn::{CANCELLED_TOOL, INTERRUPTED};
use ironclaw_agent::{
    run_turn, validate_history, Block, Message, ProviderError, Role, SandboxAccess, StopReason,
    TurnError, TurnEvent,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn tool_results(m: &Message) -> Vec<(String, bool)> {
    m.content
        .iter()
        .filter_map(|b| match b {
            Block::ToolResult {
                content, is_error, ..
            } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn multi_step_tool_loop_changes_files() {
    for wire in BOTH {
        let guest = Guest::start().await;
        let file = guest.path("notes/hello.txt");
        let mock = MockLlm::start([
            MockReply::TextAndTools(
                "I'll create the file.".into(),
                vec![(
                    "write_file".into(),
                    json!({"path": "notes/hello.txt", "content": "hello world\n"}),
                )],
            ),
            MockReply::tool(
                "edit_file",
                json!({"path": file, "old_text": "world", "new_text": "IronClaw"}),
            ),
            MockReply::tool("bash", json!({"command": "cat notes/hello.txt"})),
            MockReply::text("The file now says: hello IronClaw"),
        ])
        .await;
        let ctx = context(&mock, wire, &guest);
        let (tx, events) = collector();
        let history = vec![
            Message::user("hi"),
            Message::assistant("Hello! How can I help?"),
        ];
        let out = run_turn(
            &ctx,
            &history,
            "make me a greeting file",
            tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let events = events.await.unwrap();

        // The file really changed, in the sandbox's filesystem.
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "hello IronClaw\n",
            "{wire:?}"
        );
        assert_eq!(out.final_text(), "The file now says: hello IronClaw");
        assert_eq!(out.stopped, None);
        assert_eq!(out.steps, 4);
        // user, (assistant + results) x 3, final assistant
        assert_eq!(out.new_messages.len(), 8);
        assert_eq!(
            out.new_messages[0],
            Message::user("make me a greeting file")
        );
        assert_eq!(
            tool_results(&out.new_messages[6]),
            [("hello IronClaw".to_string(), false)]
        );
        assert!(tool_results(&out.new_messages[4])[0]
            .0
            .contains("replaced 1 occurrence"));
        validate_history(&out.apply(&history)).unwrap();
        assert!(out.usage.input_tokens > 0 && out.usage.output_tokens > 0);
        assert!(out.cost_usd > 0.0);

        // Events: text streamed, each tool started and ended in order.
        let names: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::ToolStart { name, .. } => Some(format!("start {name}")),
                TurnEvent::ToolEnd { is_error, .. } => Some(format!("end {is_error}")),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "start write_file",
                "end false",
                "start edit_file",
                "end false",
                "start bash",
                "end false"
            ]
        );
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            text,
            "I'll create the file.The file now says: hello IronClaw"
        );
        let usage_events = events
            .iter()
            .filter(|e| matches!(e, TurnEvent::Usage { .. }))
            .count();
        assert_eq!(usage_events, 4);

        // What went over the wire: each tool result went back to the model,
        // and the key stayed in its header.
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 4);
        let last = &reqs[3].raw;
        assert!(last.contains("hello IronClaw"), "{wire:?}: {last}");
        assert!(last.contains("make me a greeting file"));
        assert!(reqs.iter().all(|r| !r.raw.contains(KEY)));
    }
}

#[tokio::test]
async fn memory_file_goes_into_the_system_prompt() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([MockReply::text("noted"), MockReply::text("again")]).await;
    let ctx = context(&mock, Wire::Anthropic, &guest);
    let (tx, _) = collector();
    run_turn(&ctx, &[], "hi", tx, CancellationToken::new())
        .await
        .unwrap();
    std::fs::write(guest.path("MEMORY.md"), "The user's name is Ada.\n").unwrap();
    let (tx, _) = collector();
    run_turn(&ctx, &[], "hi", tx, CancellationToken::new())
        .await
        .unwrap();
    let reqs = mock.requests();
    let before = reqs[0].body["system"][0]["text"].as_str().unwrap();
    let after = reqs[1].body["system"][0]["text"].as_str().unwrap();
    assert!(!before.contains("# Memory"), "{before}");
    assert!(after.contains("# Memory ("), "{after}");
    assert!(after.ends_with("The user's name is Ada."), "{after}");
}

#[tokio::test]
async fn cancel_mid_stream_keeps_partial_text() {
    for wire in BOTH {
        let guest = Guest::start().await;
        let mock = MockLlm::start([MockReply::Slow {
            chunks: ["Once ", "upon ", "a ", "time ", "there ", "was"]
                .map(String::from)
                .to_vec(),
            delay: Duration::from_millis(300),
        }])
        .await;
        let ctx = context(&mock, wire, &guest);
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let watcher = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(ev) = rx.recv().await {
                if matches!(ev, TurnEvent::TextDelta { .. }) {
                    c2.cancel();
                }
                seen.push(ev);
            }
            seen
        });
        let history = vec![Message::user("earlier"), Message::assistant("yes")];
        let out = run_turn(&ctx, &history, "tell me a story", tx, cancel)
            .await
            .unwrap();
        assert_eq!(out.stopped, Some(StopReason::Cancelled));
        assert_eq!(out.new_messages.len(), 2);
        assert_eq!(out.final_text(), format!("Once \n\n{INTERRUPTED}"));
        validate_history(&out.apply(&history)).unwrap();
        let seen = watcher.await.unwrap();
        assert_eq!(
            seen,
            [TurnEvent::TextDelta {
                text: "Once ".into()
            }],
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn cancel_during_a_tool_kills_it_and_answers_every_call() {
    let guest = Guest::start().await;
    let pidfile = guest.path("sleep.pid");
    let mock = MockLlm::start([MockReply::ToolCalls(vec![
        (
            "bash".into(),
            json!({"command": format!("echo $$ > {pidfile}; exec sleep 30")}),
        ),
        ("bash".into(), json!({"command": "echo never"})),
    ])])
    .await;
    let ctx = context(&mock, Wire::OpenAi, &guest);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let pf = pidfile.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, TurnEvent::ToolStart { .. }) {
                // Let the command start before stopping it.
                for _ in 0..100 {
                    if std::fs::read_to_string(&pf).is_ok_and(|s| s.ends_with('\n')) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                c2.cancel();
            }
        }
    });
    let out = run_turn(&ctx, &[], "sleep a while", tx, cancel)
        .await
        .unwrap();
    assert_eq!(out.stopped, Some(StopReason::Cancelled));
    let results = tool_results(out.new_messages.last().unwrap());
    assert_eq!(
        results,
        [
            (CANCELLED_TOOL.to_string(), true),
            (CANCELLED_TOOL.to_string(), true)
        ]
    );
    validate_history(&out.apply(&[])).unwrap();
    // The command itself was killed in the sandbox.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "sleep (pid {pid}) still runs after the cancel");
}

#[tokio::test]
async fn provider_failure_mid_turn_returns_what_was_done() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([
        MockReply::tool("write_file", json!({"path": "a.txt", "content": "A"})),
        MockReply::error(400, r#"{"error":{"message":"context_length_exceeded"}}"#),
    ])
    .await;
    let ctx = context(&mock, Wire::OpenAi, &guest);
    let (tx, _) = collector();
    let e = run_turn(&ctx, &[], "write a", tx, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "provider returned 400 after 1 attempt: context_length_exceeded"
    );
    let TurnError::Provider { partial, .. } = e else {
        panic!()
    };
    assert_eq!(partial.new_messages.len(), 3);
    assert_eq!(std::fs::read_to_string(guest.path("a.txt")).unwrap(), "A");
    validate_history(&partial.apply(&[])).unwrap();
}

#[tokio::test]
async fn garbage_from_the_provider_is_a_clear_error_and_changes_nothing() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([MockReply::Garbage("<html>oops</html>".into())]).await;
    let ctx = context(&mock, Wire::Anthropic, &guest);
    let (tx, _) = collector();
    let e = run_turn(&ctx, &[], "hello", tx, CancellationToken::new())
        .await
        .unwrap_err();
    let TurnError::Provider { error, partial } = e else {
        panic!("{e}")
    };
    assert!(matches!(error, ProviderError::Malformed(_)), "{error}");
    assert_eq!(partial.new_messages, [Message::user("hello")]);
}

#[tokio::test]
async fn step_limit_stops_a_looping_model() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "echo 1"})),
        MockReply::tool("bash", json!({"command": "echo 2"})),
        MockReply::tool("bash", json!({"command": "echo 3"})),
    ])
    .await;
    let mut ctx = context(&mock, Wire::Anthropic, &guest);
    ctx.max_steps = 2;
    let (tx, _) = collector();
    let out = run_turn(&ctx, &[], "loop", tx, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.stopped, Some(StopReason::StepLimit));
    assert_eq!(out.steps, 2);
    assert_eq!(mock.remaining(), 1);
    assert_eq!(
        tool_results(out.new_messages.last().unwrap()),
        [("2".to_string(), false)]
    );
    validate_history(&out.apply(&[])).unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_happens() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([MockReply::text("unused")]).await;
    let mut ctx = context(&mock, Wire::OpenAi, &guest);
    let run = |ctx: ironclaw_agent::TurnContext, history: Vec<Message>, text: String| async move {
        let (tx, _) = collector();
        run_turn(&ctx, &history, &text, tx, CancellationToken::new()).await
    };
    let e = run(ctx.clone(), vec![], "  \n".into()).await.unwrap_err();
    assert!(matches!(e, TurnError::EmptyMessage), "{e}");
    let e = run(ctx.clone(), vec![], "x".repeat(300 * 1024))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the message is too large: 307200 bytes, the limit is 262144"
    );
    // Fits the byte limit but not the model's window.
    ctx.model.context_window = 2000;
    let e = run(ctx.clone(), vec![], "word ".repeat(5000))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("tokens; model mock-model takes at most"),
        "{e}"
    );
    let broken = vec![Message {
        role: Role::Assistant,
        content: vec![Block::ToolUse {
            id: "x".into(),
            name: "bash".into(),
            input: json!({}),
        }],
    }];
    let e = run(ctx.clone(), broken, "hi".into()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the stored conversation is inconsistent: message 0: tool call \"x\" has no result in the next message"
    );
    assert!(mock.requests().is_empty());
}

/// A sandbox that cannot start: tools fail with a clear result, the turn
/// goes on.
struct Broken;

#[async_trait::async_trait]
impl SandboxAccess for Broken {
    async fn agent(&self) -> Result<ironclaw_sandbox::AgentClient, String> {
        Err("no space left on the host".into())
    }
}

#[tokio::test]
async fn unavailable_sandbox_becomes_a_tool_error() {
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "ls"})),
        MockReply::text("Your machine is unavailable."),
    ])
    .await;
    let ctx = ironclaw_agent::TurnContext::new(
        provider(&mock, Wire::OpenAi, fast_retry()),
        model(128_000),
        Arc::new(Broken),
    );
    let (tx, _) = collector();
    let out = run_turn(&ctx, &[], "ls", tx, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        tool_results(&out.new_messages[2]),
        [(
            "the sandbox is not available: no space left on the host".to_string(),
            true
        )]
    );
    assert_eq!(out.final_text(), "Your machine is unavailable.");
    // The error result reached the model marked as an error.
    assert!(mock.requests()[1]
        .raw
        .contains("Error: the sandbox is not available"));
}

#[tokio::test]
async fn compaction_summarises_older_turns_when_the_window_fills() {
    for wire in BOTH {
        let guest = Guest::start().await;
        let mock = MockLlm::start([
            MockReply::text("- The user talked about apples."),
            MockReply::text("Bananas are yellow."),
        ])
        .await;
        let mut ctx = context(&mock, wire, &guest);
        ctx.model.context_window = 2000;
        ctx.compaction.summary_max_tokens = 256;
        ctx.model.max_output_tokens = 256;
        let long = |w: &str| format!("{w} ").repeat(300);
        let history = vec![
            Message::user(format!("apples: {}", long("apple"))),
            Message::assistant(long("red")),
            Message::user(format!("pears: {}", long("pear"))),
            Message::assistant(long("green")),
            Message::user("cherries?"),
            Message::assistant("small and red"),
        ];
        let (tx, events) = collector();
        let out = run_turn(&ctx, &history, "and bananas?", tx, CancellationToken::new())
            .await
            .unwrap();
        let events = events.await.unwrap();
        let c = out.compaction.clone().expect("compaction happened");
        assert_eq!(c.replaced, 2, "turn 1 summarised, the last two turns kept");
        assert_eq!(
            c.summary.text(),
            "[Summary of earlier conversation]\n- The user talked about apples."
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, TurnEvent::Compacted { replaced: 2, .. })));
        assert_eq!(out.final_text(), "Bananas are yellow.");
        // The summary request carried the old turn as a transcript, and no
        // tools; the answer request started from the summary.
        let reqs = mock.requests();
        assert!(reqs[0].raw.contains("apple apple"), "{wire:?}");
        assert!(!reqs[0].raw.contains("pear pear"));
        assert!(reqs[0].body.get("tools").is_none());
        assert!(reqs[1].raw.contains("[Summary of earlier conversation]"));
        assert!(!reqs[1].raw.contains("apple apple"));
        assert!(reqs[1].raw.contains("pear pear"));
        let after = out.apply(&history);
        assert_eq!(after.len(), 1 + 4 + 2);
        validate_history(&after).unwrap();
        // Both calls are counted.
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, TurnEvent::Usage { .. }))
                .count(),
            2
        );
    }
}
