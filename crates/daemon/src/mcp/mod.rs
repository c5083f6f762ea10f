//! The MCP server at `/mcp`: IronClaw's sandboxes and agent as tools for
//! any MCP client, over the streamable HTTP transport of the official Rust
//! SDK (rmcp). The route sits behind the same bearer-token middleware as
//! `/v1`, so every tool acts as the token's user on that user's sandboxes
//! only; `ironclaw mcp` bridges it to stdio for desktop clients.
//!
//! [`client`] is the other direction: agents using MCP servers.

pub mod client;
mod tools;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::AppState;

pub use tools::IronclawMcp;

/// The `/mcp` service. Sessions live in memory (a restart asks clients to
/// initialize again, which MCP clients do on a 404).
pub fn service(state: AppState) -> StreamableHttpService<IronclawMcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        // Every request carries a bearer token, and no cookie authenticates
        // here, so a rebinding page gains nothing: accept any Host (the
        // daemon is reached by whatever name its operator gives it).
        .disable_allowed_hosts()
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)));
    StreamableHttpService::new(
        move || Ok(IronclawMcp::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
