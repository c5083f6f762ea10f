//! The unprivileged account every image has besides root: `user`, uid and
//! gid 1000, home /home/user, as in E2B's templates (its SDK runs
//! commands as `user` by default). Written straight into the rootfs's
//! passwd, group and shadow files: the host's useradd may be missing,
//! and must not touch the host's own files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{util, ImageError};

pub const USER: &str = "user";
pub const UID: u32 = 1000;
pub const HOME: &str = "/home/user";

/// Append `line` to the rootfs file `guest_path` unless an entry for
/// `name` is there already; a file that does not exist is left alone
/// when `optional` (a busybox image has no shadow files).
fn append_entry(
    root: &Path,
    guest_path: &str,
    name: &str,
    line: &str,
    optional: bool,
) -> Result<(), ImageError> {
    let path = util::resolve_in_root(root, guest_path)
        .map_err(|e| ImageError::io(format!("resolving {guest_path}"), e))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(format!("reading {}", path.display()), e)),
    };
    if text.lines().any(|l| l.split(':').next() == Some(name)) {
        return Ok(());
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    std::fs::write(&path, text)
        .map_err(|e| ImageError::io(format!("writing {}", path.display()), e))
}

/// Add the `user` account with `shell`, its group and its home (with
/// /etc/skel's files when the image has them), owned by it.
pub(super) fn add_user(root: &Path, shell: &str) -> Result<(), ImageError> {
    let (name, id) = (USER, UID);
    append_entry(
        root,
        "/etc/passwd",
        name,
        &format!("{name}:x:{id}:{id}::{HOME}:{shell}"),
        false,
    )?;
    append_entry(root, "/etc/group", name, &format!("{name}:x:{id}:"), false)?;
    // Locked password ('!'): nobody logs in as it, commands are run as it.
    append_entry(
        root,
        "/etc/shadow",
        name,
        &format!("{name}:!:19000:0:99999:7:::"),
        true,
    )?;
    append_entry(root, "/etc/gshadow", name, &format!("{name}:!::"), true)?;
    let home = util::resolve_in_root(root, HOME)
        .map_err(|e| ImageError::io(format!("resolving {HOME}"), e))?;
    std::fs::create_dir_all(&home)
        .map_err(|e| ImageError::io(format!("creating {}", home.display()), e))?;
    let own = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(id), Some(id))
            .map_err(|e| ImageError::io(format!("chown {}", p.display()), e))
    };
    if let Ok(skel) = std::fs::read_dir(root.join("etc/skel")) {
        for entry in skel.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let dest = home.join(entry.file_name());
                std::fs::copy(entry.path(), &dest)
                    .map_err(|e| ImageError::io(format!("copying to {}", dest.display()), e))?;
                own(&dest)?;
            }
        }
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| ImageError::io(format!("chmod {}", home.display()), e))?;
    own(&home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_added_once_with_its_home() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/skel")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(root.join("etc/skel/.profile"), "# skel\n").unwrap();
        add_user(root, "/bin/bash").unwrap();
        add_user(root, "/bin/bash").unwrap();
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/bash\n"
        );
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
        assert_eq!(group, "root:x:0:\nuser:x:1000:\n");
        assert!(!root.join("etc/shadow").exists());
        use std::os::unix::fs::MetadataExt;
        let home = std::fs::metadata(root.join("home/user")).unwrap();
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o7777),
            (1000, 1000, 0o750)
        );
        let profile = std::fs::metadata(root.join("home/user/.profile")).unwrap();
        assert_eq!(profile.uid(), 1000);
    }
}
