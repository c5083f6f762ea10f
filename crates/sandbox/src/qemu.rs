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

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclaw_proto::HostMsg;
use nix::sched::CloneFlags;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::agent::{AgentClient, AgentError};
use crate::backend::{Availability, Backend, BackendError, BackendKind, Running, SandboxSpec};
use crate::cgroup::Cgroup;
use crate::image::{kernel, vm};
use crate::namespace::log_tail;
use crate::netdev::tap::open_tap;
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

/// What this QEMU binary supports.
#[derive(Debug, Clone)]
struct QemuCaps {
    /// Err: why `-sandbox` is refused (a QEMU built without seccomp).
    seccomp: Result<(), String>,
    /// `-accel kvm,device=PATH` (QEMU 9.1 and later): /dev/kvm can be
    /// handed over as a descriptor. Older QEMUs open /dev/kvm themselves,
    /// through its group.
    kvm_device: bool,
}

fn probe_caps(bin: &Path) -> QemuCaps {
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
    };
    let seccomp = match run(&["-sandbox", SECCOMP, "-version"]) {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{} refuses -sandbox {SECCOMP} ({}): it is built without seccomp; install Debian's qemu-system-x86",
            bin.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("running {}: {e}", bin.display())),
    };
    let kvm_device = run(&["-help"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("device=path"))
        .unwrap_or(false);
    QemuCaps {
        seccomp,
        kvm_device,
    }
}

/// The group of `/dev/kvm` when it grants read-write to its group (Debian:
/// `kvm`, 0660): what a QEMU without `-accel kvm,device=` needs.
fn kvm_group() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata("/dev/kvm").ok()?;
    (m.mode() & 0o060 == 0o060 && m.gid() != 0).then(|| m.gid())
}

/// A QEMU command line and the descriptors it refers to, which must stay
/// open until QEMU is spawned.
struct QemuLaunch {
    cmd: Command,
    fds: Vec<OwnedFd>,
    /// Supplementary groups QEMU needs (none unless an old QEMU opens
    /// /dev/kvm itself).
    groups: Vec<u32>,
}

impl QemuLaunch {
    /// Keep `fd` open across exec; returns its number for the command line.
    fn pass(&mut self, fd: impl Into<OwnedFd>) -> i32 {
        let fd = fd.into();
        let n = fd.as_raw_fd();
        self.fds.push(fd);
        n
    }

    /// `-add-fd` each descriptor into fdset `set`; returns `/dev/fdset/<set>`,
    /// the name QEMU opens them by (it picks the one with matching access mode).
    fn fdset(&mut self, set: u32, fds: Vec<OwnedFd>) -> String {
        for fd in fds {
            let n = self.pass(fd);
            self.cmd.arg("-add-fd").arg(format!("fd={n},set={set}"));
        }
        format!("/dev/fdset/{set}")
    }
}

fn open_fd(path: &Path, opts: &mut fs::OpenOptions) -> Result<OwnedFd, BackendError> {
    opts.open(path)
        .map(OwnedFd::from)
        .map_err(|e| BackendError::Setup(format!("opening {} for {QEMU}: {e}", path.display())))
}

/// A listening Unix socket at `path` (replacing a stale one), for QEMU to
/// serve on: the daemon binds it, so QEMU needs no access to the directory.
fn listen_at(path: &Path) -> Result<OwnedFd, BackendError> {
    let _ = fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| BackendError::Setup(format!("binding {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(OwnedFd::from(l))
}

/// How the guest is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Serial,
    Vsock { cid: u32 },
}

fn agent_socket(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("agent.sock")
}
fn qmp_socket(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("qmp.sock")
}
fn disk(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("disk.ext4")
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

/// Host TSC frequency in kHz, for `tsc_early_khz=`: under TCG the guest
/// otherwise sometimes hangs calibrating its TSC.
fn host_tsc_khz() -> Option<u64> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64).filter(|&k| k > 0)
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

    fn command(
        &self,
        spec: &SandboxSpec,
        boot: &vm::VmArtifacts,
        kvm: bool,
        channel: Channel,
    ) -> Result<QemuLaunch, BackendError> {
        let bin = self.bin.as_ref().ok_or_else(|| {
            BackendError::Unavailable(BackendKind::Qemu, format!("{QEMU} not found"))
        })?;
        let ro = || {
            let mut o = fs::OpenOptions::new();
            o.read(true);
            o
        };
        let r = &spec.resources;
        let mut append = vec![
            "console=ttyS0".to_string(),
            "reboot=k".into(),
            "panic=-1".into(),
            "quiet".into(),
            format!("ironclaw.hostname={}", spec.name),
        ];
        if let Some(khz) = host_tsc_khz() {
            append.push(format!("tsc_early_khz={khz}"));
        }
        if let Some(att) = &spec.network {
            append.push(format!("ironclaw.net={}", att.guest_arg()));
            if let Some(ca) = att.trust_ca.as_deref().and_then(crate::netdev::ca_cmdline) {
                append.push(ca);
            }
        }
        append.push(match channel {
            Channel::Serial => format!("ironclaw.transport=serial:{SERIAL_PORT}"),
            Channel::Vsock { .. } => format!("ironclaw.transport=vsock:{VSOCK_PORT}"),
        });
        let kvm_device = self.caps().is_some_and(|c| c.kvm_device);
        let mut l = QemuLaunch {
            cmd: Command::new(bin),
            fds: Vec::new(),
            groups: Vec::new(),
        };
        l.cmd
            .arg("-name")
            .arg(format!("ironclaw-{}", spec.id))
            .args(["-M", "microvm,acpi=on", "-no-reboot"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-sandbox", SECCOMP]);
        if kvm && kvm_device {
            let dev = open_fd(
                Path::new("/dev/kvm"),
                fs::OpenOptions::new().read(true).write(true),
            )?;
            let dev = l.fdset(1, vec![dev]);
            l.cmd
                .arg("-accel")
                .arg(format!("kvm,device={dev}"))
                .args(["-cpu", "host"]);
        } else if kvm {
            l.groups.extend(kvm_group());
            l.cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            l.cmd.args([
                "-accel",
                &format!("tcg,tb-size={TCG_TB_MIB}"),
                "-cpu",
                "max",
            ]);
        }
        // QEMU reads the kernel and initramfs by name only: hand it
        // /proc/self/fd/N (the inode's own 0644 permission applies, not the
        // data dir's).
        let kernel = l.pass(open_fd(&boot.kernel.vmlinuz(), &mut ro())?);
        let initrd = l.pass(open_fd(&boot.initramfs, &mut ro())?);
        // The disk: read-only for QEMU's probe, read-write for the device.
        let disk_path = disk(spec);
        let disk = l.fdset(
            2,
            vec![
                open_fd(&disk_path, fs::OpenOptions::new().read(true).write(true))?,
                open_fd(&disk_path, &mut ro())?,
            ],
        );
        let console = l.fdset(
            3,
            vec![open_fd(
                &spec.console_log(),
                fs::OpenOptions::new().append(true).create(true).mode(0o600),
            )?],
        );
        let qmp = l.pass(listen_at(&qmp_socket(spec))?);
        if let Some(att) = &spec.network {
            // The daemon makes the tap (QEMU cannot); QEMU's copy keeps it
            // alive, and it vanishes when QEMU exits.
            let tap = open_tap(att).map_err(|e| BackendError::Setup(e.to_string()))?;
            let tap = l.pass(tap);
            let mac = att.mac.map(|b| format!("{b:02x}")).join(":");
            l.cmd
                .arg("-netdev")
                .arg(format!("tap,id=net0,fd={tap}"))
                .arg("-device")
                .arg(format!("virtio-net-device,netdev=net0,mac={mac}"));
        }
        let cmd = &mut l.cmd;
        cmd.arg("-m")
            .arg(format!("{}M", r.memory_mib))
            .arg("-smp")
            .arg(r.vcpus.max(1).to_string())
            .arg("-kernel")
            .arg(format!("/proc/self/fd/{kernel}"))
            .arg("-initrd")
            .arg(format!("/proc/self/fd/{initrd}"))
            .arg("-append")
            .arg(append.join(" "))
            .arg("-drive")
            .arg(format!(
                "id=root,file={disk},format=raw,if=none,discard=unmap"
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-chardev")
            .arg(format!("file,id=console,path={console},append=on"))
            .args(["-serial", "chardev:console"])
            .arg("-chardev")
            .arg(format!("socket,id=qmp,fd={qmp},server=on,wait=off"))
            .args(["-mon", "chardev=qmp,mode=control"]);
        match channel {
            Channel::Serial => {
                let agent = l.pass(listen_at(&agent_socket(spec))?);
                // One port (number 0 is reserved for a console): QEMU's
                // default of 31 costs ~15 ms of driver probe under TCG.
                l.cmd
                    .args(["-device", "virtio-serial-device,max_ports=2"])
                    .arg("-chardev")
                    .arg(format!("socket,id=agent,fd={agent},server=on,wait=off"))
                    .arg("-device")
                    .arg(format!("virtserialport,chardev=agent,name={SERIAL_PORT}"));
            }
            Channel::Vsock { cid } => {
                let vhost = l.pass(open_fd(
                    Path::new("/dev/vhost-vsock"),
                    fs::OpenOptions::new().read(true).write(true),
                )?);
                l.cmd.arg("-device").arg(format!(
                    "vhost-vsock-device,guest-cid={cid},vhostfd={vhost}"
                ));
            }
        }
        Ok(l)
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

/// Connect to the agent through the serial chardev socket until the
/// handshake succeeds, QEMU exits, or `deadline` passes. The error's bool
/// says whether a fresh boot may help (a hang, not a crash).
async fn wait_serial(running: &Running, deadline: Instant) -> Result<AgentClient, (bool, String)> {
    loop {
        if !process::is_same_process(running.pid, running.pid_start) {
            return Err((false, "QEMU exited before the guest agent answered".into()));
        }
        if Instant::now() > deadline {
            return Err((true, "the guest agent did not answer in time".into()));
        }
        let Ok(stream) = tokio::net::UnixStream::connect(&running.agent_socket).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // QEMU holds the sync line until the guest opens its port, so one
        // connection waits out the whole boot; keep an eye on QEMU meanwhile.
        let handshake = AgentClient::over(stream);
        tokio::pin!(handshake);
        loop {
            tokio::select! {
                r = &mut handshake => match r {
                    Ok(agent) => return Ok(agent),
                    Err(_) => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if !process::is_same_process(running.pid, running.pid_start) {
                        return Err((false, "QEMU exited before the guest agent answered".into()));
                    }
                    if Instant::now() > deadline {
                        return Err((true, "the guest agent did not answer in time".into()));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// vhost-vsock: the host connects to (cid, port) directly.
async fn wait_vsock(
    running: &Running,
    cid: u32,
    deadline: Instant,
) -> Result<AgentClient, (bool, String)> {
    loop {
        if !process::is_same_process(running.pid, running.pid_start) {
            return Err((false, "QEMU exited before the guest agent answered".into()));
        }
        if Instant::now() > deadline {
            return Err((true, "the guest agent did not answer in time".into()));
        }
        if let Ok(Ok(agent)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_vsock(cid)).await {
            return Ok(agent);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect_vsock(cid: u32) -> Result<AgentClient, AgentError> {
    let fd = tokio::task::spawn_blocking(move || -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket/connect on a descriptor we own with a zeroed,
        // filled-in sockaddr_vm.
        unsafe {
            let s = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(s);
            let mut addr: libc::sockaddr_vm = std::mem::zeroed();
            addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
            addr.svm_port = VSOCK_PORT;
            addr.svm_cid = cid;
            if libc::connect(
                s,
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        }
    })
    .await
    .map_err(|e| AgentError::Connect(std::io::Error::other(e)))?
    .map_err(AgentError::Connect)?;
    // A connected stream socket works as a UnixStream for plain reads and
    // writes, which is all the agent client does.
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream
        .set_nonblocking(true)
        .map_err(AgentError::Connect)?;
    let stream = tokio::net::UnixStream::from_std(std_stream).map_err(AgentError::Connect)?;
    AgentClient::over(stream).await
}

/// A new connection to a running VM's agent (re-adoption after a daemon
/// restart, or after the previous connection dropped).
pub async fn reconnect_serial(socket: &Path) -> Result<AgentClient, AgentError> {
    let deadline = Instant::now() + RECONNECT_TIMEOUT;
    let mut handshakes = 0;
    loop {
        let err = match tokio::net::UnixStream::connect(socket).await {
            // QEMU serves one client at a time and leaves its backlog full
            // until the previous client is gone (EAGAIN meanwhile).
            Err(e) => AgentError::Connect(e),
            Ok(mut stream) => {
                handshakes += 1;
                // If the guest has not noticed the previous client leave
                // (QEMU reports close and reopen back to back), its old
                // connection would take our sync line for a frame header.
                // Feed it an impossible frame length first: it drops that
                // connection, and a fresh one skips these bytes as noise.
                let _ = stream.write_all(b"\xff\xff\xff\xff\n").await;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, AgentClient::over(stream)).await {
                    Ok(Ok(agent)) => return Ok(agent),
                    Ok(Err(e)) => e,
                    Err(_) => AgentError::Timeout(HANDSHAKE_TIMEOUT),
                }
            }
        };
        if Instant::now() > deadline || handshakes >= 3 {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ask QEMU to quit through QMP (the guest gets no say).
async fn qmp_quit(sock: &Path) -> std::io::Result<()> {
    let s = tokio::net::UnixStream::connect(sock).await?;
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await?; // greeting
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").await?;
    lines.next_line().await?;
    w.write_all(b"{\"execute\":\"quit\"}\n").await?;
    let _ = lines.next_line().await;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_of_the_host_qemu_and_of_one_without_seccomp() {
        if let Some(bin) = which(QEMU) {
            // Debian's qemu-system-x86 is built with libseccomp.
            let caps = probe_caps(&bin);
            assert_eq!(caps.seccomp, Ok(()));
            eprintln!("{}: kvm device= option: {}", bin.display(), caps.kvm_device);
        }
        let t = tempfile::tempdir().unwrap();
        let fake = t.path().join(QEMU);
        let script = t.path().join("script");
        fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = -sandbox ] && { echo \"$0: -sandbox on: There is no option group 'sandbox'\" >&2; exit 1; }\necho 'usage: qemu'\n",
        )
        .unwrap();
        // Written by `install`, so no descriptor of ours can be open for
        // writing (ETXTBSY) when it runs.
        let ok = Command::new("install")
            .args(["-m", "0755"])
            .arg(&script)
            .arg(&fake)
            .status()
            .unwrap();
        assert!(ok.success());
        let caps = probe_caps(&fake);
        let why = caps.seccomp.unwrap_err();
        assert!(
            why.contains("built without seccomp") && why.contains("no option group"),
            "{why}"
        );
        assert!(!caps.kvm_device);
    }
}
