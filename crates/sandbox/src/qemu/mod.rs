//! The `qemu` backend: one `qemu-system-x86_64 -M microvm` per sandbox,
//! with KVM when the host's KVM can really boot guests (see
//! [`crate::probe`]) and TCG software emulation otherwise.
//!
//! Boot: the image's kernel and initramfs, the sandbox's own ext4 disk on
//! virtio-blk, and the agent channel. That channel is vhost-vsock when the
//! host has `/dev/vhost-vsock`; otherwise a virtio-serial port whose host
//! end is a Unix socket in the sandbox dir (QEMU listens; a new connection
//! after a disconnect is resynchronised by the protocol handshake). The
//! serial console goes to `console.log`; QMP listens on `qmp.sock` so a
//! stuck VM can be told to quit.
//!
//! Privileges: QEMU never runs as root. It is started already as an
//! unprivileged uid/gid ([`DEFAULT_QEMU_UID`], configurable with
//! [`QemuBackend::with_user`]) with no supplementary groups and
//! `no_new_privs`, and turns on its own seccomp filter ([`SECCOMP`]). It
//! opens nothing by path: the daemon (root) opens the kernel, initramfs, the
//! sandbox's disk and console log, `/dev/kvm` and `/dev/vhost-vsock`, binds
//! the agent and QMP sockets, and hands them over as inherited descriptors
//! (`-add-fd` sets, `/proc/self/fd/N`, chardev `fd=`). So the sandbox's
//! files stay root-owned and private (mode 0600, directory 0700), the data
//! dir needs no permission for that uid, and one VMM cannot open another
//! sandbox's files even though all VMMs share the uid.

mod caps;
mod launch;
mod link;

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclaw_proto::HostMsg;
use nix::sched::CloneFlags;

use self::caps::{probe_caps, QemuCaps};
use self::launch::{agent_socket, disk, qmp_socket, Channel, QemuLaunch};
pub use self::link::reconnect_serial;
use self::link::{connect_vsock, qmp_quit, wait_serial, wait_vsock};
use crate::agent::{AgentClient, AgentError};
use crate::backend::{Availability, Backend, BackendError, BackendKind, Running, SandboxSpec};
use crate::cgroup::Cgroup;
use crate::image::{kernel, vm};
use crate::namespace::log_tail;
use crate::probe::{KvmProbe, KvmProber};
use crate::process;
use crate::util::which;

const QEMU: &str = "qemu-system-x86_64";
/// The uid and gid QEMU runs as unless configured otherwise: a dedicated id
/// that owns no file on the host (config `qemu_uid` / `qemu_gid`).
pub const DEFAULT_QEMU_UID: u32 = 10_001;
pub const DEFAULT_QEMU_GID: u32 = 10_001;
/// QEMU's seccomp sandbox: its default deny list plus obsolete syscalls,
/// set*id, fork/exec and scheduler/resource controls.
pub const SECCOMP: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// Name of the virtio-serial port the guest agent serves on.
const SERIAL_PORT: &str = "agent.0";
/// Guest vsock port of the agent (vhost-vsock hosts only).
const VSOCK_PORT: u32 = 1024;
/// Boot deadlines from spawn to a connected agent. TCG boots the cloud
/// kernel in ~3 s on an idle host; the margin covers a loaded CI machine.
const READY_TIMEOUT_TCG: Duration = Duration::from_secs(45);
const READY_TIMEOUT_KVM: Duration = Duration::from_secs(15);
/// TCG's translation cache, capped (QEMU's default is 1 GiB per VM).
const TCG_TB_MIB: u64 = 64;
/// Memory QEMU needs beyond guest RAM, for the cgroup limit.
const VMM_OVERHEAD_KVM_MIB: u64 = 96;
const VMM_OVERHEAD_TCG_MIB: u64 = 96 + TCG_TB_MIB;
/// The cloud kernel plus initramfs does not boot in less.
const MIN_MEMORY_MIB: u64 = 96;
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Per-attempt handshake limit when (re)connecting to a running guest: a
/// guest that missed the disconnect of the previous host eats the first
/// sync line, so a second attempt is needed then.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reconnect waits for QEMU to let go of the previous client.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct QemuBackend {
    bin: Option<PathBuf>,
    kernels_dir: PathBuf,
    kvm: Arc<KvmProber>,
    /// Who QEMU runs as; uid 0 means root (doctor warns).
    uid: u32,
    gid: u32,
    /// What the QEMU binary supports, asked once.
    caps: std::sync::OnceLock<QemuCaps>,
}

/// A KVM prober whose kernel is the newest one in `data_dir`'s cache. The
/// answer is cached per host boot in /run (shared by every data dir) when
/// writable.
pub fn default_prober(data_dir: &Path) -> Arc<KvmProber> {
    let cache = if fs::create_dir_all("/run/ironclaw").is_ok() {
        PathBuf::from("/run/ironclaw/kvm-probe.json")
    } else {
        data_dir.join("kvm-probe.json")
    };
    Arc::new(KvmProber::new(cache, kernel_source(data_dir)))
}

/// The probe's kernel: the newest one in `data_dir`'s kernel cache.
pub fn kernel_source(data_dir: &Path) -> crate::probe::KernelSource {
    let kernels = data_dir.join("kernels");
    Box::new(move || {
        kernel::newest_cached(&kernels)
            .map(|k| k.vmlinuz())
            .ok_or_else(|| "no kernel downloaded yet (building an image fetches it)".into())
    })
}

impl QemuBackend {
    /// `data_dir` holds `images/` and `kernels/`.
    pub fn new(data_dir: &Path, kvm: Arc<KvmProber>) -> Self {
        QemuBackend {
            bin: which(QEMU),
            kernels_dir: data_dir.join("kernels"),
            kvm,
            uid: DEFAULT_QEMU_UID,
            gid: DEFAULT_QEMU_GID,
            caps: std::sync::OnceLock::new(),
        }
    }

    fn caps(&self) -> Option<&QemuCaps> {
        let bin = self.bin.as_ref()?;
        Some(self.caps.get_or_init(|| probe_caps(bin)))
    }

    /// Run QEMU as `uid`/`gid` (default [`DEFAULT_QEMU_UID`]); 0 runs it as
    /// root, which `ironclaw doctor` warns about.
    pub fn with_user(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// The uid and gid QEMU runs as.
    pub fn user(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// With its own prober (see [`default_prober`]).
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self::new(data_dir, default_prober(data_dir))
    }

    /// The KVM answer, probing once if nobody has yet (blocking, ~15 s at
    /// most, once per host boot).
    async fn kvm(&self) -> KvmProbe {
        if let Some(p) = self.kvm.known() {
            return p;
        }
        let kvm = self.kvm.clone();
        tokio::task::spawn_blocking(move || kvm.get())
            .await
            .unwrap_or_else(|e| KvmProbe {
                boot_id: String::new(),
                boots: false,
                reason: format!("KVM probe failed: {e}"),
            })
    }

    fn channel(spec: &SandboxSpec) -> Channel {
        if Path::new("/dev/vhost-vsock").exists() {
            // Guest CIDs are host-wide: derive one from the sandbox id.
            let n = u32::from_str_radix(spec.id.get(..6).unwrap_or("0"), 16).unwrap_or(0);
            Channel::Vsock {
                cid: 3 + n % 0x00ff_fff0,
            }
        } else {
            Channel::Serial
        }
    }

    /// The identity QEMU is started as: none (root) when configured as uid 0.
    fn credentials(&self, groups: Vec<u32>) -> Option<process::Credentials> {
        (self.uid != 0).then_some(process::Credentials {
            uid: self.uid,
            gid: self.gid,
            groups,
        })
    }

    /// Spawn QEMU in the sandbox's cgroup, in its own session, with an
    /// empty environment (the daemon's may hold secrets), as its
    /// unprivileged user, with only the descriptors of `launch`.
    fn spawn(
        &self,
        launch: QemuLaunch,
        spec: &SandboxSpec,
        cg: &Cgroup,
    ) -> Result<u32, BackendError> {
        let QemuLaunch {
            mut cmd,
            fds,
            groups,
        } = launch;
        // "/" rather than the sandbox dir, which QEMU's user cannot enter.
        cmd.current_dir("/");
        let how = process::Launch {
            user: self.credentials(groups),
            inherit: fds.iter().map(|f| f.as_raw_fd()).collect(),
        };
        let pid = process::spawn_sandbox_process_as(
            &mut cmd,
            cg,
            &spec.console_log(),
            CloneFlags::empty(),
            &how,
        )
        .map_err(|e| BackendError::Setup(format!("starting {QEMU}: {e}")))?;
        // QEMU holds its copies now.
        drop(fds);
        // Reaped through `process::wait_exit` / `process::reap`.
        Ok(pid)
    }

    /// One boot attempt: spawn, wait for the agent. On failure QEMU is
    /// killed and the error says whether a retry can help.
    async fn boot_once(
        &self,
        spec: &SandboxSpec,
        boot: &vm::VmArtifacts,
        kvm: bool,
        channel: Channel,
        cg: &Cgroup,
    ) -> Result<(Running, AgentClient), (bool, String)> {
        for s in [agent_socket(spec), qmp_socket(spec)] {
            let _ = fs::remove_file(s);
        }
        // One boot per log: the tail then explains this boot only. It is
        // the guest's serial output: readable by the daemon only.
        if let Ok(f) = File::create(spec.console_log()) {
            let _ = f.set_permissions(fs::Permissions::from_mode(0o600));
        }
        let cmd = self
            .command(spec, boot, kvm, channel)
            .map_err(|e| (false, e.to_string()))?;
        let pid = self
            .spawn(cmd, spec, cg)
            .map_err(|e| (false, e.to_string()))? as i32;
        let pid_start = process::start_time(pid).unwrap_or(0);
        let running = Running {
            pid,
            pid_start,
            agent_socket: agent_socket(spec),
        };
        let timeout = if kvm {
            READY_TIMEOUT_KVM
        } else {
            READY_TIMEOUT_TCG
        };
        let started = Instant::now();
        let result = match channel {
            Channel::Serial => wait_serial(&running, started + timeout).await,
            Channel::Vsock { cid } => wait_vsock(&running, cid, started + timeout).await,
        };
        match result {
            Ok(agent) => {
                tracing::info!(sandbox = %spec.name, pid, "qemu VM ready in {:?}", started.elapsed());
                Ok((running, agent))
            }
            Err((retry, why)) => {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = tokio::time::timeout(Duration::from_secs(5), process::wait_exit(pid)).await;
                process::reap(pid);
                Err((retry, why))
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn availability(&self) -> Availability {
        let Some(bin) = &self.bin else {
            return Availability {
                available: false,
                reason: format!("{QEMU} not found (apt-get install qemu-system-x86)"),
            };
        };
        if let Some(Err(why)) = self.caps().map(|c| &c.seccomp) {
            return Availability {
                available: false,
                reason: why.clone(),
            };
        }
        let kernel = match kernel::newest_cached(&self.kernels_dir) {
            Some(k) => format!("kernel {}", k.version),
            None => "kernel not downloaded yet (the first image build fetches it)".into(),
        };
        let accel = match self.kvm.known() {
            Some(p) if p.boots => "KVM".to_string(),
            Some(p) => {
                let why = p
                    .reason
                    .rsplit("cannot boot here: ")
                    .next()
                    .unwrap_or(&p.reason);
                format!("TCG (software emulation; KVM guests cannot boot here: {why})")
            }
            None => match crate::probe::kvm_device_problem() {
                Some(why) => format!("TCG (software emulation; {why})"),
                None => "TCG until the KVM probe (run at the first boot) says otherwise".into(),
            },
        };
        let channel = if Path::new("/dev/vhost-vsock").exists() {
            "vhost-vsock"
        } else {
            "virtio-serial (no /dev/vhost-vsock)"
        };
        Availability {
            available: true,
            reason: format!(
                "{} microvm, {accel}; {kernel}; agent over {channel}; {}",
                bin.display(),
                if self.uid == 0 {
                    "runs as root under seccomp".to_string()
                } else {
                    format!("runs as uid {} gid {} under seccomp", self.uid, self.gid)
                }
            ),
        }
    }

    fn default_eligible(&self) -> bool {
        self.kvm.known().is_some_and(|p| p.boots)
    }

    fn privilege_warning(&self) -> Option<String> {
        let bin = self.bin.as_ref()?;
        (self.uid == 0).then(|| {
            format!(
                "qemu would run as root: qemu_uid is 0; set qemu_uid/qemu_gid to an unused id (default {DEFAULT_QEMU_UID}) so {} runs unprivileged",
                bin.display()
            )
        })
    }

    async fn prepare(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        let boot = vm::artifacts(&spec.image_rootfs).map_err(BackendError::Setup)?;
        fs::create_dir_all(&spec.dir)?;
        for sock in [agent_socket(spec), qmp_socket(spec)] {
            if sock.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(BackendError::Setup(format!(
                    "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --data-dir",
                    sock.display()
                )));
            }
        }
        crate::vmdisk::prepare(&boot.rootfs_ext4, &disk(spec), spec.resources.disk_mib).await?;
        // QEMU gets the disk and sockets as descriptors; nobody else needs
        // a way in.
        fs::set_permissions(&spec.dir, fs::Permissions::from_mode(0o700))?;
        fs::set_permissions(disk(spec), fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<(Running, AgentClient), BackendError> {
        if let Some(Err(why)) = self.caps().map(|c| c.seccomp.clone()) {
            return Err(BackendError::Unavailable(BackendKind::Qemu, why));
        }
        crate::backend::refuse_mounts(BackendKind::Qemu, spec)?;
        if spec.resources.memory_mib < MIN_MEMORY_MIB {
            return Err(BackendError::Setup(format!(
                "qemu sandboxes need at least {MIN_MEMORY_MIB} MiB of memory, got {}",
                spec.resources.memory_mib
            )));
        }
        self.prepare(spec).await?;
        let boot = vm::artifacts(&spec.image_rootfs).map_err(BackendError::Setup)?;
        let kvm = self.kvm().await.boots;
        let channel = Self::channel(spec);
        let overhead = if kvm {
            VMM_OVERHEAD_KVM_MIB
        } else {
            VMM_OVERHEAD_TCG_MIB
        };
        let mut limits = spec.resources;
        limits.memory_mib += overhead;
        let cg = Cgroup::fresh(&spec.id, &limits).await?;
        let mut last = String::new();
        // A TCG guest occasionally hangs early in boot: one retry.
        for attempt in 1..=2 {
            match self.boot_once(spec, &boot, kvm, channel, &cg).await {
                Ok(ok) => return Ok(ok),
                Err((retry, why)) => {
                    let tail = log_tail(&spec.console_log(), 2000);
                    last = format!("{why} (attempt {attempt}); console log:\n{tail}");
                    tracing::warn!(sandbox = %spec.name, "boot failed: {last}");
                    if !retry {
                        break;
                    }
                }
            }
        }
        let _ = cg.destroy().await;
        for s in [agent_socket(spec), qmp_socket(spec)] {
            let _ = fs::remove_file(s);
        }
        Err(BackendError::NotReady(last))
    }

    async fn stop(
        &self,
        spec: &SandboxSpec,
        running: &Running,
        agent: Option<&AgentClient>,
        grace: Duration,
    ) -> Result<(), BackendError> {
        let cg = Cgroup::for_sandbox(&spec.id)?;
        if process::is_same_process(running.pid, running.pid_start) {
            // The guest syncs its disk and powers off, which ends QEMU.
            let asked = match agent {
                Some(a) if !a.is_closed() => {
                    tokio::time::timeout(grace, a.call_ok(HostMsg::Shutdown))
                        .await
                        .is_ok_and(|r| r.is_ok())
                }
                _ => match tokio::time::timeout(grace, self.connect(spec, running)).await {
                    Ok(Ok(a)) => tokio::time::timeout(grace, a.call_ok(HostMsg::Shutdown))
                        .await
                        .is_ok_and(|r| r.is_ok()),
                    _ => false,
                },
            };
            let exited = asked
                && tokio::time::timeout(grace, process::wait_exit(running.pid))
                    .await
                    .is_ok();
            if !exited {
                tracing::warn!(sandbox = %spec.name, "VM did not power off within {grace:?}; quitting QEMU");
                let quit =
                    tokio::time::timeout(Duration::from_secs(2), qmp_quit(&qmp_socket(spec)))
                        .await
                        .is_ok_and(|r| r.is_ok());
                let gone = quit
                    && tokio::time::timeout(
                        Duration::from_secs(3),
                        process::wait_exit(running.pid),
                    )
                    .await
                    .is_ok();
                if !gone {
                    // SAFETY: kill has no memory effects.
                    unsafe { libc::kill(running.pid, libc::SIGKILL) };
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        process::wait_exit(running.pid),
                    )
                    .await;
                }
            }
        }
        cg.destroy().await?;
        process::reap(running.pid);
        for s in [agent_socket(spec), qmp_socket(spec)] {
            let _ = fs::remove_file(s);
        }
        Ok(())
    }

    fn disk_used(&self, spec: &SandboxSpec) -> u64 {
        crate::vmdisk::allocated(&disk(spec))
    }

    async fn connect(
        &self,
        spec: &SandboxSpec,
        running: &Running,
    ) -> Result<AgentClient, AgentError> {
        match Self::channel(spec) {
            Channel::Serial => reconnect_serial(&running.agent_socket).await,
            Channel::Vsock { cid } => connect_vsock(cid).await,
        }
    }
}
