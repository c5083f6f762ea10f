//! Everything IronClaw persists, behind one type ([`Store`]) so the backing
//! database can change (PostgreSQL for multi-host) without touching callers.
//!
//! SQLite in WAL mode; one connection behind a mutex. Queries are small and
//! indexed, so callers run them inline rather than on a blocking pool.

pub mod e2b;
pub mod channel_pairings;
pub mod channels;
pub mod exposures;
pub mod keys;
mod migrations;
pub mod releases;
pub mod sandboxes;
pub mod sessions;
pub mod tasks;
pub mod users;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub use e2b::E2bRecord;
pub use channel_pairings::Pairing;
pub use channels::{ChannelRecord, DeliveryAttempt, InboundRecord, NewPart, OutboundRecord};
pub use exposures::ExposureRecord;
pub use keys::SshKey;
pub use releases::{DeployApp, ReleaseRecord, ReleaseStatus};
pub use sandboxes::{SandboxMount, SandboxRecord, SandboxState};
pub use sessions::{MessageRecord, SessionRecord, TokenCounts, UsageTotals};
pub use tasks::{CreateTaskError, NewTask, TaskRecord, TaskRunRecord};
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
}

pub struct Store {
    conn: Mutex<rusqlite::Connection>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(rusqlite::Connection::open_in_memory()?)
    }

    fn init(mut conn: rusqlite::Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Durable once acknowledged: FULL syncs the WAL on every commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
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
