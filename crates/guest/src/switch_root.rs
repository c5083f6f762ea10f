//! Leaving the initramfs: what busybox `switch_root` does, without the
//! exec at the end. The agent was the initramfs's /init and stays PID 1;
//! only its root changes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("{0} is not a mount point (the root disk is not mounted there)")]
    NotMounted(PathBuf),
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("stat {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The initramfs's own API filesystems: detached here and mounted afresh,
/// with the right flags, once on the new root.
const INITRAMFS_MOUNTS: &[&str] = &["/proc", "/sys", "/dev"];

/// Make `new_root` the root filesystem and free the initramfs behind it.
pub fn switch_root(new_root: &Path) -> Result<(), SwitchRootError> {
    let sys = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| SwitchRootError::Sys { op, path, source }
    };
    let root_dev = ensure_mount_point(new_root, Path::new("/"))?;
    for m in INITRAMFS_MOUNTS {
        match nix::mount::umount2(*m, MntFlags::MNT_DETACH) {
            // Not mounted: nothing to detach.
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(sys("umount", Path::new(m))(e)),
        }
    }
    // The initramfs is RAM: empty it, or its files stay allocated for the
    // life of the VM. Failures only cost memory. (Our own binary stays
    // mapped, so its pages live on while we run.)
    delete_contents(Path::new("/"), root_dev);
    nix::unistd::chdir(new_root).map_err(sys("chdir", new_root))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("move mount", new_root))?;
    nix::unistd::chroot(".").map_err(sys("chroot", new_root))?;
    nix::unistd::chdir("/").map_err(sys("chdir", Path::new("/")))?;
    Ok(())
}

/// `new_root` must be a filesystem of its own under `root`; returns the
/// device of `root`.
fn ensure_mount_point(new_root: &Path, root: &Path) -> Result<u64, SwitchRootError> {
    let stat = |path: &Path| {
        std::fs::symlink_metadata(path).map_err(|source| SwitchRootError::Stat {
            path: path.to_path_buf(),
            source,
        })
    };
    let root_dev = stat(root)?.dev();
    if stat(new_root)?.dev() == root_dev {
        return Err(SwitchRootError::NotMounted(new_root.to_path_buf()));
    }
    Ok(root_dev)
}

/// Remove everything under `dir` that lives on device `dev`, never
/// crossing into other filesystems (the new root is mounted inside).
fn delete_contents(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            delete_contents(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_contents_empties_a_tree_and_keeps_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        std::fs::write(d.join("a/b/c/f"), b"x").unwrap();
        std::fs::write(d.join("top"), b"y").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("link")).unwrap();
        let dev = std::fs::metadata(d).unwrap().dev();
        delete_contents(d, dev);
        assert!(d.exists());
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
        // The link is gone, not what it pointed at.
        assert!(Path::new("/etc").exists());
    }

    #[test]
    fn delete_contents_skips_other_devices() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        // A device number nothing here has: every entry is "elsewhere".
        delete_contents(dir.path(), u64::MAX);
        assert!(dir.path().join("f").exists());
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("newroot");
        std::fs::create_dir(&sub).unwrap();
        let e = ensure_mount_point(&sub, dir.path());
        assert!(matches!(e, Err(SwitchRootError::NotMounted(_))), "{e:?}");
        assert!(matches!(
            ensure_mount_point(&dir.path().join("missing"), dir.path()),
            Err(SwitchRootError::Stat { .. })
        ));
        // /proc is a filesystem of its own wherever these tests run.
        assert!(ensure_mount_point(Path::new("/proc"), Path::new("/")).is_ok());
    }
}
