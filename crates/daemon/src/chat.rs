//! Agents: each user's conversations with the LLM, whose tools act in the
//! user's own sandbox, started on the first message and stopped when idle.
//! That sandbox is bound to the user in the store (`agent_of`) and found
//! through the binding, never by name: its display name (`agent-<user>`)
//! lives in the user's own namespace, and another user's sandbox of that
//! name is just theirs.
//!
//! A turn: load the session's history from the store, store the user's
//! message (so it is never lost once acknowledged), run the agent loop with
//! events streamed to the caller, then store the compaction summary (if
//! any), the assistant's messages and tool results, and the usage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_agent::{
    run_turn, Message, Registry, SandboxAccess, TurnContext, TurnError, TurnEvent, TurnOutcome,
};
use ironclaw_sandbox::AgentClient;
use ironclaw_store::{SandboxRecord, SandboxState, SessionRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, Config};
use crate::error::ApiError;
use crate::manager::{CreateRequest, Manager};

/// The agent every user gets when the config declares none.
pub const DEFAULT_AGENT: &str = "ironclaw";

pub struct Chat {
    manager: Arc<Manager>,
    registry: Option<Registry>,
    agents: Vec<AgentConfig>,
    max_steps: u32,
    /// Running turns by session id, to cancel them and to refuse a second
    /// turn in the same session.
    running: Mutex<HashMap<String, (CancellationToken, String)>>,
    /// Last message per user, for stopping idle sandboxes.
    activity: Mutex<HashMap<String, Instant>>,
    /// Per user: serialises creating their agent sandbox, so two first
    /// turns make one sandbox.
    create_locks: CreateLocks,
    /// Scheduled tasks, for the task tools of each turn.
    tasks: Arc<crate::tasks::Tasks>,
    /// Memory, for the memory tools and the flush of each turn.
    memory: Arc<crate::memory::Memory>,
    /// Live MCP client connections per (user, agent).
    mcp: crate::mcp::client::McpHubs,
    /// Bound into each new agent sandbox.
    agent_mounts: Vec<crate::mounts::MountRequest>,
    /// Decoded histories of recent sessions.
    histories: crate::history::Histories,
}

/// The display name a user's new agent sandbox gets in their own namespace
/// (a DNS label, like every name). Never used to find it.
pub fn sandbox_name(user: &str) -> String {
    let name = format!("agent-{user}");
    if name.len() <= 63 {
        return name;
    }
    let h = ironclaw_store::users::hash_token(user);
    format!("agent-{}-{}", &user[..40], &h[..8])
}

/// Starts the user's sandbox on first use and hands out its agent.
type CreateLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

struct UserSandbox {
    manager: Arc<Manager>,
    user: String,
    create_locks: CreateLocks,
    mounts: Vec<crate::mounts::MountRequest>,
}

impl UserSandbox {
    /// The user's bound agent sandbox, created (and bound) on first use.
    async fn bound(&self) -> Result<SandboxRecord, String> {
        let m = &self.manager;
        let lookup = || {
            m.store
                .agent_sandbox(&self.user)
                .map_err(|e| format!("could not look up your sandbox: {e}"))
        };
        if let Some(r) = lookup()? {
            return Ok(r);
        }
        let lock = self
            .create_locks
            .lock()
            .unwrap()
            .entry(self.user.clone())
            .or_default()
            .clone();
        let _g = lock.lock().await;
        if let Some(r) = lookup()? {
            return Ok(r);
        }
        // The usual name, unless the user already has a sandbox called that.
        let mut name = sandbox_name(&self.user);
        if m.store.sandbox(&self.user, &name).is_ok() {
            let suffix: String = (0..4)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            name = format!("agent-{suffix}");
        }
        let req = CreateRequest {
            name,
            mounts: self.mounts.clone(),
            ..Default::default()
        };
        m.create_agent_sandbox(req, &self.user)
            .await
            .map_err(|e| format!("could not create your sandbox: {e}"))
    }
}

#[async_trait::async_trait]
impl SandboxAccess for UserSandbox {
    async fn agent(&self) -> Result<AgentClient, String> {
        let m = &self.manager;
        let r = self.bound().await?;
        if r.state != SandboxState::Running {
            m.start(&r.id)
                .await
                .map_err(|e| format!("could not start your sandbox: {e}"))?;
        }
        m.agent(&r.id).await.map_err(|e| e.to_string())
    }
}

/// Largest user message accepted (the agent loop's own limit).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

pub fn check_message(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("the message is empty".into()));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the message is larger than {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// What a finished (or failed) turn looks like to the caller.
/// Where a turn came from, when a chat channel brought it.
pub struct ChannelTurn {
    /// The chat tasks it schedules post their results to.
    pub reply_to: ironclaw_store::TaskDelivery,
    /// A daemon crash cut this message's turn off; it runs again.
    pub resumed: bool,
}

pub struct TurnReport {
    pub outcome: TurnOutcome,
    pub error: Option<String>,
}

impl Chat {
    pub fn new(
        manager: Arc<Manager>,
        config: &Config,
        tasks: Arc<crate::tasks::Tasks>,
        memory: Arc<crate::memory::Memory>,
    ) -> anyhow::Result<Arc<Chat>> {
        let registry = match config.providers_config()? {
            Some(pc) => Some(Registry::new(&pc, &config.secrets()?)?),
            None => None,
        };
        let mut agents = config.agents.clone();
        if agents.is_empty() {
            agents.push(AgentConfig {
                name: DEFAULT_AGENT.into(),
                model: None,
                system_prompt: None,
                mcp: Vec::new(),
            });
        }
        Ok(Arc::new(Chat {
            manager,
            registry,
            agents,
            max_steps: config.agent_max_steps,
            running: Mutex::default(),
            activity: Mutex::default(),
            create_locks: Arc::default(),
            tasks,
            memory,
            mcp: Default::default(),
            agent_mounts: config.agent_mounts.clone(),
            histories: Default::default(),
        }))
    }

    /// Count `user` as active now: the idle reaper stops their agent
    /// sandbox only after `agent_idle_stop_secs` more.
    pub fn note_activity(&self, user: &str) {
        self.activity
            .lock()
            .unwrap()
            .insert(user.to_string(), Instant::now());
    }

    pub fn agents(&self) -> &[AgentConfig] {
        &self.agents
    }

    pub fn agent(&self, name: &str) -> Result<&AgentConfig, ApiError> {
        self.agents.iter().find(|a| a.name == name).ok_or_else(|| {
            let known: Vec<_> = self.agents.iter().map(|a| a.name.as_str()).collect();
            ApiError::NotFound(format!(
                "unknown agent (model) '{name}'; available: {}",
                known.join(", ")
            ))
        })
    }

    fn registry(&self) -> Result<&Registry, ApiError> {
        self.registry.as_ref().ok_or_else(|| {
            ApiError::Unavailable(
                "no LLM provider is configured: set IRONCLAW_PROVIDER, IRONCLAW_MODEL, IRONCLAW_API_KEY (and IRONCLAW_BASE_URL) for ironclawd, or add [[providers]] to its config".into(),
            )
        })
    }

    pub fn new_session(&self, user: &str, agent: Option<&str>) -> Result<SessionRecord, ApiError> {
        let agent = self
            .agent(agent.unwrap_or(&self.agents[0].name))?
            .name
            .clone();
        let id: String = (0..8)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        Ok(self
            .manager
            .store
            .create_session(&format!("ses_{id}"), user, &agent)?)
    }

    fn store_messages(&self, session_id: &str, msgs: &[Message]) -> Result<Vec<i64>, ApiError> {
        let rows: Vec<_> = msgs.iter().map(message_row).collect();
        Ok(self.manager.store.append_messages(session_id, &rows)?)
    }

    /// Store messages a client brought along (OpenAI-style requests carry
    /// their own history) as the start of a fresh session.
    pub fn seed_history(&self, session_id: &str, msgs: &[Message]) -> Result<(), ApiError> {
        ironclaw_agent::validate_history(msgs)
            .map_err(|e| ApiError::BadRequest(format!("invalid messages: {e}")))?;
        self.store_messages(session_id, msgs)?;
        Ok(())
    }

    /// Stop the running turn of a session, if any.
    pub fn stop(&self, session_id: &str) -> bool {
        match self.running.lock().unwrap().get(session_id) {
            Some((t, _)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Refuse (403) when `user` reached their LLM spend for today.
    pub fn check_spend(&self, user: &str) -> Result<(), ApiError> {
        let limits = self.manager.limits_of(user);
        if limits.llm_usd_per_day.is_none() {
            return Ok(());
        }
        let spent = self
            .manager
            .store
            .cost_since(user, &crate::quota::today_utc())?;
        crate::quota::check_spend(&limits, user, spent)
    }

    /// Everything a turn of `user` with `agent` needs, after the spend check.
    fn context(
        &self,
        user: &str,
        agent: &AgentConfig,
        model_override: Option<&str>,
    ) -> Result<TurnContext, ApiError> {
        let registry = self.registry()?;
        self.check_spend(user)?;
        let model_name = match model_override.or(agent.model.as_deref()) {
            Some(m) => m.to_string(),
            None => registry
                .default_model()
                .map(|m| m.name)
                .ok_or_else(|| ApiError::Unavailable("no model configured".into()))?,
        };
        let (provider, model) = registry
            .resolve(&model_name)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let sandbox: Arc<dyn SandboxAccess> = Arc::new(UserSandbox {
            manager: self.manager.clone(),
            user: user.to_string(),
            create_locks: self.create_locks.clone(),
            mounts: self.agent_mounts.clone(),
        });
        let mut ctx = TurnContext::new(provider, model, sandbox.clone());
        ctx.mcp = self.mcp.hub(user, agent, &ctx.tools.workdir);
        ctx.memory = Some(Arc::new(crate::memory::agent::UserMemory {
            memory: self.memory.clone(),
            user: user.to_string(),
            sandbox,
        }));
        ctx.max_steps = self.max_steps;
        ctx.system_prompt = agent.system_prompt.clone();
        ctx.max_message_bytes = MAX_MESSAGE_BYTES;
        ctx.tasks = Some(Arc::new(crate::tasks::UserTasks {
            tasks: self.tasks.clone(),
            user: user.to_string(),
            origin: None,
        }));
        Ok(ctx)
    }

    /// A scheduled task's run: one turn of `user`'s default agent with no
    /// history, in their agent sandbox, stored nowhere but in what it
    /// returns (the run record keeps it), apart from the usage, recorded
    /// under `usage_key`. The final text, or why it failed, with the
    /// messages either way.
    pub async fn task_turn(
        self: &Arc<Self>,
        user: &str,
        prompt: &str,
        usage_key: &str,
        cancel: CancellationToken,
    ) -> (Result<String, String>, Vec<Message>) {
        let agent = self.agents[0].clone();
        let ctx = match self.context(user, &agent, None) {
            Ok(c) => c,
            Err(e) => return (Err(e.to_string()), Vec::new()),
        };
        self.activity
            .lock()
            .unwrap()
            .insert(user.to_string(), Instant::now());
        // Listed as running, so the idle reaper leaves the sandbox alone.
        self.running
            .lock()
            .unwrap()
            .insert(usage_key.to_string(), (cancel.clone(), user.to_string()));
        struct Unregister<'a>(&'a Chat, String);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                self.0.running.lock().unwrap().remove(&self.1);
            }
        }
        let _unregister = Unregister(self, usage_key.to_string());
        // Nobody watches a scheduled run's events.
        let (tx, _) = mpsc::channel(1);
        let (outcome, error) = match run_turn(&ctx, &[], prompt, tx, cancel).await {
            Ok(o) => (o, None),
            Err(TurnError::Provider { error, partial }) => (*partial, Some(error.to_string())),
            Err(e) => return (Err(e.to_string()), Vec::new()),
        };
        if outcome.usage.total() > 0 {
            if let Err(e) = self.manager.store.record_usage(
                usage_key,
                user,
                &ctx.model.name,
                token_counts(outcome.usage),
                outcome.cost_usd,
            ) {
                tracing::warn!("recording the usage of {usage_key}: {e}");
            }
        }
        self.activity
            .lock()
            .unwrap()
            .insert(user.to_string(), Instant::now());
        let result = match (error, outcome.stopped) {
            (Some(e), _) => Err(e),
            (None, Some(ironclaw_agent::StopReason::StepLimit)) => Err(format!(
                "stopped after {} model calls (agent_max_steps)",
                outcome.steps
            )),
            (None, Some(ironclaw_agent::StopReason::Cancelled)) => {
                Err("cancelled: the task was removed".into())
            }
            (None, _) => Ok(outcome.final_text()),
        };
        (result, outcome.new_messages)
    }

    /// Run one turn of `user` in `session` and store everything it produced.
    pub async fn turn(
        self: &Arc<Self>,
        user: &str,
        session: &SessionRecord,
        text: &str,
        model_override: Option<&str>,
        events: mpsc::Sender<TurnEvent>,
    ) -> Result<TurnReport, ApiError> {
        self.turn_from(None, user, session, text, model_override, events)
            .await
    }

    /// [`Chat::turn`] for a message that came from a chat channel: tasks
    /// the turn schedules post their results back to its chat, and a turn
    /// run again after a crash does not store the message twice.
    pub async fn turn_from(
        self: &Arc<Self>,
        channel: Option<ChannelTurn>,
        user: &str,
        session: &SessionRecord,
        text: &str,
        model_override: Option<&str>,
        events: mpsc::Sender<TurnEvent>,
    ) -> Result<TurnReport, ApiError> {
        let agent = self.agent(&session.agent)?.clone();
        let mut ctx = self.context(user, &agent, model_override)?;
        let resumed = channel.as_ref().is_some_and(|c| c.resumed);
        if let Some(c) = channel {
            ctx.tasks = Some(Arc::new(crate::tasks::UserTasks {
                tasks: self.tasks.clone(),
                user: user.to_string(),
                origin: Some(c.reply_to),
            }));
        }
        let model = ctx.model.clone();

        let cancel = CancellationToken::new();
        {
            let mut running = self.running.lock().unwrap();
            if running.contains_key(&session.id) {
                return Err(ApiError::Conflict(
                    "a turn is already running in this session; stop it first".into(),
                ));
            }
            running.insert(session.id.clone(), (cancel.clone(), user.to_string()));
        }
        struct Unregister<'a>(&'a Chat, String);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                self.0.running.lock().unwrap().remove(&self.1);
            }
        }
        let _unregister = Unregister(self, session.id.clone());
        self.activity
            .lock()
            .unwrap()
            .insert(user.to_string(), Instant::now());

        let store = &self.manager.store;
        let loaded = self.histories.load(store, &session.id)?;
        let loaded_last = crate::history::Histories::last_id(&loaded);
        let (mut ids, mut history) = loaded;

        // Validate cheaply before storing, so bad input changes nothing.
        check_message(text)?;
        let user_msg = Message::user(text);
        // A turn a daemon crash cut off stored its message and nothing
        // after it: run it again on that message instead of a second copy.
        let as_json = |m: &Message| serde_json::to_value(m).ok();
        let mut resumed_id = None;
        let stored = if resumed && history.last().and_then(as_json) == as_json(&user_msg) {
            history.pop();
            resumed_id = ids.pop();
            None
        } else {
            // Stored before the model sees it: acknowledged means kept.
            Some(message_row(&user_msg))
        };
        // A session gets its first message's first line as its title.
        let title: String = text.lines().next().unwrap_or("").chars().take(60).collect();
        let user_msg_id = store
            .begin_turn(&session.id, stored, title)
            .await?
            .or(resumed_id);

        let (outcome, error) = match run_turn(&ctx, &history, text, events, cancel).await {
            Ok(o) => (o, None),
            Err(TurnError::Provider { error, partial }) => (*partial, Some(error.to_string())),
            Err(e) => return Err(ApiError::BadRequest(e.to_string())),
        };
        // What the turn produced after the user's message, in one transaction.
        let summary = outcome.compaction.as_ref().map(|c| {
            let covered: Vec<i64> = ids.iter().take(c.replaced).copied().collect();
            // Summaries are stored as user messages, whatever the model made.
            (("user".to_string(), message_row(&c.summary).1), covered)
        });
        let usage = (outcome.usage.total() > 0).then(|| ironclaw_store::UsageRecord {
            user: user.to_string(),
            model: model.name.clone(),
            tokens: token_counts(outcome.usage),
            cost_usd: outcome.cost_usd,
        });
        let compacted = summary.is_some();
        let rest_ids = store
            .end_turn(ironclaw_store::TurnEnd {
                session_id: session.id.clone(),
                summary,
                messages: outcome
                    .new_messages
                    .iter()
                    .skip(1)
                    .map(message_row)
                    .collect(),
                usage,
            })
            .await?;
        // The next turn starts from this history without reading it back
        // (after a compaction it is read anew: the summary's id is the store's).
        if let (false, Some(user_id)) = (compacted, user_msg_id) {
            ids.push(user_id);
            ids.extend(rest_ids);
            history.extend(outcome.new_messages.iter().cloned());
            self.histories
                .keep(store, &session.id, loaded_last, (ids, history));
        }
        self.activity
            .lock()
            .unwrap()
            .insert(user.to_string(), Instant::now());
        Ok(TurnReport { outcome, error })
    }

    /// Stop agent sandboxes whose user has been quiet for `idle`.
    pub fn spawn_idle_reaper(self: &Arc<Self>, idle: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let tick = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                tokio::time::sleep(tick).await;
                let Some(chat) = me.upgrade() else { return };
                chat.mcp.close_idle(idle).await;
                let idle_users: Vec<String> = chat
                    .activity
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, t)| t.elapsed() >= idle)
                    .map(|(u, _)| u.clone())
                    .collect();
                for user in idle_users {
                    let busy = chat
                        .running
                        .lock()
                        .unwrap()
                        .values()
                        .any(|(_, u)| *u == user);
                    let bound = chat.manager.store.agent_sandbox(&user).ok().flatten();
                    if !busy {
                        // Their MCP servers in the sandbox go with it.
                        chat.mcp.close_user(&user).await;
                    }
                    if let Some(r) = bound {
                        if r.state == SandboxState::Running && !busy {
                            tracing::info!(sandbox = %r.name, user = %user, "stopping idle agent sandbox");
                            let _ = chat.manager.stop(&r.id).await;
                        }
                    }
                    chat.activity.lock().unwrap().remove(&user);
                }
            }
        });
    }
}

/// A message as the store keeps it: (role, content blocks as JSON).
fn message_row(m: &Message) -> (String, serde_json::Value) {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    (
        v["role"].as_str().unwrap_or("user").to_string(),
        v["content"].take(),
    )
}

/// A turn's usage as the store records it.
fn token_counts(u: ironclaw_agent::Usage) -> ironclaw_store::TokenCounts {
    ironclaw_store::TokenCounts {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
    }
}
