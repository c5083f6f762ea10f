//! Mount helpers shared by the namespace and VM inits, with errors that
//! say what was being mounted where.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("{op} {path}: {source}")]
    Fs {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl MountError {
    /// Already mounted (an initramfs or the kernel got there first).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            MountError::Mount {
                source: nix::Error::EBUSY,
                ..
            }
        )
    }
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    nix::mount::mount(Some(source), target, fstype, flags, data).map_err(|e| MountError::Mount {
        what: fstype.unwrap_or(source).to_string(),
        target: target.to_path_buf(),
        source: e,
    })
}

/// Mount a fresh filesystem of `fstype`, creating the mount point.
pub fn mount_fs(
    fstype: &str,
    target: &Path,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    mkdir_p(target)?;
    mount(fstype, target, Some(fstype), flags, data)
}

/// Bind `source` onto `target`, creating the mount point of the right kind.
pub fn bind(source: &Path, target: &Path) -> Result<(), MountError> {
    if source.is_dir() {
        mkdir_p(target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdir_p(parent)?;
        }
        if !target.exists() {
            std::fs::File::create(target).map_err(|e| fs_err("create", target, e))?;
        }
    }
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| MountError::Mount {
        what: format!("bind of {}", source.display()),
        target: target.to_path_buf(),
        source: e,
    })
}

/// Set `flags` (MS_RDONLY, MS_NOSUID, ...) on the bind mount at `target`:
/// a bind keeps its source's flags until remounted.
pub fn remount_bind(target: &Path, flags: MsFlags) -> Result<(), MountError> {
    mount(
        "none",
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None,
    )
}

pub fn mkdir_p(path: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|e| fs_err("mkdir", path, e))
}

pub fn symlink(to: &str, at: &Path) -> Result<(), MountError> {
    match std::os::unix::fs::symlink(to, at) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(fs_err("symlink", at, e)),
        _ => Ok(()),
    }
}

pub fn fs_err(op: &'static str, path: &Path, source: std::io::Error) -> MountError {
    MountError::Fs {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The usual /dev symlinks that shells and tools expect.
pub fn dev_links(dev: &Path) -> Result<(), MountError> {
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, &dev.join(name))?;
    }
    Ok(())
}
