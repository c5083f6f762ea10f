//! The VM initramfs: the static guest agent as /init, the kernel's
//! virtio/vsock modules and the order to load them in. The agent loads
//! them, mounts the root disk, switches to it and serves, all in one
//! process (see the guest's `initramfs` module): no shell, no busybox.
//! Written as a newc cpio in Rust (no cpio tool needed) and
//! gzip-compressed (the kernel has CONFIG_RD_GZIP).

use std::io::Write;
use std::path::Path;

use ironclaw_proto::boot::MODULE_ORDER;

use super::kernel::KernelInfo;
use super::ImageError;

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

/// What runs as /init.
pub enum Init<'a> {
    /// The static `ironclaw-guest`: every VM boot.
    Agent(&'a Path),
    /// A script run by a static busybox. Only the boot benchmark uses it,
    /// for its plain-boot reference.
    Shell { busybox: &'a Path, script: &'a str },
}

/// Writes `out` (gzip'd newc cpio) with `kernel`'s modules and `init`;
/// returns its size.
pub fn write(out: &Path, kernel: &KernelInfo, init: Init<'_>) -> Result<u64, ImageError> {
    let mut c = Cpio::new();
    for d in ["dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        c.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted:
    // without this node init would have no output at all.
    c.chardev("dev/console", 0o600, 5, 1);
    c.chardev("dev/null", 0o666, 1, 3);
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ImageError::io(format!("reading {}", p.display()), e))
    };
    match init {
        Init::Agent(bin) => c.file("init", 0o755, &read(bin)?),
        Init::Shell { busybox, script } => {
            c.dir("bin");
            c.file("bin/busybox", 0o755, &read(busybox)?);
            for applet in ["sh", "echo", "poweroff"] {
                c.symlink(&format!("bin/{applet}"), "busybox");
            }
            c.file("init", 0o755, script.as_bytes());
        }
    }
    c.file(MODULE_ORDER, 0o644, kernel.modules.join("\n").as_bytes());
    for m in &kernel.modules {
        let data = read(&kernel.modules_dir().join(format!("{m}.ko")))?;
        c.file(&format!("lib/modules/{m}.ko"), 0o644, &data);
    }
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

    /// (name, mode, data) of every entry of a gzip'd newc archive.
    fn entries(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
        use std::io::Read;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap() as usize
        };
        let align = |n: usize| n.div_ceil(4) * 4;
        let (mut out, mut at) = (Vec::new(), 0);
        loop {
            let h = &raw[at..at + 110];
            assert!(h.starts_with(b"070701"));
            let (mode, size, name_len) = (field(h, 1) as u32, field(h, 6), field(h, 11));
            let name = String::from_utf8(raw[at + 110..at + 110 + name_len - 1].to_vec()).unwrap();
            let data_at = align(at + 110 + name_len);
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, raw[data_at..data_at + size].to_vec()));
            at = align(data_at + size);
        }
    }

    #[test]
    fn agent_is_init_and_modules_come_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("kernel");
        std::fs::create_dir_all(kdir.join("modules")).unwrap();
        for m in ["virtio_ring", "virtio_blk"] {
            std::fs::write(kdir.join(format!("modules/{m}.ko")), m).unwrap();
        }
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"\x7fELF agent").unwrap();
        let k = KernelInfo {
            version: "6.1.0-test".into(),
            package: "test".into(),
            modules: vec!["virtio_ring".into(), "virtio_blk".into()],
            builtin: vec![],
            payload: "lz4".into(),
            dir: kdir,
        };
        let out = dir.path().join("initramfs.cpio.gz");
        write(&out, &k, Init::Agent(&agent)).unwrap();
        let e = entries(&out);
        let get = |n: &str| e.iter().find(|(name, _, _)| name == n);
        let (_, mode, data) = get("init").expect("/init");
        assert_eq!(
            (mode & 0o170777, data.as_slice()),
            (0o100755, &b"\x7fELF agent"[..])
        );
        assert_eq!(get(MODULE_ORDER).unwrap().2, b"virtio_ring\nvirtio_blk");
        assert_eq!(get("lib/modules/virtio_blk.ko").unwrap().2, b"virtio_blk");
        assert_eq!(get("dev/console").unwrap().1 & 0o170000, 0o020000);
        // No shell: the agent does the boot.
        assert!(get("bin/busybox").is_none());

        let bad = write(&out, &k, Init::Agent(&dir.path().join("missing")));
        assert!(bad.unwrap_err().to_string().contains("missing"));
    }
}
