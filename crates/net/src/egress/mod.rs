//! STUB (replaced by helper-h2's module at merge).
use std::sync::Arc;
pub struct EgressContext {
    pub table: crate::Table,
    pub upstream: Arc<crate::upstream::Upstream>,
    pub always: Arc<crate::AlwaysDeny>,
}
pub async fn serve_http(_l: tokio::net::TcpListener, _ctx: Arc<EgressContext>) {}
pub async fn serve_tls(_l: tokio::net::TcpListener, _ctx: Arc<EgressContext>) {}
