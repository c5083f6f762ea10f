//! runc's masked and read-only paths under /proc and /sys.

use std::path::Path;

use nix::mount::MsFlags;

use crate::mounts::{bind, mount, remount_bind, MountError};

/// Hidden: files get an unopenable /dev/null bound over them, directories
/// an empty read-only tmpfs. Kernel memory, keyrings of other users, timer and
/// scheduler internals, firmware tables.
pub const MASKED: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Readable but never writable: host-wide knobs such as
/// /proc/sys/kernel/core_pattern and /proc/sysrq-trigger.
pub const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Network-namespace sysctls set before /proc/sys turns read-only, so root
/// inside (whose capabilities do not reach the host-owned network
/// namespace) can still bind ports below 1024 and use ping sockets.
const NET_SYSCTLS: &[(&str, &str)] = &[
    ("proc/sys/net/ipv4/ip_unprivileged_port_start", "0"),
    ("proc/sys/net/ipv4/ping_group_range", "0 2147483647"),
];

fn hidden() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC
}

/// Apply the masks to the proc and sys mounted under `root`.
pub fn restrict(root: &Path) -> Result<(), MountError> {
    for (file, value) in NET_SYSCTLS {
        let _ = std::fs::write(root.join(file), value);
    }
    for rel in MASKED {
        let p = root.join(rel);
        if p.is_dir() {
            mount(
                "tmpfs",
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=000"),
            )?;
        } else if p.exists() {
            // nodev too: reading gives EACCES rather than an empty file,
            // and no mount outside /dev lets a device node open.
            bind(Path::new("/dev/null"), &p)?;
            remount_bind(&p, hidden() | MsFlags::MS_NODEV)?;
        }
    }
    for rel in READ_ONLY {
        let p = root.join(rel);
        if !p.exists() {
            continue;
        }
        bind(&p, &p)?;
        remount_bind(&p, hidden() | MsFlags::MS_NODEV)?;
    }
    Ok(())
}
