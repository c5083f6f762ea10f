//! Prompt caching end to end: the real agent loop, tools run by a real
//! guest agent, and the mock LLM's prompt cache, which behaves like the
//! real services' (Anthropic: only at `cache_control` breakpoints;
//! OpenAI: any shared prefix from 1024 tokens, in steps of 128).

mod common;

use common::scripted::run_task;
use common::Wire;

/// Everything up to the end of a Chat Completions body's last message:
/// the body ends with the messages array (`...]}`).
fn prompt_prefix(raw: &str) -> &str {
    assert!(raw.ends_with("]}"), "messages must come last: {raw}");
    &raw[..raw.len() - 2]
}

#[tokio::test]
async fn openai_bodies_keep_the_previous_prompt_as_a_byte_prefix() {
    let run = run_task(Wire::OpenAi, true, 3).await;
    assert_eq!(run.requests.len(), 9, "three model calls per turn");
    for pair in run.requests.windows(2) {
        let (prev, next) = (&pair[0].raw, &pair[1].raw);
        assert!(
            next.starts_with(prompt_prefix(prev)),
            "the next request does not start with the previous one's prompt:\n{prev}\n---\n{next}"
        );
    }
    // So the service's automatic cache applies from the second call on.
    let first = run.turns[0].usage;
    assert!(first.cache_read_tokens > 0, "{first:?}");
    for t in &run.turns[1..] {
        let u = t.usage;
        assert!(
            u.cache_read_tokens * 10 > u.input_tokens * 7,
            "most of the prompt is cached after the first turn: {u:?}"
        );
        assert_eq!(u.cache_write_tokens, 0, "OpenAI reports no cache writes");
        assert!(t.cost_usd < t.full_price_usd, "{t:?}");
    }
    // The usage chunk carried the details in OpenAI's shape.
    assert_eq!(
        run.requests[0].body["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn anthropic_marks_breakpoints_and_reads_what_it_wrote() {
    let run = run_task(Wire::Anthropic, true, 3).await;
    for r in &run.requests {
        let marks = r.raw.matches("\"cache_control\"").count();
        // The mock answers 400 over 4, like the API; check anyway.
        assert!((2..=4).contains(&marks), "{marks} breakpoints");
        assert_eq!(r.body["system"][0]["cache_control"]["type"], "ephemeral");
        let tools = r.body["tools"].as_array().unwrap();
        assert_eq!(tools.last().unwrap()["cache_control"]["type"], "ephemeral");
        let msgs = r.body["messages"].as_array().unwrap();
        let last = msgs.last().unwrap()["content"].as_array().unwrap();
        assert_eq!(last.last().unwrap()["cache_control"]["type"], "ephemeral");
    }
    let first = run.turns[0].usage;
    assert!(first.cache_write_tokens > 0, "{first:?}");
    for t in &run.turns[1..] {
        let u = t.usage;
        assert!(
            u.cache_read_tokens * 10 > u.input_tokens * 7,
            "most of the prompt is read from the cache: {u:?}"
        );
        assert!(t.cost_usd < t.full_price_usd, "{t:?}");
    }
}

#[tokio::test]
async fn without_caching_every_token_is_full_price() {
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        let run = run_task(wire, false, 2).await;
        for t in &run.turns {
            assert_eq!(t.usage.cache_read_tokens + t.usage.cache_write_tokens, 0);
            assert!((t.cost_usd - t.full_price_usd).abs() < 1e-12);
        }
        assert!(run.turns.iter().all(|t| t.usage.input_tokens > 1000));
    }
}
