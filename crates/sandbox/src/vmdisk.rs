//! The writable root disk of a VM sandbox: a sparse (or reflinked) copy of
//! the image's ext4 file, grown to the requested size. It persists across
//! stop/start and goes with the sandbox's directory on destroy.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::backend::BackendError;
use crate::image::ext4;

/// Create `dest` from `image` if it does not exist yet, and grow it to
/// `disk_mib` (never shrinks).
pub async fn prepare(image: &Path, dest: &Path, disk_mib: u64) -> Result<(), BackendError> {
    if !dest.exists() {
        let tmp = dest.with_extension("ext4.tmp");
        // Reflink where the filesystem can, else a sparse copy: only used blocks are written.
        let out = tokio::process::Command::new("cp")
            .args(["--reflink=auto", "--sparse=always"])
            .arg(image)
            .arg(&tmp)
            .output()
            .await?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(BackendError::Setup(format!(
                "copying {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::rename(&tmp, dest)?;
    }
    ext4::grow(dest, disk_mib * 1024 * 1024)
        .await
        .map_err(|e| BackendError::Setup(format!("growing {}: {e}", dest.display())))?;
    Ok(())
}

/// Bytes actually allocated to a (sparse) disk file.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}
