//! The VM initramfs: static busybox, the kernel's virtio/vsock modules and
//! an /init that loads them, mounts the root disk and hands PID 1 to the
//! guest agent. Written as a newc cpio in Rust (no cpio tool needed) and
//! gzip-compressed (the kernel has CONFIG_RD_GZIP).

use std::io::Write;
use std::path::Path;

use super::kernel::KernelInfo;
use super::ImageError;

/// Applets the init script uses, linked to busybox.
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "switch_root",
    "poweroff",
    "sleep",
    "cat",
    "mkdir",
    "ls",
    "tr",
];

/// The init script. `@MODULES@` becomes the load order. Every failure prints
/// one `ironclaw-initramfs:` line and powers off, so the host sees the VMM
/// exit with the reason on the console instead of a hang (and PID 1 never
/// exits, which would panic the kernel).
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
fail() {
    echo "ironclaw-initramfs: $*"
    poweroff -f
    sleep 10
}
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
root=/dev/vda
rootflags=rw
vsock=0
net=0
marker=0
for w in $(cat /proc/cmdline); do
    case "$w" in
        ironclaw.root=*) root="${w#ironclaw.root=}" ;;
        ironclaw.rootflags=*) rootflags="${w#ironclaw.rootflags=}" ;;
        ironclaw.transport=vsock:*) vsock=1 ;;
        ironclaw.net=*) net=1 ;;
        ironclaw.marker=1) marker=1 ;;
    esac
done
# Only the drivers this boot uses: each insmod costs time under TCG.
for m in @MODULES@; do
    case "$m" in
        vsock|vmw_vsock_*) [ "$vsock" = 1 ] || continue ;;
        failover|net_failover|virtio_net) [ "$net" = 1 ] || continue ;;
    esac
    insmod /lib/modules/$m.ko || fail "cannot load kernel module $m"
done
i=0
while [ ! -b "$root" ]; do
    i=$((i + 1))
    [ "$i" -gt 100 ] && fail "root disk $root did not appear within 10 s (block devices: $(ls /sys/block | tr '\n' ' '))"
    sleep 0.1
done
mount -t ext4 -o "$rootflags" "$root" /newroot || fail "cannot mount $root (ext4) on /newroot"
[ -x /newroot/sbin/ironclaw-guest ] || fail "$root has no /sbin/ironclaw-guest; rebuild the image"
# Benchmark reference: the same boot up to here, then a marker instead of the agent.
if [ "$marker" = 1 ]; then
    echo IRONCLAW-REF-BOOTED
    poweroff -f
fi
umount /proc /sys
umount -l /dev
exec switch_root /newroot /sbin/ironclaw-guest init
fail "switch_root failed"
"#;

/// One newc cpio archive being written.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Cpio {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// The contents of /init for these modules (also used by tests).
pub fn init_script(modules: &[String]) -> String {
    INIT.replace("@MODULES@", &modules.join(" "))
}

/// Writes `out` (gzip'd newc cpio) for `kernel` with `busybox` (a static
/// binary) and `init` as /init.
pub fn write(
    out: &Path,
    kernel: &KernelInfo,
    busybox: &Path,
    init: &str,
) -> Result<u64, ImageError> {
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        c.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted:
    // without this node the init script would have no output at all.
    c.chardev("dev/console", 0o600, 5, 1);
    c.chardev("dev/null", 0o666, 1, 3);
    let bb = std::fs::read(busybox)
        .map_err(|e| ImageError::io(format!("reading {}", busybox.display()), e))?;
    c.file("bin/busybox", 0o755, &bb);
    for a in APPLETS {
        c.symlink(&format!("bin/{a}"), "busybox");
    }
    for m in &kernel.modules {
        let p = kernel.modules_dir().join(format!("{m}.ko"));
        let data =
            std::fs::read(&p).map_err(|e| ImageError::io(format!("reading {}", p.display()), e))?;
        c.file(&format!("lib/modules/{m}.ko"), 0o644, &data);
    }
    c.file("init", 0o755, init.as_bytes());
    let cpio = c.finish();

    let tmp = out.with_extension("part");
    let f = std::fs::File::create(&tmp)
        .map_err(|e| ImageError::io(format!("creating {}", tmp.display()), e))?;
    // Fast level: the archive is small and TCG pays for every byte the
    // kernel inflates either way.
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(&cpio)
        .and_then(|()| gz.finish().map(drop))
        .map_err(|e| ImageError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, out)
        .map_err(|e| ImageError::io(format!("moving {} into place", out.display()), e))?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_layout_is_newc() {
        let mut c = Cpio::new();
        c.file("init", 0o755, b"abc");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        // header (110) + "init\0" (5) padded to 116 + data 3 padded to 4.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(out.len() % 4, 0);
        let trailer = &out[120..];
        assert!(trailer.starts_with(b"070701"));
        assert_eq!(&trailer[110..121], b"TRAILER!!!\0");
    }

    #[test]
    fn init_lists_modules_in_order() {
        let s = init_script(&["virtio_ring".into(), "virtio".into()]);
        assert!(s.contains("for m in virtio_ring virtio; do"));
        assert!(s.starts_with("#!/bin/sh\n"));
    }
}
