//! Prompt caching benchmark: a scripted 10-turn task with tool calls (read
//! a log, run a command, answer), through the real agent loop and a real
//! guest agent, against the caching mock LLM in both wire formats. Each
//! run is next to a reference run with caching off (brute force: every
//! prompt token at full price every turn), and the cost ratio is printed.
//! Run: `scripts/bench.sh --caching` (or `cargo bench -p ironclaw-agent
//! --bench caching`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::scripted::{run_task, TurnFigures};
use common::Wire;

const TURNS: usize = 10;

fn total(v: &[TurnFigures]) -> (u64, u64, f64) {
    v.iter().fold((0, 0, 0.0), |(i, c, d), t| {
        (
            i + t.usage.input_tokens,
            c + t.usage.cache_read_tokens,
            d + t.cost_usd,
        )
    })
}

#[tokio::main]
async fn main() {
    println!("prompt caching: {TURNS}-turn scripted task, 3 model calls a turn (read_file, bash, answer)");
    println!("mock tokens: 4 bytes each; prices per Mtok: Anthropic 3 in / 0.30 cache read / 3.75 cache write / 15 out, OpenAI 2.50 in / 1.25 cached / 10 out\n");
    for wire in [Wire::Anthropic, Wire::OpenAi] {
        let cached = run_task(wire, true, TURNS).await;
        let brute = run_task(wire, false, TURNS).await;
        println!("{wire:?}:");
        println!(
            "  turn  prompt tokens  cached  cached share  written  cost cached   cost uncached (reference)"
        );
        for (i, (c, b)) in cached.turns.iter().zip(&brute.turns).enumerate() {
            assert_eq!(
                c.usage.input_tokens, b.usage.input_tokens,
                "both runs send the same prompts"
            );
            println!(
                "  {:>4}  {:>13}  {:>6}  {:>11.1}%  {:>7}  ${:<10.6}  ${:.6}",
                i + 1,
                c.usage.input_tokens,
                c.usage.cache_read_tokens,
                100.0 * c.usage.cache_read_tokens as f64 / c.usage.input_tokens.max(1) as f64,
                c.usage.cache_write_tokens,
                c.cost_usd,
                b.cost_usd,
            );
        }
        let (ci, cc, cd) = total(&cached.turns);
        let (_, _, bd) = total(&brute.turns);
        println!(
            "  all   {ci:>13}  {cc:>6}  {:>11.1}%           ${cd:<10.6}  ${bd:.6}",
            100.0 * cc as f64 / ci.max(1) as f64
        );
        println!(
            "  cost with caching / without: {:.3} ({:.1}x cheaper)\n",
            cd / bd,
            bd / cd
        );
    }
}
