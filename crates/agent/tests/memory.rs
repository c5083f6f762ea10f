//! The memory tools and the flush before compaction: the mock LLM over
//! HTTP, a real guest agent, and an [`AgentMemory`] that records what the
//! loop asks of it (the daemon's real one is tested in the daemon's tests).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_agent::{run_turn, AgentMemory, MemoryHit, MemoryHits, Message, TurnEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorder {
    daily: String,
    searches: Mutex<Vec<(String, usize)>>,
    gets: Mutex<Vec<(String, usize, Option<usize>)>>,
    written: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl AgentMemory for Recorder {
    async fn search(&self, query: &str, max_results: usize) -> Result<MemoryHits, String> {
        self.searches
            .lock()
            .unwrap()
            .push((query.to_string(), max_results));
        if query == "fail" {
            return Err("the query is empty".into());
        }
        Ok(MemoryHits {
            mode: "text".into(),
            fallback: Some("text search only: no embedder configured".into()),
            hits: vec![MemoryHit {
                path: self.daily.clone(),
                start_line: 2,
                end_line: 4,
                snippet: "The boat is called Seagull.".into(),
                score: 0.9,
            }],
        })
    }

    async fn get(&self, path: &str, from: usize, lines: Option<usize>) -> Result<String, String> {
        self.gets
            .lock()
            .unwrap()
            .push((path.to_string(), from, lines));
        Ok("line two\n".into())
    }

    async fn written(&self, path: &str) {
        self.written.lock().unwrap().push(path.to_string());
    }

    fn daily_note(&self) -> String {
        self.daily.clone()
    }
}

#[tokio::test]
async fn memory_tools_reach_the_memory_and_writes_are_reported() {
    for wire in BOTH {
        let guest = Guest::start().await;
        let mem = Arc::new(Recorder {
            daily: guest.path("memory/2026-01-02.md"),
            ..Default::default()
        });
        let mock = MockLlm::start([
            MockReply::tool(
                "memory_search",
                json!({"query": "boat name", "max_results": "3"}),
            ),
            MockReply::tool(
                "memory_get",
                json!({"path": "memory/2026-01-02.md", "from": 2, "lines": 1}),
            ),
            MockReply::tool(
                "write_file",
                json!({"path": "memory/2026-01-03.md", "content": "- likes tea\n"}),
            ),
            MockReply::tool("memory_search", json!({"query": "fail"})),
            MockReply::text("Your boat is Seagull."),
        ])
        .await;
        let mut ctx = context(&mock, wire, &guest);
        ctx.memory = Some(mem.clone());
        let (tx, _) = collector();
        let out = run_turn(
            &ctx,
            &[],
            "what is my boat called?",
            tx,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(out.final_text(), "Your boat is Seagull.");
        let reqs = mock.requests();
        // Offered, and described in the system prompt.
        assert!(
            reqs[0].raw.contains("\"memory_search\"") && reqs[0].raw.contains("\"memory_get\"")
        );
        assert!(reqs[0].raw.contains("use memory_search"), "{wire:?}");
        assert_eq!(
            *mem.searches.lock().unwrap(),
            [("boat name".to_string(), 3), ("fail".to_string(), 6)]
        );
        // The hit went back to the model with its path, lines and score,
        // and the fallback said.
        assert!(
            reqs[1].raw.contains("2026-01-02.md:2-4 (score 0.90)"),
            "{}",
            reqs[1].raw
        );
        assert!(reqs[1]
            .raw
            .contains("text search only: no embedder configured"));
        // Relative paths are made absolute in the working directory.
        assert_eq!(
            *mem.gets.lock().unwrap(),
            [(guest.path("memory/2026-01-02.md"), 2, Some(1))]
        );
        assert!(reqs[2].raw.contains("line two"));
        // The write happened in the sandbox and was reported (once).
        assert_eq!(
            std::fs::read_to_string(guest.path("memory/2026-01-03.md")).unwrap(),
            "- likes tea\n"
        );
        assert_eq!(
            *mem.written.lock().unwrap(),
            [guest.path("memory/2026-01-03.md")]
        );
        // An error from the memory is a tool error the model sees.
        assert!(reqs[4].raw.contains("the query is empty"));
        assert!(!out.memory_flushed);
    }
}

#[tokio::test]
async fn without_memory_the_tools_are_not_offered() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([MockReply::text("ok")]).await;
    let ctx = context(&mock, Wire::OpenAi, &guest);
    let (tx, _) = collector();
    run_turn(&ctx, &[], "hi", tx, CancellationToken::new())
        .await
        .unwrap();
    let raw = &mock.requests()[0].raw;
    assert!(!raw.contains("memory_search"));
    assert!(raw.contains("Notes worth keeping across conversations go in"));
}

/// A session about to be compacted: one silent turn writes the early fact
/// to the daily note, then the summary replaces the old turns; the user
/// sees only the answer; a later turn that needs no compaction flushes
/// nothing.
#[tokio::test]
async fn flush_before_compaction_saves_the_fact_once_and_silently() {
    for wire in BOTH {
        let guest = Guest::start().await;
        let daily = guest.path("memory/2026-01-02.md");
        let mem = Arc::new(Recorder {
            daily: daily.clone(),
            ..Default::default()
        });
        let mock = MockLlm::start([
            // The flush: write the note, then nothing more to say.
            MockReply::TextAndTools(
                "Saving.".into(),
                vec![(
                    "write_file".into(),
                    json!({"path": daily, "content": "- The user's locker code is 4711.\n"}),
                )],
            ),
            MockReply::text("NO_REPLY"),
            // The summary, then the answer.
            MockReply::text("- The user talked about apples."),
            MockReply::text("Bananas are yellow."),
            // The next turn.
            MockReply::text("Still here."),
        ])
        .await;
        let mut ctx = context(&mock, wire, &guest);
        ctx.memory = Some(mem.clone());
        ctx.model.context_window = 2200;
        ctx.compaction.summary_max_tokens = 256;
        ctx.model.max_output_tokens = 256;
        let long = |w: &str| format!("{w} ").repeat(300);
        let history = vec![
            Message::user(format!("my locker code is 4711. apples: {}", long("apple"))),
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
        assert!(out.memory_flushed, "{wire:?}");
        assert_eq!(
            std::fs::read_to_string(&daily).unwrap(),
            "- The user's locker code is 4711.\n"
        );
        assert_eq!(*mem.written.lock().unwrap(), std::slice::from_ref(&daily));
        let c = out.compaction.clone().expect("compaction happened");
        assert_eq!(c.replaced, 2);
        assert_eq!(out.final_text(), "Bananas are yellow.");
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 4);
        // The flush saw the whole conversation and the instruction naming
        // today's note; it had the tools.
        assert!(reqs[0].raw.contains("[memory flush]") && reqs[0].raw.contains(&daily));
        assert!(reqs[0].raw.contains("locker code is 4711"));
        assert!(reqs[0].raw.contains("\"write_file\""));
        // Its tool result went back within the flush.
        assert!(reqs[1].raw.contains("[memory flush]") && reqs[1].raw.contains("wrote "));
        // Then the summary (no tools), then the answer: neither carries
        // the flush.
        assert!(reqs[2].body.get("tools").is_none());
        assert!(!reqs[2].raw.contains("[memory flush]"));
        assert!(!reqs[3].raw.contains("[memory flush]"));
        // Silent: nothing of the flush streamed or kept.
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Bananas are yellow.");
        assert!(!events
            .iter()
            .any(|e| matches!(e, TurnEvent::ToolStart { .. })));
        assert!(!out
            .new_messages
            .iter()
            .any(|m| m.text().contains("NO_REPLY") || m.text().contains("[memory flush]")));
        // Its usage is counted: flush x2, summary, answer.
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, TurnEvent::Usage { .. }))
                .count(),
            4
        );
        // The next turn fits: no flush, no compaction.
        let after = out.apply(&history);
        let (tx, _) = collector();
        let next = run_turn(&ctx, &after, "ok?", tx, CancellationToken::new())
            .await
            .unwrap();
        assert!(!next.memory_flushed && next.compaction.is_none());
        assert_eq!(mock.requests().len(), 5);
    }
}
