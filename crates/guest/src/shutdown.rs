//! The way out: stop every process, flush filesystems, exit or power off.

use std::time::{Duration, Instant};

use crate::agent::{Agent, Role};
use crate::spawn::signal_group;

/// How long processes get to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
const KILL_GRACE: Duration = Duration::from_secs(1);

pub async fn run(agent: &Agent) {
    agent.services.stop_all();
    match agent.role {
        // Only our own children: the host's other processes are not ours.
        Role::Serve => {
            for pid in agent.reaper.live() {
                signal_group(pid, libc::SIGTERM);
            }
            if !wait(TERM_GRACE, || agent.reaper.live().is_empty()).await {
                for pid in agent.reaper.live() {
                    signal_group(pid, libc::SIGKILL);
                }
                wait(KILL_GRACE, || agent.reaper.live().is_empty()).await;
            }
        }
        // kill(-1) from PID 1 reaches every process of the sandbox except
        // ourselves; orphans are reaped by the reaper meanwhile.
        Role::NsInit | Role::VmInit => {
            // SAFETY: plain syscalls.
            unsafe { libc::kill(-1, libc::SIGTERM) };
            if !wait(TERM_GRACE, || other_processes() == 0).await {
                unsafe { libc::kill(-1, libc::SIGKILL) };
                wait(KILL_GRACE, || other_processes() == 0).await;
            }
        }
    }
    nix::unistd::sync();
    if agent.role == Role::VmInit {
        power_off();
    }
    std::process::exit(0);
}

/// Poll `done` until it holds or `limit` passes; true if it held.
async fn wait(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live processes other than this one. Kernel threads and zombies have an
/// empty command line and are not counted (zombies are being reaped).
fn other_processes() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name != me.as_str()
                && name.bytes().all(|b| b.is_ascii_digit())
                && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
        })
        .count()
}

/// PID 1 must never exit in a VM (the kernel panics): power off instead.
/// Firecracker has no ACPI power-off; it ends the VM on a guest reboot, so
/// the host asks for that with `ironclaw.shutdown=reboot` on the cmdline.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mode = if wants_reboot(&cmdline) {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    } else {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    };
    let err = nix::sys::reboot::reboot(mode);
    eprintln!("ironclaw-guest: power off failed: {err:?}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn wants_reboot(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|w| w == "ironclaw.shutdown=reboot")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shutdown_mode_from_cmdline() {
        assert!(super::wants_reboot(
            "console=ttyS0 ironclaw.shutdown=reboot quiet"
        ));
        assert!(!super::wants_reboot("console=ttyS0 quiet"));
    }
}
