//! `ns-init`: init of a namespace sandbox.
//!
//! The daemon starts us inside fresh mount, uts, ipc, net and cgroup
//! namespaces, after unshare(CLONE_NEWPID): our first child is PID 1 of the
//! sandbox. We fork; the parent becomes the [`shim`](crate::shim), the
//! child builds the sandbox's root filesystem, pivots into it and becomes
//! the agent with init duties.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult};

use crate::agent::{self, AgentError, Role};
use crate::args::NsInitArgs;
use crate::mounts::{bind, dev_links, fs_err, mkdir_p, mount, mount_fs, symlink, MountError};
use crate::netif::{self, NetError};
use crate::shim;
use crate::transport::{ListenAddr, Listener, AGENT_SOCKET};

/// Device nodes a sandbox gets from the host, bound (not created) so the
/// sandbox cannot make nodes for other devices.
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
            drop(alive_r);
            build_root(args)?;
            nix::unistd::sethostname(&args.hostname).map_err(|source| NsInitError::Hostname {
                name: args.hostname.clone(),
                source,
            })?;
            netif::loopback_up()?;
            let addr = ListenAddr::Unix(AGENT_SOCKET.into());
            agent::start(Role::NsInit, move || Listener::bind(&addr))?;
            Ok(())
        }
    }
}

/// The pipe's write end lives in the shim only: a hang-up means it exited
/// before PR_SET_PDEATHSIG was armed.
fn shim_gone(alive: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn build_root(a: &NsInitArgs) -> Result<(), NsInitError> {
    // Nothing we mount may propagate back to the host.
    mount(
        "none",
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let m = &a.merged;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        a.lower.display(),
        a.upper.display(),
        a.work.display()
    );
    mount("overlay", m, Some("overlay"), MsFlags::empty(), Some(&opts))?;

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

    let dev = m.join("dev");
    mount_fs(
        "tmpfs",
        &dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        bind(&Path::new("/dev").join(name), &dev.join(name))?;
    }
    mount_fs(
        "devpts",
        &dev.join("pts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )?;
    symlink("pts/ptmx", &dev.join("ptmx"))?;
    dev_links(&dev)?;
    mount_fs(
        "tmpfs",
        &dev.join("shm"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;

    bind(&a.agent_dir, &m.join("run/ironclaw"))?;

    let old = m.join(".oldroot");
    mkdir_p(&old)?;
    nix::unistd::pivot_root(m, &old).map_err(|source| NsInitError::PivotRoot {
        root: m.display().to_string(),
        source,
    })?;
    nix::unistd::chdir("/").map_err(NsInitError::OldRoot)?;
    nix::mount::umount2("/.oldroot", MntFlags::MNT_DETACH).map_err(NsInitError::OldRoot)?;
    std::fs::remove_dir("/.oldroot").map_err(|e| fs_err("rmdir", Path::new("/.oldroot"), e))?;
    Ok(())
}
