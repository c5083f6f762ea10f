//! The writable root disk of a VM sandbox: a sparse (or reflinked) copy of
//! the image's ext4 file, grown to the requested size. It persists across
//! stop/start and goes with the sandbox's directory on destroy.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::backend::BackendError;

fn run(cmd: &mut Command) -> Result<(), BackendError> {
    let out = cmd.output().map_err(|e| BackendError::Setup(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(BackendError::Setup(format!(
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Create `dest` from `image` if it does not exist yet, `disk_mib` large.
pub async fn prepare(image: &Path, dest: &Path, disk_mib: u64) -> Result<(), BackendError> {
    if dest.exists() {
        return Ok(());
    }
    let (image, dest) = (image.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let tmp = dest.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            // Reflink where the filesystem can, else a sparse copy: only used blocks are written.
            run(Command::new("cp").args(["--reflink=auto", "--sparse=always"]).arg(&image).arg(&tmp))?;
            let want = disk_mib * 1024 * 1024;
            let have = std::fs::metadata(&tmp)?.len();
            if want > have {
                std::fs::OpenOptions::new().write(true).open(&tmp)?.set_len(want)?;
                run(Command::new("e2fsck").args(["-fy"]).arg(&tmp)).or_else(|_| Ok::<_, BackendError>(()))?;
                run(Command::new("resize2fs").arg(&tmp))?;
            }
            std::fs::rename(&tmp, &dest)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    })
    .await
    .map_err(|e| BackendError::Setup(e.to_string()))?
}

/// Bytes actually allocated to a (sparse) disk file.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}
