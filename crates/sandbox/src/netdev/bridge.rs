//! STUB (replaced by helper-h1's module at merge).
use std::net::Ipv4Addr;
pub async fn ensure_bridge(_name: &str, _gw: Ipv4Addr, _prefix: u8) -> Result<(), super::NetdevError> {
    Ok(())
}
pub async fn delete_link(_name: &str) -> Result<(), super::NetdevError> {
    Ok(())
}
pub async fn join(_ifname: &str, _bridge: &str) -> Result<(), super::NetdevError> {
    Ok(())
}
