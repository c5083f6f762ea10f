//! The QEMU command line of one boot, and the descriptors it names: the
//! daemon opens every file and socket, QEMU gets them inherited.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::caps::{host_tsc_khz, kvm_group};
use super::{QemuBackend, QEMU, SECCOMP, SERIAL_PORT, TCG_TB_MIB, VSOCK_PORT};
use crate::backend::{BackendError, BackendKind, SandboxSpec};
use crate::image::vm;
use crate::netdev::tap::open_tap;

/// A QEMU command line and the descriptors it refers to, which must stay
/// open until QEMU is spawned.
pub(super) struct QemuLaunch {
    pub(super) cmd: Command,
    pub(super) fds: Vec<OwnedFd>,
    /// Supplementary groups QEMU needs (none unless an old QEMU opens
    /// /dev/kvm itself).
    pub(super) groups: Vec<u32>,
}

impl QemuLaunch {
    /// Keep `fd` open across exec; returns its number for the command line.
    fn pass(&mut self, fd: impl Into<OwnedFd>) -> i32 {
        let fd = fd.into();
        let n = fd.as_raw_fd();
        self.fds.push(fd);
        n
    }

    /// `-add-fd` each descriptor into fdset `set`; returns `/dev/fdset/<set>`,
    /// the name QEMU opens them by (it picks the one with matching access mode).
    fn fdset(&mut self, set: u32, fds: Vec<OwnedFd>) -> String {
        for fd in fds {
            let n = self.pass(fd);
            self.cmd.arg("-add-fd").arg(format!("fd={n},set={set}"));
        }
        format!("/dev/fdset/{set}")
    }
}

pub(super) fn open_fd(path: &Path, opts: &mut fs::OpenOptions) -> Result<OwnedFd, BackendError> {
    opts.open(path)
        .map(OwnedFd::from)
        .map_err(|e| BackendError::Setup(format!("opening {} for {QEMU}: {e}", path.display())))
}

/// A listening Unix socket at `path` (replacing a stale one), for QEMU to
/// serve on: the daemon binds it, so QEMU needs no access to the directory.
pub(super) fn listen_at(path: &Path) -> Result<OwnedFd, BackendError> {
    let _ = fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| BackendError::Setup(format!("binding {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(OwnedFd::from(l))
}

/// How the guest is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Channel {
    Serial,
    Vsock { cid: u32 },
}

pub(super) fn agent_socket(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("agent.sock")
}
pub(super) fn qmp_socket(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("qmp.sock")
}
pub(super) fn disk(spec: &SandboxSpec) -> PathBuf {
    spec.dir.join("disk.ext4")
}
impl QemuBackend {
    pub(super) fn command(
        &self,
        spec: &SandboxSpec,
        boot: &vm::VmArtifacts,
        kvm: bool,
        channel: Channel,
    ) -> Result<QemuLaunch, BackendError> {
        let bin = self.bin.as_ref().ok_or_else(|| {
            BackendError::Unavailable(BackendKind::Qemu, format!("{QEMU} not found"))
        })?;
        let ro = || {
            let mut o = fs::OpenOptions::new();
            o.read(true);
            o
        };
        let r = &spec.resources;
        let mut append = vec![
            "console=ttyS0".to_string(),
            "reboot=k".into(),
            "panic=-1".into(),
            "quiet".into(),
            format!("ironclaw.hostname={}", spec.name),
        ];
        if let Some(khz) = host_tsc_khz() {
            append.push(format!("tsc_early_khz={khz}"));
        }
        if let Some(att) = &spec.network {
            append.push(format!("ironclaw.net={}", att.guest_arg()));
            if let Some(ca) = att.trust_ca.as_deref().and_then(crate::netdev::ca_cmdline) {
                append.push(ca);
            }
        }
        append.push(match channel {
            Channel::Serial => format!("ironclaw.transport=serial:{SERIAL_PORT}"),
            Channel::Vsock { .. } => format!("ironclaw.transport=vsock:{VSOCK_PORT}"),
        });
        let kvm_device = self.caps().is_some_and(|c| c.kvm_device);
        let mut l = QemuLaunch {
            cmd: Command::new(bin),
            fds: Vec::new(),
            groups: Vec::new(),
        };
        l.cmd
            .arg("-name")
            .arg(format!("ironclaw-{}", spec.id))
            .args(["-M", "microvm,acpi=on", "-no-reboot"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-sandbox", SECCOMP]);
        if kvm && kvm_device {
            let dev = open_fd(
                Path::new("/dev/kvm"),
                fs::OpenOptions::new().read(true).write(true),
            )?;
            let dev = l.fdset(1, vec![dev]);
            l.cmd
                .arg("-accel")
                .arg(format!("kvm,device={dev}"))
                .args(["-cpu", "host"]);
        } else if kvm {
            l.groups.extend(kvm_group());
            l.cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            l.cmd.args([
                "-accel",
                &format!("tcg,tb-size={TCG_TB_MIB}"),
                "-cpu",
                "max",
            ]);
        }
        // QEMU reads the kernel and initramfs by name only: hand it
        // /proc/self/fd/N (the inode's own 0644 permission applies, not the
        // data dir's).
        let kernel = l.pass(open_fd(&boot.kernel.vmlinuz(), &mut ro())?);
        let initrd = l.pass(open_fd(&boot.initramfs, &mut ro())?);
        // The disk: read-only for QEMU's probe, read-write for the device.
        let disk_path = disk(spec);
        let disk = l.fdset(
            2,
            vec![
                open_fd(&disk_path, fs::OpenOptions::new().read(true).write(true))?,
                open_fd(&disk_path, &mut ro())?,
            ],
        );
        let console = l.fdset(
            3,
            vec![open_fd(
                &spec.console_log(),
                fs::OpenOptions::new().append(true).create(true).mode(0o600),
            )?],
        );
        let qmp = l.pass(listen_at(&qmp_socket(spec))?);
        if let Some(att) = &spec.network {
            // The daemon makes the tap (QEMU cannot); QEMU's copy keeps it
            // alive, and it vanishes when QEMU exits.
            let tap = open_tap(att).map_err(|e| BackendError::Setup(e.to_string()))?;
            let tap = l.pass(tap);
            let mac = att.mac.map(|b| format!("{b:02x}")).join(":");
            l.cmd
                .arg("-netdev")
                .arg(format!("tap,id=net0,fd={tap}"))
                .arg("-device")
                .arg(format!("virtio-net-device,netdev=net0,mac={mac}"));
        }
        let cmd = &mut l.cmd;
        cmd.arg("-m")
            .arg(format!("{}M", r.memory_mib))
            .arg("-smp")
            .arg(r.vcpus.max(1).to_string())
            .arg("-kernel")
            .arg(format!("/proc/self/fd/{kernel}"))
            .arg("-initrd")
            .arg(format!("/proc/self/fd/{initrd}"))
            .arg("-append")
            .arg(append.join(" "))
            .arg("-drive")
            .arg(format!(
                "id=root,file={disk},format=raw,if=none,discard=unmap"
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-chardev")
            .arg(format!("file,id=console,path={console},append=on"))
            .args(["-serial", "chardev:console"])
            .arg("-chardev")
            .arg(format!("socket,id=qmp,fd={qmp},server=on,wait=off"))
            .args(["-mon", "chardev=qmp,mode=control"]);
        match channel {
            Channel::Serial => {
                let agent = l.pass(listen_at(&agent_socket(spec))?);
                // One port (number 0 is reserved for a console): QEMU's
                // default of 31 costs ~15 ms of driver probe under TCG.
                l.cmd
                    .args(["-device", "virtio-serial-device,max_ports=2"])
                    .arg("-chardev")
                    .arg(format!("socket,id=agent,fd={agent},server=on,wait=off"))
                    .arg("-device")
                    .arg(format!("virtserialport,chardev=agent,name={SERIAL_PORT}"));
            }
            Channel::Vsock { cid } => {
                let vhost = l.pass(open_fd(
                    Path::new("/dev/vhost-vsock"),
                    fs::OpenOptions::new().read(true).write(true),
                )?);
                l.cmd.arg("-device").arg(format!(
                    "vhost-vsock-device,guest-cid={cid},vhostfd={vhost}"
                ));
            }
        }
        Ok(l)
    }
}
