//! PID 1 of a VM: leave the initramfs (when started as its /init), mount
//! the API filesystems, name the machine, bring up loopback (and eth0 when
//! the host attached a NIC) and serve.
//! PID 1 must never exit (the kernel panics), so every failure ends in a
//! power off instead.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::agent::{self, Role};
use crate::initramfs;
use crate::mounts::{dev_links, mount_fs, symlink, MountError};
use crate::netif;
use crate::shutdown::power_off;
use crate::transport::{find_serial_port, ListenAddr, Listener, AGENT_SOCKET};

pub fn run() -> Result<(), std::convert::Infallible> {
    if initramfs::detected() {
        leave_initramfs();
    }
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
    // The initramfs mounts the root disk read-write, but a root= boot
    // without it may not have.
    if root_is_read_only() {
        if let Err(e) = nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT,
            None::<&str>,
        ) {
            eprintln!("ironclaw-guest: remount / read-write: {e}");
        }
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // Without a network the sandbox still works: log and serve anyway.
    if let Err(e) = network(&cmdline) {
        eprintln!("ironclaw-guest: {e}");
    }
    let addr = match listen_addr(&cmdline) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ironclaw-guest: {e}");
            power_off()
        }
    };
    if let Err(e) = agent::start(Role::VmInit, move || Listener::bind(&addr)) {
        eprintln!("ironclaw-guest: {e}");
    }
    power_off()
}

/// Stage one, then the switch to the root disk. A failure powers off with
/// one `ironclaw-initramfs:` line on the console, which the host shows as
/// the reason the boot failed.
fn leave_initramfs() {
    // The kernel started us as /init: let `ps` and /proc/1/comm say what
    // runs there, as they do for every other sandbox.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of <= 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"ironclaw-guest".as_ptr()) };
    let args = match initramfs::run() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ironclaw-initramfs: {e}");
            power_off()
        }
    };
    if args.marker {
        println!("{}", ironclaw_proto::boot::BOOT_MARKER);
        power_off()
    }
    if let Err(e) = crate::switch_root::switch_root(Path::new(initramfs::NEW_ROOT)) {
        eprintln!("ironclaw-initramfs: cannot switch to the root disk: {e}");
        power_off()
    }
}

/// How long the virtio-serial port may take to show up: the host announces
/// ports asynchronously after the driver loads.
const PORT_WAIT: Duration = Duration::from_secs(15);

/// Where to serve, from `ironclaw.transport=serial:NAME|vsock:PORT|unix:PATH`
/// (default: the Unix socket, as when tests run VM init in namespaces; the
/// VM backends always say which transport they wired up).
fn listen_addr(cmdline: &str) -> Result<ListenAddr, String> {
    let spec = parse_transport(cmdline).unwrap_or_else(|| format!("unix:{AGENT_SOCKET}"));
    match spec.split_once(':') {
        Some(("vsock", port)) => port
            .parse()
            .map(ListenAddr::Vsock)
            .map_err(|_| format!("bad vsock port in ironclaw.transport={spec}")),
        Some(("unix", path)) if !path.is_empty() => Ok(ListenAddr::Unix(path.into())),
        Some(("serial", name)) if !name.is_empty() => {
            let until = Instant::now() + PORT_WAIT;
            loop {
                if let Some(dev) = find_serial_port(name) {
                    return Ok(ListenAddr::Serial(dev));
                }
                if Instant::now() > until {
                    return Err(format!(
                        "no virtio-serial port named {name:?} appeared within {PORT_WAIT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        _ => Err(format!("unknown ironclaw.transport={spec}")),
    }
}

/// The VM's one NIC (virtio-net, which the kernel names eth0 as there is
/// no udev), configured from `ironclaw.net=` when the host attached one.
fn network(cmdline: &str) -> Result<(), String> {
    let Some(cfg) = netif::NetConfig::from_cmdline(cmdline) else {
        return Ok(());
    };
    let cfg = cfg?;
    if !netif::wait_for(NIC, NIC_WAIT) {
        return Err(format!("no {NIC} appeared within {NIC_WAIT:?}"));
    }
    netif::configure(NIC, &cfg).map_err(|e| e.to_string())?;
    netif::write_resolv_conf(Path::new("/etc/resolv.conf"), &cfg)
        .map_err(|e| format!("writing /etc/resolv.conf: {e}"))?;
    if let Some(pem) = crate::trust::pem_from_cmdline(cmdline) {
        crate::trust::install(&pem).map_err(|e| format!("installing the egress CA: {e}"))?;
    }
    if !netif::wait_carrier(NIC, NIC_WAIT) {
        return Err(format!("{NIC} has no carrier after {NIC_WAIT:?}"));
    }
    eprintln!(
        "ironclaw-guest: {NIC} {}/{} via {}",
        cfg.address, cfg.prefix_len, cfg.gateway
    );
    Ok(())
}

const NIC: &str = "eth0";
/// virtio_net was loaded by the initramfs; its probe is usually done by
/// then, this covers a slow TCG boot.
const NIC_WAIT: Duration = Duration::from_secs(5);

/// Whether / is mounted read-only (mountinfo field 6: per-mount options).
fn root_is_read_only() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(' ').nth(5))
        .is_some_and(|opts| opts.split(',').any(|o| o == "ro"))
}

fn parse_transport(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ironclaw.transport="))
        .filter(|t| !t.is_empty())
        .map(String::from)
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

    #[test]
    fn transport_from_cmdline() {
        use super::*;
        assert_eq!(
            parse_transport("quiet ironclaw.transport=vsock:1024").as_deref(),
            Some("vsock:1024")
        );
        assert_eq!(
            listen_addr("ironclaw.transport=vsock:1024").unwrap(),
            ListenAddr::Vsock(1024)
        );
        assert_eq!(
            listen_addr("ironclaw.transport=unix:/run/a.sock").unwrap(),
            ListenAddr::Unix("/run/a.sock".into())
        );
        assert!(listen_addr("ironclaw.transport=vsock:x").is_err());
        assert!(listen_addr("ironclaw.transport=tcp:1").is_err());
    }
}
