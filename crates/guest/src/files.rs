//! File operations. Paths from the host are resolved against /root when
//! relative (against the user's home for a write or mkdir made as a
//! user). Blocking filesystem calls run on tokio's blocking pool.
//!
//! A write or mkdir with a user makes what it creates that user's (chown);
//! it is still done with the agent's rights, not checked against the
//! user's: the host, which may use the sandbox as root anyway, decides
//! who a file is for.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ironclaw_proto::{
    DirEntry, ErrorKind, FileKind, FileStat, FileWrite, GuestMsg, HostMsg, CHUNK,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::{Input, Out};
use crate::errors::kind_of;
use crate::spawn::{resolve, resolve_under};
use crate::users::{self, Identity, UserError};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("refusing to remove the root directory")]
    RemoveRoot,
    #[error("{0}: has no parent directory")]
    NoParent(String),
    #[error(transparent)]
    User(#[from] UserError),
}

impl FileError {
    fn kind(&self) -> ErrorKind {
        match self {
            FileError::Io { source, .. } => kind_of(source),
            FileError::RemoveRoot => ErrorKind::PermissionDenied,
            FileError::NoParent(_) => ErrorKind::InvalidInput,
            FileError::User(e) => e.kind(),
        }
    }
}

fn ctx(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Run a blocking operation and answer with its message or its error.
pub async fn reply<F>(out: Out, f: F)
where
    F: FnOnce() -> Result<GuestMsg, FileError> + Send + 'static,
{
    let msg = match tokio::task::spawn_blocking(f).await {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => GuestMsg::Error {
            kind: e.kind(),
            message: e.to_string(),
        },
        Err(e) => GuestMsg::Error {
            kind: ErrorKind::Other,
            message: format!("file operation failed: {e}"),
        },
    };
    let _ = out.send(msg).await;
}

fn kind_of_meta(m: &Metadata) -> FileKind {
    let t = m.file_type();
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

fn file_stat(path: &Path, shown: &str) -> Result<FileStat, FileError> {
    // lstat: a symlink is reported as one, not as what it points to.
    let m = fs::symlink_metadata(path).map_err(ctx(path))?;
    Ok(FileStat {
        path: shown.to_string(),
        kind: kind_of_meta(&m),
        size: m.len(),
        mode: m.mode() & 0o7777,
        mtime: m.mtime(),
    })
}

pub fn stat(path: &str) -> Result<GuestMsg, FileError> {
    let p = resolve(path);
    Ok(GuestMsg::Stat(file_stat(&p, &p.display().to_string())?))
}

/// A directory listing, in parts of about this many bytes: a directory may
/// hold more entries than one frame carries.
const LIST_PART: usize = CHUNK;

/// List a directory: `EntriesPart`s, then `Entries` with the last part.
pub async fn list(out: Out, path: String) {
    let entries = match tokio::task::spawn_blocking(move || list_entries(&path)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return out.error(e.kind(), e.to_string()).await,
        Err(e) => {
            return out
                .error(ErrorKind::Other, format!("file operation failed: {e}"))
                .await
        }
    };
    let mut part = Vec::new();
    let mut bytes = 0;
    for e in entries {
        // An entry's encoding: its name plus at most ~30 bytes of varints.
        bytes += e.name.len() + 32;
        part.push(e);
        if bytes >= LIST_PART {
            if out.send(GuestMsg::EntriesPart(part)).await.is_err() {
                return;
            }
            part = Vec::new();
            bytes = 0;
        }
    }
    let _ = out.send(GuestMsg::Entries(part)).await;
}

fn list_entries(path: &str) -> Result<Vec<DirEntry>, FileError> {
    let dir = resolve(path);
    let mut entries = Vec::new();
    for entry in fs::read_dir(&dir).map_err(ctx(&dir))? {
        let entry = entry.map_err(ctx(&dir))?;
        let m = match entry.metadata() {
            Ok(m) => m,
            // Deleted between readdir and lstat: it is simply gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ctx(&entry.path())(e)),
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind: kind_of_meta(&m),
            size: m.len(),
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The owner a request names, resolved, and its path resolved against
/// that owner's home (root's without one).
fn owner_and_path(
    user: Option<&str>,
    path: &str,
) -> Result<(Option<Identity>, PathBuf), FileError> {
    let owner = user.map(users::resolve).transpose()?;
    let p = match &owner {
        Some(o) => resolve_under(&o.home, path),
        None => resolve(path),
    };
    Ok((owner, p))
}

/// `dir` and those of its ancestors that do not exist yet, outermost
/// last: what creating it with its parents will make.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// Give what was just made to `owner` (not following symlinks).
fn chown_all(owner: &Identity, paths: &[PathBuf]) -> Result<(), FileError> {
    for p in paths {
        std::os::unix::fs::lchown(p, Some(owner.uid), Some(owner.gid)).map_err(ctx(p))?;
    }
    Ok(())
}

pub fn mkdir(
    path: &str,
    parents: bool,
    mode: u32,
    user: Option<&str>,
) -> Result<GuestMsg, FileError> {
    let (owner, p) = owner_and_path(user, path)?;
    let made = match &owner {
        Some(_) if parents => missing_dirs(&p),
        Some(_) => vec![p.clone()],
        None => Vec::new(),
    };
    fs::DirBuilder::new()
        .recursive(parents)
        .mode(mode & 0o7777)
        .create(&p)
        .map_err(ctx(&p))?;
    if let Some(o) = &owner {
        chown_all(o, &made)?;
    }
    Ok(GuestMsg::Ok)
}

/// True for "/", "//", "/..", "/./" and the like.
fn is_root(p: &Path) -> bool {
    p.components().all(|c| {
        matches!(
            c,
            Component::RootDir | Component::CurDir | Component::ParentDir
        )
    })
}

pub fn remove(path: &str, recursive: bool) -> Result<GuestMsg, FileError> {
    let p = resolve(path);
    if is_root(&p) || fs::canonicalize(&p).is_ok_and(|c| c == Path::new("/")) {
        return Err(FileError::RemoveRoot);
    }
    let m = fs::symlink_metadata(&p).map_err(ctx(&p))?;
    let res = if !m.is_dir() {
        fs::remove_file(&p)
    } else if recursive {
        // Does not follow symlinks out of the tree.
        fs::remove_dir_all(&p)
    } else {
        fs::remove_dir(&p)
    };
    res.map_err(ctx(&p))?;
    Ok(GuestMsg::Ok)
}

pub fn rename(from: &str, to: &str) -> Result<GuestMsg, FileError> {
    let (f, t) = (resolve(from), resolve(to));
    fs::rename(&f, &t).map_err(ctx(&f))?;
    Ok(GuestMsg::Ok)
}

/// Stream a file as Data chunks, then Eof.
pub async fn read(out: Out, path: &str, mut input: Input) {
    let p = resolve(path);
    // O_NONBLOCK: opening a FIFO for reading would otherwise block until a
    // writer came, holding a blocking thread for ever. Only regular files
    // are read (a device or a FIFO has no end, or no size).
    let opened = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .await;
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => return out.error(kind_of(&e), ctx(&p)(e).to_string()).await,
    };
    match file.metadata().await {
        Ok(m) if m.is_file() => {}
        Ok(m) if m.is_dir() => {
            let e = io::Error::from_raw_os_error(libc::EISDIR);
            return out.error(kind_of(&e), ctx(&p)(e).to_string()).await;
        }
        Ok(_) => {
            return out
                .error(
                    ironclaw_proto::ErrorKind::InvalidInput,
                    format!("{}: not a regular file", p.display()),
                )
                .await
        }
        Err(e) => return out.error(kind_of(&e), ctx(&p)(e).to_string()).await,
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            n = file.read(&mut buf) => n,
            // Cancel or connection gone: stop sending.
            _ = input.ctrl.recv() => return,
        };
        let n = match n {
            Ok(0) => {
                let _ = out.send(GuestMsg::Eof).await;
                return;
            }
            Ok(n) => n,
            // Reading a directory fails here with EISDIR, before any data.
            Err(e) => return out.error(kind_of(&e), ctx(&p)(e).to_string()).await,
        };
        if out
            .send_bytes(GuestMsg::Data(Vec::new()), &buf[..n])
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Removes the temporary file unless the upload completed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Receive Data chunks until Eof into a temporary file beside the target,
/// then fsync, chmod and rename it into place: readers see either the old
/// file or the complete new one, never a partial upload.
pub async fn write(out: Out, req: FileWrite, mut input: Input) {
    match write_inner(&req, &mut input).await {
        Ok(Some(stat)) => {
            let _ = out.send(GuestMsg::Stat(stat)).await;
        }
        Ok(None) => {} // cancelled
        Err(e) => out.error(e.kind(), e.to_string()).await,
    }
}

async fn write_inner(req: &FileWrite, input: &mut Input) -> Result<Option<FileStat>, FileError> {
    let (owner, target) = owner_and_path(req.user.as_deref(), &req.path)?;
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(FileError::NoParent(req.path.clone()));
    };
    if req.parents {
        let made = if owner.is_some() {
            missing_dirs(dir)
        } else {
            Vec::new()
        };
        tokio::fs::create_dir_all(dir).await.map_err(ctx(dir))?;
        if let Some(o) = &owner {
            chown_all(o, &made)?;
        }
    }
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(
        ".{}.ironclaw-upload.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        seq
    );
    let mut temp = TempFile {
        path: dir.join(tmp_name),
        keep: false,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp.path)
        .await
        .map_err(ctx(&target))?;
    loop {
        tokio::select! {
            msg = input.data.recv() => match msg {
                Some(HostMsg::Data(bytes)) => file.write_all(&bytes).await.map_err(ctx(&target))?,
                Some(HostMsg::Eof) => break,
                Some(_) => {}
                None => return Ok(None),
            },
            _ = input.ctrl.recv() => return Ok(None),
        }
    }
    file.flush().await.map_err(ctx(&target))?;
    file.sync_all().await.map_err(ctx(&target))?;
    let file = file.into_std().await;
    // Owner before mode: a chown clears set-id bits the mode may ask for.
    if let Some(o) = &owner {
        std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid)).map_err(ctx(&target))?;
    }
    file.set_permissions(fs::Permissions::from_mode(req.mode & 0o7777))
        .map_err(ctx(&target))?;
    drop(file);
    let (tmp, dst, dir, shown) = (
        temp.path.clone(),
        target.clone(),
        dir.to_path_buf(),
        target.display().to_string(),
    );
    let stat = tokio::task::spawn_blocking(move || -> Result<FileStat, FileError> {
        fs::rename(&tmp, &dst).map_err(ctx(&dst))?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        file_stat(&dst, &shown)
    })
    .await
    .map_err(|e| FileError::Io {
        path: req.path.clone(),
        source: io::Error::other(e),
    })?;
    // Once renamed the temporary name no longer exists; nothing to clean.
    if stat.is_ok() || !temp.path.exists() {
        temp.keep = true;
    }
    stat.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_detection() {
        for p in ["/", "//", "/..", "/./", "/../.."] {
            assert!(is_root(Path::new(p)), "{p}");
        }
        for p in ["/tmp", "/root/..x"] {
            assert!(!is_root(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_root_home() {
        assert_eq!(resolve("a/b"), PathBuf::from("/root/a/b"));
        assert_eq!(resolve("/etc"), PathBuf::from("/etc"));
    }
}
