//! Everything IronClaw persists, behind one type ([`Store`]) so the backing
//! database can change (PostgreSQL for multi-host) without touching callers.
//!
//! SQLite in WAL mode. Lookups run inline on a small pool of reader
//! connections (they never wait for a commit). Writes either run inline on
//! the writer connection, or, for the hot paths (a turn's messages and
//! usage, a channel's queue), go through [`Store::write`]: a dedicated
//! thread commits whatever is queued in one transaction, so concurrent
//! callers share an fsync and an async caller never blocks its runtime
//! thread. Either way a write returns only once it is durable.

pub mod channel_pairings;
pub mod channels;
mod commit;
mod db;
pub mod e2b;
pub mod exposures;
pub mod keys;
mod migrations;
pub mod releases;
pub mod sandboxes;
pub mod sessions;
pub mod tasks;
pub mod users;

use std::path::Path;
use std::sync::{Arc, MutexGuard};

use commit::Committer;
use db::Db;

pub use channel_pairings::Pairing;
pub use channels::{ChannelRecord, DeliveryAttempt, InboundRecord, NewPart, OutboundRecord};
pub use e2b::E2bRecord;
pub use exposures::ExposureRecord;
pub use keys::SshKey;
pub use releases::{DeployApp, ReleaseRecord, ReleaseStatus};
pub use sandboxes::{SandboxMount, SandboxRecord, SandboxState};
pub use sessions::{MessageRecord, SessionRecord, TokenCounts, TurnEnd, UsageRecord, UsageTotals};
pub use tasks::{CreateTaskError, NewTask, TaskDelivery, TaskRecord, TaskRunRecord};
pub use users::{TokenInfo, TokenOwner, User};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database schema version {found} is newer than this build understands ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("database commit: {0}")]
    Commit(String),
}

pub struct Store {
    db: Arc<Db>,
    committer: Committer,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        Self::init(conn, Some(path))
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(rusqlite::Connection::open_in_memory()?, None)
    }

    fn init(mut conn: rusqlite::Connection, path: Option<&Path>) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Durable once acknowledged: FULL syncs the WAL on every commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        let db = Arc::new(Db::new(conn, path)?);
        let committer = Committer::start(db.clone())
            .map_err(|e| StoreError::Commit(format!("starting the commit thread: {e}")))?;
        Ok(Store { db, committer })
    }

    /// The writer connection, for a write made inline.
    fn conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.db.writer()
    }

    /// A reader connection: sees every committed write, waits for none.
    fn read(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.db.reader()
    }

    /// Run `f` in the commit thread's next transaction (in a savepoint of
    /// its own: an `Err` undoes only what `f` wrote); answered after COMMIT.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.committer.submit(f).await
    }
}

/// Now as RFC 3339 UTC, the one timestamp format stored.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
