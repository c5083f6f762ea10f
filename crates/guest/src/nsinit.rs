//! `ns-init`: init of a namespace sandbox.
//!
//! The daemon starts us as host root inside fresh mount, uts, ipc, net and
//! cgroup namespaces, after unshare(CLONE_NEWPID): our first child is PID 1
//! of the sandbox. We fork; the parent becomes the [`shim`](crate::shim),
//! the child builds the sandbox's root filesystem while it still has host
//! privileges (attach the disk, idmap the image, overlay, proc and sys with
//! runc's masks, a minimal /dev, the operator-allowed host directories
//! (`--bind`), bind the agent socket, pivot), then gives
//! them up for good ([`crate::confine`]) and becomes the agent with init
//! duties. The namespaces other than the user namespace stay owned by the
//! host, so root inside can neither mount nor reconfigure them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult};

use crate::agent::{self, AgentError, Role};
use crate::args::NsInitArgs;
use crate::confine::{self, ConfineError};
use crate::mounts::{
    bind, dev_links, fs_err, mkdir_p, mount, mount_fs, remount_bind, symlink, MountError,
};
use crate::netif::{self, NetError};
use crate::shim;
use crate::transport::{self, Listener};

/// Device nodes a sandbox gets from the host, bound (not created). The
/// device cgroup the host set up allows exactly these (and the ptys).
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, thiserror::Error)]
pub enum NsInitError {
    #[error("fork: {0}")]
    Fork(#[source] nix::Error),
    #[error("pipe: {0}")]
    Pipe(#[source] nix::Error),
    #[error("set parent-death signal: {0}")]
    Pdeathsig(#[source] nix::Error),
    #[error("the shim exited before the sandbox init started")]
    Orphaned,
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("pivot_root into {root}: {source}")]
    PivotRoot { root: String, source: nix::Error },
    #[error("detach the old root: {0}")]
    OldRoot(#[source] nix::Error),
    #[error("set hostname {name:?}: {source}")]
    Hostname { name: String, source: nix::Error },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Confine(#[from] ConfineError),
    #[error("agent socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Returns only in the sandbox's PID 1, when the agent stops.
pub fn run(args: &NsInitArgs) -> Result<(), NsInitError> {
    let (alive_r, alive_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(NsInitError::Pipe)?;
    // SAFETY: no threads exist yet (the runtime starts after this).
    match unsafe { fork() }.map_err(NsInitError::Fork)? {
        ForkResult::Parent { child } => {
            drop(alive_r);
            shim::run(child, alive_w)
        }
        ForkResult::Child => {
            drop(alive_w);
            // If the shim dies, the sandbox dies with it (PID 1 going takes
            // the whole pid namespace).
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(NsInitError::Pdeathsig)?;
            if shim_gone(&alive_r) {
                return Err(NsInitError::Orphaned);
            }
            // Read while the host's files are in view.
            let trust_ca = match &args.trust_ca {
                Some(p) => Some(std::fs::read(p).map_err(|e| fs_err("read", p, e))?),
                None => None,
            };
            let userns = confine::userns::create(args.uid_base, ironclaw_proto::IDS_PER_SANDBOX)?;
            let (listener, socket) = build_root(args, userns.as_fd())?;
            nix::unistd::sethostname(&args.hostname).map_err(|source| NsInitError::Hostname {
                name: args.hostname.clone(),
                source,
            })?;
            netif::loopback_up()?;
            // A memory hog inside must not take the agent (and with it the
            // sandbox) down: the OOM killer picks the hog. Lowering a score
            // needs host privileges, so now; commands start back at 0.
            // (Hosts that withhold CAP_SYS_RESOURCE refuse; nothing to do.)
            let _ = std::fs::write("/proc/self/oom_score_adj", "-999");
            // The point of no return: host privileges end here.
            confine::userns::enter(&userns)?;
            drop(userns);
            // New ids clear the parent-death signal (the kernel resets it
            // on any change of effective or filesystem ids): arm it again,
            // then make sure the shim did not die in between.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(NsInitError::Pdeathsig)?;
            if shim_gone(&alive_r) {
                return Err(NsInitError::Orphaned);
            }
            drop(alive_r);
            // Written as the sandbox's root, so the file is the sandbox's
            // to change (host root has no id on the sandbox's disk).
            if let Some(ns) = args.nameserver {
                write_resolv_conf(ns)?;
            }
            if let Some(pem) = &trust_ca {
                // Best effort: an image without a trust store has no TLS
                // clients to tell.
                if let Err(e) = crate::trust::install(pem) {
                    eprintln!("ironclaw-guest: installing the egress CA: {e}");
                }
            }
            confine::caps::restrict()?;
            confine::seccomp::install()?;
            agent::start(Role::NsInit, move || {
                Listener::from_unix(listener, socket).map_err(|source| {
                    crate::transport::TransportError::Bind {
                        addr: crate::transport::ListenAddr::Unix(PathBuf::new()),
                        source,
                    }
                })
            })?;
            Ok(())
        }
    }
}

/// Point the sandbox's resolver at the host's: the image's resolv.conf
/// (often a symlink into a resolver daemon's runtime dir) names servers the
/// sandbox may not reach.
fn write_resolv_conf(ns: std::net::IpAddr) -> Result<(), NsInitError> {
    let path = Path::new("/etc/resolv.conf");
    if path.is_symlink() {
        std::fs::remove_file(path).map_err(|e| fs_err("unlink", path, e))?;
    }
    std::fs::write(path, format!("nameserver {ns}\noptions edns0\n"))
        .map_err(|e| fs_err("write", path, e).into())
}

/// The pipe's write end lives in the shim only: a hang-up means it exited
/// before PR_SET_PDEATHSIG was armed.
fn shim_gone(alive: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Everything that needs host root, ending with the pivot into the new
/// root. Returns the agent's listening socket, bound at its host path
/// (in a directory only the host can write) before the pivot hides it.
fn build_root(a: &NsInitArgs, userns: BorrowedFd) -> Result<(UnixListener, PathBuf), NsInitError> {
    // Nothing we mount may propagate back to the host.
    mount(
        "none",
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    if let Some((fd, at)) = &a.disk {
        // SAFETY: the daemon passed us this descriptor to own.
        let disk = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
        confine::idmap::attach(disk.as_fd(), at)?;
    }
    let m = &a.merged;
    // The image, owners shifted into the sandbox's ids, then the overlay
    // on top of it at the same place.
    confine::idmap::mount_idmapped(&a.lower, m, userns)?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        m.display(),
        a.upper.display(),
        a.work.display()
    );
    mount(
        "overlay",
        m,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&opts),
    )?;
    // The operator-allowed host directories, on top of the overlay and
    // under everything the sandbox must not be able to shadow.
    for b in &a.binds {
        confine::idmap::bind_host_dir(&b.host, m, &b.guest, b.read_only, userns, a.uid_base)?;
    }

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", &m.join("proc"), nosuid_nodev_noexec, None)?;
    mount_fs(
        "sysfs",
        &m.join("sys"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;
    // The sandbox's own cgroup (cgroup namespace), for `info` and tools
    // that size themselves by it. Read-only: limits are the host's call.
    // Optional: a cgroup v1 host may not offer it.
    let _ = mount(
        "cgroup2",
        &m.join("sys/fs/cgroup"),
        Some("cgroup2"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    );
    confine::procfs::restrict(m)?;

    let (root, tty) = (a.uid_base, a.uid_base + 5);
    let dev = m.join("dev");
    mount_fs(
        "tmpfs",
        &dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!("mode=755,size=65536k,uid={root},gid={root}")),
    )?;
    for name in DEVICES {
        let node = dev.join(name);
        bind(&Path::new("/dev").join(name), &node)?;
        remount_bind(&node, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    }
    mount_fs(
        "devpts",
        &dev.join("pts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!("newinstance,ptmxmode=0666,mode=620,gid={tty}")),
    )?;
    symlink("pts/ptmx", &dev.join("ptmx"))?;
    dev_links(&dev)?;
    mount_fs(
        "tmpfs",
        &dev.join("shm"),
        nosuid_nodev_noexec,
        Some(&format!("mode=1777,size=65536k,uid={root},gid={root}")),
    )?;

    let socket = a.agent_dir.join("agent.sock");
    let listener = transport::bind_unix(&socket).map_err(|source| NsInitError::Socket {
        path: socket.clone(),
        source,
    })?;

    let old = m.join(".oldroot");
    mkdir_p(&old)?;
    nix::unistd::pivot_root(m, &old).map_err(|source| NsInitError::PivotRoot {
        root: m.display().to_string(),
        source,
    })?;
    nix::unistd::chdir("/").map_err(NsInitError::OldRoot)?;
    nix::mount::umount2("/.oldroot", MntFlags::MNT_DETACH).map_err(NsInitError::OldRoot)?;
    std::fs::remove_dir("/.oldroot").map_err(|e| fs_err("rmdir", Path::new("/.oldroot"), e))?;
    Ok((listener, socket))
}
