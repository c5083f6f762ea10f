//! Message types. Host-to-guest messages are [`HostMsg`], guest-to-host are
//! [`GuestMsg`]; each travels in a frame tagged with its stream id.
//!
//! Adding a variant at the end of an enum is backwards compatible for
//! decoding old messages; anything else needs a [`crate::PROTOCOL_VERSION`]
//! bump.

use serde::{Deserialize, Serialize};

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

impl Default for TtySize {
    fn default() -> Self {
        TtySize { rows: 24, cols: 80 }
    }
}

/// A one-shot command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Added to (and overriding) the agent's base environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// When false the command's stdin is /dev/null; when true the host sends
    /// [`HostMsg::Stdin`] and closes with [`HostMsg::StdinEof`].
    pub stdin: bool,
    /// Kill the command (its whole process group) after this many ms.
    pub timeout_ms: Option<u64>,
    /// Run on a fresh pseudo-terminal of this size (stdout carries the
    /// terminal output; there is no separate stderr).
    pub tty: Option<TtySize>,
    /// Run as this user of the sandbox: a name in its /etc/passwd or a
    /// numeric uid. `None` is root, as before users existed. Last, so a
    /// guest older than it still decodes the request (and ignores it: the
    /// host checks [`crate::handshake::Ready::users`] first).
    pub user: Option<String>,
}

/// Open (or reattach to) a named PTY session that outlives the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyOpen {
    pub name: String,
    /// Command to start when the session does not exist yet; empty means the
    /// image's login shell.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub size: TtySize,
    /// As [`ExecRequest::user`], for the session's process.
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub path: String,
    /// Permission bits of the file once written.
    pub mode: u32,
    /// Create missing parent directories.
    pub parents: bool,
    /// Owner of the file (and of the directories made for it): a user of
    /// the sandbox as in [`ExecRequest::user`]; a relative path is under
    /// its home. `None` is root.
    pub user: Option<String>,
}

/// A long-running process the agent keeps up (see [`HostMsg::ServiceStart`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// File its stdout and stderr are appended to (with the agent's own
    /// start and exit lines).
    pub log: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    /// The running process (also its process group); `None` between a
    /// crash and its restart, or once stopped.
    pub pid: Option<i32>,
    /// How often the process exited and was started again.
    pub restarts: u32,
    /// False once stopped (it is not restarted any more).
    pub supervised: bool,
}

/// A directory to watch (see [`HostMsg::Watch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub path: String,
    /// Its subdirectories too, the ones created later included.
    pub recursive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchKind {
    /// The watch is set; nothing happened yet.
    Ready,
    Create,
    Write,
    Remove,
    /// Moved away (its new name, if still watched, comes as a `Create`).
    Rename,
    Chmod,
    /// The kernel dropped events (its queue overflowed).
    Overflow,
}

/// One change: `path` is absolute (the watched directory for `Ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: WatchKind,
    pub path: String,
}

/// Host to guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    Exec(ExecRequest),
    /// Bytes for the stdin of an exec or the input of a PTY.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    StdinEof,
    /// Deliver a signal to the process group of an exec or PTY.
    Signal(i32),
    Resize(TtySize),
    PtyOpen(PtyOpen),
    PtyList,
    PtyKill {
        name: String,
    },
    /// Stream a file's contents back as [`GuestMsg::Data`] then [`GuestMsg::Eof`].
    FileRead {
        path: String,
    },
    /// Start a file upload; data follows as [`HostMsg::Data`], then
    /// [`HostMsg::Eof`]; the guest replies [`GuestMsg::Stat`] when the file
    /// is in place (written to a temporary name, then renamed).
    FileWrite(FileWrite),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Eof,
    Stat {
        path: String,
    },
    List {
        path: String,
    },
    Mkdir {
        path: String,
        parents: bool,
        mode: u32,
        /// Owner of the directories made, as in [`FileWrite::user`].
        user: Option<String>,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    Rename {
        from: String,
        to: String,
    },
    Info,
    /// Terminate every process, sync filesystems and (as PID 1) power off.
    Shutdown,
    /// The host gives up on this stream: the guest stops sending on it and
    /// kills a one-shot exec still running. A PTY session is only detached.
    Cancel,
    Ping,
    /// Flow control: the host's consumer of this stream took this many more
    /// bytes of [`GuestMsg`] frames, so the guest may send that much more
    /// (see [`crate::flow`]).
    Credit(u32),
    /// A piece of a message too big for one frame (a request with a huge
    /// argv or environment): the pieces of its postcard encoding, in order,
    /// the last one with `last` set. Only whole requests are sent this way,
    /// never stream data (which is split into [`crate::CHUNK`]s instead);
    /// the message they form is at most [`crate::MAX_MESSAGE`] bytes.
    Fragment {
        last: bool,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Start a supervised service that outlives the connection: restarted
    /// with backoff (1 s doubling to 30 s, reset after 30 s up) whenever
    /// it exits, until [`HostMsg::ServiceStop`]. Answered `Ok` once its
    /// first process is spawned; a name already supervised is
    /// `AlreadyExists`. Agents older than this skip the message unanswered.
    ServiceStart(ServiceSpec),
    /// Stop a service: SIGTERM to its process group, SIGKILL after 5 s.
    /// Answered `Ok` once it is gone (`NotFound` for an unknown name).
    ServiceStop {
        name: String,
    },
    /// Answered [`GuestMsg::Services`].
    ServiceList,
    /// Open a TCP connection to `port` on the loopback interface of the
    /// sandbox's own network namespace (nothing else is reachable this
    /// way: the request carries no address). Answered
    /// [`GuestMsg::TcpConnected`] or a final `Error` (`NotFound` for a
    /// refused port). Then bytes flow both ways as `Data` (the host's
    /// [`HostMsg::Eof`] half-closes the guest's socket), the guest's side
    /// ending with [`GuestMsg::TcpEof`]; once both directions are done the
    /// guest ends the stream with `Ok`. `Cancel` closes the socket.
    /// Agents older than this skip the message unanswered.
    TcpConnect {
        port: u16,
    },
    /// Watch a directory (inotify): answered by [`GuestMsg::Watch`] events,
    /// the first [`WatchKind::Ready`] once the watch is set, until the host
    /// cancels the stream. A path that is not a directory is an `Error`.
    /// Agents older than this skip the message unanswered.
    Watch(WatchRequest),
}

impl HostMsg {
    /// True for the messages that queue up for an operation's consumer
    /// and so count against the stream's flow-control window.
    pub fn costs_credit(&self) -> bool {
        matches!(
            self,
            HostMsg::Stdin(_) | HostMsg::StdinEof | HostMsg::Data(_) | HostMsg::Eof
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    pub agent_version: String,
    pub protocol_version: u32,
    pub hostname: String,
    pub kernel: String,
    pub uptime_ms: u64,
    pub cpus: u32,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub pid1: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySessionInfo {
    pub name: String,
    pub pid: i32,
    pub alive: bool,
    pub attached: u32,
    pub size: TtySize,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal when killed by a signal (shell convention).
    pub code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
}

/// Error classes, so the host can map them to HTTP statuses without parsing
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    PermissionDenied,
    InvalidInput,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    ResourceExhausted,
    Unsupported,
    Other,
    /// In use: a mount point, a busy device or a running executable
    /// (EBUSY, ETXTBSY). Last, so older guests' encodings stay the same.
    Busy,
}

/// Guest to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMsg {
    /// An exec or PTY process is running with this pid (in the guest).
    Started {
        pid: i32,
    },
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The process ended; last message on an exec stream.
    Exited(ExitStatus),
    /// Attached to a PTY session; `created` is false on a reattach, in which
    /// case [`GuestMsg::Stdout`] with the screen replay follows.
    PtyAttached {
        created: bool,
        pid: i32,
    },
    PtySessions(Vec<PtySessionInfo>),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Eof,
    Stat(FileStat),
    Entries(Vec<DirEntry>),
    Info(GuestInfo),
    /// A request succeeded with nothing else to say.
    Ok,
    Pong,
    /// The request failed; last message on its stream.
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// Flow control: the guest's operation took this many more bytes of
    /// [`HostMsg`] data frames (stdin, upload data) off this stream.
    Credit(u32),
    /// Part of a directory listing too big for one frame; more parts
    /// follow, then the final [`GuestMsg::Entries`] with the last part.
    EntriesPart(Vec<DirEntry>),
    Services(Vec<ServiceInfo>),
    /// A [`HostMsg::TcpConnect`] connection is up; `Data` follows.
    TcpConnected,
    /// The sandbox's end of a TCP connection stopped sending (not final:
    /// the host may still send until it sends `Eof`).
    TcpEof,
    /// A change in a watched directory (see [`HostMsg::Watch`]).
    Watch(WatchEvent),
}

impl GuestMsg {
    /// True when no more messages follow on this stream.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            GuestMsg::Exited(_)
                | GuestMsg::Error { .. }
                | GuestMsg::Ok
                | GuestMsg::Pong
                | GuestMsg::Stat(_)
                | GuestMsg::Entries(_)
                | GuestMsg::Info(_)
                | GuestMsg::PtySessions(_)
                | GuestMsg::Services(_)
                | GuestMsg::Eof
        )
    }

    /// Everything the guest sends on a stream counts against the stream's
    /// flow-control window, except the window's own bookkeeping.
    pub fn costs_credit(&self) -> bool {
        !matches!(self, GuestMsg::Credit(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `HostMsg::Exec` as agents before `ExecRequest::user` knew it.
    #[derive(Debug, Deserialize)]
    struct OldExecRequest {
        argv: Vec<String>,
        _env: Vec<(String, String)>,
        _cwd: Option<String>,
        _stdin: bool,
        _timeout_ms: Option<u64>,
        tty: Option<TtySize>,
    }

    #[derive(Debug, Deserialize)]
    enum OldHostMsg {
        Exec(OldExecRequest),
    }

    #[test]
    fn an_older_agent_still_decodes_a_request_naming_a_user() {
        let req = ExecRequest {
            argv: vec!["id".into()],
            tty: Some(TtySize { rows: 3, cols: 4 }),
            user: Some("user".into()),
            ..Default::default()
        };
        let bytes = postcard::to_allocvec(&HostMsg::Exec(req)).unwrap();
        // It ignores the user (so the host asks only agents that announce
        // the `users` feature), and reads everything before it.
        let OldHostMsg::Exec(old) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(old.argv, vec!["id".to_string()]);
        assert_eq!(old.tty, Some(TtySize { rows: 3, cols: 4 }));
    }
}
