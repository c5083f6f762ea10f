//! MCP client for agents: the MCP servers an agent's config declares,
//! their tools offered to the model lazily through two small tools
//! ([`tools::specs`]: `mcp_tools` lists servers and, for one server, its
//! tools with their schemas; `mcp_call` calls one), and also callable by
//! their prefixed names (`mcp__SERVER__TOOL`) once listed.
//!
//! A stdio server runs inside the user's sandbox, started through the
//! guest agent's exec stream ([`stdio`]); never on the host. An HTTP
//! server is reached from the host, its credentials read from the host's
//! environment; they never reach the sandbox.
//!
//! One [`McpHub`] per (user, agent) lives in the daemon: a connection
//! starts on first use and is reused by later calls and turns; it is
//! dropped (the process in the sandbox killed) by [`McpHub::close`] when
//! the sandbox stops, by [`McpHub::close_idle`], or when it breaks (the
//! next use starts it again).

pub mod config;
mod stdio;
pub mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_sandbox::AgentClient;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

pub use config::{prefixed, split_prefixed, validate_all, McpConfigError, McpServerConfig};

use crate::turn::SandboxAccess;

/// How long a server may take to answer `initialize`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one tool call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads a host environment variable (injectable for tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct Conn {
    service: RunningService<RoleClient, ()>,
    /// stdio: the sandbox connection it runs on, and its bridge.
    agent: Option<AgentClient>,
    pipe: Option<stdio::Pipe>,
    tools: tokio::sync::OnceCell<Vec<Value>>,
    last_used: Mutex<Instant>,
}

impl Conn {
    fn alive(&self) -> bool {
        !self.service.is_closed() && !self.agent.as_ref().is_some_and(AgentClient::is_closed)
    }

    fn stderr(&self) -> String {
        self.pipe
            .as_ref()
            .map(|p| p.tail.lock().unwrap().describe())
            .unwrap_or_default()
    }
}

/// The MCP servers of one user's agent and their live connections.
pub struct McpHub {
    servers: Vec<McpServerConfig>,
    env: EnvLookup,
    workdir: String,
    conns: tokio::sync::Mutex<HashMap<String, Arc<Conn>>>,
}

impl McpHub {
    /// `servers` must have passed [`validate_all`]. Stdio servers start in
    /// `workdir` unless they set `cwd`.
    pub fn new(servers: Vec<McpServerConfig>, workdir: &str, env: EnvLookup) -> McpHub {
        McpHub {
            servers,
            env,
            workdir: workdir.to_string(),
            conns: Default::default(),
        }
    }

    /// Host environment variables through `std::env::var`.
    pub fn host_env() -> EnvLookup {
        Arc::new(|k| std::env::var(k).ok())
    }

    pub fn servers(&self) -> &[McpServerConfig] {
        &self.servers
    }

    /// Drop every connection (stdio processes are killed in the sandbox).
    pub async fn close(&self) {
        self.conns.lock().await.clear();
    }

    /// Drop connections unused for `idle`.
    pub async fn close_idle(&self, idle: Duration) {
        self.conns
            .lock()
            .await
            .retain(|_, c| c.last_used.lock().unwrap().elapsed() < idle);
    }

    /// Live connections (for tests and status).
    pub async fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .conns
            .lock()
            .await
            .iter()
            .filter(|(_, c)| c.alive())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    fn server(&self, name: &str) -> Result<&McpServerConfig, String> {
        self.servers.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<_> = self.servers.iter().map(|s| s.name.as_str()).collect();
            format!(
                "unknown MCP server {name:?}; configured: {}",
                known.join(", ")
            )
        })
    }

    /// The live connection to `name`, started if needed.
    async fn conn(&self, name: &str, sandbox: &dyn SandboxAccess) -> Result<Arc<Conn>, String> {
        let cfg = self.server(name)?;
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(name) {
            if c.alive() {
                *c.last_used.lock().unwrap() = Instant::now();
                return Ok(c.clone());
            }
            conns.remove(name);
        }
        let c = Arc::new(
            self.start(cfg, sandbox)
                .await
                .map_err(|e| format!("MCP server {name:?} failed to start: {e}"))?,
        );
        conns.insert(name.to_string(), c.clone());
        Ok(c)
    }

    async fn start(
        &self,
        cfg: &McpServerConfig,
        sandbox: &dyn SandboxAccess,
    ) -> Result<Conn, String> {
        match cfg.transport() {
            config::Transport::Stdio => {
                let agent = sandbox.agent().await?;
                let (pipe, halves) = stdio::spawn(&agent, cfg, &self.workdir).await?;
                match tokio::time::timeout(START_TIMEOUT, ().serve(halves)).await {
                    Ok(Ok(service)) => Ok(Conn {
                        service,
                        agent: Some(agent),
                        pipe: Some(pipe),
                        tools: Default::default(),
                        last_used: Mutex::new(Instant::now()),
                    }),
                    Ok(Err(e)) => {
                        // Let its last words (stderr, exit status) arrive.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Err(format!("{e}{}", pipe.tail.lock().unwrap().describe()))
                    }
                    Err(_) => Err(format!(
                        "no answer to initialize within {} s{}",
                        START_TIMEOUT.as_secs(),
                        pipe.tail.lock().unwrap().describe()
                    )),
                }
            }
            config::Transport::Http => {
                let transport = http_transport(cfg, &self.env)?;
                let service = tokio::time::timeout(START_TIMEOUT, ().serve(transport))
                    .await
                    .map_err(|_| format!("no answer within {} s", START_TIMEOUT.as_secs()))?
                    .map_err(|e| e.to_string())?;
                Ok(Conn {
                    service,
                    agent: None,
                    pipe: None,
                    tools: Default::default(),
                    last_used: Mutex::new(Instant::now()),
                })
            }
        }
    }

    /// `server`'s tools as the server describes them (JSON of MCP `Tool`),
    /// listed once per connection.
    pub async fn list_tools(
        &self,
        server: &str,
        sandbox: &dyn SandboxAccess,
    ) -> Result<Vec<Value>, String> {
        let c = self.conn(server, sandbox).await?;
        c.tools
            .get_or_try_init(|| async {
                let tools = c.service.peer().list_all_tools().await.map_err(|e| {
                    format!(
                        "MCP server {server:?}: listing tools failed: {e}{}",
                        c.stderr()
                    )
                })?;
                Ok::<_, String>(
                    tools
                        .iter()
                        .map(|t| serde_json::to_value(t).unwrap_or_default())
                        .collect(),
                )
            })
            .await
            .cloned()
    }

    /// Call `tool` of `server`; the result as JSON of MCP `CallToolResult`.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: Option<serde_json::Map<String, Value>>,
        sandbox: &dyn SandboxAccess,
    ) -> Result<Value, String> {
        let c = self.conn(server, sandbox).await?;
        let mut params = serde_json::json!({"name": tool});
        if let Some(a) = arguments {
            params["arguments"] = Value::Object(a);
        }
        let params = serde_json::from_value(params).map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(CALL_TIMEOUT, c.service.peer().call_tool(params))
            .await
            .map_err(|_| {
                format!(
                    "MCP server {server:?}: {tool} did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| {
                format!(
                    "MCP server {server:?}: calling {tool} failed: {e}{}",
                    c.stderr()
                )
            })?;
        *c.last_used.lock().unwrap() = Instant::now();
        serde_json::to_value(&r).map_err(|e| e.to_string())
    }
}

/// The streamable-HTTP transport for `cfg`, credentials from the host env.
fn http_transport(
    cfg: &McpServerConfig,
    env: &EnvLookup,
) -> Result<rmcp::transport::StreamableHttpClientTransport<reqwest013::Client>, String> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    install_crypto();
    let var = |name: &str| {
        env(name).ok_or_else(|| format!("the host environment variable {name} is not set"))
    };
    let mut conf =
        StreamableHttpClientTransportConfig::with_uri(cfg.url.clone().unwrap_or_default());
    if let Some(b) = &cfg.bearer_env {
        conf = conf.auth_header(var(b)?);
    }
    let mut headers = HashMap::new();
    for (h, v) in &cfg.headers_env {
        let name = http::HeaderName::from_bytes(h.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(&var(v)?)
            .map_err(|_| format!("the value of {v} is not a valid header value"))?;
        headers.insert(name, value);
    }
    if !headers.is_empty() {
        conf = conf.custom_headers(headers);
    }
    Ok(rmcp::transport::StreamableHttpClientTransport::from_config(
        conf,
    ))
}

/// rmcp's reqwest is built without a TLS provider of its own: use ring.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
