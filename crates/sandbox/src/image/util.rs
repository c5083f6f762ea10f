//! Filesystem and process helpers shared by the image builders.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::ImageError;

/// How many trailing output lines a tool error carries: enough to see why
/// apt or dpkg gave up, short enough to read in a terminal.
const TAIL_LINES: usize = 20;

/// Runs a tool to completion and returns its stdout; a non-zero exit becomes
/// [`ImageError::Tool`] with the tail of its stderr.
pub(crate) async fn run_tool(
    tool: &str,
    hint: &str,
    cmd: &mut Command,
) -> Result<Vec<u8>, ImageError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = cmd.spawn().map_err(|e| spawn_error(tool, hint, e))?;
    let mut group = GroupKiller(child.id());
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ImageError::io(format!("waiting for {tool}"), e))?;
    group.0 = None;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        return Err(ImageError::Tool {
            tool: tool.to_string(),
            status: out.status.to_string(),
            stderr_tail: tail,
        });
    }
    Ok(out.stdout)
}

/// Runs a long tool, handing each stdout/stderr line to `on_line` as it
/// arrives so the caller can report progress while it works.
pub(crate) async fn run_streaming(
    tool: &str,
    hint: &str,
    cmd: &mut Command,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImageError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| spawn_error(tool, hint, e))?;
    let mut group = GroupKiller(child.id());
    let mut out = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => l.inspect(|l| out_open = l.is_some()),
            l = err.next_line(), if err_open => l.inspect(|l| err_open = l.is_some()),
        };
        match line {
            Ok(Some(line)) => {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                on_line(line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            }
            Ok(None) => {}
            // Non-UTF-8 or a broken pipe: stop reading, the exit status decides.
            Err(_) => (out_open, err_open) = (false, false),
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| ImageError::io(format!("waiting for {tool}"), e))?;
    group.0 = None;
    if !status.success() {
        let tail = Vec::from(tail).join("\n");
        return Err(ImageError::Tool {
            tool: tool.to_string(),
            status: status.to_string(),
            stderr_tail: tail,
        });
    }
    Ok(())
}

/// Kills a tool's whole process group if the build is abandoned while it
/// runs. `kill_on_drop` alone would only kill mmdebstrap, leaving its apt
/// and dpkg children writing into a directory that is being deleted.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}

fn spawn_error(tool: &str, hint: &str, e: std::io::Error) -> ImageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ImageError::ToolMissing {
            tool: tool.to_string(),
            hint: hint.to_string(),
        }
    } else {
        ImageError::io(format!("starting {tool}"), e)
    }
}

/// Total apparent size of a tree, like `du -sb`: symlinks are not followed
/// and hard links count once.
pub(crate) fn tree_size(root: &Path) -> std::io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total += md.len();
        if md.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

/// Removes a build or image directory.
///
/// A killed mmdebstrap can leave /proc, /sys or /dev mounted inside the
/// rootfs, and a naive recursive delete would then walk into the host's
/// device nodes. So: detach every mount below `root` first, and never
/// descend into a directory on another filesystem.
pub(crate) fn remove_tree(root: &Path) -> std::io::Result<()> {
    let md = match std::fs::symlink_metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return std::fs::remove_file(root);
    }
    detach_mounts_below(root);
    // Killed processes can still be exiting (and creating or deleting files)
    // for a moment after a cancelled build: retry briefly.
    let mut attempt = 0;
    loop {
        match remove_same_dev(root, md.dev()) {
            Err(e) if attempt < 5 && e.kind() != std::io::ErrorKind::PermissionDenied => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
                detach_mounts_below(root);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !root.exists() => return Ok(()),
            other => return other,
        }
    }
}

fn remove_same_dev(dir: &Path, dev: u64) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if md.is_dir() {
            if md.dev() != dev {
                return Err(std::io::Error::other(format!(
                    "refusing to delete {}: it is on another filesystem (a leftover mount?)",
                    path.display()
                )));
            }
            remove_same_dev(&path, dev)?;
        } else {
            ignore_not_found(std::fs::remove_file(&path))?;
        }
    }
    ignore_not_found(std::fs::remove_dir(dir))
}

fn ignore_not_found(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn detach_mounts_below(root: &Path) {
    let Ok(root) = root.canonicalize() else {
        return;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&root) && p != &root)
        .collect();
    // Deepest first, so nested mounts (dev/pts inside dev) go before parents.
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m.display(), error = %e, "could not detach leftover mount in image build dir");
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves `rel` (an absolute path as seen inside the guest, e.g.
/// `/sbin/ironclaw-guest`) to a host path under `root`, following symlinks
/// in the parent directories as the guest would see them. Debian's merged
/// /usr makes /sbin a symlink; an absolute link target must resolve inside
/// the rootfs, never on the host.
pub(crate) fn resolve_in_root(root: &Path, rel: &str) -> std::io::Result<PathBuf> {
    let mut pending: VecDeque<String> = normal_parts(Path::new(rel)).collect();
    let last = pending
        .pop_back()
        .ok_or_else(|| std::io::Error::other("empty path"))?;
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(std::io::Error::other(format!(
                        "too many symlinks resolving {rel}"
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, p) in normal_parts(&target).enumerate() {
                    pending.insert(i, p);
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(resolved
        .iter()
        .fold(root.to_path_buf(), |p, c| p.join(c))
        .join(last))
}

fn normal_parts(p: &Path) -> impl Iterator<Item = String> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(s) => Some(os(s)),
        Component::ParentDir => Some("..".to_string()),
        _ => None,
    })
}

fn os(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_merged_usr_inside_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", t.path().join("sbin")).unwrap();
        std::fs::create_dir_all(t.path().join("abs")).unwrap();
        // An absolute target must stay inside the root.
        std::os::unix::fs::symlink("/usr", t.path().join("abs/u")).unwrap();
        assert_eq!(
            resolve_in_root(t.path(), "/sbin/x").unwrap(),
            t.path().join("usr/sbin/x")
        );
        assert_eq!(
            resolve_in_root(t.path(), "/abs/u/sbin/x").unwrap(),
            t.path().join("usr/sbin/x")
        );
        assert_eq!(
            resolve_in_root(t.path(), "/../../etc/x").unwrap(),
            t.path().join("etc/x")
        );
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn tree_size_counts_hardlinks_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(t.path().join("a"), t.path().join("b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("l")).unwrap();
        let dir = std::fs::metadata(t.path()).unwrap().len();
        assert_eq!(tree_size(t.path()).unwrap(), dir + 1000 + 1);
    }
}
