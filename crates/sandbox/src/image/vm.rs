//! What the VM backends need on top of a rootfs directory: a kernel (shared
//! per data dir, see [`kernel`]), an initramfs and the rootfs as an ext4
//! disk image, both in the image's own directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::kernel::{self, KernelInfo};
use super::{ext4, initramfs, ImageError, ImageMeta, Progress, GUEST_PATH, META_FILE};

pub const INITRAMFS_FILE: &str = "initramfs.cpio.gz";
pub const EXT4_FILE: &str = "rootfs.ext4";

/// The VM part of `image.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmMeta {
    pub kernel_version: String,
    /// Absolute paths into the data dir's kernel cache.
    pub vmlinuz: PathBuf,
    pub vmlinux: PathBuf,
    /// File names inside the image directory.
    pub initramfs: String,
    pub rootfs_ext4: String,
    /// Apparent size of the ext4 image (it is sparse on disk).
    pub ext4_bytes: u64,
    /// Modules the initramfs loads, in order.
    pub modules: Vec<String>,
}

/// Everything needed to boot one image, resolved to paths that exist.
#[derive(Clone, Debug)]
pub struct VmArtifacts {
    pub kernel: KernelInfo,
    pub initramfs: PathBuf,
    pub rootfs_ext4: PathBuf,
}

/// Builds the VM artifacts of the image being assembled in `image_dir`
/// (which holds `rootfs/`). `images_dir` locates the shared kernel cache.
pub async fn build(
    image_dir: &Path,
    images_dir: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<VmMeta, ImageError> {
    let k = kernel::ensure(&kernel::kernels_dir(images_dir), progress).await?;

    progress(Progress::new(
        "initramfs",
        "writing initramfs.cpio.gz",
        0,
        1,
    ));
    let rootfs = image_dir.join("rootfs");
    // The agent the image build checked and installed is also the
    // initramfs's /init.
    let guest = rootfs.join(GUEST_PATH.trim_start_matches('/'));
    let out = image_dir.join(INITRAMFS_FILE);
    let (k2, out2) = (k.clone(), out.clone());
    let size = tokio::task::spawn_blocking(move || {
        initramfs::write(&out2, &k2, initramfs::Init::Agent(&guest))
    })
    .await
    .map_err(|e| ImageError::io("writing the initramfs", std::io::Error::other(e)))??;
    progress(Progress::new(
        "initramfs",
        format!("initramfs ready ({size} bytes)"),
        1,
        1,
    ));

    progress(Progress::new("ext4", "writing rootfs.ext4", 0, 1));
    let ext4_bytes = ext4::build(&rootfs, &image_dir.join(EXT4_FILE)).await?;
    progress(Progress::new(
        "ext4",
        format!("rootfs.ext4 ready ({} MiB, sparse)", ext4_bytes >> 20),
        1,
        1,
    ));
    Ok(VmMeta {
        kernel_version: k.version.clone(),
        vmlinuz: k.vmlinuz(),
        vmlinux: k.vmlinux(),
        initramfs: INITRAMFS_FILE.into(),
        rootfs_ext4: EXT4_FILE.into(),
        ext4_bytes,
        modules: k.modules.clone(),
    })
}

/// The VM artifacts of the image whose rootfs is `image_rootfs`
/// (`<images>/<name>/rootfs`), or why the image cannot boot as a VM.
pub fn artifacts(image_rootfs: &Path) -> Result<VmArtifacts, String> {
    let image_dir = image_rootfs
        .parent()
        .ok_or_else(|| format!("{} has no parent", image_rootfs.display()))?;
    let meta_path = image_dir.join(META_FILE);
    let bytes =
        std::fs::read(&meta_path).map_err(|e| format!("reading {}: {e}", meta_path.display()))?;
    let meta: ImageMeta = serde_json::from_slice(&bytes)
        .map_err(|e| format!("parsing {}: {e}", meta_path.display()))?;
    let vm = meta.vm.ok_or_else(|| {
        format!(
            "image '{}' has no VM kernel/initramfs/ext4 ({}); rebuild it with `ironclaw image build`",
            meta.name,
            meta.vm_error.as_deref().unwrap_or("built before VM support")
        )
    })?;
    let images_dir = image_dir.parent().unwrap_or(image_dir);
    let kernels = kernel::kernels_dir(images_dir);
    let kernel = kernel::cached(&kernels, &vm.kernel_version).ok_or_else(|| {
        format!(
            "kernel {} of image '{}' is missing from {}; rebuild the image",
            vm.kernel_version,
            meta.name,
            kernels.display()
        )
    })?;
    let a = VmArtifacts {
        kernel,
        initramfs: image_dir.join(&vm.initramfs),
        rootfs_ext4: image_dir.join(&vm.rootfs_ext4),
    };
    for p in [&a.initramfs, &a.rootfs_ext4] {
        if !p.is_file() {
            return Err(format!("{} is missing; rebuild the image", p.display()));
        }
    }
    Ok(a)
}
