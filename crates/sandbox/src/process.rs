//! Watching processes that may or may not be our children (a restarted
//! daemon adopts sandboxes started by its predecessor).

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Start time of `pid` in clock ticks since boot, or None if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// True when `pid` is alive and is still the process that started at `start`.
pub fn is_same_process(pid: i32, start: u64) -> bool {
    start_time(pid) == Some(start) && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new fd we own or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Resolves when `pid` exits, reaping it if it is our child (so no zombie is
/// left). Returns the exit status when we could reap it.
pub async fn wait_exit(pid: i32) -> Option<i32> {
    if let Ok(fd) = pidfd_open(pid) {
        // SAFETY: we own `fd` and it lives as long as the AsyncFd.
        if let Ok(afd) = unsafe { AsyncFd::register(fd) } {
            let _ = afd.readable().await;
        }
    }
    reap(pid)
}

/// Reap `pid` if it is an exited child of ours.
pub fn reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid on a specific pid with WNOHANG has no memory effects.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        if libc::WIFEXITED(status) {
            return Some(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Some(128 + libc::WTERMSIG(status));
        }
    }
    None
}

/// Who a sandbox process runs as, and which descriptors it inherits.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    /// Drop to this uid/gid (no supplementary groups but `groups`) before
    /// exec, after joining the cgroup. None keeps the daemon's (root).
    pub user: Option<Credentials>,
    /// Descriptors the process inherits at the same numbers (they are
    /// close-on-exec in the daemon; only this child gets them).
    pub inherit: Vec<std::os::fd::RawFd>,
}

/// An unprivileged identity for a VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (e.g. none at all).
    pub groups: Vec<u32>,
}

/// Start `cmd` as the process that embodies a sandbox: in a session of its
/// own (so the daemon's signals and exit do not reach it), inside `cg`
/// before it runs a single instruction of its own, with an empty
/// environment (the daemon's may hold secrets), stdin from /dev/null and
/// stdout/stderr appended to `log`. `unshare` namespaces are entered too
/// (empty for VMMs). Returns the pid; whoever waits on it reaps it (see
/// [`wait_exit`]).
pub fn spawn_sandbox_process(
    cmd: &mut std::process::Command,
    cg: &crate::cgroup::Cgroup,
    log: &std::path::Path,
    unshare: nix::sched::CloneFlags,
) -> std::io::Result<u32> {
    spawn_sandbox_process_as(cmd, cg, log, unshare, &Launch::default())
}

/// [`spawn_sandbox_process`], then (still before exec, after the cgroup is
/// joined) keep `launch.inherit` open across exec and drop to
/// `launch.user` with `no_new_privs` set: the program never runs a single
/// instruction as root.
pub fn spawn_sandbox_process_as(
    cmd: &mut std::process::Command,
    cg: &crate::cgroup::Cgroup,
    log: &std::path::Path,
    unshare: nix::sched::CloneFlags,
    launch: &Launch,
) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let procs: Vec<std::fs::File> = cg
        .procs_files()
        .iter()
        .map(|p| std::fs::OpenOptions::new().write(true).open(p))
        .collect::<Result<_, _>>()?;
    let procs_fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let inherit = launch.inherit.clone();
    let user = launch.user.clone();
    let groups: Vec<libc::gid_t> = user.as_ref().map(|u| u.groups.clone()).unwrap_or_default();
    cmd.env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls (setsid, write, unshare, fcntl,
    // setgroups, setresgid, setresuid, prctl) on data prepared before fork;
    // nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            for fd in &procs_fds {
                // "0" moves the writing process into the group.
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if !unshare.is_empty() {
                nix::sched::unshare(unshare)?;
            }
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(u) = &user {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(u.gid, u.gid, u.gid) != 0
                    || libc::setresuid(u.uid, u.uid, u.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(procs);
    Ok(child.id())
}
