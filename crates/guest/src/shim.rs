//! The parent half of `ns-init`: the process the host daemon started. It
//! stays outside the new pid namespace, forwards termination signals to
//! the sandbox's PID 1 and exits with its status, so the daemon can manage
//! the sandbox like any child process.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Never returns. `_alive` is held open until exit: the child watches it
/// to notice a shim that died before it could set PR_SET_PDEATHSIG.
pub fn run(child: Pid, _alive: std::os::fd::OwnedFd) -> ! {
    CHILD.store(child.as_raw(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only calls kill.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            eprintln!("ironclaw-guest: cannot forward {sig}: {e}");
        }
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("ironclaw-guest: waiting for the sandbox init failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
