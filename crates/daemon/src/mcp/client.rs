//! Agents as MCP clients: one [`McpHub`] per (user, agent) with MCP
//! servers in its config, kept across turns so a server starts once and is
//! reused. Closed (stdio servers killed in the sandbox) when the idle
//! reaper stops the user's sandbox (or sits unused as long); a connection that broke because the
//! sandbox stopped some other way is started again on its next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ironclaw_agent::McpHub;

use crate::config::AgentConfig;

#[derive(Default)]
pub struct McpHubs {
    hubs: Mutex<HashMap<(String, String), Arc<McpHub>>>,
}

impl McpHubs {
    /// The hub of `user`'s `agent`, None when the agent has no MCP servers.
    pub fn hub(&self, user: &str, agent: &AgentConfig, workdir: &str) -> Option<Arc<McpHub>> {
        if agent.mcp.is_empty() {
            return None;
        }
        let mut hubs = self.hubs.lock().unwrap();
        Some(
            hubs.entry((user.to_string(), agent.name.clone()))
                .or_insert_with(|| {
                    Arc::new(McpHub::new(agent.mcp.clone(), workdir, McpHub::host_env()))
                })
                .clone(),
        )
    }

    /// Close every connection of `user`'s agents.
    pub async fn close_user(&self, user: &str) {
        let gone: Vec<Arc<McpHub>> = {
            let mut hubs = self.hubs.lock().unwrap();
            let keys: Vec<_> = hubs.keys().filter(|(u, _)| u == user).cloned().collect();
            keys.iter().filter_map(|k| hubs.remove(k)).collect()
        };
        for h in gone {
            h.close().await;
        }
    }

    /// Close connections unused for `idle` (the hubs stay).
    pub async fn close_idle(&self, idle: std::time::Duration) {
        let hubs: Vec<Arc<McpHub>> = self.hubs.lock().unwrap().values().cloned().collect();
        for h in hubs {
            h.close_idle(idle).await;
        }
    }
}
