//! Mounts through file descriptors (the new mount API): an idmapped,
//! read-only view of the image, and attaching the sandbox's disk, which the
//! host mounted as a detached tree and passed us as a descriptor.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use super::ConfineError;

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> ConfineError + 'a {
    move |source| ConfineError::Idmap {
        path: path.display().to_string(),
        what,
        source,
    }
}

/// Mount `src` again at `target`, read-only, nosuid, nodev, with its owners
/// shifted through `userns`: host root's files appear owned by root inside.
/// Nothing is copied or chowned, so one image serves every sandbox.
pub fn mount_idmapped(src: &Path, target: &Path, userns: BorrowedFd) -> Result<(), ConfineError> {
    let tree = open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| err(src, "open_tree")(e.into()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a plain syscall on a descriptor we own and a struct that
    // outlives it; rustix has no wrapper for mount_setattr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(err(src, "mount_setattr(MOUNT_ATTR_IDMAP)")(
            std::io::Error::last_os_error(),
        ));
    }
    attach(tree.as_fd(), target)
}

/// Attach the detached mount `tree` at `target` in our mount namespace.
pub fn attach(tree: BorrowedFd, target: &Path) -> Result<(), ConfineError> {
    move_mount(
        tree,
        c"",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| err(target, "move_mount")(e.into()))
}
