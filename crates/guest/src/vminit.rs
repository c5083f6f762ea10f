//! PID 1 of a VM: mount the API filesystems, name the machine, bring up
//! loopback and serve. PID 1 must never exit (the kernel panics), so every
//! failure ends in a power off instead.

use std::path::Path;

use nix::mount::MsFlags;

use crate::agent::{self, Role};
use crate::mounts::{dev_links, mount_fs, symlink, MountError};
use crate::netif;
use crate::shutdown::power_off;
use crate::transport::{ListenAddr, Listener, AGENT_SOCKET};

pub fn run() -> Result<(), std::convert::Infallible> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: &[(&str, &str, MsFlags, Option<&str>)] = &[
        ("proc", "/proc", nosuid_nodev_noexec, None),
        ("sysfs", "/sys", nosuid_nodev_noexec, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=755")),
        (
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("ptmxmode=0666,mode=620"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        ),
        (
            "tmpfs",
            "/tmp",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        ("cgroup2", "/sys/fs/cgroup", nosuid_nodev_noexec, None),
    ];
    for (fstype, target, flags, data) in mounts {
        // Keep going: a half-set-up VM that answers is more useful than a
        // panicked one, and the error is on the console.
        match mount_fs(fstype, Path::new(target), *flags, *data) {
            Ok(()) => {}
            Err(e) if e.is_busy() => {}
            Err(e) => eprintln!("ironclaw-guest: {e}"),
        }
    }
    let dev_extra: Result<(), MountError> =
        symlink("pts/ptmx", Path::new("/dev/ptmx")).and(dev_links(Path::new("/dev")));
    if let Err(e) = dev_extra {
        eprintln!("ironclaw-guest: {e}");
    }
    if let Some(name) = cmdline_hostname() {
        if let Err(e) = nix::unistd::sethostname(&name) {
            eprintln!("ironclaw-guest: set hostname {name:?}: {e}");
        }
    }
    if let Err(e) = netif::loopback_up() {
        eprintln!("ironclaw-guest: {e}");
    }
    let addr = ListenAddr::Unix(AGENT_SOCKET.into());
    if let Err(e) = agent::start(Role::VmInit, move || Listener::bind(&addr)) {
        eprintln!("ironclaw-guest: {e}");
    }
    power_off()
}

fn cmdline_hostname() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    parse_hostname(&cmdline)
}

fn parse_hostname(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ironclaw.hostname="))
        .filter(|h| !h.is_empty())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_from_cmdline() {
        assert_eq!(
            super::parse_hostname("console=ttyS0 ironclaw.hostname=box-1 quiet").as_deref(),
            Some("box-1")
        );
        assert_eq!(
            super::parse_hostname("console=ttyS0 ironclaw.hostname= quiet"),
            None
        );
        assert_eq!(super::parse_hostname("quiet"), None);
    }
}
