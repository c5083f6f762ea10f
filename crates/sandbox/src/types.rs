//! The plain data the daemon and the agent exchange with sandboxes:
//! requests' options, statuses, file metadata. Re-exported from the
//! protocol crate so that callers need no protocol types of their own
//! (the messages themselves stay inside this crate).

pub use ironclaw_proto::{
    DirEntry, ErrorKind, ExecRequest, ExitStatus, FileKind, FileStat, GuestInfo, PtyOpen,
    PtySessionInfo, ServiceInfo, ServiceSpec, TtySize, WatchEvent, WatchKind, CHUNK,
};
