//! STUB (replaced by helper-h1's module at merge).
use std::net::Ipv4Addr;
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("{0}")]
    Other(String),
}
pub struct RulesetSpec<'a> {
    pub table: &'a str,
    pub bridge: &'a str,
    pub gateway: Ipv4Addr,
    pub subnet: ipnet::Ipv4Net,
    pub dns_port: u16,
    pub http_port: u16,
    pub tls_port: u16,
    pub always: &'a crate::AlwaysDeny,
    pub sandboxes: &'a [crate::Attached],
}
pub fn apply(_spec: &RulesetSpec) -> Result<(), NftError> {
    Err(NftError::Other("stub".into()))
}
pub fn remove(_table: &str) -> Result<(), NftError> {
    Ok(())
}
pub fn exists(_table: &str) -> Result<bool, NftError> {
    Ok(false)
}
