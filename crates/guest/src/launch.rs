//! Starting a process image with `clone(CLONE_VM | CLONE_VFORK)`, as
//! glibc's posix_spawn does, instead of `fork()`.
//!
//! `std::process::Command` with a `pre_exec` hook forks, which copies the
//! page tables of the whole multi-threaded agent and makes both sides take
//! copy-on-write faults afterwards; that was the largest part of an exec's
//! round trip. Here the child borrows the agent's memory until it calls
//! execve, on its own stack, and the calling thread is suspended until
//! then. Everything the child needs is prepared by the parent, so the child
//! only makes system calls: no allocation, no lock (other agent threads
//! keep running and may hold the allocator's).
//!
//! The child does what the `pre_exec` hook and std did, in the same order:
//! stdio onto 0-2, working directory, default signal dispositions and an
//! empty mask, its own session, the controlling terminal for a PTY, the
//! OOM score reset to 0, then execvp semantics on the command's own PATH.
//! The score reset applies to the child alone: the kernel gives a vfork
//! child its own `oom_score_adj` even while it shares the agent's memory,
//! and it is done before execve, so the command never runs shielded.
//! Last, for a command run as a user, the child drops to that user's ids
//! (setgroups, setgid, setuid: the kernel clears every capability of a
//! root that becomes another uid), with ids resolved by the parent. They
//! are direct system calls: glibc's setuid and friends would signal every
//! thread of the agent to change them all, and the child shares those
//! threads' memory, not their credentials, which are its own.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

/// A process to start, prepared in the parent.
pub struct Image {
    /// Candidates to execve, in PATH order (one for a name with a '/').
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// `/bin/sh CANDIDATE ARGS...` for a candidate the kernel cannot run
    /// (ENOEXEC: a script without `#!`), as execvp does. Slot 1 is filled
    /// in by the child.
    sh_argv: Vec<*const c_char>,
    _env: Vec<CString>,
    envp: Vec<*const c_char>,
    cwd: CString,
    ids: Option<Ids>,
}

/// A user's ids, switched to by the child before execve.
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (setgroups).
    pub groups: Vec<u32>,
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte found"))
}

impl Image {
    /// `env` in order; a later value of a name wins. `path` is the PATH the
    /// command is looked up in (the one in its environment).
    pub fn new(argv: &[String], env: &[(&str, &str)], path: &str, cwd: &Path) -> io::Result<Image> {
        let argv: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
        let program = argv.first().ok_or(io::ErrorKind::InvalidInput)?;
        let name = program.as_bytes();
        let candidates = if name.is_empty() {
            Vec::new()
        } else if name.contains(&b'/') {
            vec![program.clone()]
        } else {
            path.split(':')
                .map(|dir| {
                    // An empty entry is the working directory, as in execvp.
                    let mut full = Vec::with_capacity(dir.len() + 1 + name.len());
                    if !dir.is_empty() {
                        full.extend_from_slice(dir.as_bytes());
                        full.push(b'/');
                    }
                    full.extend_from_slice(name);
                    CString::new(full).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
                })
                .collect::<Result<_, _>>()?
        };
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(ptr::null());
        let mut sh_argv = Vec::with_capacity(argv.len() + 2);
        sh_argv.push(c"/bin/sh".as_ptr());
        sh_argv.push(ptr::null());
        sh_argv.extend(argv.iter().skip(1).map(|a| a.as_ptr()));
        sh_argv.push(ptr::null());
        let mut merged: std::collections::BTreeMap<&str, &str> = Default::default();
        for (k, v) in env {
            merged.insert(k, v);
        }
        let env: Vec<CString> = merged
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        let mut envp: Vec<*const c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(ptr::null());
        Ok(Image {
            candidates,
            _argv: argv,
            argv_ptrs,
            sh_argv,
            _env: env,
            envp,
            cwd: CString::new(cwd.as_os_str().as_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            ids: None,
        })
    }

    /// Start the process as these ids instead of the agent's.
    pub fn run_as(&mut self, ids: Ids) {
        self.ids = Some(ids);
    }
}

/// What the child reads: the image, and the descriptors that become its
/// stdin, stdout and stderr.
struct Job<'a> {
    image: &'a mut Image,
    stdio: [RawFd; 3],
    ctty: bool,
    /// Set by the child when it fails before execve (an errno).
    error: c_int,
}

/// capset(2)'s header and data, version 3 (two data structs: bits 0-31
/// and 32-63).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Stack for the child until execve. It only makes system calls, so a
/// small one does; sized like glibc's posix_spawn stack.
const STACK: usize = 64 * 1024;

/// Start `image` with `stdio` as descriptors 0, 1, 2 (they need not be
/// inheritable: the child's copies are made without close-on-exec). The
/// child is in its own session; with `ctty` descriptor 0 (a terminal)
/// becomes its controlling terminal. Returns the pid; the caller reaps it.
pub fn launch(image: &mut Image, stdio: [RawFd; 3], ctty: bool) -> io::Result<i32> {
    STACK_MEM.with(|mem| launch_on(&mut mem.borrow_mut(), image, stdio, ctty))
}

thread_local! {
    /// One child stack per spawning thread, kept: the thread is suspended
    /// while its child uses it, and mapping a fresh one per spawn would
    /// cost an munmap (a TLB shootdown across the agent's threads).
    static STACK_MEM: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; STACK]);
}

fn launch_on(
    stack: &mut [u8],
    image: &mut Image,
    stdio: [RawFd; 3],
    ctty: bool,
) -> io::Result<i32> {
    // The stack grows down from its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let mut job = Job {
        image,
        stdio,
        ctty,
        error: 0,
    };
    // No signal handler may run in the child while it shares our memory:
    // block everything around clone; the child resets dispositions before
    // unblocking.
    // SAFETY: plain libc calls on owned values; the child runs `child`
    // on `stack` (borrowed for this call) and, with CLONE_VFORK, this thread resumes only once it
    // has called execve or exited, so `job` outlives its use.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut job as *mut Job).cast::<c_void>(),
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            return Err(clone_err);
        }
        pid
    };
    // Read after the child is done with it (see above).
    let error = unsafe { ptr::read_volatile(&job.error) };
    if error != 0 {
        // It exited without running anything: collect it here, before the
        // reaper (locked out by our caller) could hand out its status.
        // SAFETY: plain syscall on our own child.
        unsafe {
            let mut st = 0;
            while libc::waitpid(pid, &mut st, 0) < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(pid)
}

/// The child: system calls only (see the module comment).
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Job`, alive while the parent waits.
    unsafe {
        let job = &mut *arg.cast::<Job>();
        let err = prepare(job);
        if err == 0 {
            exec(job);
        }
        let err = if err != 0 { err } else { errno() };
        ptr::write_volatile(&mut job.error, if err == 0 { libc::ENOEXEC } else { err });
        libc::_exit(127)
    }
}

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Everything before execve; an errno on failure.
unsafe fn prepare(job: &mut Job) -> c_int {
    for (target, &fd) in job.stdio.iter().enumerate() {
        let target = target as c_int;
        let r = if fd == target {
            // Already in place: only make it survive execve.
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        };
        if r < 0 {
            return errno();
        }
    }
    if libc::chdir(job.image.cwd.as_ptr()) < 0 {
        return errno();
    }
    // Handlers are the agent's (and would run on its memory): back to the
    // default. Ignored signals stay ignored, except SIGPIPE, which the Rust
    // runtime ignores for itself, as std's Command does.
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, ptr::null(), &mut sa) < 0 {
            continue;
        }
        if sa.sa_sigaction != libc::SIG_DFL
            && (sa.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
        {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
    // Own session and process group: signals, timeouts and kills reach the
    // command's whole tree, never the agent.
    if libc::setsid() < 0 {
        return errno();
    }
    if job.ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
        return errno();
    }
    // The agent may be shielded from the OOM killer; its commands are not
    // (raising one's own score needs no privilege).
    let fd = libc::open(
        c"/proc/self/oom_score_adj".as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC,
    );
    if fd >= 0 {
        libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
    }
    if let Some(ids) = &job.image.ids {
        // The user's terminal is the user's, as login and sshd make it
        // (programs reopen it by name); its group stays.
        if job.ctty && libc::fchown(0, ids.uid, u32::MAX) < 0 {
            return errno();
        }
        // Groups first: after setuid there is no privilege left to set them.
        if libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) < 0
            || libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) < 0
        {
            return errno();
        }
        // setuid clears the permitted, effective and ambient sets but
        // not the inheritable one; empty it too (lowering needs no
        // privilege), so no file-inheritable binary can hand one back.
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
            return errno();
        }
    }
    0
}

/// execvp: try each candidate; on success this does not return.
unsafe fn exec(job: &mut Job) {
    let image = &mut *job.image;
    let mut eacces = false;
    for c in &image.candidates {
        libc::execve(c.as_ptr(), image.argv_ptrs.as_ptr(), image.envp.as_ptr());
        match errno() {
            libc::ENOEXEC => {
                image.sh_argv[1] = c.as_ptr();
                libc::execve(
                    image.sh_argv[0],
                    image.sh_argv.as_ptr(),
                    image.envp.as_ptr(),
                );
                return;
            }
            libc::EACCES => eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return,
        }
    }
    set_errno(if eacces { libc::EACCES } else { libc::ENOENT });
}

unsafe fn set_errno(e: c_int) {
    *libc::__errno_location() = e;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn run(argv: &[&str], path: &str) -> io::Result<i32> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env = [("PATH", "/nowhere"), ("PATH", path)];
        let mut image = Image::new(&argv, &env, path, Path::new("/"))?;
        let pid = launch(&mut image, [0, 1, 2], false)?;
        let mut st = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(libc::WIFEXITED(st));
        Ok(libc::WEXITSTATUS(st))
    }

    #[test]
    fn path_lookup_scripts_and_errors_follow_execvp() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        // Found in the second PATH entry; the later PATH in env is the one
        // the command sees.
        assert_eq!(
            run(
                &["sh", "-c", "[ \"$PATH\" = /x:/bin ] && exit 3"],
                "/x:/bin"
            )
            .unwrap(),
            3
        );
        // A script without `#!` runs under /bin/sh, with its arguments.
        let script = dir.path().join("noshebang");
        std::fs::write(&script, "exit $1\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(run(&["noshebang", "7"], d).unwrap(), 7);
        let e = run(&["no-such-command"], "/bin").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let e = run(&[plain.to_str().unwrap()], "/bin").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        assert!(run(&["a\0b"], "/bin").is_err());
    }
}
