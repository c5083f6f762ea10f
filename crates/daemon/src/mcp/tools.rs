//! The tools `/mcp` offers. Each acts as the caller the bearer-token
//! middleware resolved (found in the request's extensions), on the caller's
//! own sandboxes; a failure is a tool result with `isError` and the same
//! message the HTTP API gives, so the model can read and react to it.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api::exec::{run_collected, ExecBody};
use crate::auth::{sandbox_not_found, Caller};
use crate::error::ApiError;
use crate::manager::CreateRequest;
use crate::AppState;

/// Largest file `file_read` returns: tool results go into a model's context.
const MAX_READ_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct IronclawMcp {
    state: AppState,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateArgs {
    /// Name of the new sandbox (lowercase letters, digits and dashes).
    pub name: String,
    /// Image to boot (default: the daemon's default image).
    pub image: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    /// "internet" (egress under the daemon's policy) or "none" (loopback only).
    pub network: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SandboxArgs {
    /// The sandbox's name.
    pub sandbox: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ExecArgs {
    pub sandbox: String,
    /// A shell command line, run with `sh -c`. Give this or `argv`.
    pub command: Option<String>,
    /// The program and its arguments, run without a shell.
    pub argv: Option<Vec<String>>,
    /// Text fed to the command's standard input.
    pub stdin: Option<String>,
    /// Working directory inside the sandbox.
    pub cwd: Option<String>,
    /// Kill the command after this many seconds.
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadArgs {
    pub sandbox: String,
    /// Absolute path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteArgs {
    pub sandbox: String,
    /// Absolute path inside the sandbox; missing parent directories are created.
    pub path: String,
    /// The file's new contents (UTF-8 text).
    pub content: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    /// What to ask the caller's agent.
    pub prompt: String,
    /// Continue this session (an id from an earlier answer); a new one when absent.
    pub session: Option<String>,
}

fn caller_of(parts: &axum::http::request::Parts) -> Result<Caller, ApiError> {
    parts
        .extensions
        .get::<Caller>()
        .cloned()
        .ok_or(ApiError::Unauthorized)
}

fn json_result(v: serde_json::Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(v.to_string())])
}

/// A tool's outcome as MCP wants it: failures are results the model sees.
fn finish(r: Result<serde_json::Value, ApiError>) -> CallToolResult {
    match r {
        Ok(v) => json_result(v),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
    }
}

impl IronclawMcp {
    pub fn new(state: AppState) -> Self {
        IronclawMcp {
            state,
            tool_router: Self::tool_router(),
        }
    }

    /// The caller's own sandbox `name`: another user's is a miss like a
    /// missing one, as on `/v1`.
    fn own_sandbox(&self, caller: &Caller, name: &str) -> Result<String, ApiError> {
        match self.state.manager.store.sandbox(&caller.user, name) {
            Ok(r) => Ok(r.id),
            Err(ironclaw_store::StoreError::NotFound(_)) => Err(sandbox_not_found(name)),
            Err(e) => Err(e.into()),
        }
    }

    async fn exec(&self, caller: &Caller, a: ExecArgs) -> Result<serde_json::Value, ApiError> {
        let argv = match (a.command, a.argv) {
            (Some(c), None) => vec!["sh".into(), "-c".into(), c],
            (None, Some(v)) => v,
            _ => {
                return Err(ApiError::BadRequest(
                    "give `command` (a shell line) or `argv`, not both or neither".into(),
                ))
            }
        };
        let id = self.own_sandbox(caller, &a.sandbox)?;
        let body = ExecBody {
            argv,
            env: Default::default(),
            cwd: a.cwd,
            stdin: a.stdin,
            timeout_secs: a.timeout_secs,
            timeout_ms: None,
            user: None,
        };
        Ok(serde_json::to_value(run_collected(&self.state, &id, body).await?).unwrap_or_default())
    }

    async fn ask(&self, caller: &Caller, a: AskArgs) -> Result<serde_json::Value, ApiError> {
        let chat = self.state.chat.clone();
        chat.check_spend(&caller.user)?;
        crate::chat::check_message(&a.prompt)?;
        let session = match &a.session {
            Some(id) => self.state.manager.store.session(&caller.user, id)?,
            None => chat.new_session(&caller.user, None)?,
        };
        let (tx, mut rx) = mpsc::channel(256);
        let user = caller.user.clone();
        let sid = session.id.clone();
        // Its own task: a client that hangs up mid-turn must not cut the
        // turn off between storing its steps.
        let turn =
            tokio::spawn(async move { chat.turn(&user, &session, &a.prompt, None, tx).await });
        while rx.recv().await.is_some() {}
        let report = turn
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        if let Some(err) = report.error {
            return Err(ApiError::Unavailable(format!(
                "the model provider failed: {err}"
            )));
        }
        Ok(serde_json::json!({"session": sid, "reply": report.outcome.final_text()}))
    }
}

#[tool_router]
impl IronclawMcp {
    #[tool(description = "List your sandboxes with their state, backend and image.")]
    async fn sandbox_list(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
    ) -> CallToolResult {
        finish((|| {
            let caller = caller_of(&parts)?;
            let views: Vec<_> = self
                .state
                .manager
                .store
                .sandboxes_of(&caller.user)?
                .iter()
                .map(|r| self.state.manager.view(r))
                .collect();
            Ok(serde_json::json!({ "sandboxes": views }))
        })())
    }

    #[tool(description = "Create a sandbox (a Linux machine of your own) and start it.")]
    async fn sandbox_create(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
        Parameters(a): Parameters<CreateArgs>,
    ) -> CallToolResult {
        let r = async {
            let caller = caller_of(&parts)?;
            let req = CreateRequest {
                name: a.name,
                image: a.image,
                backend: None,
                vcpus: a.vcpus,
                memory_mib: a.memory_mib,
                disk_mib: a.disk_mib,
                mounts: Vec::new(),
                network: a.network,
                egress: None,
                join: None,
            };
            let r = self.state.manager.create(req, &caller.user).await?;
            Ok(serde_json::to_value(self.state.manager.view(&r)).unwrap_or_default())
        };
        finish(r.await)
    }

    #[tool(
        description = "Run a command in one of your sandboxes and return its exit code, stdout and stderr."
    )]
    async fn sandbox_exec(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
        Parameters(a): Parameters<ExecArgs>,
    ) -> CallToolResult {
        let r = async { self.exec(&caller_of(&parts)?, a).await };
        finish(r.await)
    }

    #[tool(description = "Read a text file (up to 1 MiB) from one of your sandboxes.")]
    async fn file_read(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
        Parameters(a): Parameters<ReadArgs>,
    ) -> CallToolResult {
        let r = async {
            let caller = caller_of(&parts)?;
            let id = self.own_sandbox(&caller, &a.sandbox)?;
            let agent = self.state.manager.agent(&id).await?;
            let file = agent.read_file(&a.path, MAX_READ_BYTES).await?;
            if file.truncated {
                return Err(ApiError::TooLarge(format!(
                    "{} is larger than {MAX_READ_BYTES} bytes; read parts of it with sandbox_exec",
                    a.path
                )));
            }
            let text = String::from_utf8(file.data).map_err(|_| {
                ApiError::BadRequest(format!(
                    "{} is not UTF-8 text; read it with sandbox_exec (e.g. base64)",
                    a.path
                ))
            })?;
            Ok(serde_json::json!({"path": a.path, "content": text}))
        };
        finish(r.await)
    }

    #[tool(
        description = "Write a text file in one of your sandboxes, creating parent directories."
    )]
    async fn file_write(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
        Parameters(a): Parameters<WriteArgs>,
    ) -> CallToolResult {
        let r = async {
            let caller = caller_of(&parts)?;
            let limit = self.state.manager.config.max_upload_bytes;
            if a.content.len() as u64 > limit {
                return Err(ApiError::TooLarge(format!(
                    "content exceeds the upload limit of {limit} bytes"
                )));
            }
            let id = self.own_sandbox(&caller, &a.sandbox)?;
            let agent = self.state.manager.agent(&id).await?;
            let st = agent
                .write_file(&a.path, 0o644, true, a.content.as_bytes())
                .await?;
            Ok(serde_json::json!({"path": st.path, "size": st.size}))
        };
        finish(r.await)
    }

    #[tool(description = "Remove one of your sandboxes and its disk.")]
    async fn sandbox_remove(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
        Parameters(a): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        let r = async {
            let caller = caller_of(&parts)?;
            let id = self.own_sandbox(&caller, &a.sandbox)?;
            self.state.manager.remove(&id).await?;
            Ok(serde_json::json!({"removed": a.sandbox}))
        };
        finish(r.await)
    }

    #[tool(
        description = "Ask your IronClaw agent (it works in its own sandbox with its tools) and return its final answer."
    )]
    async fn ask_agent(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
        Parameters(a): Parameters<AskArgs>,
    ) -> CallToolResult {
        let r = async { self.ask(&caller_of(&parts)?, a).await };
        finish(r.await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for IronclawMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("ironclaw", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "IronClaw sandboxes: create Linux machines, run commands and move files in them, \
                 and ask your agent. Only your own sandboxes are visible.",
            )
    }
}
