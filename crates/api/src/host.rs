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
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub backends: Vec<BackendReport>,
    #[serde(default)]
    pub checks: Vec<Check>,
    /// VMMs that would run as root here, said plainly.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The host network's state (bridge, NAT, proxies).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub network: serde_json::Value,
    /// ACME certificates for exposed ports (null when off).
    #[serde(default)]
    #[schema(required)]
    pub acme: Option<AcmeReport>,
    #[serde(default)]
    #[schema(required)]
    pub default_backend: Option<String>,
    /// The SSH endpoint (null when off).
    #[serde(default)]
    #[schema(required)]
    pub ssh: Option<SshInfo>,
}

/// The ACME certificates of exposed ports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AcmeReport {
    /// The CA's directory URL.
    pub directory: String,
    #[serde(default)]
    pub certificates: Vec<AcmeCertificate>,
}

/// A name's certificate state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AcmeCertificate {
    pub host: String,
    /// issued, pending (no certificate yet, ordering) or failed (the last
    /// order failed; a valid older certificate may still serve).
    pub state: String,
    /// Expiry of the certificate served, RFC 3339.
    #[serde(default)]
    pub not_after: Option<String>,
    /// When it will be renewed, RFC 3339.
    #[serde(default)]
    pub renew_at: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Failed orders in a row.
    #[serde(default)]
    pub failures: u32,
    /// When the next order is tried after a failure, RFC 3339.
    #[serde(default)]
    pub retry_at: Option<String>,
}
