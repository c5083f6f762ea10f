//! The sandbox's user namespace, mapping ids 0-65535 inside to the
//! sandbox's own block of host ids.
//!
//! A helper child unshares a user namespace, we write its maps from outside
//! (as host root, so the whole block can be mapped and `setgroups` stays
//! usable inside), keep a descriptor to it and let the helper go. The same
//! descriptor later idmaps the image and is entered by PID 1 itself.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult, Gid, Uid};

use super::ConfineError;

fn err(what: &'static str) -> impl FnOnce(std::io::Error) -> ConfineError {
    move |source| ConfineError::UserNs { what, source }
}

fn nix_err(what: &'static str) -> impl FnOnce(nix::Error) -> ConfineError {
    move |e| ConfineError::UserNs {
        what,
        source: e.into(),
    }
}

/// A new user namespace whose ids 0..count are host ids base..base+count.
/// Must be called while single-threaded.
pub fn create(base: u32, count: u32) -> Result<OwnedFd, ConfineError> {
    let (ready_r, ready_w) = std::io::pipe().map_err(err("pipe"))?;
    let (go_r, go_w) = std::io::pipe().map_err(err("pipe"))?;
    // SAFETY: single-threaded; the child only makes raw syscalls and exits.
    match unsafe { fork() }.map_err(nix_err("fork"))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            // Our pid as the mounted /proc (the host's, until the sandbox
            // mounts its own) names us: not the one fork returned inside
            // the new pid namespace.
            let me = std::fs::read_link("/proc/self").unwrap_or_default();
            let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let mut ready_w = ready_w;
            let answer = if ok {
                me.as_os_str().as_encoded_bytes()
            } else {
                b""
            };
            let _ = ready_w.write_all(answer);
            drop(ready_w);
            // Wait until the parent has what it needs (EOF), then vanish.
            let mut go_r = go_r;
            let _ = go_r.read(&mut [0u8; 1]);
            // SAFETY: _exit skips atexit handlers and destructors of the
            // parent's copy of the world, as a forked child must.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let reap = || {
                let _ = nix::sys::wait::waitpid(child, None);
            };
            let mut answer = String::new();
            let _ = { ready_r }.read_to_string(&mut answer);
            let Ok(helper) = answer.parse::<u32>() else {
                drop(go_w);
                reap();
                return Err(ConfineError::UserNs {
                    what: "unshare(CLONE_NEWUSER) in the helper",
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                });
            };
            let map = format!("0 {base} {count}\n");
            let result = (|| {
                std::fs::write(format!("/proc/{helper}/uid_map"), &map).map_err(err("uid_map"))?;
                std::fs::write(format!("/proc/{helper}/gid_map"), &map).map_err(err("gid_map"))?;
                let ns = std::fs::File::open(format!("/proc/{helper}/ns/user"))
                    .map_err(err("open ns/user"))?;
                Ok(OwnedFd::from(ns))
            })();
            drop(go_w);
            reap();
            result
        }
    }
}

/// Become root of `ns` for good: no supplementary groups, then uid and gid
/// 0 inside, which are unprivileged ids on the host. Must be called while
/// single-threaded, after every step that needs host privileges.
pub fn enter(ns: &OwnedFd) -> Result<(), ConfineError> {
    nix::unistd::setgroups(&[]).map_err(nix_err("setgroups"))?;
    nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(nix_err("setns"))?;
    let root_g = Gid::from_raw(0);
    let root_u = Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g).map_err(nix_err("setresgid"))?;
    nix::unistd::setresuid(root_u, root_u, root_u).map_err(nix_err("setresuid"))?;
    Ok(())
}
