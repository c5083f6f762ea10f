//! Sandboxes: create, list, show, start, stop, egress.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ports::Exposure;

/// `POST /v1/sandboxes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// namespace, qemu or firecracker (default: the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Backend>)]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 1048576)]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 64, maximum = 16777216)]
    pub disk_mib: Option<u64>,
    /// Host directories to bind in (namespace backend; only under the
    /// daemon's `[[mount_roots]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountRequest>,
    /// internet: a port on the host bridge, egress under `egress`; none:
    /// loopback only (default from the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Network>)]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
    /// A named network of the owner's to join: its members reach each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub join: Option<String>,
}

/// The backends a sandbox can run on. The API's fields are strings (the
/// daemon's message names the choices); this is their schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Namespace,
    Qemu,
    Firecracker,
}

/// A sandbox's network: a port on the host bridge, or loopback only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Internet,
    None,
}

/// A host directory to bind into a new sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub host: String,
    pub guest: String,
    /// Read-only unless asked otherwise.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

/// Egress policy. Empty denies all; the host, 127/8, 169.254/16 and other
/// sandboxes are denied whatever it says; private ranges need allow_cidrs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    #[serde(default)]
    pub allow_all: bool,
    /// example.com, or *.example.com for the names under it.
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// e.g. 203.0.113.0/24
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    #[serde(default)]
    pub deny_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Creating,
    Running,
    Stopped,
    Crashed,
    Error,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
            SandboxState::Crashed => "crashed",
            SandboxState::Error => "error",
        }
    }
}

/// A host directory bound into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Mount {
    pub host: String,
    pub guest: String,
    pub read_only: bool,
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub name: String,
    pub owner: String,
    pub state: SandboxState,
    pub backend: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub disk_used_bytes: u64,
    pub created_at: String,
    #[schema(required)]
    pub started_at: Option<String>,
    #[schema(required)]
    pub state_reason: Option<String>,
    #[schema(required)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// internet or none.
    pub network: String,
    /// Address on the sandbox bridge (with `network: internet`).
    #[schema(required)]
    pub address: Option<String>,
    pub egress: Egress,
    /// The named network it joined.
    #[serde(default)]
    pub network_name: Option<String>,
    #[serde(default)]
    pub exposures: Vec<Exposure>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
}

/// `?bytes=` of `GET /v1/sandboxes/NAME/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Most bytes of log to return (default 65536, at most 16 MiB).
    #[param(maximum = 18446744073709551615_u64)]
    pub bytes: Option<u64>,
}

/// `GET /v1/sandboxes/NAME/info`: what the guest agent reports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GuestInfo {
    pub agent_version: String,
    pub protocol_version: u32,
    pub hostname: String,
    pub kernel: String,
    pub uptime_ms: u64,
    pub cpus: u32,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
    /// The agent runs as PID 1 (a VM) rather than under a namespace init.
    pub pid1: bool,
}
