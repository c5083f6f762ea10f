//! The one interface every sandbox backend implements. The daemon only talks
//! to sandboxes through it (and through the guest agent it returns the
//! address of), so placement on other hosts can later hide behind it too.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::AgentClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Namespace,
    Qemu,
    Firecracker,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Firecracker,
        BackendKind::Qemu,
        BackendKind::Namespace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Namespace => "namespace",
            BackendKind::Qemu => "qemu",
            BackendKind::Firecracker => "firecracker",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "namespace" => Ok(BackendKind::Namespace),
            "qemu" => Ok(BackendKind::Qemu),
            "firecracker" => Ok(BackendKind::Firecracker),
            _ => Err(format!(
                "unknown backend {s:?} (expected namespace, qemu or firecracker)"
            )),
        }
    }
}

/// Whether a backend can run sandboxes on this host, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    pub available: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    /// Most processes (threads) at once inside the sandbox.
    pub pids: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            vcpus: 1,
            memory_mib: 512,
            disk_mib: 2048,
            pids: 1024,
        }
    }
}

/// Everything a backend needs to know about one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Short unique id: names the state directory and the cgroup.
    pub id: String,
    pub name: String,
    pub image_rootfs: PathBuf,
    /// The sandbox's own state directory (its writable disk, sockets, logs).
    pub dir: PathBuf,
    pub resources: Resources,
    /// First host uid (and gid) of the sandbox's own block of ids: root
    /// inside a namespace sandbox is this uid on the host. See
    /// [`crate::userns::host_base`].
    pub uid_base: u32,
    /// Host directories to bind into the sandbox (namespace backend only),
    /// already resolved and checked against the operator's allowlist.
    pub mounts: Vec<BindMount>,
    /// The sandbox's port on the host bridge; None: loopback only.
    pub network: Option<crate::netdev::NetAttachment>,
}

/// A host directory bound into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Canonical host path (no symlinks, no `..`): the guest opens it
    /// refusing symlinks, so a path swapped after the check fails.
    pub host: PathBuf,
    /// Absolute, normalized path inside the sandbox.
    pub guest: PathBuf,
    pub read_only: bool,
}

impl BindMount {
    /// The `--bind` value of `ironclaw-guest ns-init`: `HOST:GUEST:ro|rw`
    /// (neither path may contain `:`).
    pub fn arg(&self) -> String {
        format!(
            "{}:{}:{}",
            self.host.display(),
            self.guest.display(),
            if self.read_only { "ro" } else { "rw" }
        )
    }
}

/// Refusal of VM backends, whose guests cannot see host directories yet.
pub fn refuse_mounts(kind: BackendKind, spec: &SandboxSpec) -> Result<(), BackendError> {
    if spec.mounts.is_empty() {
        return Ok(());
    }
    Err(BackendError::Setup(format!(
        "host directory mounts are supported on the namespace backend only for now \
         (backend {kind} would need virtio-fs or 9p)"
    )))
}

impl SandboxSpec {
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The last `max_bytes` of its console log (empty when there is none).
    pub fn console_tail(&self, max_bytes: u64) -> String {
        crate::namespace::log_tail(&self.console_log(), max_bytes)
    }
}

/// Kill whatever is left in sandbox `id`'s cgroup and remove the cgroup
/// (after its init or VMM died on its own, say). Nothing to do when it
/// has none.
pub async fn reap(id: &str) -> Result<(), BackendError> {
    if let Ok(cg) = crate::cgroup::Cgroup::for_sandbox(id) {
        cg.destroy().await?;
    }
    Ok(())
}

/// A started sandbox: the process that embodies it and where its agent
/// listens. Persisted by the daemon so that a restarted daemon can adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub pid: i32,
    /// The process start time (clock ticks since boot, /proc/PID/stat field
    /// 22), so a recycled pid is never mistaken for the sandbox.
    pub pid_start: u64,
    pub agent_socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {0} is not available on this host: {1}")]
    Unavailable(BackendKind, String),
    #[error("{0}")]
    Setup(String),
    #[error("sandbox did not become ready: {0}")]
    NotReady(String),
    /// The sandbox's process (init or VMM) exited while it was starting.
    #[error("sandbox crashed while starting: {0}")]
    Crashed(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Can this backend run sandboxes here? Cheap; may use cached probes.
    fn availability(&self) -> Availability;

    /// May automatic backend choice pick this one? (QEMU under TCG works
    /// but is too slow to be anyone's default.)
    fn default_eligible(&self) -> bool {
        true
    }

    /// Create the sandbox's writable disk from its image. Idempotent.
    async fn prepare(&self, spec: &SandboxSpec) -> Result<(), BackendError>;

    /// Boot the sandbox and wait until its agent answers.
    async fn start(&self, spec: &SandboxSpec) -> Result<(Running, AgentClient), BackendError>;

    /// Ask the guest to shut down (through `agent` when connected), wait up
    /// to `grace`, then kill. Leaves no process, mount or cgroup behind.
    async fn stop(
        &self,
        spec: &SandboxSpec,
        running: &Running,
        agent: Option<&AgentClient>,
        grace: Duration,
    ) -> Result<(), BackendError>;

    /// Remove the sandbox's disk and state. The sandbox must be stopped;
    /// anything still in its cgroup (a start cut off by a daemon crash) is
    /// killed first, so removal never leaves a process behind. Every backend
    /// keeps all of a sandbox's state in its directory.
    async fn destroy(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        self.reap(spec).await?;
        match std::fs::remove_dir_all(&spec.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Clean up after a sandbox whose process exited on its own: nothing
    /// it started may outlive it (see [`reap`]).
    async fn reap(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        crate::backend::reap(&spec.id).await
    }

    /// Bytes the sandbox's writable disk uses.
    fn disk_used(&self, spec: &SandboxSpec) -> u64;

    /// A fresh connection to the agent of a running sandbox (after a daemon
    /// restart, or when the previous connection dropped).
    async fn connect(
        &self,
        _spec: &SandboxSpec,
        running: &Running,
    ) -> Result<AgentClient, crate::AgentError> {
        AgentClient::connect_unix(&running.agent_socket).await
    }

    /// The last `max_bytes` of the sandbox's logs (console, and the VMM's
    /// own log where there is one).
    fn logs(&self, spec: &SandboxSpec, max_bytes: u64) -> String {
        spec.console_tail(max_bytes)
    }

    /// Why a sandbox stopped on its own: the tail of its logs.
    fn crash_report(&self, spec: &SandboxSpec) -> String {
        self.logs(spec, 1500)
    }

    /// A plain warning when this backend's VMM would run as root on this
    /// host (e.g. "firecracker would run as root: no jailer found next to
    /// ..."), for `ironclaw doctor`. None when it runs unprivileged or is
    /// not installed.
    fn privilege_warning(&self) -> Option<String> {
        None
    }
}
