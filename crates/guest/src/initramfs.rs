//! Stage one of a VM boot: the agent is the initramfs's `/init`. It loads
//! the kernel modules the boot needs, mounts the sandbox's root disk and
//! hands over to [`crate::switch_root`], then goes on serving as PID 1.
//!
//! A shell script did this before; every `insmod`, `mount` and
//! `switch_root` it ran was a fork and exec, and under TCG each costs tens
//! of milliseconds of boot time. The agent also runs from RAM this way, so
//! nothing of it has to be paged in from the disk before it can answer.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use ironclaw_proto::boot;

use crate::mounts::{mount_fs, MountError};

const MODULE_DIR: &str = "/lib/modules";
/// Where the root disk is mounted before it becomes `/`.
pub const NEW_ROOT: &str = "/newroot";
const ROOT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load kernel module {module}: {source}")]
    Module {
        module: String,
        source: std::io::Error,
    },
    #[error("cannot mount {root} (ext4) on {NEW_ROOT}: {source}")]
    RootMount { root: String, source: nix::Error },
    #[error("root disk {root} did not appear within {secs} s (block devices: {found})")]
    NoRootDisk {
        root: String,
        secs: u64,
        found: String,
    },
}

/// What the kernel command line asks of this stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub root: String,
    pub rootflags: String,
    pub vsock: bool,
    pub net: bool,
    pub marker: bool,
}

impl BootArgs {
    pub fn parse(cmdline: &str) -> BootArgs {
        let mut a = BootArgs {
            root: "/dev/vda".into(),
            rootflags: "rw".into(),
            vsock: false,
            net: false,
            marker: false,
        };
        for w in cmdline.split_whitespace() {
            if let Some(v) = w.strip_prefix("ironclaw.root=") {
                a.root = v.into();
            } else if let Some(v) = w.strip_prefix("ironclaw.rootflags=") {
                a.rootflags = v.into();
            } else if w.starts_with("ironclaw.transport=vsock:") {
                a.vsock = true;
            } else if w.starts_with("ironclaw.net=") {
                a.net = true;
            } else if w == "ironclaw.marker=1" {
                a.marker = true;
            }
        }
        a
    }

    /// Only the drivers this boot uses: each module costs time under TCG.
    pub fn wants_module(&self, m: &str) -> bool {
        if m == "vsock" || m.starts_with("vmw_vsock_") {
            self.vsock
        } else if matches!(m, "failover" | "net_failover" | "virtio_net") {
            self.net
        } else {
            true
        }
    }
}

/// True when this PID 1 was started from an IronClaw initramfs.
pub fn detected() -> bool {
    std::process::id() == 1 && module_order().is_file()
}

fn module_order() -> PathBuf {
    Path::new("/").join(boot::MODULE_ORDER)
}

/// Load modules and mount the root disk on [`NEW_ROOT`]; returns what the
/// command line asked for. The API filesystems mounted here are detached
/// again by the switch.
pub fn run() -> Result<BootArgs, InitramfsError> {
    let none = MsFlags::empty();
    mount_fs("proc", Path::new("/proc"), none, None)?;
    mount_fs("sysfs", Path::new("/sys"), none, None)?;
    mount_fs("devtmpfs", Path::new("/dev"), none, None)?;
    let cmdline = read("/proc/cmdline")?;
    let args = BootArgs::parse(&cmdline);
    for m in read(module_order())?.lines().map(str::trim) {
        if !m.is_empty() && args.wants_module(m) {
            load_module(m)?;
        }
    }
    wait_for_block_device(&args.root)?;
    let (flags, data) = mount_options(&args.rootflags);
    crate::mounts::mkdir_p(Path::new(NEW_ROOT))?;
    nix::mount::mount(
        Some(args.root.as_str()),
        NEW_ROOT,
        Some("ext4"),
        flags,
        data.as_deref(),
    )
    .map_err(|source| InitramfsError::RootMount {
        root: args.root.clone(),
        source,
    })?;
    Ok(args)
}

fn read(path: impl AsRef<Path>) -> Result<String, InitramfsError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|source| InitramfsError::Read {
        path: path.into(),
        source,
    })
}

fn load_module(name: &str) -> Result<(), InitramfsError> {
    let err = |source| InitramfsError::Module {
        module: name.into(),
        source,
    };
    let file =
        std::fs::File::open(Path::new(MODULE_DIR).join(format!("{name}.ko"))).map_err(err)?;
    use std::os::fd::AsRawFd;
    // SAFETY: finit_module reads the module from our open descriptor; the
    // parameter string is a valid NUL-terminated empty string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Built in or loaded already: what we wanted anyway.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(err(e));
        }
    }
    Ok(())
}

fn wait_for_block_device(dev: &str) -> Result<(), InitramfsError> {
    let until = Instant::now() + ROOT_WAIT;
    loop {
        if std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device()) {
            return Ok(());
        }
        if Instant::now() > until {
            let found = std::fs::read_dir("/sys/block")
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            return Err(InitramfsError::NoRootDisk {
                root: dev.into(),
                secs: ROOT_WAIT.as_secs(),
                found,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Generic options become mount flags, as mount(8) does; the rest goes
/// to the filesystem.
fn mount_options(opts: &str) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other),
        }
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    (flags, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_args_from_cmdline() {
        let a = BootArgs::parse("console=ttyS0 quiet ironclaw.transport=serial:agent.0");
        assert_eq!(a.root, "/dev/vda");
        assert_eq!(a.rootflags, "rw");
        assert!(!a.vsock && !a.net && !a.marker);
        let a = BootArgs::parse(
            "ironclaw.root=/dev/vdb ironclaw.rootflags=ro,noatime ironclaw.transport=vsock:1024 ironclaw.net=1 ironclaw.marker=1",
        );
        assert_eq!(a.root, "/dev/vdb");
        assert_eq!(a.rootflags, "ro,noatime");
        assert!(a.vsock && a.net && a.marker);
    }

    #[test]
    fn modules_follow_the_transport_and_network() {
        let serial = BootArgs::parse("ironclaw.transport=serial:agent.0");
        assert!(serial.wants_module("virtio_blk"));
        assert!(serial.wants_module("virtio_console"));
        assert!(!serial.wants_module("vmw_vsock_virtio_transport"));
        assert!(!serial.wants_module("virtio_net"));
        let vsock = BootArgs::parse("ironclaw.transport=vsock:1024 ironclaw.net=tap");
        assert!(vsock.wants_module("vsock"));
        assert!(vsock.wants_module("vmw_vsock_virtio_transport_common"));
        assert!(vsock.wants_module("net_failover"));
    }

    #[test]
    fn root_mount_options() {
        assert_eq!(mount_options("rw"), (MsFlags::empty(), None));
        assert_eq!(
            mount_options("ro,noatime,data=ordered"),
            (
                MsFlags::MS_RDONLY | MsFlags::MS_NOATIME,
                Some("data=ordered".into())
            )
        );
        assert_eq!(mount_options(""), (MsFlags::empty(), None));
    }
}
