//! The `firecracker` backend: one Firecracker process per sandbox (KVM
//! microVM), configured over its API socket; the guest agent is reached
//! through virtio-vsock.
//!
//! Boot: machine config, boot source (vmlinux + initramfs + command line),
//! the sandbox's own ext4 disk, a vsock device, then InstanceStart. The
//! initramfs loads the virtio modules and switches to the disk, where
//! ironclaw-guest runs as init and listens on vsock port [`AGENT_PORT`].

pub mod api;
pub mod vsock;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclaw_proto::HostMsg;
use nix::sched::CloneFlags;
use serde_json::json;

use crate::agent::AgentClient;
use crate::backend::{
    Availability, Backend, BackendError, BackendKind, Resources, Running, SandboxSpec,
};
use crate::cgroup::Cgroup;
use crate::namespace::log_tail;
use crate::probe::KvmProber;
use crate::util::which;
use crate::{process, vmdisk};

/// Guest vsock port the agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// Guest context id; each VM has its own vsock device, so it can be fixed.
const GUEST_CID: u32 = 3;
/// How long a boot may take from InstanceStart to a connected agent.
/// Generous: on hosts where KVM guests crawl, Firecracker takes ~35 s to
/// die with KVM_EXIT_INTERNAL_ERROR, and we want that error in the report.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Memory the VMM itself needs beyond guest RAM, for the cgroup limit.
const VMM_OVERHEAD_MIB: u64 = 64;

/// Where the kernel, initramfs and root disk of an image live.
#[derive(Debug, Clone)]
pub struct VmBoot {
    /// Uncompressed ELF kernel (Firecracker cannot boot a bzImage).
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs_ext4: PathBuf,
}

impl VmBoot {
    pub fn for_spec(spec: &SandboxSpec) -> Result<VmBoot, BackendError> {
        let a = crate::image::vm::artifacts(&spec.image_rootfs).map_err(BackendError::Setup)?;
        Ok(VmBoot {
            vmlinux: a.kernel.vmlinux(),
            initramfs: a.initramfs,
            rootfs_ext4: a.rootfs_ext4,
        })
    }
}

#[derive(Debug)]
pub struct FirecrackerBackend {
    bin: Option<PathBuf>,
    /// Whether KVM guests boot on this host (probed lazily, once).
    kvm: Arc<KvmProber>,
    /// `firecracker --version`, asked once.
    version: std::sync::OnceLock<Option<String>>,
    /// Skip the KVM probe (tests that drive Firecracker on hosts where
    /// guests cannot boot, to check the API calls and the crash report).
    pub ignore_probe: bool,
}

impl FirecrackerBackend {
    /// `bin` is the firecracker binary; None means look for `firecracker` on PATH.
    pub fn new(bin: Option<PathBuf>, kvm: Arc<KvmProber>) -> Self {
        FirecrackerBackend {
            bin: bin.or_else(|| which("firecracker")),
            kvm,
            version: Default::default(),
            ignore_probe: false,
        }
    }

    pub fn binary(&self) -> Option<&Path> {
        self.bin.as_deref()
    }

    /// `firecracker --version`, e.g. "Firecracker v1.12.1".
    pub fn version(&self) -> Option<String> {
        self.version
            .get_or_init(|| {
                let out = Command::new(self.bin.as_ref()?)
                    .arg("--version")
                    .env_clear()
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
            .clone()
    }

    fn api_socket(spec: &SandboxSpec) -> PathBuf {
        spec.dir.join("fc.sock")
    }

    fn vsock_socket(spec: &SandboxSpec) -> PathBuf {
        spec.dir.join("v.sock")
    }

    fn fc_log(spec: &SandboxSpec) -> PathBuf {
        spec.dir.join("firecracker.log")
    }

    fn disk(spec: &SandboxSpec) -> PathBuf {
        spec.dir.join("disk.ext4")
    }

    fn spawn(&self, spec: &SandboxSpec, cg: &Cgroup) -> Result<u32, BackendError> {
        let bin = self.bin.as_ref().ok_or_else(|| {
            BackendError::Unavailable(
                BackendKind::Firecracker,
                "firecracker binary not found".into(),
            )
        })?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(Self::fc_log(spec))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--api-sock")
            .arg(Self::api_socket(spec))
            .arg("--id")
            .arg(format!("ironclaw-{}", spec.id))
            .arg("--log-path")
            .arg(Self::fc_log(spec))
            .arg("--level")
            .arg("Info");
        // The guest's serial console is Firecracker's stdout.
        process::spawn_sandbox_process(&mut cmd, cg, &spec.console_log(), CloneFlags::empty())
            .map_err(|e| BackendError::Setup(format!("starting {}: {e}", bin.display())))
    }

    /// Configure the VM over the API and start it.
    async fn configure(&self, spec: &SandboxSpec, boot: &VmBoot) -> Result<(), BackendError> {
        let sock = Self::api_socket(spec);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(BackendError::NotReady(format!(
                    "firecracker API socket {} did not appear",
                    sock.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let Resources {
            vcpus, memory_mib, ..
        } = spec.resources;
        let boot_args = format!(
            "console=ttyS0 reboot=k panic=1 pci=off quiet ironclaw.transport=vsock:{AGENT_PORT} ironclaw.hostname={} ironclaw.shutdown=reboot",
            spec.name
        );
        let calls = [
            (
                "/machine-config",
                json!({"vcpu_count": vcpus, "mem_size_mib": memory_mib, "smt": false}),
            ),
            (
                "/boot-source",
                json!({"kernel_image_path": boot.vmlinux, "initrd_path": boot.initramfs, "boot_args": boot_args}),
            ),
            (
                "/drives/root",
                json!({"drive_id": "root", "path_on_host": Self::disk(spec), "is_root_device": false, "is_read_only": false}),
            ),
            (
                "/vsock",
                json!({"guest_cid": GUEST_CID, "uds_path": Self::vsock_socket(spec)}),
            ),
            ("/actions", json!({"action_type": "InstanceStart"})),
        ];
        for (path, body) in calls {
            api::put(&sock, path, &body)
                .await
                .map_err(|e| BackendError::Setup(e.to_string()))?;
            tracing::debug!(sandbox = %spec.name, "firecracker accepted PUT {path}");
        }
        Ok(())
    }

    fn report(spec: &SandboxSpec, max_bytes: u64) -> String {
        let fc = log_tail(&Self::fc_log(spec), max_bytes / 2);
        let console = log_tail(&spec.console_log(), max_bytes / 2);
        format!("firecracker log:\n{fc}\nserial console:\n{console}")
    }
}

#[async_trait::async_trait]
impl Backend for FirecrackerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn availability(&self) -> Availability {
        let Some(bin) = &self.bin else {
            return Availability {
                available: false,
                reason: "firecracker binary not found (set firecracker_bin; see README: installing Firecracker)".into(),
            };
        };
        if self.ignore_probe {
            return Availability {
                available: true,
                reason: format!("{} (KVM probe skipped)", bin.display()),
            };
        }
        let version = self.version().unwrap_or_else(|| "unknown version".into());
        // Until the probe has run, say so rather than booting from a status query.
        match self.kvm.known() {
            Some(kvm) => Availability {
                available: kvm.boots,
                reason: format!("{version} at {}; {}", bin.display(), kvm.reason),
            },
            None => Availability {
                available: false,
                reason: format!(
                    "{version} at {}; KVM guest boot not probed yet",
                    bin.display()
                ),
            },
        }
    }

    async fn prepare(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        fs::create_dir_all(&spec.dir)?;
        let boot = VmBoot::for_spec(spec)?;
        vmdisk::prepare(
            &boot.rootfs_ext4,
            &Self::disk(spec),
            spec.resources.disk_mib,
        )
        .await
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<(Running, AgentClient), BackendError> {
        if self.bin.is_none() {
            return Err(BackendError::Unavailable(
                BackendKind::Firecracker,
                self.availability().reason,
            ));
        }
        if !self.ignore_probe {
            let kvm = self.kvm.clone();
            let probe = tokio::task::spawn_blocking(move || kvm.get())
                .await
                .map_err(|e| BackendError::Setup(e.to_string()))?;
            if !probe.boots {
                return Err(BackendError::Unavailable(
                    BackendKind::Firecracker,
                    probe.reason,
                ));
            }
        }
        self.prepare(spec).await?;
        let boot = VmBoot::for_spec(spec)?;
        for s in [Self::api_socket(spec), Self::vsock_socket(spec)] {
            let _ = fs::remove_file(s);
        }
        let cg = Cgroup::for_sandbox(&spec.id)?;
        cg.destroy().await?;
        let mut limits = spec.resources;
        limits.memory_mib += VMM_OVERHEAD_MIB;
        cg.create(&limits)?;
        let pid = match self.spawn(spec, &cg) {
            Ok(p) => p as i32,
            Err(e) => {
                let _ = cg.destroy().await;
                return Err(e);
            }
        };
        let pid_start = process::start_time(pid).unwrap_or(0);
        let running = Running {
            pid,
            pid_start,
            agent_socket: Self::vsock_socket(spec),
        };
        let result = async {
            self.configure(spec, &boot).await?;
            let started = Instant::now();
            loop {
                if !process::is_same_process(pid, pid_start) {
                    return Err(BackendError::Crashed(format!(
                        "firecracker exited during boot; {}",
                        Self::report(spec, 2400)
                    )));
                }
                if let Ok(s) = vsock::connect(&running.agent_socket, AGENT_PORT).await {
                    if let Ok(Ok(agent)) =
                        tokio::time::timeout(Duration::from_secs(5), AgentClient::over(s)).await
                    {
                        return Ok(agent);
                    }
                }
                if started.elapsed() > BOOT_TIMEOUT {
                    return Err(BackendError::NotReady(format!(
                        "no agent after {BOOT_TIMEOUT:?}; {}",
                        Self::report(spec, 2400)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        .await;
        match result {
            Ok(agent) => Ok((running, agent)),
            Err(e) => {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = tokio::time::timeout(Duration::from_secs(5), process::wait_exit(pid)).await;
                let _ = cg.destroy().await;
                Err(e)
            }
        }
    }

    async fn stop(
        &self,
        spec: &SandboxSpec,
        running: &Running,
        agent: Option<&AgentClient>,
        grace: Duration,
    ) -> Result<(), BackendError> {
        if process::is_same_process(running.pid, running.pid_start) {
            if let Some(agent) = agent {
                let _ = tokio::time::timeout(grace, agent.call_ok(HostMsg::Shutdown)).await;
            } else {
                let _ = api::put(
                    &Self::api_socket(spec),
                    "/actions",
                    &json!({"action_type": "SendCtrlAltDel"}),
                )
                .await;
            }
            if tokio::time::timeout(grace, process::wait_exit(running.pid))
                .await
                .is_err()
            {
                tracing::warn!(sandbox = %spec.name, "VM did not power off within {grace:?}; killing firecracker");
                unsafe { libc::kill(running.pid, libc::SIGKILL) };
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), process::wait_exit(running.pid))
                        .await;
            }
        }
        Cgroup::for_sandbox(&spec.id)?.destroy().await?;
        process::reap(running.pid);
        for s in [Self::api_socket(spec), Self::vsock_socket(spec)] {
            let _ = fs::remove_file(s);
        }
        Ok(())
    }

    fn disk_used(&self, spec: &SandboxSpec) -> u64 {
        vmdisk::allocated(&Self::disk(spec))
    }

    async fn connect(
        &self,
        _spec: &SandboxSpec,
        running: &Running,
    ) -> Result<AgentClient, crate::AgentError> {
        let s = vsock::connect(&running.agent_socket, AGENT_PORT)
            .await
            .map_err(crate::AgentError::Connect)?;
        AgentClient::over(s).await
    }

    fn logs(&self, spec: &SandboxSpec, max_bytes: u64) -> String {
        Self::report(spec, max_bytes)
    }
}
