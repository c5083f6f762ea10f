//! The `namespace` backend: the guest agent as PID 1 of fresh pid, mount,
//! net, uts, ipc, cgroup and user namespaces, pivot_root'ed into an overlay
//! of the image (idmapped, read-only) and the sandbox's own ext4 disk
//! ([`crate::loopdisk`]), limited by a cgroup. Root inside is an
//! unprivileged block of host ids ([`crate::userns`]) with Docker's default
//! capabilities and seccomp profile (see the guest's `confine` module). No
//! virtualization needed, so it works on any Linux host.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ironclaw_proto::HostMsg;
use nix::sched::CloneFlags;

use crate::agent::AgentClient;
use crate::backend::{Availability, Backend, BackendError, BackendKind, Running, SandboxSpec};
use crate::cgroup::{self, Cgroup};
use crate::{loopdisk, process};

/// Where the guest binary lives inside every image.
pub const GUEST_PATH: &str = "sbin/ironclaw-guest";
/// How long a sandbox may take from spawn to a connected agent.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// The descriptor number ns-init finds the disk mount at.
const DISK_FD: i32 = 3;

#[derive(Debug, Default)]
pub struct NamespaceBackend {
    /// The guest agent to start as the sandbox's PID 1; None: the copy in
    /// the image. The daemon passes its own, so an image built by an older
    /// daemon still runs the agent (and ns-init options) this one speaks.
    guest_bin: Option<PathBuf>,
}

/// A sandbox's directory on the host. Only the daemon writes here: the
/// sandbox's own files live inside `disk.img`, which the host never mounts
/// in its own namespace.
struct Layout {
    disk_image: PathBuf,
    /// Mount point of the disk inside the sandbox's mount namespace.
    disk: PathBuf,
    merged: PathBuf,
    run: PathBuf,
    /// Where sandboxes made before disks existed kept their files.
    legacy_upper: PathBuf,
}

fn layout(spec: &SandboxSpec) -> Layout {
    let d = &spec.dir;
    Layout {
        disk_image: d.join("disk.img"),
        disk: d.join("disk"),
        merged: d.join("merged"),
        run: d.join("run"),
        legacy_upper: d.join("upper"),
    }
}

pub fn agent_socket(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("run").join("agent.sock")
}

/// Last `n` bytes of a log file, for error messages.
pub fn log_tail(path: &Path, n: u64) -> String {
    let Ok(data) = fs::read(path) else {
        return String::new();
    };
    let start = data.len().saturating_sub(n as usize);
    String::from_utf8_lossy(&data[start..]).trim().to_string()
}

impl NamespaceBackend {
    pub fn new() -> Self {
        NamespaceBackend::default()
    }

    /// Start sandboxes with this guest binary instead of the image's.
    pub fn with_guest(mut self, guest_bin: Option<PathBuf>) -> Self {
        self.guest_bin = guest_bin;
        self
    }

    fn spawn(&self, spec: &SandboxSpec, cg: &Cgroup, disk: OwnedFd) -> Result<u32, BackendError> {
        let l = layout(spec);
        let guest = match &self.guest_bin {
            Some(bin) if bin.is_file() => bin.clone(),
            _ => spec.image_rootfs.join(GUEST_PATH),
        };
        if !guest.exists() {
            return Err(BackendError::Setup(format!(
                "image at {} has no guest agent at /{GUEST_PATH}; rebuild the image",
                spec.image_rootfs.display()
            )));
        }
        let mut cmd = Command::new(&guest);
        cmd.arg("ns-init")
            .arg("--lower")
            .arg(&spec.image_rootfs)
            .arg("--disk-fd")
            .arg(DISK_FD.to_string())
            .arg("--disk-at")
            .arg(&l.disk)
            .arg("--upper")
            .arg(l.disk.join(loopdisk::UPPER))
            .arg("--work")
            .arg(l.disk.join(loopdisk::WORK))
            .arg("--merged")
            .arg(&l.merged)
            .arg("--agent-dir")
            .arg(&l.run)
            .arg("--uid-base")
            .arg(spec.uid_base.to_string())
            .arg("--hostname")
            .arg(&spec.name);
        for m in &spec.mounts {
            cmd.arg("--bind").arg(m.arg());
        }
        if let Some(net) = &spec.network {
            cmd.arg("--nameserver").arg(net.gateway.to_string());
            if let Some(ca) = &net.trust_ca {
                cmd.arg("--trust-ca").arg(ca);
            }
        }
        let raw = disk.as_raw_fd();
        // SAFETY: dup2/fcntl are async-signal-safe; `disk` outlives spawn.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep FD_CLOEXEC set.
                let r = if raw == DISK_FD {
                    libc::fcntl(raw, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, DISK_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let namespaces = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWCGROUP
            | CloneFlags::CLONE_NEWPID;
        let pid = process::spawn_sandbox_process(&mut cmd, cg, &spec.console_log(), namespaces)
            .map_err(|e| BackendError::Setup(format!("starting {}: {e}", guest.display())))?;
        drop(disk);
        Ok(pid)
    }
}

#[async_trait::async_trait]
impl Backend for NamespaceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Namespace
    }

    fn availability(&self) -> Availability {
        if !nix::unistd::geteuid().is_root() {
            return Availability {
                available: false,
                reason: "needs root to create namespaces and cgroups".into(),
            };
        }
        let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems.lines().any(|l| l.ends_with("\toverlay")) {
            return Availability {
                available: false,
                reason: "the kernel has no overlay filesystem".into(),
            };
        }
        let userns: u64 = fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if userns == 0 {
            return Availability {
                available: false,
                reason: "user namespaces are disabled (user.max_user_namespaces = 0)".into(),
            };
        }
        if !Path::new("/dev/loop-control").exists() {
            return Availability {
                available: false,
                reason: "no /dev/loop-control (modprobe loop): sandbox disks need loop devices"
                    .into(),
            };
        }
        if crate::util::which("mkfs.ext4").is_none() {
            return Availability {
                available: false,
                reason: "mkfs.ext4 not found (apt-get install e2fsprogs)".into(),
            };
        }
        match cgroup::detect() {
            Ok((version, what)) => Availability {
                available: true,
                reason: format!(
                    "user namespaces + idmapped overlay + ext4 disks + {what}, devices {}",
                    if version == cgroup::Version::V2 {
                        "by eBPF filter"
                    } else {
                        "by the v1 controller"
                    }
                ),
            },
            Err(e) => Availability {
                available: false,
                reason: e.to_string(),
            },
        }
    }

    async fn prepare(&self, spec: &SandboxSpec) -> Result<(), BackendError> {
        let l = layout(spec);
        if l.legacy_upper.exists() && !l.disk_image.exists() {
            return Err(BackendError::Setup(format!(
                "sandbox '{}' was made by an older ironclawd (files in {}, no disk image); \
                 copy out what you need and recreate it",
                spec.name,
                l.legacy_upper.display()
            )));
        }
        // Only the host may write in the sandbox's directory.
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true).mode(0o700);
        for d in [&spec.dir, &l.disk, &l.merged, &l.run] {
            dirs.create(d)?;
        }
        let sock = agent_socket(spec);
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(BackendError::Setup(format!(
                "agent socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --data-dir",
                sock.display()
            )));
        }
        loopdisk::create(&l.disk_image, spec.resources.disk_mib)
            .await
            .map_err(|e| BackendError::Setup(e.to_string()))?;
        Ok(())
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<(Running, AgentClient), BackendError> {
        self.prepare(spec).await?;
        let sock = agent_socket(spec);
        let _ = fs::remove_file(&sock);
        // The group first: emptying it kills whatever an interrupted earlier
        // start left running, which may still have this disk mounted; ext4
        // must never be mounted twice.
        let cg = Cgroup::fresh(&spec.id, &spec.resources).await?;
        if let Err(e) = cg.restrict_devices() {
            let _ = cg.destroy().await;
            return Err(e.into());
        }
        let disk = match loopdisk::mount_detached(&layout(spec).disk_image, spec.uid_base) {
            Ok(disk) => disk,
            Err(e) => {
                let _ = cg.destroy().await;
                return Err(BackendError::Setup(e.to_string()));
            }
        };
        let pid = match self.spawn(spec, &cg, disk) {
            Ok(pid) => pid as i32,
            Err(e) => {
                let _ = cg.destroy().await;
                return Err(e);
            }
        };
        let pid_start = process::start_time(pid).unwrap_or(0);
        // The network card, from outside: the sandbox has no say over its
        // own network namespace (it belongs to the host's user namespace).
        if let Some(net) = &spec.network {
            if let Err(e) = crate::netdev::veth::attach(pid, net).await {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = cg.destroy().await;
                process::reap(pid);
                return Err(BackendError::Setup(format!(
                    "connecting the sandbox to bridge {}: {e}",
                    net.bridge
                )));
            }
        }
        let running = Running {
            pid,
            pid_start,
            agent_socket: sock.clone(),
        };

        let started = Instant::now();
        let mut delay = Duration::from_micros(500);
        let mut crashed = false;
        let failure = loop {
            if sock.exists() {
                match AgentClient::connect_unix(&sock).await {
                    Ok(agent) => return Ok((running, agent)),
                    Err(e) if started.elapsed() > READY_TIMEOUT => break e.to_string(),
                    Err(_) => {}
                }
            }
            if !process::is_same_process(pid, pid_start) {
                process::reap(pid);
                crashed = true;
                break "the sandbox init exited".to_string();
            }
            if started.elapsed() > READY_TIMEOUT {
                break format!("no agent socket after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        };
        // Tear down what we started before reporting.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = cg.destroy().await;
        process::reap(pid);
        let tail = log_tail(&spec.console_log(), 2000);
        let report = format!("{failure}; console log:\n{tail}");
        Err(if crashed {
            BackendError::Crashed(report)
        } else {
            BackendError::NotReady(report)
        })
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
            if let Some(agent) = agent {
                let _ = tokio::time::timeout(grace, agent.call_ok(HostMsg::Shutdown)).await;
            } else {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(running.pid, libc::SIGTERM) };
            }
            if tokio::time::timeout(grace, process::wait_exit(running.pid))
                .await
                .is_err()
            {
                tracing::warn!(sandbox = %spec.name, "did not stop within {grace:?}; killing");
                unsafe { libc::kill(running.pid, libc::SIGKILL) };
            }
        }
        cg.destroy().await?;
        process::reap(running.pid);
        let _ = fs::remove_file(&running.agent_socket);
        Ok(())
    }

    fn disk_used(&self, spec: &SandboxSpec) -> u64 {
        loopdisk::allocated(&layout(spec).disk_image)
    }
}
