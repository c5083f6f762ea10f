//! What the host's QEMU and CPU offer: seccomp support, handing /dev/kvm
//! over as a descriptor, the group that opens /dev/kvm for older QEMUs,
//! and the TSC frequency TCG guests need told.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::SECCOMP;

/// What this QEMU binary supports.
#[derive(Debug, Clone)]
pub(super) struct QemuCaps {
    /// Err: why `-sandbox` is refused (a QEMU built without seccomp).
    pub(super) seccomp: Result<(), String>,
    /// `-accel kvm,device=PATH` (QEMU 9.1 and later): /dev/kvm can be
    /// handed over as a descriptor. Older QEMUs open /dev/kvm themselves,
    /// through its group.
    pub(super) kvm_device: bool,
}

pub(super) fn probe_caps(bin: &Path) -> QemuCaps {
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
    };
    let seccomp = match run(&["-sandbox", SECCOMP, "-version"]) {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{} refuses -sandbox {SECCOMP} ({}): it is built without seccomp; install Debian's qemu-system-x86",
            bin.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("running {}: {e}", bin.display())),
    };
    let kvm_device = run(&["-help"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("device=path"))
        .unwrap_or(false);
    QemuCaps {
        seccomp,
        kvm_device,
    }
}

/// The group of `/dev/kvm` when it grants read-write to its group (Debian:
/// `kvm`, 0660): what a QEMU without `-accel kvm,device=` needs.
pub(super) fn kvm_group() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata("/dev/kvm").ok()?;
    (m.mode() & 0o060 == 0o060 && m.gid() != 0).then(|| m.gid())
}

/// Host TSC frequency in kHz, for `tsc_early_khz=`: under TCG the guest
/// otherwise sometimes hangs calibrating its TSC.
pub(super) fn host_tsc_khz() -> Option<u64> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64).filter(|&k| k > 0)
}

#[cfg(test)]
mod tests {
    use super::super::QEMU;
    use super::*;
    use crate::util::which;

    #[test]
    fn caps_of_the_host_qemu_and_of_one_without_seccomp() {
        if let Some(bin) = which(QEMU) {
            // Debian's qemu-system-x86 is built with libseccomp.
            let caps = probe_caps(&bin);
            assert_eq!(caps.seccomp, Ok(()));
            eprintln!("{}: kvm device= option: {}", bin.display(), caps.kvm_device);
        }
        let t = tempfile::tempdir().unwrap();
        let fake = t.path().join(QEMU);
        let script = t.path().join("script");
        fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = -sandbox ] && { echo \"$0: -sandbox on: There is no option group 'sandbox'\" >&2; exit 1; }\necho 'usage: qemu'\n",
        )
        .unwrap();
        // Written by `install`, so no descriptor of ours can be open for
        // writing (ETXTBSY) when it runs.
        let ok = Command::new("install")
            .args(["-m", "0755"])
            .arg(&script)
            .arg(&fake)
            .status()
            .unwrap();
        assert!(ok.success());
        let caps = probe_caps(&fake);
        let why = caps.seccomp.unwrap_err();
        assert!(
            why.contains("built without seccomp") && why.contains("no option group"),
            "{why}"
        );
        assert!(!caps.kvm_device);
    }
}
