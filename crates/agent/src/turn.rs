//! The agent loop: one user message in, the model's answer out, with as
//! many tool calls in the user's sandbox as the model needs in between.
//!
//! The history always stays consistent, whatever happens: every tool call
//! the model made gets a result (a cancelled one says so), text cut off by
//! a stop is kept and marked, and a failed turn hands back what it did
//! before failing (files may have changed; the history must say so).

use std::sync::Arc;

use futures::StreamExt;
use ironclaw_sandbox::AgentClient;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compaction::{self, Compaction, CompactionPolicy};
use crate::config::ModelInfo;
use crate::cost::cost_usd;
use crate::memory::AgentMemory;
use crate::model::{validate_history, Block, HistoryError, Message, Role, Usage};
use crate::prompt;
use crate::provider::{LlmEvent, LlmRequest, Provider, ProviderError};
use crate::tasks::TaskScheduler;
use crate::tokens;
use crate::tools::{self, ToolConfig, ToolOutput};

/// How the loop reaches the user's sandbox. The daemon implements it to
/// start the sandbox on first use; it is asked again before every tool
/// call, so it should hand out a cached client once the sandbox runs.
#[async_trait::async_trait]
pub trait SandboxAccess: Send + Sync {
    async fn agent(&self) -> Result<AgentClient, String>;
}

/// A sandbox that is already running.
#[async_trait::async_trait]
impl SandboxAccess for AgentClient {
    async fn agent(&self) -> Result<AgentClient, String> {
        Ok(self.clone())
    }
}

/// Everything a turn needs besides the conversation.
#[derive(Clone)]
pub struct TurnContext {
    pub provider: Arc<dyn Provider>,
    pub model: ModelInfo,
    pub sandbox: Arc<dyn SandboxAccess>,
    pub tools: ToolConfig,
    /// Replaces the built-in system prompt; the memory file is still
    /// appended.
    pub system_prompt: Option<String>,
    /// The user's memory file in the sandbox, shown to the model when it
    /// exists. None turns the feature off.
    pub memory_path: Option<String>,
    pub max_memory_bytes: usize,
    /// Model calls per turn before the loop stops with
    /// [`StopReason::StepLimit`].
    pub max_steps: u32,
    /// Largest user message accepted.
    pub max_message_bytes: usize,
    pub compaction: CompactionPolicy,
    /// The user's scheduled tasks; with one, the model gets the task tools.
    pub tasks: Option<Arc<dyn TaskScheduler>>,
    /// The user's memory index; with one, the model gets the memory tools
    /// and a silent flush turn runs before each compaction.
    pub memory: Option<Arc<dyn AgentMemory>>,
    /// The agent's MCP servers; with some, the model gets the MCP tools.
    pub mcp: Option<Arc<crate::mcp::McpHub>>,
}

impl TurnContext {
    pub fn new(
        provider: Arc<dyn Provider>,
        model: ModelInfo,
        sandbox: Arc<dyn SandboxAccess>,
    ) -> TurnContext {
        TurnContext {
            provider,
            model,
            sandbox,
            tools: ToolConfig::default(),
            system_prompt: None,
            memory_path: Some(prompt::MEMORY_PATH.into()),
            max_memory_bytes: 16 * 1024,
            max_steps: 25,
            max_message_bytes: 256 * 1024,
            compaction: CompactionPolicy::default(),
            tasks: None,
            memory: None,
            mcp: None,
        }
    }
}

/// Progress of a turn, for streaming to the user as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnEvent {
    TextDelta {
        text: String,
    },
    ToolStart {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolEnd {
        id: String,
        output: String,
        is_error: bool,
    },
    /// After each model call (the summary request included).
    Usage {
        usage: Usage,
        cost_usd: f64,
    },
    /// Older messages were summarised; see [`TurnOutcome::compaction`].
    Compacted {
        summary: String,
        replaced: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The user stopped the turn.
    Cancelled,
    /// The model kept calling tools past [`TurnContext::max_steps`].
    StepLimit,
}

/// What a turn produced, to store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnOutcome {
    /// Append these to the history, in order. The first is always the
    /// user's message; then assistant messages and tool results.
    pub new_messages: Vec<Message>,
    /// When set, the daemon archives the first `replaced` messages of the
    /// history it passed in and stores `summary` in their place (before the
    /// rest, and before `new_messages`).
    pub compaction: Option<Compaction>,
    /// All model calls of the turn, the summary request included.
    pub usage: Usage,
    pub cost_usd: f64,
    /// Model calls made.
    pub steps: u32,
    pub stopped: Option<StopReason>,
    /// A silent memory flush turn ran before the compaction.
    #[serde(default)]
    pub memory_flushed: bool,
}

impl TurnOutcome {
    /// The text of the turn's last assistant message.
    pub fn final_text(&self) -> String {
        self.new_messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant)
            .map(Message::text)
            .unwrap_or_default()
    }

    /// The history as it stands after this turn, given the one passed in.
    pub fn apply(&self, history: &[Message]) -> Vec<Message> {
        let mut h = match &self.compaction {
            Some(c) => {
                let mut v = vec![c.summary.clone()];
                v.extend_from_slice(&history[c.replaced.min(history.len())..]);
                v
            }
            None => history.to_vec(),
        };
        h.extend(self.new_messages.iter().cloned());
        h
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("the message is empty")]
    EmptyMessage,
    #[error("the message is too large: {0}")]
    MessageTooLarge(String),
    #[error("the stored conversation is inconsistent: {0}")]
    InvalidHistory(#[from] HistoryError),
    /// The provider failed (after retries). `partial` holds what the turn
    /// did before that, to store like a normal outcome.
    #[error("{error}")]
    Provider {
        error: ProviderError,
        partial: Box<TurnOutcome>,
    },
}

/// Appended to text cut off by a stop, so the model (and the reader) knows
/// the answer is incomplete.
pub const INTERRUPTED: &str = "[interrupted by the user]";
pub const CANCELLED_TOOL: &str = "cancelled by the user";

/// Run one turn: `user_text` after `history`. Events stream to `events`
/// (a closed receiver is fine: the turn goes on); `cancel` stops it at the
/// next safe point, keeping what was done.
pub async fn run_turn(
    ctx: &TurnContext,
    history: &[Message],
    user_text: &str,
    events: mpsc::Sender<TurnEvent>,
    cancel: CancellationToken,
) -> Result<TurnOutcome, TurnError> {
    if user_text.trim().is_empty() {
        return Err(TurnError::EmptyMessage);
    }
    if user_text.len() > ctx.max_message_bytes {
        return Err(TurnError::MessageTooLarge(format!(
            "{} bytes, the limit is {}",
            user_text.len(),
            ctx.max_message_bytes
        )));
    }
    validate_history(history)?;
    let mut tool_specs = tools::specs();
    if ctx.tasks.is_some() {
        tool_specs.extend(crate::tasks::specs());
    }
    if ctx.memory.is_some() {
        tool_specs.extend(crate::memory::specs());
    }
    if ctx.mcp.as_ref().is_some_and(|h| !h.servers().is_empty()) {
        tool_specs.extend(crate::mcp::tools::specs());
    }
    // Checked before anything else happens, so a message that can never
    // fit changes nothing.
    let user_msg = Message::user(user_text);
    let user_tokens = tokens::message(&user_msg);
    let room = (ctx.model.context_window as usize)
        .saturating_sub(ctx.model.max_output_tokens as usize)
        .saturating_sub(tokens::tools(&tool_specs));
    if user_tokens > room {
        return Err(TurnError::MessageTooLarge(format!(
            "about {user_tokens} tokens; model {} takes at most {room} besides its tools and answer",
            ctx.model.name
        )));
    }

    let mut turn = Turn {
        ctx,
        events,
        cancel,
        out: TurnOutcome {
            new_messages: vec![user_msg],
            ..Default::default()
        },
    };
    let memory = match &ctx.memory_path {
        Some(p) => tokio::select! {
            biased;
            _ = turn.cancel.cancelled() => return Ok(turn.stop()),
            m = crate::memory::read_curated(ctx, p) => m,
        },
        None => None,
    };
    let system = match &ctx.system_prompt {
        Some(s) => match (&memory, &ctx.memory_path) {
            (Some(m), Some(p)) => format!("{s}\n\n# Memory ({p})\n{m}"),
            _ => s.clone(),
        },
        None => prompt::system_prompt(
            &ctx.tools.workdir,
            ctx.memory_path.as_deref().unwrap_or(prompt::MEMORY_PATH),
            memory.as_deref(),
            ctx.memory.is_some(),
        ),
    };
    let fixed_tokens = tokens::count(&system) + tokens::tools(&tool_specs);
    let mut base: Vec<Message> = history.to_vec();
    // The history is counted once a turn, not at every model call.
    let mut base_tokens = tokens::messages(&base);

    loop {
        if turn.out.steps >= ctx.max_steps {
            turn.out.stopped = Some(StopReason::StepLimit);
            return Ok(turn.out);
        }
        if turn.out.compaction.is_none() {
            let estimate = fixed_tokens + base_tokens + tokens::messages(&turn.out.new_messages);
            if compaction::needed(estimate, &ctx.model, &ctx.compaction) {
                if let Some(split) = compaction::split_point(&base, ctx.compaction.keep_turns) {
                    // Once per compaction: what must be kept goes to the
                    // daily note before the turns are summarised away.
                    if let (Some(m), false) = (&ctx.memory, turn.out.memory_flushed) {
                        turn.out.memory_flushed = true;
                        if turn.flush(&**m, &system, &tool_specs, &base).await.is_err() {
                            return Ok(turn.stop());
                        }
                    }
                    let summarised = tokio::select! {
                        biased;
                        _ = turn.cancel.cancelled() => return Ok(turn.stop()),
                        r = compaction::summarise(&*ctx.provider, &ctx.model, &base[..split], &ctx.compaction) => r,
                    };
                    match summarised {
                        Ok((summary, usage)) => {
                            turn.record_usage(usage).await;
                            turn.emit(TurnEvent::Compacted {
                                summary: summary.text(),
                                replaced: split,
                            })
                            .await;
                            base.splice(..split, [summary.clone()]);
                            base_tokens = tokens::messages(&base);
                            turn.out.compaction = Some(Compaction {
                                summary,
                                replaced: split,
                                usage,
                            });
                        }
                        // Not fatal: the prompt may still fit; if it does
                        // not, the provider's error says so.
                        Err(e) => tracing::warn!("compaction failed: {e}"),
                    }
                }
            }
        }

        // The history moves into the request and back: a long session's
        // history is not copied at every model call.
        let base_len = base.len();
        let mut messages = std::mem::take(&mut base);
        messages.extend(turn.out.new_messages.iter().cloned());
        let req = LlmRequest {
            model: ctx.model.id.clone(),
            system: system.clone(),
            messages,
            tools: tool_specs.clone(),
            max_tokens: ctx.model.max_output_tokens,
        };
        turn.out.steps += 1;
        let step = turn.model_step(&req, true).await;
        base = req.messages;
        base.truncate(base_len);

        let mut content = Vec::new();
        let interrupted = !matches!(step.end, StepEnd::Done);
        if !step.text.is_empty() {
            let text = match &step.end {
                StepEnd::Done => step.text.clone(),
                StepEnd::Cancelled => format!("{}\n\n{INTERRUPTED}", step.text),
                StepEnd::Failed(e) => format!("{}\n\n[interrupted: {e}]", step.text),
            };
            content.push(Block::Text { text });
        }
        // Calls that arrived complete before a stop are kept, and answered
        // as cancelled, so the history shows what the model wanted.
        for (id, name, input) in &step.calls {
            content.push(Block::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: input.clone(),
            });
        }
        if !content.is_empty() {
            turn.out.new_messages.push(Message {
                role: Role::Assistant,
                content,
            });
        }
        if let StepEnd::Failed(error) = step.end {
            turn.answer_cancelled(&step.calls, "not run: the model's answer broke off");
            return Err(TurnError::Provider {
                error,
                partial: Box::new(turn.out),
            });
        }
        if interrupted {
            turn.answer_cancelled(&step.calls, CANCELLED_TOOL);
            return Ok(turn.stop());
        }
        if step.calls.is_empty() {
            return Ok(turn.out);
        }

        let mut results = Vec::new();
        for (id, name, input) in &step.calls {
            let out = if turn.cancel.is_cancelled() {
                ToolOutput {
                    content: CANCELLED_TOOL.into(),
                    is_error: true,
                }
            } else {
                turn.emit(TurnEvent::ToolStart {
                    id: id.clone(),
                    name: name.clone(),
                    input: input.clone(),
                })
                .await;
                let out = tokio::select! {
                    biased;
                    // Dropping the tool's future drops its agent stream,
                    // which tells the guest to kill the command.
                    _ = turn.cancel.cancelled() => ToolOutput {
                        content: CANCELLED_TOOL.into(),
                        is_error: true,
                    },
                    o = run_tool(ctx, name, input) => o,
                };
                turn.emit(TurnEvent::ToolEnd {
                    id: id.clone(),
                    output: out.content.clone(),
                    is_error: out.is_error,
                })
                .await;
                out
            };
            results.push(Block::ToolResult {
                tool_use_id: id.clone(),
                content: out.content,
                is_error: out.is_error,
            });
        }
        turn.out.new_messages.push(Message {
            role: Role::User,
            content: results,
        });
        if turn.cancel.is_cancelled() {
            return Ok(turn.stop());
        }
    }
}

pub(crate) struct Turn<'a> {
    pub(crate) ctx: &'a TurnContext,
    events: mpsc::Sender<TurnEvent>,
    pub(crate) cancel: CancellationToken,
    pub(crate) out: TurnOutcome,
}

pub(crate) enum StepEnd {
    Done,
    Cancelled,
    Failed(ProviderError),
}

pub(crate) struct Step {
    pub(crate) text: String,
    pub(crate) calls: Vec<(String, String, serde_json::Value)>,
    pub(crate) end: StepEnd,
}

impl Turn<'_> {
    async fn emit(&self, ev: TurnEvent) {
        // Nobody listening (the client went away) is not a reason to stop.
        let _ = self.events.send(ev).await;
    }

    async fn record_usage(&mut self, usage: Usage) {
        let cost = cost_usd(usage, &self.ctx.model);
        self.out.usage.add(usage);
        self.out.cost_usd += cost;
        self.emit(TurnEvent::Usage {
            usage,
            cost_usd: cost,
        })
        .await;
    }

    fn stop(mut self) -> TurnOutcome {
        self.out.stopped = Some(StopReason::Cancelled);
        self.out
    }

    /// Results for calls that will not run, keeping every call answered.
    fn answer_cancelled(&mut self, calls: &[(String, String, serde_json::Value)], why: &str) {
        if calls.is_empty() {
            return;
        }
        self.out.new_messages.push(Message {
            role: Role::User,
            content: calls
                .iter()
                .map(|(id, _, _)| Block::ToolResult {
                    tool_use_id: id.clone(),
                    content: why.into(),
                    is_error: true,
                })
                .collect(),
        });
    }

    /// One model call, its text streamed to the events channel when
    /// `visible`.
    pub(crate) async fn model_step(&mut self, req: &LlmRequest, visible: bool) -> Step {
        let mut step = Step {
            text: String::new(),
            calls: Vec::new(),
            end: StepEnd::Done,
        };
        let mut usage = Usage::default();
        let started = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(StepEnd::Cancelled),
            r = self.ctx.provider.stream(req) => r.map_err(StepEnd::Failed),
        };
        let mut stream = match started {
            Ok(s) => s,
            Err(end) => {
                step.end = end;
                return step;
            }
        };
        loop {
            let ev = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    step.end = StepEnd::Cancelled;
                    break;
                }
                ev = stream.next() => ev,
            };
            match ev {
                None => break,
                Some(Err(e)) => {
                    step.end = StepEnd::Failed(e);
                    break;
                }
                Some(Ok(LlmEvent::TextDelta(t))) => {
                    step.text.push_str(&t);
                    if visible {
                        self.emit(TurnEvent::TextDelta { text: t }).await;
                    }
                }
                Some(Ok(LlmEvent::ToolCall { id, name, input })) => {
                    step.calls.push((id, name, input))
                }
                Some(Ok(LlmEvent::Usage(u))) => usage.add(u),
                Some(Ok(LlmEvent::Done { .. })) => {}
            }
        }
        if usage != Usage::default() {
            self.record_usage(usage).await;
        }
        // Ids must be present and unique within the message.
        let mut seen = std::collections::HashSet::new();
        for (i, call) in step.calls.iter_mut().enumerate() {
            if call.0.is_empty() || !seen.insert(call.0.clone()) {
                call.0 = format!("call_{}_{}", self.out.steps, i);
                seen.insert(call.0.clone());
            }
        }
        step
    }
}

pub(crate) async fn run_tool(
    ctx: &TurnContext,
    name: &str,
    input: &serde_json::Value,
) -> ToolOutput {
    if let Some(t) = ctx.tasks.as_deref() {
        if crate::tasks::TOOL_NAMES.contains(&name) {
            return crate::tasks::execute(t, name, input).await;
        }
    }
    if let Some(m) = ctx.memory.as_deref() {
        if crate::memory::TOOL_NAMES.contains(&name) {
            return crate::memory::execute(m, &ctx.tools.workdir, name, input).await;
        }
    }
    if let Some(h) = ctx.mcp.as_deref() {
        if crate::mcp::tools::handles(name) {
            return crate::mcp::tools::execute(h, &*ctx.sandbox, name, input).await;
        }
    }
    let out = match ctx.sandbox.agent().await {
        Ok(agent) => tools::execute(&agent, &ctx.tools, name, input).await,
        Err(e) => ToolOutput {
            content: tools::ToolError::Sandbox(e).to_string(),
            is_error: true,
        },
    };
    // A file the model wrote may be a memory file: the index follows.
    if let (Some(m), false, "write_file" | "edit_file") =
        (ctx.memory.as_deref(), out.is_error, name)
    {
        if let Some(p) = input.get("path").and_then(serde_json::Value::as_str) {
            if let Ok(p) = tools::resolve_path(&ctx.tools.workdir, p) {
                m.written(&p).await;
            }
        }
    }
    out
}
