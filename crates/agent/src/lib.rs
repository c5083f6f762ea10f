//! IronClaw's agent: LLM providers, the agent loop, and the tools it runs
//! in the user's sandbox.
//!
//! The LLM calls and every API key stay on the host; only tool calls cross
//! into the sandbox, through its guest agent ([`ironclaw_sandbox::AgentClient`]).
//!
//! # Using it from the daemon
//!
//! At start-up, build a [`Registry`] from the `[[providers]]` section of the
//! config file (or, with no file, from `IRONCLAW_PROVIDER`, `IRONCLAW_MODEL`,
//! `IRONCLAW_BASE_URL`, `IRONCLAW_API_KEY`):
//!
//! ```no_run
//! use ironclaw_agent::{ProvidersConfig, Registry, Secrets};
//! # fn f(toml_text: &str) -> anyhow::Result<()> {
//! let cfg = ProvidersConfig::from_toml_str(toml_text)?;         // or ProvidersConfig::from_env()?
//! let secrets = Secrets::load("/etc/ironclaw/secrets".as_ref())?; // or Secrets::env_only()
//! let registry = Registry::new(&cfg, &secrets)?;
//! let models = registry.models();                               // for GET /v1/models
//! # Ok(()) }
//! ```
//!
//! For each user message, resolve the session's model, implement
//! [`SandboxAccess`] for the user's sandbox (start it on first use), and run
//! a turn:
//!
//! ```no_run
//! use std::sync::Arc;
//! use ironclaw_agent::{run_turn, Message, Registry, SandboxAccess, TurnContext, TurnEvent, TurnError};
//! use tokio_util::sync::CancellationToken;
//! # async fn f(registry: &Registry, sandbox: Arc<dyn SandboxAccess>, history: Vec<Message>) -> anyhow::Result<()> {
//! let (provider, model) = registry.resolve("gpt-4o-mini")?;     // UnknownModel lists the known ones
//! let ctx = TurnContext::new(provider, model, sandbox);         // defaults: 25 steps, /root/MEMORY.md, ...
//! let (tx, mut rx) = tokio::sync::mpsc::channel(256);
//! let cancel = CancellationToken::new();                        // cancel() on the stop button or /stop
//! let forward = tokio::spawn(async move {
//!     while let Some(ev) = rx.recv().await {
//!         // TurnEvent is Serialize ({"type":"text_delta","text":...}): send it to the WebSocket
//!         let _ = ev;
//!     }
//! });
//! match run_turn(&ctx, &history, "What is in /etc/os-release?", tx, cancel).await {
//!     Ok(outcome) => {
//!         // store: outcome.compaction (summary replacing the first `replaced`
//!         // messages), then outcome.new_messages; record outcome.usage and
//!         // outcome.cost_usd; outcome.stopped tells a stop or the step limit.
//!         let _new_history = outcome.apply(&history);
//!     }
//!     Err(TurnError::Provider { error, partial }) => {
//!         // show `error` to the user, and store `partial` like an outcome
//!         let _ = (error, partial);
//!     }
//!     Err(bad_input) => { /* empty or oversized message: nothing happened */ let _ = bad_input; }
//! }
//! forward.await?;
//! # Ok(()) }
//! ```
//!
//! Histories are `Vec<Message>`, plain serde types: store them as JSON.
//! [`validate_history`] checks one that came from outside before it is
//! used; [`openai_compat::parse_request`] turns an OpenAI-style request into
//! a history and a user message (with a clear error when malformed), and
//! [`openai_compat::chunk`] / [`openai_compat::completion`] format the reply.
//!
//! Tests (here and in the daemon) use [`mock::MockLlm`], a real HTTP server
//! speaking both wire formats from a script.
//!
//! # Modules
//!
//! - [`model`]: messages, content blocks, usage.
//! - [`config`]: providers and models from TOML or the environment, secrets, the registry.
//! - [`provider`]: the [`Provider`] trait; OpenAI- and Anthropic-style streaming clients, SSE, retries.
//! - [`tools`]: bash, read_file, write_file, edit_file, list_dir, grep, run through the guest agent.
//! - [`tasks`]: schedule_task, list_tasks, cancel_task over the daemon's [`TaskScheduler`].
//! - [`mcp`]: MCP servers of an agent (stdio in the sandbox, HTTP from the host): mcp_tools, mcp_call.
//! - [`memory`]: memory_search, memory_get over the daemon's [`AgentMemory`]; the flush before compaction.
//! - [`turn`]: the agent loop.
//! - [`compaction`]: summarising older turns when the context fills up.
//! - [`prompt`], [`tokens`], [`cost`]: the system prompt, cl100k token counts, prices.
//! - [`openai_compat`]: parsing and answering the daemon's OpenAI-compatible endpoint.
//! - [`mock`]: the scripted LLM server for tests.

pub mod compaction;
pub mod config;
pub mod cost;
pub mod mcp;
pub mod memory;
pub mod mock;
pub mod model;
pub mod openai_compat;
pub mod prompt;
pub mod provider;
pub mod tasks;
pub mod tokens;
pub mod tools;
pub mod turn;

pub use compaction::{Compaction, CompactionPolicy};
pub use config::{ModelInfo, ProviderKind, ProvidersConfig, Registry, Secrets, UnknownModel};
pub use mcp::{McpHub, McpServerConfig};
pub use memory::{AgentMemory, MemoryHit, MemoryHits};
pub use model::{validate_history, Block, Message, Role, Usage};
pub use provider::{LlmEvent, LlmRequest, Provider, ProviderError, RetryPolicy, ToolSpec};
pub use tasks::{TaskRequest, TaskScheduler};
pub use tools::ToolConfig;
pub use turn::{
    run_turn, SandboxAccess, StopReason, TurnContext, TurnError, TurnEvent, TurnOutcome,
};
