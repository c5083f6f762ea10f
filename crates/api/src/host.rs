//! `GET /v1/host`: what this host supports (`ironclaw doctor`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackendReport {
    /// namespace, qemu or firecracker.
    pub name: String,
    pub available: bool,
    /// Why not, when it is not.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The SSH endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshInfo {
    /// ADDRESS:PORT it listens on.
    pub listen: String,
    /// SHA256:... of the host key.
    pub fingerprint: String,
    /// The host key as a known_hosts key.
    pub host_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostReport {
    pub version: String,
    pub backends: Vec<BackendReport>,
    pub checks: Vec<Check>,
    /// VMMs that would run as root here, said plainly.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The host network's state (bridge, NAT, proxies).
    #[schema(value_type = Object)]
    pub network: serde_json::Value,
    /// ACME certificates for exposed ports (null when off).
    #[serde(default)]
    #[schema(required, value_type = Option<Object>)]
    pub acme: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(required)]
    pub default_backend: Option<String>,
    /// The SSH endpoint (null when off).
    #[serde(default)]
    #[schema(required)]
    pub ssh: Option<SshInfo>,
}
