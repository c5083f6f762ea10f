//! Starting processes for execs and PTY sessions: clean environment, working
//! directory, own session and process group, optional controlling terminal.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ironclaw_proto::{ErrorKind, ExitStatus, TtySize};
use tokio::sync::oneshot;

use crate::errors::kind_of;
use crate::pty::{self, PtyError};
use crate::reaper::Reaper;

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
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(HOME).join(p)
    }
}

fn working_dir(cwd: Option<&str>) -> Result<PathBuf, SpawnError> {
    match cwd {
        Some(c) => {
            let dir = resolve(c);
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
        None if Path::new(HOME).is_dir() => Ok(HOME.into()),
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
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .current_dir(working_dir(spec.cwd)?);
    for (k, v) in BASE_ENV {
        cmd.env(k, v);
    }
    let tty = matches!(spec.io, Io::Pty(_));
    if tty {
        cmd.env("TERM", "xterm-256color");
    }
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    let io_err = |source| SpawnError::Io {
        cmd: shown(program),
        source,
    };
    let mut master = None;
    match spec.io {
        Io::Pipes { stdin } => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Io::Log(fd) => {
            cmd.stdin(Stdio::null());
            cmd.stdout(Stdio::from(fd.try_clone().map_err(io_err)?));
            cmd.stderr(Stdio::from(fd));
        }
        Io::Pty(size) => {
            let pair = pty::open(size)?;
            cmd.stdin(Stdio::from(pair.slave.try_clone().map_err(io_err)?));
            cmd.stdout(Stdio::from(pair.slave.try_clone().map_err(io_err)?));
            cmd.stderr(Stdio::from(pair.slave));
            master = Some(pair.master);
        }
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Own session and process group: signals, timeouts and kills
            // reach the command's whole tree, never the agent.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent may be shielded from the OOM killer; its commands
            // are not (raising one's own score needs no privilege).
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => SpawnError::NotFound(shown(program)),
        Some(libc::EACCES) | Some(libc::ENOEXEC) => SpawnError::PermissionDenied(shown(program)),
        _ => io_err(e),
    })?;
    // Dropping the Command closes the parent's copies of the PTY slave, so
    // the master sees EOF once the command's side is gone.
    drop(cmd);
    Ok(Spawned {
        pid: child.id() as i32,
        exit,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        pty_master: master,
    })
}

/// Signal a process group, ignoring "no such process" (it already ended).
pub fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::killpg(pgid, sig);
    }
}
