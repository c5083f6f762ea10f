//! The disk of a namespace sandbox: a sparse ext4 image of `--disk` size,
//! so writing past it is ENOSPC inside and nothing outside. The daemon
//! attaches it to a loop device (auto-clearing) and mounts it as a
//! *detached* mount (fsopen/fsmount): no mount ever appears in the host's
//! namespace. The descriptor goes to ns-init, which attaches the mount in
//! the sandbox's private mount namespace; when the sandbox dies the
//! namespace goes, the mount with it and the loop device detaches itself.
//! A daemon killed at any point leaves no mount and no loop device behind.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::Mode;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

/// Where, inside the disk, the overlay keeps the sandbox's files.
pub const UPPER: &str = "upper";
/// The overlay's scratch directory (same filesystem as [`UPPER`]).
pub const WORK: &str = "work";

// <linux/loop.h>
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("creating the disk image {path}: {detail}")]
    Create { path: PathBuf, detail: String },
    #[error("loop device for {path}: {source}")]
    Loop {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting {path}: {what}: {source}")]
    Mount {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

/// Create the image at `path` (sparse, `size_mib`) unless it exists. The
/// filesystem's root belongs to host root; [`mount_detached`] makes the
/// sandbox-owned directories.
pub async fn create(path: &Path, size_mib: u64) -> Result<(), DiskError> {
    if path.exists() {
        return Ok(());
    }
    let fail = |detail: String| DiskError::Create {
        path: path.to_path_buf(),
        detail,
    };
    let tmp = path.with_extension("img.tmp");
    File::create(&tmp)
        .and_then(|f| f.set_len(size_mib * 1024 * 1024))
        .map_err(|e| fail(e.to_string()))?;
    // No reserved blocks (the whole --disk is the sandbox's), a small
    // journal, lazy init: a fresh 2 GiB image allocates ~1 MiB.
    let out = tokio::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-J", "size=4"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
        .arg(&tmp)
        .output()
        .await
        .map_err(|e| fail(format!("mkfs.ext4: {e} (install e2fsprogs)")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(format!(
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Bytes the image takes on the host (it is sparse).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Attach `image` to a free loop device that detaches itself when its last
/// user goes.
fn attach_loop(image: &Path) -> Result<File, DiskError> {
    let err = |source| DiskError::Loop {
        path: image.to_path_buf(),
        source,
    };
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(err)?;
    let control = File::open("/dev/loop-control").map_err(err)?;
    // Another start may take the same free device between GET_FREE and
    // CONFIGURE (EBUSY): ask again.
    for _ in 0..16 {
        // SAFETY: ioctl without a pointer argument.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/loop{n}"))
            .map_err(err)?;
        // SAFETY: all-zero is a valid LoopConfig (plain integers and arrays).
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        cfg.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: cfg lives across the call; the kernel only reads it.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok(dev);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(err(e));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(err(std::io::Error::from_raw_os_error(libc::EBUSY)))
}

/// Mount `image` as a detached ext4 mount (nosuid, nodev) and make sure
/// it holds [`UPPER`], owned by the sandbox's root (`root_id` on the host),
/// and [`WORK`]. Returns the mount's descriptor. Everything here goes
/// through descriptors: the filesystem's root is not writable by the
/// sandbox, and no path the sandbox controls is followed.
pub fn mount_detached(image: &Path, root_id: u32) -> Result<OwnedFd, DiskError> {
    let loopdev = attach_loop(image)?;
    let err = |what| {
        move |e: rustix::io::Errno| DiskError::Mount {
            path: image.to_path_buf(),
            what,
            source: e.into(),
        }
    };
    let source = format!("/proc/self/fd/{}", loopdev.as_raw_fd());
    let fs = fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("fsopen"))?;
    fsconfig_set_string(fs.as_fd(), "source", source.as_str()).map_err(err("source"))?;
    fsconfig_create(fs.as_fd()).map_err(err("create"))?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(err("fsmount"))?;
    // The mount holds the device now; AUTOCLEAR detaches it after the
    // last unmount.
    drop(loopdev);
    for (dir, mode) in [(UPPER, 0o755), (WORK, 0o700)] {
        match rustix::fs::mkdirat(mnt.as_fd(), dir, Mode::from_raw_mode(mode)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(err("mkdir")(e)),
        }
        if dir == UPPER {
            let id = Some(rustix::fs::Uid::from_raw(root_id));
            let gid = Some(rustix::fs::Gid::from_raw(root_id));
            rustix::fs::chownat(
                mnt.as_fd(),
                dir,
                id,
                gid,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(err("chown"))?;
        }
    }
    Ok(mnt)
}
