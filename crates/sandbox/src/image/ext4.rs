//! ext4 disk images: an image's `rootfs.ext4` from its rootfs directory,
//! and growing a sandbox's copy to its disk size.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tokio::process::Command;

use super::util::run_tool;
use super::ImageError;

const MIB: u64 = 1024 * 1024;
const E2FS_HINT: &str = "apt-get install e2fsprogs";

/// Bytes and entries below `root` (allocated size, so small files count a
/// block each as they will on ext4).
fn measure(root: &Path) -> std::io::Result<(u64, u64)> {
    let mut bytes = 0;
    let mut entries = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        entries += 1;
        bytes += md.len().max(md.blocks() * 512).div_ceil(4096) * 4096;
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// `mkfs.ext4 -d rootfs` into a sparse file sized to the content plus
/// headroom (sandboxes grow their copy to their own disk size anyway).
pub async fn build(rootfs: &Path, out: &Path) -> Result<u64, ImageError> {
    let root = rootfs.to_path_buf();
    let (bytes, entries) = tokio::task::spawn_blocking(move || measure(&root))
        .await
        .map_err(|e| ImageError::io("measuring rootfs", std::io::Error::other(e)))?
        .map_err(|e| ImageError::io(format!("measuring {}", rootfs.display()), e))?;
    // Metadata (inode tables, journal) plus room to boot and write a bit.
    let size = (bytes + bytes / 5 + 64 * MIB).div_ceil(MIB) * MIB;
    let inodes = entries * 2 + 4096;
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out)
        .map_err(|e| ImageError::io(format!("creating {}", out.display()), e))?;
    f.set_len(size)
        .map_err(|e| ImageError::io(format!("sizing {}", out.display()), e))?;
    drop(f);
    run_tool(
        "mkfs.ext4",
        E2FS_HINT,
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-L", "ironclaw-root", "-N"])
            .arg(inodes.to_string())
            .arg("-d")
            .arg(rootfs)
            .arg(out)
            // Deterministic and quiet regardless of the caller's locale.
            .env("LC_ALL", "C"),
    )
    .await?;
    Ok(size)
}

/// Grows the ext4 filesystem in `disk` to `size` bytes (never shrinks).
pub async fn grow(disk: &Path, size: u64) -> Result<bool, ImageError> {
    let cur = std::fs::metadata(disk)
        .map_err(|e| ImageError::io(format!("reading {}", disk.display()), e))?
        .len();
    if cur >= size {
        return Ok(false);
    }
    // resize2fs insists on a freshly checked filesystem once it has been
    // mounted; exit codes 1 and 2 mean "errors fixed", which is fine.
    let st = Command::new("e2fsck")
        .args(["-fy"])
        .arg(disk)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| ImageError::io("starting e2fsck", e))?;
    if !matches!(st.code(), Some(0..=2)) {
        return Err(ImageError::Tool {
            tool: "e2fsck".into(),
            status: st.to_string(),
            stderr_tail: format!("{} has errors e2fsck could not fix", disk.display()),
        });
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(|e| ImageError::io(format!("opening {}", disk.display()), e))?;
    f.set_len(size)
        .map_err(|e| ImageError::io(format!("growing {}", disk.display()), e))?;
    drop(f);
    run_tool(
        "resize2fs",
        E2FS_HINT,
        Command::new("resize2fs").arg(disk).env("LC_ALL", "C"),
    )
    .await?;
    Ok(true)
}
