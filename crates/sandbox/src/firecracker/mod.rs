//! The `firecracker` backend: one Firecracker process per sandbox (KVM
//! microVM), configured over its API socket; the guest agent is reached
//! through virtio-vsock.
//!
//! Boot: machine config, boot source (vmlinux + initramfs + command line),
//! the sandbox's own ext4 disk, a vsock device, a virtio-net device on a
//! tap of the sandbox bridge when the sandbox has a network, then
//! InstanceStart. The
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
use crate::netdev::tap;
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

/// Firecracker's jailer, and the user the VMM runs as inside its chroot.
#[derive(Debug, Clone)]
pub struct Jailer {
    pub bin: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// The uid/gid a jailed Firecracker runs as unless configured otherwise
/// (config `firecracker_uid` / `firecracker_gid`).
pub const DEFAULT_FIRECRACKER_UID: u32 = 10_000;
pub const DEFAULT_FIRECRACKER_GID: u32 = 10_000;

/// Firecracker's release ships `jailer` next to `firecracker`: the jailer
/// of `bin` is an executable file named `jailer` in the same directory.
pub fn jailer_next_to(bin: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = bin.parent()?.join("jailer");
    let m = fs::metadata(&p).ok()?;
    (m.is_file() && m.permissions().mode() & 0o111 != 0).then_some(p)
}

/// The VMM's id: Firecracker's `--id`, the jail's directory name, and how
/// tests find the process.
fn jail_id(spec: &SandboxSpec) -> String {
    format!("ironclaw-{}", spec.id)
}

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
    /// Run Firecracker through its jailer (chroot, dropped privileges).
    jailer: Option<Jailer>,
    /// `firecracker --version`, asked once.
    version: std::sync::OnceLock<Option<String>>,
    /// Skip the KVM probe (tests that drive Firecracker on hosts where
    /// guests cannot boot, to check the API calls and the crash report).
    pub ignore_probe: bool,
}

impl FirecrackerBackend {
    /// `bin` is the firecracker binary; None means look for `firecracker` on
    /// PATH. When a `jailer` sits next to that binary (see
    /// [`jailer_next_to`]) every VMM runs under it by default, as
    /// [`DEFAULT_FIRECRACKER_UID`]; [`Self::with_jailer`] names another,
    /// [`Self::without_jailer`] runs Firecracker directly (as root).
    pub fn new(bin: Option<PathBuf>, kvm: Arc<KvmProber>) -> Self {
        let bin = bin.or_else(|| which("firecracker"));
        let jailer = bin.as_deref().and_then(jailer_next_to).map(|j| Jailer {
            bin: j,
            uid: DEFAULT_FIRECRACKER_UID,
            gid: DEFAULT_FIRECRACKER_GID,
        });
        FirecrackerBackend {
            bin,
            kvm,
            version: Default::default(),
            jailer,
            ignore_probe: false,
        }
    }

    /// Start every VMM through `jailer`: chroot under the sandbox's
    /// directory, privileges dropped to `uid`/`gid`.
    pub fn with_jailer(mut self, jailer: Jailer) -> Self {
        self.jailer = Some(jailer);
        self
    }

    /// The uid/gid the jailer (found or configured) drops Firecracker to.
    pub fn with_jailer_user(mut self, uid: u32, gid: u32) -> Self {
        if let Some(j) = &mut self.jailer {
            j.uid = uid;
            j.gid = gid;
        }
        self
    }

    /// Run Firecracker directly, as root, even when a jailer is next to it
    /// (`ironclaw doctor` warns).
    pub fn without_jailer(mut self) -> Self {
        self.jailer = None;
        self
    }

    /// The jailer every VMM starts through, if any.
    pub fn jailer(&self) -> Option<&Jailer> {
        self.jailer.as_ref()
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

    /// The jail's root on the host: `<chroot base>/<exec name>/<id>/root`.
    fn jail_root(&self, spec: &SandboxSpec) -> Option<PathBuf> {
        self.jailer.as_ref()?;
        let exec = self.bin.as_ref()?.file_name()?.to_owned();
        Some(
            spec.dir
                .join("jail")
                .join(exec)
                .join(jail_id(spec))
                .join("root"),
        )
    }

    /// Where a file Firecracker uses lives on the host.
    fn host_path(&self, spec: &SandboxSpec, name: &str) -> PathBuf {
        match self.jail_root(spec) {
            Some(root) => root.join(name),
            None => spec.dir.join(name),
        }
    }

    /// How Firecracker names that file (inside its chroot when jailed).
    fn vmm_path(&self, spec: &SandboxSpec, name: &str) -> PathBuf {
        match self.jailer {
            Some(_) => Path::new("/").join(name),
            None => spec.dir.join(name),
        }
    }

    fn api_socket(&self, spec: &SandboxSpec) -> PathBuf {
        self.host_path(spec, "fc.sock")
    }

    fn vsock_socket(&self, spec: &SandboxSpec) -> PathBuf {
        self.host_path(spec, "v.sock")
    }

    fn fc_log(&self, spec: &SandboxSpec) -> PathBuf {
        self.host_path(spec, "firecracker.log")
    }

    fn disk(spec: &SandboxSpec) -> PathBuf {
        spec.dir.join("disk.ext4")
    }

    /// Put the boot files into the jail (hard links; copies across
    /// filesystems) and hand the writable ones to the jail's user.
    fn stock_jail(&self, spec: &SandboxSpec, boot: &VmBoot) -> Result<(), BackendError> {
        let (Some(root), Some(j)) = (self.jail_root(spec), &self.jailer) else {
            return Ok(());
        };
        fs::create_dir_all(&root)?;
        for (src, name) in [
            (&boot.vmlinux, "vmlinux"),
            (&boot.initramfs, "initramfs"),
            (&Self::disk(spec), "disk.ext4"),
        ] {
            let dest = root.join(name);
            let _ = fs::remove_file(&dest);
            if fs::hard_link(src, &dest).is_err() {
                fs::copy(src, &dest)?;
            }
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("firecracker.log"))?;
        // The VMM creates its sockets in the jail's root and writes the disk.
        for p in [
            root.clone(),
            root.join("disk.ext4"),
            root.join("firecracker.log"),
        ] {
            std::os::unix::fs::chown(p, Some(j.uid), Some(j.gid))?;
        }
        Ok(())
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
            .open(self.fc_log(spec))?;
        let mut cmd = match &self.jailer {
            Some(j) => {
                let mut c = Command::new(&j.bin);
                c.arg("--id")
                    .arg(jail_id(spec))
                    .arg("--exec-file")
                    .arg(bin)
                    .arg("--uid")
                    .arg(j.uid.to_string())
                    .arg("--gid")
                    .arg(j.gid.to_string())
                    .arg("--chroot-base-dir")
                    .arg(spec.dir.join("jail"))
                    .arg("--");
                c
            }
            // The jailer passes its --id on; without it we name the VMM ourselves.
            None => {
                let mut c = Command::new(bin);
                c.arg("--id").arg(jail_id(spec));
                c
            }
        };
        cmd.arg("--api-sock")
            .arg(self.vmm_path(spec, "fc.sock"))
            .arg("--log-path")
            .arg(self.vmm_path(spec, "firecracker.log"))
            .arg("--level")
            .arg("Info");
        // The guest's serial console is Firecracker's stdout.
        process::spawn_sandbox_process(&mut cmd, cg, &spec.console_log(), CloneFlags::empty())
            .map_err(|e| BackendError::Setup(format!("starting {}: {e}", bin.display())))
    }

    /// Configure the VM over the API and start it.
    async fn configure(&self, spec: &SandboxSpec, boot: &VmBoot) -> Result<(), BackendError> {
        let sock = self.api_socket(spec);
        let deadline = Instant::now() + Duration::from_secs(5);
        // The socket file appears at bind(), before Firecracker listens:
        // wait until a connection is accepted, not just for the file.
        while let Err(e) = tokio::net::UnixStream::connect(&sock).await {
            if Instant::now() > deadline {
                return Err(BackendError::NotReady(format!(
                    "firecracker API socket {} not accepting: {e}",
                    sock.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let Resources {
            vcpus, memory_mib, ..
        } = spec.resources;
        let mut boot_args = format!(
            "console=ttyS0 reboot=k panic=1 pci=off quiet ironclaw.transport=vsock:{AGENT_PORT} ironclaw.hostname={} ironclaw.shutdown=reboot",
            spec.name
        );
        let mut calls = Vec::new();
        if let Some(att) = &spec.network {
            boot_args.push_str(&format!(" ironclaw.net={}", att.guest_arg()));
            if let Some(ca) = att.trust_ca.as_deref().and_then(crate::netdev::ca_cmdline) {
                boot_args.push(' ');
                boot_args.push_str(&ca);
            }
            let mac = att.mac.map(|b| format!("{b:02x}")).join(":");
            calls.push((
                "/network-interfaces/eth0",
                json!({"iface_id": "eth0", "host_dev_name": att.host_ifname, "guest_mac": mac}),
            ));
        }
        calls.extend([
            (
                "/machine-config",
                json!({"vcpu_count": vcpus, "mem_size_mib": memory_mib, "smt": false}),
            ),
            (
                "/boot-source",
                json!({
                    "kernel_image_path": if self.jailer.is_some() { self.vmm_path(spec, "vmlinux") } else { boot.vmlinux.clone() },
                    "initrd_path": if self.jailer.is_some() { self.vmm_path(spec, "initramfs") } else { boot.initramfs.clone() },
                    "boot_args": boot_args
                }),
            ),
            (
                "/drives/root",
                json!({"drive_id": "root", "path_on_host": self.vmm_path(spec, "disk.ext4"), "is_root_device": false, "is_read_only": false}),
            ),
            (
                "/vsock",
                json!({"guest_cid": GUEST_CID, "uds_path": self.vmm_path(spec, "v.sock")}),
            ),
        ]);
        calls.push(("/actions", json!({"action_type": "InstanceStart"})));
        for (path, body) in calls {
            api::put(&sock, path, &body)
                .await
                .map_err(|e| BackendError::Setup(e.to_string()))?;
            tracing::debug!(sandbox = %spec.name, "firecracker accepted PUT {path}");
        }
        Ok(())
    }

    /// The VM's tap, when it has a network: persistent, since Firecracker
    /// opens it by name, and owned by the jail's user, the one user besides
    /// root that may attach to it.
    fn make_tap(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        let Some(att) = &spec.network else {
            return Ok(());
        };
        let (uid, gid) = self.jailer.as_ref().map_or((0, 0), |j| (j.uid, j.gid));
        tap::make_persistent(att, uid, gid).map_err(|e| BackendError::Setup(e.to_string()))
    }

    fn delete_tap(&self, spec: &SandboxSpec) {
        if let Some(att) = &spec.network {
            if let Err(e) = tap::delete_persistent(&att.host_ifname) {
                tracing::warn!(sandbox = %spec.name, "deleting tap: {e}");
            }
        }
    }

    /// ", jailed by J as uid U" or ", not jailed (runs as root)".
    fn jail_note(&self) -> String {
        match &self.jailer {
            Some(j) => format!(", jailed by {} as uid {}", j.bin.display(), j.uid),
            None => ", not jailed (runs as root)".into(),
        }
    }

    fn report(&self, spec: &SandboxSpec, max_bytes: u64) -> String {
        let fc = log_tail(&self.fc_log(spec), max_bytes / 2);
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
                reason: format!("{} (KVM probe skipped){}", bin.display(), self.jail_note()),
            };
        }
        let version = self.version().unwrap_or_else(|| "unknown version".into());
        // Until the probe has run, say so rather than booting from a status query.
        match self.kvm.known() {
            Some(kvm) => Availability {
                available: kvm.boots,
                reason: format!(
                    "{version} at {}{}; {}",
                    bin.display(),
                    self.jail_note(),
                    kvm.reason
                ),
            },
            None => Availability {
                available: false,
                reason: format!(
                    "{version} at {}{}; KVM guest boot not probed yet",
                    bin.display(),
                    self.jail_note()
                ),
            },
        }
    }

    fn privilege_warning(&self) -> Option<String> {
        let bin = self.bin.as_ref()?;
        match &self.jailer {
            None => Some(format!(
                "firecracker would run as root: no jailer found next to {}; install jailer or set firecracker_jailer",
                bin.display()
            )),
            Some(j) if j.uid == 0 || j.gid == 0 => Some(format!(
                "firecracker would run as root: its jailer {} drops to uid {} gid {}; set firecracker_uid/firecracker_gid to an unused id (default {DEFAULT_FIRECRACKER_UID})",
                j.bin.display(),
                j.uid,
                j.gid
            )),
            Some(_) => None,
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
        crate::backend::refuse_mounts(BackendKind::Firecracker, spec)?;
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
        for s in [self.api_socket(spec), self.vsock_socket(spec)] {
            let _ = fs::remove_file(s);
        }
        self.stock_jail(spec, &boot)?;
        let mut limits = spec.resources;
        limits.memory_mib += VMM_OVERHEAD_MIB;
        let cg = Cgroup::fresh(&spec.id, &limits).await?;
        if let Err(e) = self.make_tap(spec) {
            let _ = cg.destroy().await;
            return Err(e);
        }
        let pid = match self.spawn(spec, &cg) {
            Ok(p) => p as i32,
            Err(e) => {
                self.delete_tap(spec);
                let _ = cg.destroy().await;
                return Err(e);
            }
        };
        let pid_start = process::start_time(pid).unwrap_or(0);
        let running = Running {
            pid,
            pid_start,
            agent_socket: self.vsock_socket(spec),
        };
        let result = async {
            self.configure(spec, &boot).await?;
            let started = Instant::now();
            loop {
                if !process::is_same_process(pid, pid_start) {
                    return Err(BackendError::Crashed(format!(
                        "firecracker exited during boot; {}",
                        self.report(spec, 2400)
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
                        self.report(spec, 2400)
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
                self.delete_tap(spec);
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
                    &self.api_socket(spec),
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
        self.delete_tap(spec);
        Cgroup::for_sandbox(&spec.id)?.destroy().await?;
        process::reap(running.pid);
        for s in [self.api_socket(spec), self.vsock_socket(spec)] {
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
        self.report(spec, max_bytes)
    }
}
