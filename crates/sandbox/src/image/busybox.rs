//! The busybox image: the host's static busybox, a link per applet, the
//! guest agent and a minimal /etc. No package manager, no libc.

use std::path::{Component, Path, PathBuf};

use tokio::process::Command;

use super::util::run_tool;
use super::{
    accounts, check_static_elf, install_guest, make_dir, write_file, ImageError, Progress,
};

/// Where busybox-static puts the binary (bookworm: /bin; merged /usr: both).
const HOST_BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

const DIRS: &[(&str, u32)] = &[
    ("/bin", 0o755),
    ("/sbin", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/sbin", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/run/ironclaw", 0o755),
    ("/tmp", 0o1777),
    ("/root", 0o700),
    ("/etc", 0o755),
    ("/home", 0o755),
    ("/var", 0o755),
    ("/var/tmp", 0o1777),
];

const ETC_FILES: &[(&str, &str, u32)] = &[
    ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
    ("/etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644),
    ("/etc/hostname", "ironclaw\n", 0o644),
    ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n", 0o644),
    // Empty on purpose: the sandbox's network setup writes the real one.
    ("/etc/resolv.conf", "", 0o644),
    (
        "/etc/profile",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\u@\\h:\\w\\$ '\nexport HOME=\"${HOME:-/root}\"\n",
        0o644,
    ),
];

pub(super) async fn build(
    root: &Path,
    guest_bin: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ImageError> {
    progress(Progress::new(
        "busybox",
        "creating the directory skeleton",
        0,
        2,
    ));
    for (dir, mode) in DIRS {
        make_dir(root, dir, *mode)?;
    }
    for (path, contents, mode) in ETC_FILES {
        write_file(root, path, contents, *mode)?;
    }
    accounts::add_user(root, "/bin/sh")?;

    let scratch = root
        .parent()
        .expect("rootfs has a parent")
        .join("busybox-download");
    let source = find_busybox(&scratch, progress).await?;
    progress(Progress::new(
        "busybox",
        format!("installing {}", source.display()),
        1,
        2,
    ));
    let dest = root.join("bin/busybox");
    tokio::fs::copy(&source, &dest).await.map_err(|e| {
        ImageError::io(
            format!("copying {} to {}", source.display(), dest.display()),
            e,
        )
    })?;
    set_mode(&dest, 0o755)?;
    // The download dir lives inside the build dir; drop it before the rename.
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .map_err(|e| ImageError::io(format!("removing {}", scratch.display()), e))?;
    }
    progress(Progress::new("busybox", "busybox installed", 2, 2));

    // Ask the copied binary itself: its applet list is the one that matters.
    let out = run_tool(
        "busybox",
        "apt-get install busybox-static",
        Command::new(&dest).arg("--list-full"),
    )
    .await?;
    let applets: Vec<PathBuf> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| safe_relative(l.trim()))
        .collect();
    let total = applets.len() as u64;
    // Reporting every applet would be ~270 callbacks for a sub-second step.
    const REPORT_EVERY: u64 = 50;
    let mut next_report = REPORT_EVERY;
    for (i, applet) in applets.iter().enumerate() {
        link_applet(root, applet)?;
        let done = i as u64 + 1;
        if done >= next_report || done == total {
            next_report = done + REPORT_EVERY;
            progress(Progress::new(
                "applets",
                format!("linked {done} of {total} applets"),
                done,
                total,
            ));
        }
    }

    progress(Progress::new("guest", "installing ironclaw-guest", 0, 1));
    install_guest(root, guest_bin).await?;
    progress(Progress::new("guest", "ironclaw-guest installed", 1, 1));
    Ok(())
}

/// The host's static busybox, or one extracted from `apt-get download
/// busybox-static` into `scratch` when the host has none (or only the
/// dynamic `busybox` package).
async fn find_busybox(
    scratch: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<PathBuf, ImageError> {
    let mut last_err = None;
    for candidate in HOST_BUSYBOX {
        let p = Path::new(candidate);
        if !p.exists() {
            continue;
        }
        match check_static_elf(p) {
            Ok(()) => return Ok(p.to_path_buf()),
            Err(e) => last_err = Some(e),
        }
    }
    let why = match &last_err {
        Some(e) => format!("host busybox unusable ({e}); downloading busybox-static"),
        None => "no busybox on the host; downloading busybox-static".to_string(),
    };
    progress(Progress::new("busybox", why, 0, 2));
    download_busybox(scratch).await
}

/// `apt-get download busybox-static` + `dpkg-deb -x` into `scratch`.
pub(super) async fn download_busybox(scratch: &Path) -> Result<PathBuf, ImageError> {
    std::fs::create_dir_all(scratch)
        .map_err(|e| ImageError::io(format!("creating {}", scratch.display()), e))?;
    run_tool(
        "apt-get download",
        "apt-get install apt",
        Command::new("apt-get")
            .args(["download", "busybox-static"])
            .current_dir(scratch),
    )
    .await?;
    let deb = std::fs::read_dir(scratch)
        .map_err(|e| ImageError::io(format!("reading {}", scratch.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| ImageError::Tool {
            tool: "apt-get download".into(),
            status: "exit status: 0".into(),
            stderr_tail: "no busybox-static .deb was downloaded".into(),
        })?;
    let extracted = scratch.join("x");
    run_tool(
        "dpkg-deb",
        "apt-get install dpkg",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted),
    )
    .await?;
    for rel in ["bin/busybox", "usr/bin/busybox"] {
        let p = extracted.join(rel);
        if p.is_file() {
            check_static_elf(&p)?;
            return Ok(p);
        }
    }
    Err(ImageError::Tool {
        tool: "dpkg-deb".into(),
        status: "exit status: 0".into(),
        stderr_tail: format!("{} contains no bin/busybox", deb.display()),
    })
}

/// `bin/ls` -> Some("bin/ls"); anything absolute or with `..` is dropped so
/// a strange applet list cannot write outside the rootfs.
fn safe_relative(line: &str) -> Option<PathBuf> {
    let p = Path::new(line.trim_start_matches('/'));
    let ok = !line.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Links `applet` (e.g. `usr/bin/env`) to bin/busybox with a relative
/// target (`../../bin/busybox`), so the rootfs works wherever it is mounted.
/// Existing entries win: never overwrite.
fn link_applet(root: &Path, applet: &Path) -> Result<(), ImageError> {
    let link = root.join(applet);
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    let depth = applet.components().count() - 1;
    let target = if applet.parent() == Some(Path::new("bin")) {
        PathBuf::from("busybox")
    } else {
        let mut t = PathBuf::new();
        for _ in 0..depth {
            t.push("..");
        }
        t.push("bin/busybox");
        t
    };
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ImageError::io(format!("creating {}", parent.display()), e))?;
    }
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|e| ImageError::io(format!("linking {}", link.display()), e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io(format!("chmod {}", path.display()), e))
}
