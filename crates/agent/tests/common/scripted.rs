//! A scripted multi-turn task with tool calls, run through the real agent
//! loop against the caching mock LLM: shared by the prompt-caching tests
//! and benchmark.

use ironclaw_agent::mock::{MockLlm, MockReply, RecordedRequest};
use ironclaw_agent::{run_turn, Message, Usage};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{collector, context, Guest, Wire};

/// One user turn's model calls, added up.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnFigures {
    pub usage: Usage,
    pub cost_usd: f64,
    /// What the same usage would cost with nothing cached.
    pub full_price_usd: f64,
    pub calls: u32,
}

pub struct TaskRun {
    pub turns: Vec<TurnFigures>,
    pub requests: Vec<RecordedRequest>,
}

/// A day's log the model reads: a couple of kilobytes, different per day.
fn log_file(day: usize) -> String {
    let mut s = format!("# Build log, day {day}\n\n");
    for i in 0..40 {
        s.push_str(&format!(
            "{:02}:{:02} job {} step {} finished in {} ms with {} warnings\n",
            8 + i / 6,
            (i * 7) % 60,
            day * 100 + i,
            i % 5,
            (day * 37 + i * 13) % 900 + 100,
            (day + i) % 3
        ));
    }
    s
}

/// Run `turns` user turns (each: read a file, run a command, answer) with
/// the mock caching or not, priced per `wire`'s usual list prices.
pub async fn run_task(wire: Wire, caching: bool, turns: usize) -> TaskRun {
    let guest = Guest::start().await;
    for day in 0..turns {
        std::fs::write(guest.path(&format!("day{day}.log")), log_file(day)).unwrap();
    }
    let mock = MockLlm::start_caching([]).await;
    mock.set_caching(caching);
    let mut ctx = context(&mock, wire, &guest);
    // List prices per million tokens: Claude Sonnet's and GPT-4o's.
    let (input, output, read, write) = match wire {
        Wire::Anthropic => (3.0, 15.0, 0.30, 3.75),
        Wire::OpenAi => (2.5, 10.0, 1.25, 2.5),
    };
    ctx.model.input_price_per_mtok = input;
    ctx.model.output_price_per_mtok = output;
    ctx.model.cache_read_price_per_mtok = read;
    ctx.model.cache_write_price_per_mtok = write;
    let mut history: Vec<Message> = Vec::new();
    let mut out = Vec::new();
    for day in 0..turns {
        let file = format!("day{day}.log");
        mock.push(MockReply::TextAndTools(
            format!("Let me read {file}."),
            vec![("read_file".into(), json!({"path": file}))],
        ));
        mock.push(MockReply::tool(
            "bash",
            json!({"command": format!("grep -c 'with 0 warnings' {file}")}),
        ));
        mock.push(MockReply::text(format!(
            "Day {day}: 40 jobs ran; the slowest step is listed above, and about a third had no warnings."
        )));
        let (tx, events) = collector();
        let turn = run_turn(
            &ctx,
            &history,
            &format!(
                "Summarise the build log of day {day} ({file}): how many jobs had no warnings?"
            ),
            tx,
            CancellationToken::new(),
        )
        .await
        .expect("the scripted turn runs");
        events.await.unwrap();
        let mut full = turn.usage;
        full.cache_read_tokens = 0;
        full.cache_write_tokens = 0;
        out.push(TurnFigures {
            usage: turn.usage,
            cost_usd: turn.cost_usd,
            full_price_usd: ironclaw_agent::cost::cost_usd(full, &ctx.model),
            calls: turn.steps,
        });
        history = turn.apply(&history);
    }
    assert_eq!(mock.remaining(), 0, "the script was used up");
    TaskRun {
        turns: out,
        requests: mock.requests(),
    }
}
