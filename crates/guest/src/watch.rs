//! Directory watches ([`HostMsg::Watch`]): inotify on the directory (and,
//! recursively, on its subdirectories, new ones included), each change a
//! [`GuestMsg::Watch`] event, until the host cancels the stream.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ironclaw_proto::{ErrorKind, GuestMsg, WatchEvent, WatchKind, WatchRequest};

use crate::connection::{Input, Out};
use crate::errors::kind_of;
use crate::fdio::FdIo;
use crate::spawn::resolve;

/// Most directories one recursive watch covers.
const MAX_WATCHES: usize = 8192;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

/// An inotify instance and the directories it watches.
struct Watches {
    fd: FdIo,
    dirs: HashMap<i32, PathBuf>,
}

impl Watches {
    fn new() -> io::Result<Watches> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Watches {
            fd: FdIo::new(owned)?,
            dirs: HashMap::new(),
        })
    }

    fn add(&mut self, dir: &Path) -> io::Result<()> {
        if self.dirs.len() >= MAX_WATCHES {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: c is a valid NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.raw(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// `dir` and every directory under it (symlinks not followed).
    fn add_tree(&mut self, dir: &Path) -> io::Result<()> {
        self.add(dir)?;
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    // Gone meanwhile, or unreadable: not watched.
                    if self.add(&p).is_ok() {
                        todo.push(p);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The events in one read of an inotify descriptor: (wd, mask, name).
pub fn parse_events(buf: &[u8]) -> Vec<(i32, u32, Vec<u8>)> {
    const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEAD <= buf.len() {
        let int = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[at + o..at + o + 4]);
            b
        };
        let wd = i32::from_ne_bytes(int(0));
        let mask = u32::from_ne_bytes(int(4));
        let len = u32::from_ne_bytes(int(12)) as usize;
        let end = (at + HEAD + len).min(buf.len());
        let name: Vec<u8> = buf[at + HEAD..end]
            .iter()
            .copied()
            .take_while(|b| *b != 0)
            .collect();
        out.push((wd, mask, name));
        at += HEAD + len;
    }
    out
}

fn kind_of_mask(mask: u32) -> Option<WatchKind> {
    if mask & libc::IN_Q_OVERFLOW != 0 {
        Some(WatchKind::Overflow)
    } else if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
        Some(WatchKind::Create)
    } else if mask & libc::IN_DELETE != 0 {
        Some(WatchKind::Remove)
    } else if mask & libc::IN_MOVED_FROM != 0 {
        Some(WatchKind::Rename)
    } else if mask & libc::IN_MODIFY != 0 {
        Some(WatchKind::Write)
    } else if mask & libc::IN_ATTRIB != 0 {
        Some(WatchKind::Chmod)
    } else {
        None
    }
}

pub async fn run(out: Out, req: WatchRequest, mut input: Input) {
    let root = resolve(&req.path);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return out
                .error(
                    ErrorKind::NotADirectory,
                    format!("{}: not a directory", root.display()),
                )
                .await
        }
        Err(e) => {
            return out
                .error(kind_of(&e), format!("{}: {e}", root.display()))
                .await
        }
    }
    let mut w = match Watches::new() {
        Ok(w) => w,
        Err(e) => return out.error(kind_of(&e), format!("inotify: {e}")).await,
    };
    let set = if req.recursive {
        w.add_tree(&root)
    } else {
        w.add(&root)
    };
    if let Err(e) = set {
        return out
            .error(kind_of(&e), format!("{}: {e}", root.display()))
            .await;
    }
    let ready = WatchEvent {
        kind: WatchKind::Ready,
        path: root.display().to_string(),
    };
    if out.send(GuestMsg::Watch(ready)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            n = w.fd.read(&mut buf) => n,
            // Cancel, or the connection is gone.
            _ = input.ctrl.recv() => return,
        };
        let n = match n {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => return out.error(kind_of(&e), format!("inotify: {e}")).await,
        };
        for (wd, mask, name) in parse_events(&buf[..n]) {
            if mask & libc::IN_IGNORED != 0 {
                w.dirs.remove(&wd);
                continue;
            }
            let Some(kind) = kind_of_mask(mask) else {
                continue;
            };
            let dir = match w.dirs.get(&wd) {
                Some(d) => d.clone(),
                None if kind == WatchKind::Overflow => root.clone(),
                None => continue,
            };
            let path = if name.is_empty() {
                dir
            } else {
                dir.join(std::ffi::OsStr::from_bytes(&name))
            };
            if req.recursive && kind == WatchKind::Create && mask & libc::IN_ISDIR != 0 {
                let _ = w.add_tree(&path);
            }
            let ev = WatchEvent {
                kind,
                path: path.display().to_string(),
            };
            if out.send(GuestMsg::Watch(ev)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_from_kernel_layout() {
        let mut buf = Vec::new();
        for (wd, mask, name) in [
            (1i32, libc::IN_CREATE, &b"a.txt"[..]),
            (2, libc::IN_DELETE, b""),
        ] {
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            let padded = if name.is_empty() { 0 } else { 16 };
            buf.extend_from_slice(&(padded as u32).to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(padded, 0);
            buf.extend_from_slice(&n);
        }
        assert_eq!(
            parse_events(&buf),
            vec![
                (1, libc::IN_CREATE, b"a.txt".to_vec()),
                (2, libc::IN_DELETE, vec![])
            ]
        );
        assert_eq!(kind_of_mask(libc::IN_MOVED_TO), Some(WatchKind::Create));
        assert_eq!(kind_of_mask(libc::IN_MOVED_FROM), Some(WatchKind::Rename));
        assert_eq!(kind_of_mask(libc::IN_CLOSE_WRITE), None);
    }

    #[tokio::test]
    async fn a_real_inotify_watch_sees_a_new_file_in_a_new_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watches::new().unwrap();
        w.add_tree(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = w.fd.read(&mut buf).await.unwrap();
        let evs = parse_events(&buf[..n]);
        assert!(evs
            .iter()
            .any(|(_, m, name)| m & libc::IN_CREATE != 0 && name == b"sub"));
        w.add_tree(&dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), "x").unwrap();
        let n = w.fd.read(&mut buf).await.unwrap();
        let evs = parse_events(&buf[..n]);
        let sub_wd = *w.dirs.iter().find(|(_, p)| p.ends_with("sub")).unwrap().0;
        assert!(evs
            .iter()
            .any(|(wd, m, name)| *wd == sub_wd && m & libc::IN_CREATE != 0 && name == b"f"));
    }
}
