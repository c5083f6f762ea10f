//! Mounts through file descriptors (the new mount API): an idmapped,
//! read-only view of the image, and attaching the sandbox's disk, which the
//! host mounted as a detached tree and passed us as a descriptor; and the
//! operator-allowed host directories (`--bind`), idmapped the same way.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use super::ConfineError;

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MS_PRIVATE: u64 = 1 << 18;

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
    set_idmap(tree.as_fd(), src, userns, MOUNT_ATTR_RDONLY, 0)?;
    attach(tree.as_fd(), target)
}

/// Give the detached mount `tree` the idmapping of `userns`, nosuid and
/// nodev, plus `extra` attributes and `propagation`.
fn set_idmap(
    tree: BorrowedFd,
    src: &Path,
    userns: BorrowedFd,
    extra: u64,
    propagation: u64,
) -> Result<(), ConfineError> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | extra,
        attr_clr: 0,
        propagation,
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
    Ok(())
}

/// Bind the host directory `host` at `guest` inside the new root `root`
/// (before the pivot), idmapped through `userns` like the image: host uid
/// N shows as N inside for N < 65536 (so host root's files are root's),
/// higher ids as nobody; what root inside writes is host root's on disk.
/// Always nosuid and nodev, read-only when `read_only`, private.
///
/// `host` must be the canonical path the daemon checked: it is opened
/// refusing every symlink, so a component swapped for a symlink since the
/// check fails instead of escaping. The mount point is created inside
/// `root` component by component, also refusing symlinks (the sandbox
/// owns its upper layer and could plant one), owned by root inside.
pub fn bind_host_dir(
    host: &Path,
    root: &Path,
    guest: &Path,
    read_only: bool,
    userns: BorrowedFd,
    uid_base: u32,
) -> Result<(), ConfineError> {
    let no_links = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let dir = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let src = rustix::fs::openat2(rustix::fs::CWD, host, dir, Mode::empty(), no_links)
        .map_err(|e| err(host, "open host directory (symlinks refused)")(e.into()))?;
    let tree = open_tree(
        src.as_fd(),
        c"",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| err(host, "open_tree")(e.into()))?;
    let ro = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    set_idmap(tree.as_fd(), host, userns, ro, MS_PRIVATE)?;

    // The root is the daemon's own path (its data dir may sit behind a
    // symlink); only what lies under it is the sandbox's to plant links in.
    let mut at = rustix::fs::openat2(
        rustix::fs::CWD,
        root,
        dir,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .map_err(|e| err(root, "open the new root")(e.into()))?;
    for part in guest.components() {
        let std::path::Component::Normal(name) = part else {
            if part == std::path::Component::RootDir {
                continue;
            }
            return Err(err(guest, "guest path must be normalized")(
                std::io::ErrorKind::InvalidInput.into(),
            ));
        };
        let beneath = no_links | ResolveFlags::BENEATH;
        let next = match rustix::fs::openat2(at.as_fd(), name, dir, Mode::empty(), beneath) {
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::mkdirat(at.as_fd(), name, Mode::from_raw_mode(0o755))
                    .map_err(|e| err(guest, "create the mount point")(e.into()))?;
                let id = Some(rustix::fs::Uid::from_raw(uid_base));
                rustix::fs::chownat(
                    at.as_fd(),
                    name,
                    id,
                    Some(rustix::fs::Gid::from_raw(uid_base)),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| err(guest, "chown the mount point")(e.into()))?;
                rustix::fs::openat2(at.as_fd(), name, dir, Mode::empty(), beneath)
            }
            other => other,
        }
        .map_err(|e| {
            err(
                guest,
                "open the mount point (every component must be a directory, not a symlink)",
            )(e.into())
        })?;
        at = next;
    }
    move_mount(
        tree.as_fd(),
        c"",
        at.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| err(guest, "move_mount")(e.into()))
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
