//! The guest kernel for the VM backends: Debian's `linux-image-cloud-amd64`,
//! downloaded once per data dir into `<data>/kernels/<version>/` with
//! `vmlinuz` (QEMU), `vmlinux` (the uncompressed ELF Firecracker needs),
//! the few modules the initramfs loads and a `kernel.json` saying which,
//! in load order.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::util::run_tool;
use super::{ImageError, Progress};

/// The metapackage that always points at the current cloud kernel.
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";
const INFO_FILE: &str = "kernel.json";
/// The drivers a guest needs, in the order they must load (each after its
/// dependencies, which are added automatically). virtio_mmio before the
/// device drivers: it is the bus they sit on. Built-in ones are skipped.
const WANTED_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "ext4",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_net",
];
/// Downloaded .debs are kept here (when writable) so that many data dirs
/// (tests use a fresh one each) do not each fetch 27 MB.
const HOST_DEB_CACHE: &str = "/var/cache/ironclaw/debs";

/// `<kernels>/<version>/kernel.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelInfo {
    pub version: String,
    pub package: String,
    /// Module names (no `.ko`) in load order; files are `modules/<name>.ko`.
    pub modules: Vec<String>,
    /// Wanted modules that are built into this kernel.
    pub builtin: Vec<String>,
    /// Compression of the bzImage payload (for the record).
    pub payload: String,
    #[serde(skip)]
    pub dir: PathBuf,
}

impl KernelInfo {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.join("modules")
    }
}

/// The kernels directory that belongs to an images directory.
pub fn kernels_dir(images_dir: &Path) -> PathBuf {
    images_dir.parent().unwrap_or(images_dir).join("kernels")
}

/// A cached kernel by version, if it is complete.
pub fn cached(kernels_dir: &Path, version: &str) -> Option<KernelInfo> {
    let dir = kernels_dir.join(version);
    let bytes = std::fs::read(dir.join(INFO_FILE)).ok()?;
    let mut info: KernelInfo = serde_json::from_slice(&bytes).ok()?;
    info.dir = dir;
    (info.vmlinuz().is_file() && info.vmlinux().is_file()).then_some(info)
}

/// Newest complete kernel in the cache (by version string), for when apt
/// cannot tell us which one is current.
pub fn newest_cached(kernels_dir: &Path) -> Option<KernelInfo> {
    let mut versions: Vec<String> = std::fs::read_dir(kernels_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    versions.sort();
    versions.iter().rev().find_map(|v| cached(kernels_dir, v))
}

/// The cloud kernel, downloading and unpacking it on first use.
pub async fn ensure(
    kernels_dir: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<KernelInfo, ImageError> {
    progress(Progress::new("kernel", "resolving the cloud kernel", 0, 3));
    let package = match resolve_package().await {
        Ok(p) => p,
        Err(e) => {
            // Offline or no apt: any kernel we already have will do.
            if let Some(k) = newest_cached(kernels_dir) {
                progress(Progress::new(
                    "kernel",
                    format!("using cached kernel {} ({e})", k.version),
                    3,
                    3,
                ));
                return Ok(k);
            }
            return Err(e);
        }
    };
    let version = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    if let Some(k) = cached(kernels_dir, &version) {
        progress(Progress::new(
            "kernel",
            format!("kernel {version} cached"),
            3,
            3,
        ));
        return Ok(k);
    }
    std::fs::create_dir_all(kernels_dir)
        .map_err(|e| ImageError::io(format!("creating {}", kernels_dir.display()), e))?;
    // Concurrent image builds share one download.
    let lock = lock_file(&kernels_dir.join(".lock")).await?;
    if let Some(k) = cached(kernels_dir, &version) {
        return Ok(k);
    }
    let tmp = kernels_dir.join(format!(".{version}.tmp-{:016x}", rand::random::<u64>()));
    let result = unpack(&package, &version, &tmp, progress).await;
    let result = result.and_then(|()| {
        let dest = kernels_dir.join(&version);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest)
            .map_err(|e| ImageError::io(format!("moving {} into place", tmp.display()), e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    drop(lock);
    result?;
    let k = cached(kernels_dir, &version).ok_or_else(|| {
        ImageError::io(
            "kernel cache",
            std::io::Error::other("kernel vanished right after unpacking"),
        )
    })?;
    progress(Progress::new(
        "kernel",
        format!(
            "kernel {version} ready ({} payload, modules: {})",
            k.payload,
            k.modules.join(" ")
        ),
        3,
        3,
    ));
    Ok(k)
}

/// `linux-image-cloud-amd64` -> `linux-image-6.1.0-56-cloud-amd64`.
async fn resolve_package() -> Result<String, ImageError> {
    let out = run_tool(
        "apt-cache",
        "apt-get install apt",
        Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]),
    )
    .await?;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-") && p.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| ImageError::Tool {
            tool: "apt-cache depends".into(),
            status: "exit status: 0".into(),
            stderr_tail: format!(
                "{KERNEL_META_PACKAGE} names no versioned kernel package; run apt-get update"
            ),
        })
}

struct FileLock(#[allow(dead_code)] std::fs::File);

async fn lock_file(path: &Path) -> Result<FileLock, ImageError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ImageError::io(format!("opening {}", path.display()), e))?;
    let f = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an fd we own; released when the file closes.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            Ok(f)
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
    .await
    .map_err(|e| ImageError::io("kernel lock", std::io::Error::other(e)))?
    .map_err(|e| ImageError::io(format!("locking {}", path.display()), e))?;
    Ok(FileLock(f))
}

async fn download_deb(package: &str, scratch: &Path) -> Result<PathBuf, ImageError> {
    let find = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|x| x == "deb")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
    };
    let host_cache = Path::new(HOST_DEB_CACHE);
    if let Some(deb) = find(host_cache) {
        return Ok(deb);
    }
    std::fs::create_dir_all(scratch)
        .map_err(|e| ImageError::io(format!("creating {}", scratch.display()), e))?;
    run_tool(
        "apt-get download",
        "apt-get install apt",
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(scratch),
    )
    .await?;
    let deb = find(scratch).ok_or_else(|| ImageError::Tool {
        tool: "apt-get download".into(),
        status: "exit status: 0".into(),
        stderr_tail: format!("no {package} .deb was downloaded"),
    })?;
    // Best effort: a shared cache only saves time.
    if std::fs::create_dir_all(host_cache).is_ok() {
        let dest = host_cache.join(deb.file_name().expect("deb has a name"));
        let part = dest.with_extension("part");
        if std::fs::copy(&deb, &part).is_ok() {
            let _ = std::fs::rename(&part, &dest);
        }
    }
    Ok(deb)
}

async fn unpack(
    package: &str,
    version: &str,
    tmp: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ImageError> {
    progress(Progress::new(
        "kernel",
        format!("downloading {package}"),
        1,
        3,
    ));
    std::fs::create_dir_all(tmp)
        .map_err(|e| ImageError::io(format!("creating {}", tmp.display()), e))?;
    let scratch = tmp.join("download");
    let deb = download_deb(package, &scratch).await?;
    let extracted = tmp.join("x");
    run_tool(
        "dpkg-deb",
        "apt-get install dpkg",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted),
    )
    .await?;
    progress(Progress::new(
        "kernel",
        "extracting vmlinux and modules",
        2,
        3,
    ));
    let vmlinuz_src = extracted.join(format!("boot/vmlinuz-{version}"));
    let moddir = extracted.join(format!("lib/modules/{version}"));
    let tmp_owned = tmp.to_path_buf();
    let version = version.to_string();
    let package = package.to_string();
    tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
        let tmp = tmp_owned;
        let vmlinuz = tmp.join("vmlinuz");
        std::fs::copy(&vmlinuz_src, &vmlinuz)
            .map_err(|e| ImageError::io(format!("copying {}", vmlinuz_src.display()), e))?;
        let bz = std::fs::read(&vmlinuz)
            .map_err(|e| ImageError::io(format!("reading {}", vmlinuz.display()), e))?;
        let (elf, payload) = extract_vmlinux(&bz).map_err(|e| {
            ImageError::io(
                format!("extracting vmlinux from {}", vmlinuz_src.display()),
                std::io::Error::other(e),
            )
        })?;
        let vmlinux = tmp.join("vmlinux");
        std::fs::write(&vmlinux, elf)
            .map_err(|e| ImageError::io(format!("writing {}", vmlinux.display()), e))?;

        let (modules, builtin) = pick_modules(&moddir, &tmp.join("modules"))?;
        let info = KernelInfo {
            version,
            package,
            modules,
            builtin,
            payload: payload.to_string(),
            dir: PathBuf::new(),
        };
        let json = serde_json::to_vec_pretty(&info).expect("KernelInfo serializes");
        std::fs::write(tmp.join(INFO_FILE), json)
            .map_err(|e| ImageError::io("writing kernel.json", e))?;
        for d in ["x", "download"] {
            let _ = std::fs::remove_dir_all(tmp.join(d));
        }
        Ok(())
    })
    .await
    .map_err(|e| ImageError::io("unpacking the kernel", std::io::Error::other(e)))?
}

/// Copies the wanted modules and their dependencies into `dest` and returns
/// them in load order, plus the wanted ones that are built in.
fn pick_modules(moddir: &Path, dest: &Path) -> Result<(Vec<String>, Vec<String>), ImageError> {
    let builtin_text = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin_text
        .lines()
        .filter_map(|l| Path::new(l).file_stem())
        .map(|s| norm(&s.to_string_lossy()))
        .collect();
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = name.strip_suffix(".ko") {
                    files.insert(norm(stem), p.clone());
                }
            }
        }
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| ImageError::io(format!("creating {}", dest.display()), e))?;
    let mut order = Vec::new();
    let mut builtin_hit = Vec::new();
    for want in WANTED_MODULES {
        add_module(
            &norm(want),
            &files,
            &builtin,
            &mut order,
            &mut builtin_hit,
            0,
        )?;
    }
    for m in &order {
        let src = &files[m];
        std::fs::copy(src, dest.join(format!("{m}.ko")))
            .map_err(|e| ImageError::io(format!("copying {}", src.display()), e))?;
    }
    Ok((order, builtin_hit))
}

fn add_module(
    name: &str,
    files: &HashMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    order: &mut Vec<String>,
    builtin_hit: &mut Vec<String>,
    depth: usize,
) -> Result<(), ImageError> {
    if order.iter().any(|m| m == name) || builtin_hit.iter().any(|m| m == name) {
        return Ok(());
    }
    if builtin.contains(name) {
        builtin_hit.push(name.to_string());
        return Ok(());
    }
    let path = files.get(name).ok_or_else(|| {
        ImageError::io(
            "picking kernel modules",
            std::io::Error::other(format!(
                "module {name} is neither built in nor shipped by this kernel"
            )),
        )
    })?;
    if depth > 32 {
        return Err(ImageError::io(
            "picking kernel modules",
            std::io::Error::other(format!("module dependency loop at {name}")),
        ));
    }
    let data = std::fs::read(path)
        .map_err(|e| ImageError::io(format!("reading {}", path.display()), e))?;
    for dep in module_depends(&data) {
        add_module(&dep, files, builtin, order, builtin_hit, depth + 1)?;
    }
    order.push(name.to_string());
    Ok(())
}

/// Module names treat `-` and `_` alike.
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated
/// `key=value` strings), without needing an ELF parser or modinfo.
pub(crate) fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(norm)
        .collect()
}

/// The uncompressed kernel ELF inside a bzImage, and the payload's format.
pub fn extract_vmlinux(bz: &[u8]) -> Result<(Vec<u8>, &'static str), String> {
    if bz.len() < 0x250 || &bz[0x202..0x206] != b"HdrS" {
        return Err("not a bzImage (no HdrS setup header)".into());
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let pm_start = (setup_sects + 1) * 512;
    let version = u16::from_le_bytes([bz[0x206], bz[0x207]]);
    let u32_at = |o: usize| u32::from_le_bytes(bz[o..o + 4].try_into().unwrap()) as usize;
    // Boot protocol 2.08+ says exactly where the payload is; otherwise scan.
    let payload: &[u8] = if version >= 0x208 {
        let off = pm_start + u32_at(0x248);
        let len = u32_at(0x24c);
        bz.get(off..off + len)
            .ok_or("payload offset/length point outside the file")?
    } else {
        &bz[pm_start.min(bz.len())..]
    };
    let (elf, kind) = decompress_any(payload)?;
    if elf.len() < 4 || &elf[..4] != b"\x7fELF" {
        return Err(format!(
            "decompressed {kind} payload is not an ELF ({} bytes)",
            elf.len()
        ));
    }
    Ok((elf, kind))
}

fn decompress_any(payload: &[u8]) -> Result<(Vec<u8>, &'static str), String> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"\x1f\x8b\x08", "gzip"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x02\x21\x4c\x18", "lz4"),
    ];
    // The payload normally starts with the magic; scanning covers old
    // kernels whose header does not locate it.
    let mut best: Option<(usize, &str)> = None;
    for (magic, kind) in MAGICS {
        if let Some(at) = payload.windows(magic.len()).position(|w| w == *magic) {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, kind));
            }
        }
    }
    let (at, kind) = best.ok_or("no gzip, xz, zstd or lz4 payload found in the bzImage")?;
    let data = &payload[at..];
    let out = match kind {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            out
        }
        "lz4" => lz4_legacy(data)?,
        "xz" => external("xz", &["-dc", "--single-stream"], data)?,
        "zstd" => external("zstd", &["-dcq"], data)?,
        _ => unreachable!(),
    };
    Ok((out, kind))
}

/// The LZ4 "legacy" frame the kernel uses: magic, then blocks of
/// `u32 LE compressed size | data`, each at most 8 MiB decompressed. The
/// kernel appends the uncompressed size after the last block, which reads
/// as a block size past the end: that ends the stream.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, String> {
    const MAGIC: u32 = 0x184C_2102;
    const BLOCK: usize = 8 << 20;
    let mut pos = 4;
    let mut out = Vec::new();
    let mut block = vec![0u8; BLOCK];
    while pos + 4 <= data.len() {
        let size = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if size == MAGIC as usize {
            pos += 4;
            continue;
        }
        if size == 0 || pos + 4 + size > data.len() {
            break;
        }
        let n = lz4_flex::block::decompress_into(&data[pos + 4..pos + 4 + size], &mut block)
            .map_err(|e| format!("lz4 block at {pos}: {e}"))?;
        out.extend_from_slice(&block[..n]);
        pos += 4 + size;
    }
    if out.is_empty() {
        return Err("lz4 payload held no blocks".into());
    }
    Ok(out)
}

/// xz and zstd are rare for x86 kernels: leave them to the host's tools.
/// Trailing bytes after the stream can make them complain, so output that
/// came out is used whatever the exit status (the caller checks for ELF).
fn external(tool: &str, args: &[&str], data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = std::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{tool} is needed to decompress this kernel: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_from_modinfo() {
        let ko = b"junk\0license=GPL\0depends=virtio,virtio-ring\0intree=Y\0";
        assert_eq!(module_depends(ko), vec!["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn lz4_legacy_round_trip() {
        let plain: Vec<u8> = b"\x7fELF".iter().chain(&[7u8; 100_000]).copied().collect();
        let block = lz4_flex::block::compress(&plain);
        let mut framed = 0x184C_2102u32.to_le_bytes().to_vec();
        framed.extend_from_slice(&(block.len() as u32).to_le_bytes());
        framed.extend_from_slice(&block);
        // The kernel's trailing uncompressed size.
        framed.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        let (out, kind) = decompress_any(&framed).unwrap();
        assert_eq!(kind, "lz4");
        assert_eq!(out, plain);
    }

    #[test]
    fn rejects_non_bzimage() {
        assert!(extract_vmlinux(&[0u8; 4096]).is_err());
    }
}
