//! Starting processes for execs and PTY sessions: clean environment, working
//! directory, own session and process group, optional controlling terminal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use ironclaw_proto::{ErrorKind, ExitStatus, TtySize};
use tokio::sync::oneshot;

use crate::errors::kind_of;
use crate::launch::{self, Ids, Image};
use crate::pty::{self, PtyError};
use crate::reaper::Reaper;
use crate::users::{self, Identity, UserError};

/// Base environment of every process the agent starts. The agent's own
/// environment is never inherited: it is whatever the kernel or the host
/// daemon gave init, not what a user in the sandbox expects.
const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
];

/// Home of the sandbox user; relative paths are resolved against it.
pub const HOME: &str = "/root";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command line")]
    EmptyArgv,
    #[error("invalid environment variable {0:?}: a name is non-empty without '=' or NUL, a value without NUL")]
    Env(String),
    #[error("{0}: command not found")]
    NotFound(String),
    #[error("{0}: permission denied")]
    PermissionDenied(String),
    #[error("working directory {path}: {source}")]
    Cwd {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pty(#[from] PtyError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("{cmd}: {source}")]
    Io { cmd: String, source: std::io::Error },
}

impl SpawnError {
    /// The shell's exit code for failures that are the command's fault
    /// rather than the request's.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            SpawnError::NotFound(_) => Some(127),
            SpawnError::PermissionDenied(_) => Some(126),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            SpawnError::EmptyArgv | SpawnError::Env(_) => ErrorKind::InvalidInput,
            SpawnError::NotFound(_) => ErrorKind::NotFound,
            SpawnError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            SpawnError::Cwd { source, .. } | SpawnError::Io { source, .. } => kind_of(source),
            SpawnError::Pty(_) => ErrorKind::ResourceExhausted,
            SpawnError::User(e) => e.kind(),
        }
    }
}

pub enum Io {
    /// stdout and stderr as pipes; stdin a pipe when true, else /dev/null.
    Pipes { stdin: bool },
    /// All three on a new terminal that becomes the controlling terminal.
    Pty(TtySize),
    /// stdout and stderr to this file (a service's log); stdin /dev/null.
    Log(OwnedFd),
}

pub struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: Option<&'a str>,
    /// Run as this user (a name or uid, see [`users`]); `None` is root.
    pub user: Option<&'a str>,
    pub io: Io,
}

pub struct Spawned {
    /// Also the process group id (the child calls setsid).
    pub pid: i32,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub pty_master: Option<OwnedFd>,
}

/// Resolve a path from the host: relative paths are relative to [`HOME`].
pub fn resolve(path: &str) -> PathBuf {
    resolve_under(Path::new(HOME), path)
}

/// Resolve a path from the host against `home` when relative.
pub fn resolve_under(home: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        home.join(p)
    }
}

fn working_dir(cwd: Option<&str>, home: &Path) -> Result<PathBuf, SpawnError> {
    match cwd {
        Some(c) => {
            let dir = resolve_under(home, c);
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => Ok(dir),
                Ok(_) => Err(SpawnError::Cwd {
                    path: shown(c),
                    source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
                }),
                Err(source) => Err(SpawnError::Cwd {
                    path: shown(c),
                    source,
                }),
            }
        }
        None if home.is_dir() => Ok(home.into()),
        None => Ok("/".into()),
    }
}

/// A host-supplied string as it appears in an error message: bounded, since
/// one argument may be 128 KiB and errors must fit a frame.
fn shown(s: &str) -> String {
    let mut s = s.to_string();
    ironclaw_proto::truncate(&mut s, 256);
    s
}

fn check_env(env: &[(String, String)]) -> Result<(), SpawnError> {
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(SpawnError::Env(shown(k)));
        }
    }
    Ok(())
}

pub fn spawn(reaper: &Reaper, spec: Spec<'_>) -> Result<Spawned, SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::EmptyArgv)?;
    check_env(spec.env)?;
    // Resolved here, before the clone: the child only switches ids.
    let who: Option<Identity> = spec.user.map(users::resolve).transpose()?;
    let home = who.as_ref().map_or(Path::new(HOME), |w| w.home.as_path());
    let cwd = working_dir(spec.cwd, home)?;
    let tty = matches!(spec.io, Io::Pty(_));
    let mut env: Vec<(&str, &str)> = BASE_ENV.to_vec();
    if tty {
        env.push(("TERM", "xterm-256color"));
    }
    let home_env = home.to_string_lossy();
    if let Some(w) = &who {
        env.push(("HOME", &home_env));
        env.push(("USER", &w.name));
        env.push(("LOGNAME", &w.name));
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // The command is looked up in its own PATH, as execvp with its
    // environment would.
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| *k == "PATH")
        .map_or("", |(_, v)| *v);
    let io_err = |source| SpawnError::Io {
        cmd: shown(program),
        source,
    };
    let mut image = Image::new(spec.argv, &env, path, &cwd).map_err(io_err)?;
    if let Some(w) = who {
        image.run_as(Ids {
            uid: w.uid,
            gid: w.gid,
            groups: w.groups,
        });
    }
    // The child's ends (closed here once it has them) and ours.
    let (mut stdin, mut stdout, mut stderr, mut master) = (None, None, None, None);
    let child_ends: [OwnedFd; 3] = match spec.io {
        Io::Pipes { stdin: piped } => {
            let input = if piped {
                let (r, w) = pipe().map_err(io_err)?;
                stdin = Some(w);
                r
            } else {
                dev_null().map_err(io_err)?
            };
            let (out_r, out_w) = pipe().map_err(io_err)?;
            let (err_r, err_w) = pipe().map_err(io_err)?;
            stdout = Some(out_r);
            stderr = Some(err_r);
            [input, out_w, err_w]
        }
        Io::Log(fd) => [
            dev_null().map_err(io_err)?,
            fd.try_clone().map_err(io_err)?,
            fd,
        ],
        Io::Pty(size) => {
            let pair = pty::open(size)?;
            master = Some(pair.master);
            [
                pair.slave.try_clone().map_err(io_err)?,
                pair.slave.try_clone().map_err(io_err)?,
                pair.slave,
            ]
        }
    };
    let stdio = [0, 1, 2].map(|i| child_ends[i].as_raw_fd());
    let (pid, exit) = reaper
        .spawn(|| launch::launch(&mut image, stdio, tty))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => SpawnError::NotFound(shown(program)),
            Some(libc::EACCES) | Some(libc::ENOEXEC) => {
                SpawnError::PermissionDenied(shown(program))
            }
            _ => io_err(e),
        })?;
    // Closing our copies of the child's ends (the PTY slave included) lets
    // readers see EOF once the command's side is gone.
    drop(child_ends);
    Ok(Spawned {
        pid,
        exit,
        stdin,
        stdout,
        stderr,
        pty_master: master,
    })
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// /dev/null for reading and writing, close-on-exec.
fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// Signal a process group, ignoring "no such process" (it already ended).
pub fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::killpg(pgid, sig);
    }
}
