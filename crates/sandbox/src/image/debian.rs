//! The Debian image: bookworm minbase from mmdebstrap (debootstrap as a
//! fallback), plus the guest agent.

use std::path::Path;

use tokio::process::Command;

use super::util::{run_streaming, tree_size};
use super::{accounts, install_guest, make_dir, write_file, ImageError, Progress};

const SUITE: &str = "bookworm";
/// rsync: `rsync -e ssh` through the SSH endpoint runs `rsync --server` in
/// the sandbox (no sshd or ssh client needed inside).
const PACKAGES: &str = "bash,coreutils,python3,git,curl,ca-certificates,procps,less,iproute2,rsync";

/// Documentation and translations are a good share of a minbase and no use
/// to an agent; copyright files stay for licence compliance.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
];

/// mmdebstrap's own phase lines, in order: they turn its log into a
/// done/total counter.
const PHASES: &[&str] = &[
    "running apt-get update",
    "downloading packages",
    "extracting archives",
    "installing essential packages",
    "installing remaining packages",
    "cleaning package lists",
    "success",
];

pub(super) async fn build(
    root: &Path,
    guest_bin: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ImageError> {
    build_with(root, guest_bin, &Extras::default(), progress).await
}

/// What an image made from this one adds: more Debian packages, and
/// mmdebstrap customize hooks (shell run with the rootfs as `$1`, its
/// /dev, /proc and the host's resolver still set up, before the cleanup).
#[derive(Default)]
pub(super) struct Extras {
    pub packages: &'static [&'static str],
    pub customize_hooks: Vec<String>,
}

pub(super) async fn build_with(
    root: &Path,
    guest_bin: &Path,
    extras: &Extras,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ImageError> {
    let packages = std::iter::once(PACKAGES)
        .chain(extras.packages.iter().copied())
        .collect::<Vec<_>>()
        .join(",");
    let total = PHASES.len() as u64;
    let mut done = 0u64;
    let mut on_line = |line: &str| {
        if let Some(i) = PHASES.iter().position(|p| line.contains(p)) {
            done = done.max(i as u64 + 1);
        }
        progress(Progress::new("debootstrap", line, done, total));
    };
    // The tools' own temp files (mmdebstrap's gpg home...) go next to the
    // rootfs, inside the build's temp dir, so a cancelled build (the tool
    // killed before it cleans up) leaves nothing in /tmp.
    let scratch = root.parent().unwrap_or(root).join("tmp");
    make_scratch(&scratch)?;
    if which("mmdebstrap") || !which("debootstrap") {
        let mut cmd = Command::new("mmdebstrap");
        cmd.env("TMPDIR", &scratch);
        cmd.arg("--variant=minbase")
            .arg(format!("--include={packages}"));
        for opt in DPKG_EXCLUDES {
            cmd.arg(format!("--dpkgopt={opt}"));
        }
        for hook in &extras.customize_hooks {
            cmd.arg(format!("--customize-hook={hook}"));
        }
        cmd.arg(SUITE).arg(root);
        run_streaming(
            "mmdebstrap",
            "apt-get install mmdebstrap",
            &mut cmd,
            &mut on_line,
        )
        .await?;
    } else if !extras.customize_hooks.is_empty() {
        return Err(ImageError::ToolMissing {
            tool: "mmdebstrap".into(),
            hint: "apt-get install mmdebstrap".into(),
        });
    } else {
        // debootstrap has no dpkg options and a different log; it only
        // serves hosts that cannot get mmdebstrap.
        let mut cmd = Command::new("debootstrap");
        cmd.env("TMPDIR", &scratch)
            .arg("--variant=minbase")
            .arg(format!("--include={packages}"))
            .arg(SUITE)
            .arg(root);
        run_streaming(
            "debootstrap",
            "apt-get install mmdebstrap",
            &mut cmd,
            &mut on_line,
        )
        .await?;
    }

    let _ = std::fs::remove_dir_all(&scratch);

    progress(Progress::new("guest", "installing ironclaw-guest", 0, 1));
    install_guest(root, guest_bin).await?;
    make_dir(root, "/run/ironclaw", 0o755)?;
    make_dir(root, "/root", 0o700)?;
    make_dir(root, "/tmp", 0o1777)?;
    accounts::add_user(root, "/bin/bash")?;
    progress(Progress::new("guest", "ironclaw-guest installed", 1, 1));

    progress(Progress::new(
        "cleanup",
        "removing apt caches and host settings",
        0,
        1,
    ));
    let before = tree_size(root).unwrap_or(0);
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_dir(&root.join(dir))?;
    }
    // The debootstrappers copy these from the host: the host's name and
    // resolver do not belong in a shareable image. The sandbox's network
    // setup writes resolv.conf.
    write_file(root, "/etc/hostname", "ironclaw\n", 0o644)?;
    write_file(
        root,
        "/etc/hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    write_file(root, "/etc/resolv.conf", "", 0o644)?;
    let freed = before.saturating_sub(tree_size(root).unwrap_or(0));
    progress(Progress::new(
        "cleanup",
        format!("freed {freed} bytes"),
        1,
        1,
    ));
    Ok(())
}

fn make_scratch(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))
}

/// Empties an apt cache directory, keeping apt's `partial/` and `lock`.
fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(format!("reading {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "partial" || name == "lock" {
            continue;
        }
        let path = entry.path();
        let res = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        res.map_err(|e| ImageError::io(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

fn which(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}
