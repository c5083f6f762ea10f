//! The connections behind a [`Store`](crate::Store): one writer, and a few
//! readers so that a lookup (a token, a sandbox, a session's history) never
//! waits behind a commit's fsync. WAL mode lets readers run beside the
//! writer and see every transaction committed before they began.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Readers per store: one per runtime thread of a 2-core host, and a spare.
const READERS: usize = 3;

pub(crate) struct Db {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Db {
    /// `writer` has its schema migrated; readers are opened on `path` after.
    pub(crate) fn new(writer: Connection, path: Option<&Path>) -> rusqlite::Result<Db> {
        let mut readers = Vec::new();
        if let Some(path) = path {
            for _ in 0..READERS {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(Duration::from_secs(5))?;
                readers.push(Mutex::new(c));
            }
        }
        Ok(Db {
            writer: Mutex::new(writer),
            readers,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free reader, or the writer for an in-memory store (one
    /// connection is the whole database there).
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        if n == 0 {
            return self.writer();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
