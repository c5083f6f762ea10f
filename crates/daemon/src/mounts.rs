//! Host directories in a sandbox, under the operator's allowlist
//! (`[[mount_roots]]` in the daemon config), after NanoClaw's mount
//! security: a request names a host path and a guest path; the host path
//! is resolved with every symlink followed *before* it is checked, must lie
//! inside an allowed root, and may never be (or contain, or lie inside)
//! `/`, the daemon's data dir, the secrets file's directory, /proc, /sys or
//! /dev. It is read-only unless the request asks for read-write *and* the
//! root is writable, and a read-write mount also needs its host
//! filesystem mounted `nosuid`: through the idmapping root inside writes
//! as host root, so it could otherwise leave a setuid-root program on the
//! host. The request is stored as given and resolved and
//! checked again at every start, so a symlink swapped later cannot escape;
//! the backend gets only the canonical path (which the guest opens
//! refusing symlinks, closing the window between check and use).

use std::path::{Component, Path, PathBuf};

use ironclaw_sandbox::BindMount;
use ironclaw_store::SandboxMount;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Guest paths nothing may be mounted on or under.
const GUEST_FORBIDDEN: &[&str] = &["/proc", "/sys", "/dev", "/run/ironclaw", "/.oldroot"];
/// Host paths nothing may be mounted from (or above: `/` is refused too).
const HOST_FORBIDDEN: &[&str] = &["/proc", "/sys", "/dev"];

/// `[[mount_roots]]`: a host directory under which sandboxes may mount.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MountRoot {
    pub path: PathBuf,
    /// Whether mounts under it may be read-write (when they ask to be).
    #[serde(default)]
    pub writable: bool,
}

/// One `mounts` entry of a create request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub host: String,
    pub guest: String,
    /// Read-only unless asked otherwise.
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

/// What a mount must stay away from on the host, besides the fixed list.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub roots: &'a [MountRoot],
    pub data_dir: &'a Path,
    pub secrets_file: Option<&'a Path>,
}

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

fn refused(msg: String) -> ApiError {
    ApiError::Forbidden(msg)
}

/// Paths travel to the guest as `HOST:GUEST:ro|rw`.
fn plain_chars(what: &str, p: &str) -> Result<(), ApiError> {
    if p.contains(':') || p.chars().any(char::is_control) {
        return Err(bad(format!(
            "mount {what} path {p:?} must not contain ':' or control characters"
        )));
    }
    Ok(())
}

/// Canonical form of `p`, or `p` itself when it does not exist.
fn canonical_or_self(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Whether the host mount `p` is on ignores setuid bits (`ST_NOSUID`).
fn nosuid(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_flag & libc::ST_NOSUID != 0
}

/// `a` is `b` or inside it, or `b` is inside `a`.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Check the guest path: absolute, normalized, not `/`, not under the
/// paths the sandbox's init owns.
pub fn check_guest(guest: &str) -> Result<(), ApiError> {
    plain_chars("guest", guest)?;
    if !guest.starts_with('/') {
        return Err(bad(format!("mount guest path {guest:?} must be absolute")));
    }
    if guest == "/" {
        return Err(bad(
            "mount guest path must not be / (the sandbox's root)".into()
        ));
    }
    let normalized = guest[1..]
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..");
    if !normalized {
        return Err(bad(format!(
            "mount guest path {guest:?} must be normalized (no '.', '..', '//' or trailing '/')"
        )));
    }
    if let Some(f) = GUEST_FORBIDDEN
        .iter()
        .find(|f| Path::new(guest).starts_with(f))
    {
        return Err(bad(format!(
            "mount guest path {guest:?} is under {f}, which the sandbox's init owns"
        )));
    }
    Ok(())
}

/// Check the guest paths against the image, so a mount point the guest
/// would refuse at boot (a symlink or a file on the way, as in Debian's
/// `/bin -> usr/bin`) is a clear 400 at create rather than a crashed
/// start. What the sandbox later changes on its own disk is checked by
/// the guest at every start.
pub fn check_in_image(rootfs: &Path, mounts: &[SandboxMount]) -> Result<(), ApiError> {
    for m in mounts {
        let mut p = rootfs.to_path_buf();
        let mut shown = String::new();
        for c in Path::new(&m.guest).components().skip(1) {
            p.push(c);
            shown.push('/');
            shown.push_str(&c.as_os_str().to_string_lossy());
            match std::fs::symlink_metadata(&p) {
                Err(_) => break,
                Ok(md) if md.file_type().is_symlink() => {
                    let to = std::fs::read_link(&p)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    return Err(bad(format!(
                        "mount guest path {:?} goes through the symlink {shown} -> {to} in the image; \
                         use the path it points to",
                        m.guest
                    )));
                }
                Ok(md) if !md.is_dir() => {
                    return Err(bad(format!(
                        "mount guest path {:?}: {shown} is not a directory in the image",
                        m.guest
                    )));
                }
                Ok(_) => {}
            }
        }
    }
    Ok(())
}

impl Policy<'_> {
    /// Resolve a stored (or requested) mount and check it against the
    /// allowlist as it is now: the canonical bind for the backend.
    pub fn resolve(&self, m: &SandboxMount) -> Result<BindMount, ApiError> {
        let host = &m.host;
        plain_chars("host", host)?;
        if !host.starts_with('/') {
            return Err(bad(format!("mount host path {host:?} must be absolute")));
        }
        if Path::new(host)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(bad(format!(
                "mount host path {host:?} must not contain '..' components"
            )));
        }
        check_guest(&m.guest)?;
        let real = Path::new(host)
            .canonicalize()
            .map_err(|e| bad(format!("mount host path {host:?} cannot be resolved: {e}")))?;
        let shown = if real == Path::new(host) {
            format!("{host:?}")
        } else {
            format!("{host:?} (resolves to {})", real.display())
        };
        if !real.is_dir() {
            return Err(bad(format!("mount host path {shown} is not a directory")));
        }
        if real == Path::new("/") {
            return Err(refused(format!(
                "mount host path {shown} is /, which is never mounted"
            )));
        }
        if let Some(f) = HOST_FORBIDDEN.iter().find(|f| real.starts_with(f)) {
            return Err(refused(format!(
                "mount host path {shown} is under {f}, which is never mounted"
            )));
        }
        let data = canonical_or_self(self.data_dir);
        if overlaps(&real, &data) {
            return Err(refused(format!(
                "mount host path {shown} overlaps the daemon's data dir, which is never mounted"
            )));
        }
        if let Some(secrets) = self.secrets_file {
            let file = canonical_or_self(secrets);
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                if overlaps(&real, dir) {
                    return Err(refused(format!(
                        "mount host path {shown} overlaps the secrets file's directory, which is never mounted"
                    )));
                }
            }
        }
        // The most specific allowed root wins (a writable root may sit
        // inside a read-only one, or the other way round).
        let root = self
            .roots
            .iter()
            .filter_map(|r| Some((r.path.canonicalize().ok()?, r)))
            .filter(|(p, _)| real.starts_with(p))
            .max_by_key(|(p, _)| p.components().count());
        let Some((root_path, root)) = root else {
            let allowed: Vec<String> = self
                .roots
                .iter()
                .map(|r| r.path.display().to_string())
                .collect();
            return Err(refused(format!(
                "mount host path {shown} is not inside an allowed mount root ({})",
                if allowed.is_empty() {
                    "none configured: the operator allows directories with [[mount_roots]] in the daemon config".into()
                } else {
                    format!("mount_roots: {}", allowed.join(", "))
                }
            )));
        };
        if !m.read_only && !root.writable {
            return Err(refused(format!(
                "mount host path {shown} was asked read-write, but mount root {} is read-only",
                root_path.display()
            )));
        }
        if !m.read_only && !nosuid(&real) {
            return Err(refused(format!(
                "mount host path {shown} was asked read-write, but its host filesystem is not \
                 mounted nosuid: root inside writes as host root there and could leave a \
                 setuid-root program for host users; mount it nosuid,nodev on the host first"
            )));
        }
        Ok(BindMount {
            host: real,
            guest: PathBuf::from(&m.guest),
            read_only: m.read_only,
        })
    }

    /// Check a create request's mounts; what to store.
    pub fn check_request(&self, reqs: &[MountRequest]) -> Result<Vec<SandboxMount>, ApiError> {
        let mut out: Vec<SandboxMount> = Vec::new();
        for r in reqs {
            let m = SandboxMount {
                host: r.host.clone(),
                guest: r.guest.clone(),
                read_only: r.read_only,
            };
            self.resolve(&m)?;
            if let Some(o) = out
                .iter()
                .find(|o| overlaps(Path::new(&o.guest), Path::new(&m.guest)))
            {
                return Err(bad(format!(
                    "mount guest paths {:?} and {:?} overlap; give each mount its own directory",
                    o.guest, m.guest
                )));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Every stored mount, resolved and checked again (at start).
    pub fn resolve_all(&self, mounts: &[SandboxMount]) -> Result<Vec<BindMount>, ApiError> {
        mounts
            .iter()
            .map(|m| {
                self.resolve(m).map_err(|e| {
                    let msg = format!("mount {} -> {} is no longer allowed: {e}", m.host, m.guest);
                    match e {
                        ApiError::BadRequest(_) => ApiError::BadRequest(msg),
                        _ => ApiError::Forbidden(msg),
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths() {
        for ok in ["/data", "/srv/a/b", "/run/other", "/devices"] {
            check_guest(ok).unwrap();
        }
        for bad in [
            "",
            "data",
            "/",
            "/a/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/proc",
            "/proc/x",
            "/sys/fs",
            "/dev",
            "/dev/shm",
            "/run/ironclaw",
            "/run/ironclaw/x",
            "/a:b",
            "/.oldroot",
        ] {
            assert!(check_guest(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mount_requests_default_to_read_only() {
        let r: MountRequest = serde_json::from_str(r#"{"host":"/a","guest":"/b"}"#).unwrap();
        assert!(r.read_only);
        assert!(
            serde_json::from_str::<MountRequest>(r#"{"host":"/a","guest":"/b","rw":1}"#).is_err()
        );
    }
}
