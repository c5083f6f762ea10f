//! STUB (replaced by helper-h2's module at merge).
use std::sync::Arc;
pub async fn serve(
    _udp: tokio::net::UdpSocket,
    _tcp: tokio::net::TcpListener,
    _table: crate::Table,
    _upstream: Arc<crate::upstream::Upstream>,
    _always: Arc<crate::AlwaysDeny>,
) {
}
