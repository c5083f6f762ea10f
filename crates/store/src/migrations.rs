//! Schema migrations, applied in order; `PRAGMA user_version` records how
//! many ran. Never edit a released migration: append a new one.

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: sandboxes
    "CREATE TABLE sandboxes (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        backend      TEXT NOT NULL,
        image        TEXT NOT NULL,
        vcpus        INTEGER NOT NULL,
        memory_mib   INTEGER NOT NULL,
        disk_mib     INTEGER NOT NULL,
        pids         INTEGER NOT NULL,
        state        TEXT NOT NULL,
        state_reason TEXT,
        -- what the daemon wants: 'running' or 'stopped'; reconciliation uses it
        desired      TEXT NOT NULL,
        runtime      TEXT,
        created_at   TEXT NOT NULL,
        started_at   TEXT,
        updated_at   TEXT NOT NULL
    );",
];

pub fn apply(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
