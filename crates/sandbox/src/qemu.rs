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

use std::fs::{self, File};
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
use crate::probe::{KvmProbe, KvmProber};
use crate::process;
use crate::util::which;

const QEMU: &str = "qemu-system-x86_64";
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
        }
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
    ) -> Result<Command, BackendError> {
        let bin = self.bin.as_ref().ok_or_else(|| {
            BackendError::Unavailable(BackendKind::Qemu, format!("{QEMU} not found"))
        })?;
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
        append.push(match channel {
            Channel::Serial => format!("ironclaw.transport=serial:{SERIAL_PORT}"),
            Channel::Vsock { .. } => format!("ironclaw.transport=vsock:{VSOCK_PORT}"),
        });
        let mut cmd = Command::new(bin);
        cmd.arg("-name")
            .arg(format!("ironclaw-{}", spec.id))
            .args(["-M", "microvm,acpi=on", "-no-reboot"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"]);
        if kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args([
                "-accel",
                &format!("tcg,tb-size={TCG_TB_MIB}"),
                "-cpu",
                "max",
            ]);
        }
        cmd.arg("-m")
            .arg(format!("{}M", r.memory_mib))
            .arg("-smp")
            .arg(r.vcpus.max(1).to_string())
            .arg("-kernel")
            .arg(boot.kernel.vmlinuz())
            .arg("-initrd")
            .arg(&boot.initramfs)
            .arg("-append")
            .arg(append.join(" "))
            .arg("-drive")
            .arg(format!(
                "id=root,file={},format=raw,if=none,discard=unmap",
                qemu_path(&disk(spec))?
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={},append=on",
                qemu_path(&spec.console_log())?
            ))
            .args(["-serial", "chardev:console"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                qemu_path(&qmp_socket(spec))?
            ));
        match channel {
            Channel::Serial => {
                // One port (number 0 is reserved for a console): QEMU's
                // default of 31 costs ~15 ms of driver probe under TCG.
                cmd.args(["-device", "virtio-serial-device,max_ports=2"])
                    .arg("-chardev")
                    .arg(format!(
                        "socket,id=agent,path={},server=on,wait=off",
                        qemu_path(&agent_socket(spec))?
                    ))
                    .arg("-device")
                    .arg(format!("virtserialport,chardev=agent,name={SERIAL_PORT}"));
            }
            Channel::Vsock { cid } => {
                cmd.arg("-device")
                    .arg(format!("vhost-vsock-device,guest-cid={cid}"));
            }
        }
        Ok(cmd)
    }

    /// Spawn QEMU in the sandbox's cgroup, in its own session, with an
    /// empty environment (the daemon's may hold secrets).
    fn spawn(
        &self,
        mut cmd: Command,
        spec: &SandboxSpec,
        cg: &Cgroup,
    ) -> Result<u32, BackendError> {
        cmd.current_dir(&spec.dir);
        let pid =
            process::spawn_sandbox_process(&mut cmd, cg, &spec.console_log(), CloneFlags::empty())
                .map_err(|e| BackendError::Setup(format!("starting {QEMU}: {e}")))?;
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
        // One boot per log: the tail then explains this boot only.
        let _ = File::create(spec.console_log());
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

/// QEMU option values are comma-separated: a comma in a path would be
/// misparsed, so refuse it instead.
fn qemu_path(p: &Path) -> Result<String, BackendError> {
    let s = p.to_string_lossy().into_owned();
    if s.contains(',') {
        return Err(BackendError::Setup(format!(
            "path {s} contains a comma, which QEMU options cannot carry; use another --data-dir"
        )));
    }
    Ok(s)
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
                "{} microvm, {accel}; {kernel}; agent over {channel}",
                bin.display()
            ),
        }
    }

    fn default_eligible(&self) -> bool {
        self.kvm.known().is_some_and(|p| p.boots)
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
        Ok(())
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<(Running, AgentClient), BackendError> {
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
