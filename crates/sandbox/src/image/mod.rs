//! Sandbox images: building, listing and removing root filesystems.
//!
//! On disk an image is `<images_dir>/<name>/rootfs/` plus
//! `<images_dir>/<name>/image.json` ([`ImageMeta`]). Builds happen in
//! `<images_dir>/.<name>.tmp-<random>` and are renamed into place only when
//! complete, so a listed image is always whole; dot-directories are never
//! listed.

mod accounts;
mod busybox;
mod code_interpreter;
mod debian;
mod elf;
pub mod ext4;
pub mod initramfs;
pub mod kernel;
mod util;
pub mod vm;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use elf::check_static_elf;

/// Where the guest agent lives inside every image; backends exec it as PID 1
/// (VMs) or as the sandbox's init (namespaces).
pub const GUEST_PATH: &str = "/sbin/ironclaw-guest";
/// The metadata file next to `rootfs/`.
pub const META_FILE: &str = "image.json";

/// What an image is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// The host's static busybox plus applet links: tiny, builds in milliseconds.
    Busybox,
    /// A Debian bookworm minbase made by mmdebstrap, with python3, git, curl...
    Debian,
    /// The Debian image plus a Jupyter kernel and the server E2B's Code
    /// Interpreter SDK talks to (port 49999), started with each sandbox.
    #[serde(rename = "code-interpreter")]
    CodeInterpreter,
}

impl ImageSource {
    pub const ALL: [ImageSource; 3] = [
        ImageSource::Busybox,
        ImageSource::Debian,
        ImageSource::CodeInterpreter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Busybox => "busybox",
            ImageSource::Debian => "debian",
            ImageSource::CodeInterpreter => "code-interpreter",
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageSource {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageSource::ALL
            .into_iter()
            .find(|src| src.as_str() == s)
            .ok_or_else(|| ImageError::InvalidSource(s.to_string()))
    }
}

/// Contents of `image.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageMeta {
    pub name: String,
    pub source: ImageSource,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Apparent size of the rootfs (like `du -sb`).
    pub size_bytes: u64,
    /// What `ironclaw-guest --version` printed at build time, or "unknown".
    pub guest_version: String,
    pub build_seconds: f64,
    /// Kernel, initramfs and ext4 disk for the VM backends; absent in
    /// images built before VM support or when that step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<vm::VmMeta>,
    /// Why `vm` is absent, when its build step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_error: Option<String>,
    /// What the daemon starts in every sandbox of this image when it
    /// boots (a server the image exists for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartCommand>,
}

/// A long-running process an image wants up in its sandboxes: started as
/// a supervised service of the guest agent after each boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartCommand {
    /// The service's name in the guest agent.
    pub name: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Inside the sandbox; its output and the agent's start and exit lines.
    pub log: String,
    /// A TCP port in the sandbox that accepts connections once it is
    /// ready: the boot waits for it (up to [`StartCommand::READY_TIMEOUT`]).
    #[serde(default)]
    pub ready_port: Option<u16>,
}

impl StartCommand {
    pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
}

/// One progress report during [`build`]. `total == 0` means the step has
/// no known length (the debootstrap step reports each log line).
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub step: String,
    pub message: String,
    pub done: u64,
    pub total: u64,
}

impl Progress {
    fn new(step: &str, message: impl Into<String>, done: u64, total: u64) -> Self {
        Progress {
            step: step.to_string(),
            message: message.into(),
            done,
            total,
        }
    }
}

pub struct BuildRequest {
    /// Already validated by the caller (a DNS label).
    pub name: String,
    pub source: ImageSource,
    pub images_dir: PathBuf,
    /// The `ironclaw-guest` binary to install; must be a static ELF.
    pub guest_bin: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image '{0}' not found")]
    NotFound(String),
    #[error("image '{0}' already exists (remove it first)")]
    AlreadyExists(String),
    #[error("invalid image name '{0}'")]
    InvalidName(String),
    #[error("unknown image source '{0}' (valid: busybox, debian, code-interpreter)")]
    InvalidSource(String),
    #[error("{} is not a static ELF executable: {reason}", path.display())]
    NotStaticElf { path: PathBuf, reason: String },
    #[error("`{tool}` not found; install it with `{hint}`")]
    ToolMissing { tool: String, hint: String },
    #[error("{tool} failed ({status}):\n{stderr_tail}")]
    Tool {
        tool: String,
        status: String,
        stderr_tail: String,
    },
    #[error("invalid image metadata in {}: {source}", path.display())]
    BadMeta {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The rootfs directory of an image (whether or not it exists).
pub fn rootfs(images_dir: &Path, name: &str) -> PathBuf {
    images_dir.join(name).join("rootfs")
}

/// Builds an image and returns its metadata. Refuses a name that exists;
/// on any failure (or if the future is dropped) nothing is left behind.
pub async fn build(
    req: &BuildRequest,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ImageMeta, ImageError> {
    let started = Instant::now();
    if !is_plain_name(&req.name) {
        return Err(ImageError::InvalidName(req.name.clone()));
    }
    if req.images_dir.join(&req.name).exists() {
        return Err(ImageError::AlreadyExists(req.name.clone()));
    }
    // Checked up front: finding out after a 3-minute debootstrap is no fun.
    check_static_elf(&req.guest_bin)?;
    let guest_version = guest_version(&req.guest_bin).await;

    atomically(&req.images_dir, &req.name, |tmp| async move {
        let root = tmp.join("rootfs");
        match req.source {
            ImageSource::Busybox => busybox::build(&root, &req.guest_bin, progress).await?,
            ImageSource::Debian => debian::build(&root, &req.guest_bin, progress).await?,
            ImageSource::CodeInterpreter => {
                code_interpreter::build(&root, &req.guest_bin, progress).await?
            }
        }
        // Not fatal: without apt (or offline with an empty kernel cache) the
        // image still serves the namespace backend; the VM backends report
        // `vm_error` when asked to boot it.
        let (vm, vm_error) = match vm::build(&tmp, &req.images_dir, progress).await {
            Ok(v) => (Some(v), None),
            Err(e) => {
                tracing::warn!(image = %req.name, error = %e, "image has no VM artifacts");
                progress(Progress::new(
                    "kernel",
                    format!("VM kernel/initramfs/ext4 skipped: {e}"),
                    0,
                    0,
                ));
                (None, Some(e.to_string()))
            }
        };
        progress(Progress::new("finish", "measuring rootfs size", 1, 2));
        let size_root = root.clone();
        let size_bytes = tokio::task::spawn_blocking(move || util::tree_size(&size_root))
            .await
            .map_err(|e| ImageError::io("measuring rootfs", std::io::Error::other(e)))?
            .map_err(|e| ImageError::io(format!("measuring {}", root.display()), e))?;
        let meta = ImageMeta {
            name: req.name.clone(),
            source: req.source,
            created_at: now_rfc3339(),
            size_bytes,
            guest_version,
            build_seconds: started.elapsed().as_secs_f64(),
            vm,
            vm_error,
            start: match req.source {
                ImageSource::CodeInterpreter => Some(code_interpreter::start_command()),
                _ => None,
            },
        };
        let json = serde_json::to_vec_pretty(&meta).expect("ImageMeta serializes");
        let meta_path = tmp.join(META_FILE);
        std::fs::write(&meta_path, json)
            .map_err(|e| ImageError::io(format!("writing {}", meta_path.display()), e))?;
        progress(Progress::new(
            "finish",
            format!("image '{}' ready ({} bytes)", meta.name, meta.size_bytes),
            2,
            2,
        ));
        Ok(meta)
    })
    .await
}

/// Runs `f` on a fresh temp dir in `images_dir` and renames it to `name`
/// only if `f` succeeds; otherwise (error, or the future being dropped
/// mid-build) the temp dir is deleted.
async fn atomically<T, F, Fut>(images_dir: &Path, name: &str, f: F) -> Result<T, ImageError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<T, ImageError>>,
{
    std::fs::create_dir_all(images_dir)
        .map_err(|e| ImageError::io(format!("creating {}", images_dir.display()), e))?;
    let tmp = images_dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&tmp)
        .map_err(|e| ImageError::io(format!("creating {}", tmp.display()), e))?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let result = f(tmp.clone()).await;
    let result = result.and_then(|v| {
        rename_noreplace(&tmp, &images_dir.join(name)).map_err(|e| match e.raw_os_error() {
            // Someone else finished a build of the same name meanwhile.
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
                ImageError::AlreadyExists(name.to_string())
            }
            _ => ImageError::io(format!("moving {} into place", tmp.display()), e),
        })?;
        Ok(v)
    });
    match result {
        Ok(v) => {
            guard.0 = None;
            Ok(v)
        }
        Err(e) => {
            // Off the async thread: a Debian rootfs is tens of thousands of files.
            let path = guard.0.take().expect("guard armed");
            let _ = tokio::task::spawn_blocking(move || remove_logged(&path)).await;
            Err(e)
        }
    }
}

/// Deletes a half-built image when the build future is dropped.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_logged(&path);
        }
    }
}

fn remove_logged(path: &Path) {
    if let Err(e) = util::remove_tree(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove temporary image directory");
    }
}

/// `rename(2)` that fails instead of replacing an existing (empty) directory.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths, resolved from the cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// All complete images, sorted by name. Temp and half-removed directories
/// (dot-prefixed) and directories without a readable `image.json` are skipped.
pub fn list(images_dir: &Path) -> Result<Vec<ImageMeta>, ImageError> {
    let entries = match std::fs::read_dir(images_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ImageError::io(
                format!("reading {}", images_dir.display()),
                e,
            ))
        }
    };
    let mut images = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ImageError::io(format!("reading {}", images_dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_plain_name(&name) || !entry.path().join(META_FILE).is_file() {
            continue;
        }
        match get(images_dir, &name) {
            Ok(meta) => images.push(meta),
            Err(e) => tracing::warn!(image = %name, error = %e, "skipping unreadable image"),
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(images)
}

/// Metadata of one image, or [`ImageError::NotFound`].
pub fn get(images_dir: &Path, name: &str) -> Result<ImageMeta, ImageError> {
    if !is_plain_name(name) {
        return Err(ImageError::NotFound(name.to_string()));
    }
    let path = images_dir.join(name).join(META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        // A name too long for a file name (ENAMETOOLONG) cannot be an image either.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENAMETOOLONG) =>
        {
            return Err(ImageError::NotFound(name.to_string()))
        }
        Err(e) => return Err(ImageError::io(format!("reading {}", path.display()), e)),
    };
    let mut meta: ImageMeta =
        serde_json::from_slice(&bytes).map_err(|source| ImageError::BadMeta { path, source })?;
    // The directory name is the truth, should the file have been copied around.
    meta.name = name.to_string();
    Ok(meta)
}

/// Deletes an image. It is first renamed to a dot-directory, so a removal
/// that fails half-way never leaves a half-image in [`list`].
pub fn remove(images_dir: &Path, name: &str) -> Result<(), ImageError> {
    if !is_plain_name(name) {
        return Err(ImageError::NotFound(name.to_string()));
    }
    let dir = images_dir.join(name);
    if !dir.join(META_FILE).is_file() {
        return Err(ImageError::NotFound(name.to_string()));
    }
    let doomed = images_dir.join(format!(".{name}.rm-{:016x}", rand::random::<u64>()));
    std::fs::rename(&dir, &doomed)
        .map_err(|e| ImageError::io(format!("removing {}", dir.display()), e))?;
    util::remove_tree(&doomed)
        .map_err(|e| ImageError::io(format!("removing {}", doomed.display()), e))
}

/// A single path component that is not hidden: enough to keep `get` and
/// `remove` inside `images_dir` whatever the caller passes.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Asks the guest binary for its version. Best effort: a binary that does
/// not understand `--version` (or hangs) just yields "unknown".
async fn guest_version(guest_bin: &Path) -> String {
    let mut cmd = tokio::process::Command::new(guest_bin);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(3), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => out.stdout,
        _ => return "unknown".into(),
    };
    // clap prints "ironclaw-guest 0.1.0"; keep the version word.
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
        .unwrap_or_else(|| "unknown".into())
}

/// Writes a file inside a rootfs, creating parent directories.
pub(crate) fn write_file(
    root: &Path,
    guest_path: &str,
    contents: &str,
    mode: u32,
) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let path = util::resolve_in_root(root, guest_path)
        .map_err(|e| ImageError::io(format!("resolving {guest_path}"), e))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ImageError::io(format!("creating {}", parent.display()), e))?;
    }
    // Replace rather than write through: the old file might be a symlink.
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, contents)
        .map_err(|e| ImageError::io(format!("writing {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io(format!("chmod {}", path.display()), e))
}

/// Creates a directory inside a rootfs with an exact mode (umask would
/// otherwise strip the sticky /tmp bits).
pub(crate) fn make_dir(root: &Path, guest_path: &str, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let path = util::resolve_in_root(root, guest_path)
        .map_err(|e| ImageError::io(format!("resolving {guest_path}"), e))?;
    std::fs::create_dir_all(&path)
        .map_err(|e| ImageError::io(format!("creating {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io(format!("chmod {}", path.display()), e))
}

/// Copies the guest agent to [`GUEST_PATH`] with mode 0755.
pub(crate) async fn install_guest(root: &Path, guest_bin: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let dest = util::resolve_in_root(root, GUEST_PATH)
        .map_err(|e| ImageError::io(format!("resolving {GUEST_PATH}"), e))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ImageError::io(format!("creating {}", parent.display()), e))?;
    }
    let _ = std::fs::remove_file(&dest);
    tokio::fs::copy(guest_bin, &dest).await.map_err(|e| {
        ImageError::io(
            format!("copying {} to {}", guest_bin.display(), dest.display()),
            e,
        )
    })?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ImageError::io(format!("chmod {}", dest.display()), e))?;
    // The copy is what boots; check it, not just the source.
    check_static_elf(&dest)
}

#[cfg(test)]
mod tests;
