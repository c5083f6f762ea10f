//! The benchmark figure from issue #4: the prompt of a simple first turn
//! (system prompt, every tool schema, the user's one-line question),
//! counted with cl100k. Other gateways send over 13,000 tokens for this;
//! IronClaw must stay under 1,000 with every tool (task and memory
//! tools included).

mod common;

use common::*;
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_agent::prompt::first_turn_prompt_tokens;
use ironclaw_agent::{run_turn, tokens};
use tokio_util::sync::CancellationToken;

const QUESTION: &str = "What is the capital of France?";

#[test]
fn first_turn_prompt_is_small() {
    let n = first_turn_prompt_tokens(QUESTION);
    println!("first-turn prompt: {n} cl100k tokens (system prompt with the memory lines + 13 tool schemas, the two MCP tools included + question); budget 1000, other gateways > 13000");
    assert!(n < 1000, "{n}");
}

/// The same measured on what really goes over the wire: the whole JSON
/// request body (with its field names and escaping), both formats.
#[tokio::test]
async fn first_turn_request_body_is_small() {
    for wire in BOTH {
        let guest = Guest::start().await;
        let mock = MockLlm::start([MockReply::text("Paris.")]).await;
        let ctx = context(&mock, wire, &guest);
        let (tx, _) = collector();
        run_turn(&ctx, &[], QUESTION, tx, CancellationToken::new())
            .await
            .unwrap();
        let body = &mock.requests()[0].raw;
        let n = tokens::count(body);
        println!(
            "{wire:?} first-turn request body: {n} cl100k tokens, {} bytes",
            body.len()
        );
        assert!(n < 1700, "{wire:?}: {n}");
    }
}
