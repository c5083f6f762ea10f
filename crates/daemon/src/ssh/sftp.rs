//! The `sftp` subsystem (what scp uses too, since OpenSSH 9), backed by
//! the sandbox's file API through its agent client: the same calls the
//! HTTP file routes make. The guest writes and reads whole files as
//! streams, so SFTP handles are sequential: writes must come at the
//! offset the last one ended (as scp and sftp's put send them) and a read
//! at an earlier offset reopens the file.

use std::collections::HashMap;
use std::sync::Arc;

use ironclaw_sandbox::guest_files::{FileReader, FileWriter};
use ironclaw_sandbox::types::{FileKind, FileStat};
use ironclaw_sandbox::{AgentClient, AgentError};
use russh::server::Msg;
use russh::Channel;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;

use crate::auth::Target;
use crate::manager::Manager;

/// Where relative paths start (the sandbox user's home).
const HOME: &str = "/root";

pub async fn serve(channel: Channel<Msg>, manager: Arc<Manager>, target: Target) {
    let agent = match manager.agent(&target.id).await {
        Ok(a) => a,
        Err(e) => return super::session::refuse(&channel, &e.to_string()).await,
    };
    let handler = Sftp {
        agent,
        handles: HashMap::new(),
        next: 0,
    };
    russh_sftp::server::run(channel.into_stream(), handler).await;
}

enum Open {
    Read {
        path: String,
        stream: Option<FileReader>,
        /// Offset of the first byte of `buf`.
        pos: u64,
        buf: Vec<u8>,
        eof: bool,
    },
    Write {
        path: String,
        stream: Option<FileWriter>,
        pos: u64,
        /// The permission bits given at open (the guest sets them at close).
        mode: u32,
        /// Why the write failed, once it has: reported again at close.
        failed: Option<String>,
    },
    Dir {
        entries: Option<Vec<File>>,
    },
}

struct Sftp {
    agent: AgentClient,
    handles: HashMap<String, Open>,
    next: u64,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn failure(message: impl Into<String>) -> StatusReply {
    StatusCode::Failure.with_message(message)
}

fn agent_error(e: AgentError) -> StatusReply {
    use ironclaw_sandbox::types::ErrorKind;
    match &e {
        AgentError::Guest { kind, message } => match kind {
            ErrorKind::NotFound => StatusCode::NoSuchFile.with_message(message.clone()),
            ErrorKind::PermissionDenied => {
                StatusCode::PermissionDenied.with_message(message.clone())
            }
            _ => failure(message.clone()),
        },
        _ => failure(e.to_string()),
    }
}

/// An absolute, `.`/`..`-free path (relative ones start at [`HOME`]).
pub fn normalize(path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{HOME}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in full.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn type_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => 0o100000,
        FileKind::Dir => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::Other => 0,
    }
}

fn attrs(kind: FileKind, size: u64, mode: u32, mtime: i64) -> FileAttributes {
    let mtime = u32::try_from(mtime.max(0)).unwrap_or(u32::MAX);
    FileAttributes {
        size: Some(size),
        uid: Some(0),
        gid: Some(0),
        user: None,
        group: None,
        permissions: Some((mode & 0o7777) | type_bits(kind)),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

fn stat_attrs(s: &FileStat) -> FileAttributes {
    attrs(s.kind, s.size, s.mode, s.mtime)
}

impl Sftp {
    fn insert(&mut self, open: Open) -> String {
        self.next += 1;
        let h = format!("h{}", self.next);
        self.handles.insert(h.clone(), open);
        h
    }

    async fn stat(&self, id: u32, path: &str) -> Result<Attrs, StatusReply> {
        let s = self
            .agent
            .stat(&normalize(path))
            .await
            .map_err(agent_error)?;
        Ok(Attrs {
            id,
            attrs: stat_attrs(&s),
        })
    }
}

/// `want` asks for no size or mode other than `size` and `mode`.
fn check_unchanged(want: &FileAttributes, size: u64, mode: u32) -> Result<(), StatusReply> {
    if want.size.is_some_and(|s| s != size) {
        return Err(StatusCode::OpUnsupported
            .with_message("truncating or extending a file is not supported; write it whole"));
    }
    if want
        .permissions
        .is_some_and(|p| p & 0o7777 != mode & 0o7777)
    {
        return Err(StatusCode::OpUnsupported.with_message(
            "changing a file's mode is not supported over SFTP; use `ssh NAME@HOST chmod ...`",
        ));
    }
    Ok(())
}

/// Fill `buf` past `want` bytes (or to the end of the file).
async fn fill(
    stream: &mut FileReader,
    buf: &mut Vec<u8>,
    eof: &mut bool,
    want: usize,
) -> Result<(), StatusReply> {
    while !*eof && buf.len() < want {
        match stream.next().await {
            Some(Ok(d)) => buf.extend_from_slice(&d),
            None => *eof = true,
            Some(Err(e)) => return Err(agent_error(e)),
        }
    }
    Ok(())
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = normalize(&filename);
        let write = pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND);
        if !write {
            let s = self.agent.stat(&path).await.map_err(agent_error)?;
            if s.kind == FileKind::Dir {
                return Err(failure(format!("{path} is a directory")));
            }
            let handle = self.insert(Open::Read {
                path,
                stream: None,
                pos: 0,
                buf: Vec::new(),
                eof: false,
            });
            return Ok(Handle { id, handle });
        }
        if pflags.contains(OpenFlags::READ) || pflags.contains(OpenFlags::APPEND) {
            return Err(StatusCode::OpUnsupported.with_message(
                "files open for writing are written whole (no read-write, no append)",
            ));
        }
        match self.agent.stat(&path).await {
            Ok(s) if pflags.contains(OpenFlags::EXCLUDE) => {
                return Err(failure(format!("{} exists", s.path)))
            }
            Ok(s) if s.size > 0 && !pflags.contains(OpenFlags::TRUNCATE) => {
                return Err(StatusCode::OpUnsupported
                    .with_message("files open for writing are written whole: open with truncate"))
            }
            Ok(_) => {}
            Err(_) if !pflags.contains(OpenFlags::CREATE) => {
                return Err(StatusCode::NoSuchFile.with_message(path))
            }
            Err(_) => {}
        }
        let mode = attrs.permissions.map(|p| p & 0o7777).unwrap_or(0o644);
        let stream = self
            .agent
            .file_writer(&path, mode, false)
            .await
            .map_err(agent_error)?;
        let handle = self.insert(Open::Write {
            path,
            stream: Some(stream),
            pos: 0,
            mode,
            failed: None,
        });
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            None => Err(failure("no such handle")),
            Some(Open::Write {
                failed: Some(why), ..
            }) => Err(failure(why)),
            Some(Open::Write {
                stream: Some(w), ..
            }) => {
                w.finish().await.map_err(agent_error)?;
                Ok(ok(id))
            }
            Some(_) => Ok(ok(id)),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let agent = self.agent.clone();
        let Some(Open::Read {
            path,
            stream,
            pos,
            buf,
            eof,
        }) = self.handles.get_mut(&handle)
        else {
            return Err(failure("not a handle open for reading"));
        };
        if offset < *pos || stream.is_none() {
            // Back to the start: the guest streams files from offset 0.
            let s = agent.file_reader(path).await.map_err(agent_error)?;
            *stream = Some(s);
            *pos = 0;
            buf.clear();
            *eof = false;
        }
        let s = stream.as_mut().expect("opened above");
        // Skip to `offset`, then take up to `len` bytes. A failed read
        // is never mistaken for the end of the file: the next read on
        // the handle opens the file again.
        let failed = |stream: &mut Option<FileReader>, e| {
            *stream = None;
            e
        };
        loop {
            let skip = (offset - *pos).min(buf.len() as u64) as usize;
            buf.drain(..skip);
            *pos += skip as u64;
            if *pos == offset || *eof {
                break;
            }
            if let Err(e) = fill(s, buf, eof, 1).await {
                return Err(failed(stream, e));
            }
        }
        if *pos < offset {
            return Err(StatusCode::Eof.into());
        }
        let len = (len as usize).min(256 * 1024);
        if let Err(e) = fill(s, buf, eof, len).await {
            return Err(failed(stream, e));
        }
        if buf.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        let take = len.min(buf.len());
        let data: Vec<u8> = buf.drain(..take).collect();
        *pos += take as u64;
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let Some(Open::Write {
            path,
            stream,
            pos,
            failed,
            ..
        }) = self.handles.get_mut(&handle)
        else {
            return Err(failure("not a handle open for writing"));
        };
        if let Some(why) = failed {
            return Err(failure(why.clone()));
        }
        if offset != *pos {
            let why =
                format!("{path}: writes must be sequential (got offset {offset}, expected {pos})");
            *failed = Some(why.clone());
            *stream = None;
            return Err(StatusCode::OpUnsupported.with_message(why));
        }
        let s = stream
            .as_mut()
            .ok_or_else(|| failure("write stream closed"))?;
        if let Err(e) = s.write(&data).await {
            // The guest ended the stream (disk full, ...): finishing
            // reads why.
            let why = match stream.take().map(FileWriter::finish) {
                Some(f) => match f.await {
                    Err(AgentError::Guest { message, .. }) => message,
                    _ => e.to_string(),
                },
                None => e.to_string(),
            };
            *failed = Some(why.clone());
            return Err(failure(why));
        }
        *pos += data.len() as u64;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        Sftp::stat(self, id, &path).await
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        Sftp::stat(self, id, &path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let path = match self.handles.get(&handle) {
            Some(Open::Read { path, .. }) => path.clone(),
            Some(Open::Write { pos, mode, .. }) => {
                return Ok(Attrs {
                    id,
                    attrs: attrs(FileKind::File, *pos, *mode, 0),
                })
            }
            _ => return Err(failure("no such file handle")),
        };
        Sftp::stat(self, id, &path).await
    }

    /// The file API keeps no times or owners, so those are ignored (as
    /// scp -p sends them); a size or mode other than the file's is refused
    /// rather than pretended.
    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        want: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let s = self
            .agent
            .stat(&normalize(&path))
            .await
            .map_err(agent_error)?;
        check_unchanged(&want, s.size, s.mode)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        want: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = match self.handles.get(&handle) {
            Some(Open::Write { pos, mode, .. }) => {
                check_unchanged(&want, *pos, *mode)?;
                return Ok(ok(id));
            }
            Some(Open::Read { path, .. }) => path.clone(),
            _ => return Err(failure("no such file handle")),
        };
        self.setstat(id, path, want).await
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let entries = self
            .agent
            .list(&normalize(&path))
            .await
            .map_err(agent_error)?;
        let files = entries
            .into_iter()
            .map(|e| File::new(e.name, attrs(e.kind, e.size, e.mode, e.mtime)))
            .collect();
        let handle = self.insert(Open::Dir {
            entries: Some(files),
        });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir { entries }) => match entries.take() {
                Some(files) if !files.is_empty() => Ok(Name { id, files }),
                _ => Err(StatusCode::Eof.into()),
            },
            _ => Err(failure("not a directory handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = normalize(&filename);
        let s = self.agent.stat(&path).await.map_err(agent_error)?;
        if s.kind == FileKind::Dir {
            return Err(failure(format!("{path} is a directory")));
        }
        self.agent.remove(&path, false).await.map_err(agent_error)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = normalize(&path);
        let s = self.agent.stat(&path).await.map_err(agent_error)?;
        if s.kind != FileKind::Dir {
            return Err(failure(format!("{path} is not a directory")));
        }
        self.agent.remove(&path, false).await.map_err(agent_error)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let mode = attrs.permissions.map(|p| p & 0o7777).unwrap_or(0o755);
        self.agent
            .mkdir(&normalize(&path), false, mode)
            .await
            .map_err(agent_error)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name {
            id,
            files: vec![File::dummy(normalize(&path))],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        self.agent
            .rename(&normalize(&oldpath), &normalize(&newpath))
            .await
            .map_err(agent_error)?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_normalize_under_home() {
        use super::normalize;
        assert_eq!(normalize("."), "/root");
        assert_eq!(normalize(""), "/root");
        assert_eq!(normalize("a/../b"), "/root/b");
        assert_eq!(normalize("/../../etc/./x"), "/etc/x");
        assert_eq!(normalize("/"), "/");
    }
}
