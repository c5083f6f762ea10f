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
    // 2: users, their tokens, chat sessions and history, usage
    "ALTER TABLE sandboxes ADD COLUMN owner TEXT NOT NULL DEFAULT 'admin';
     CREATE TABLE users (
        name        TEXT PRIMARY KEY,
        admin       INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL
     );
     INSERT INTO users (name, admin, created_at) VALUES ('admin', 1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
     CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        -- SHA-256 of the token: the token itself is shown once and never stored
        hash        TEXT NOT NULL UNIQUE,
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        label       TEXT,
        created_at  TEXT NOT NULL
     );
     CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        agent       TEXT NOT NULL,
        title       TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
     );
     CREATE INDEX sessions_by_user ON sessions(user, updated_at);
     CREATE TABLE messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        role        TEXT NOT NULL,
        -- provider-neutral content blocks, JSON
        content     TEXT NOT NULL,
        -- set when a compaction summary replaced this message in the context
        summarized_by INTEGER,
        created_at  TEXT NOT NULL
     );
     CREATE INDEX messages_by_session ON messages(session_id, id);
     CREATE TABLE usage (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id    TEXT NOT NULL,
        user          TEXT NOT NULL,
        model         TEXT NOT NULL,
        input_tokens  INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd      REAL NOT NULL,
        created_at    TEXT NOT NULL
     );
     CREATE INDEX usage_by_user ON usage(user);
     CREATE INDEX usage_by_session ON usage(session_id);",
    // 3: each sandbox's slot of host uids/gids for its user namespace,
    // allocated at insert and freed with the row
    "ALTER TABLE sandboxes ADD COLUMN uid_slot INTEGER;
     UPDATE sandboxes SET uid_slot = (SELECT COUNT(*) FROM sandboxes o WHERE o.rowid < sandboxes.rowid);
     CREATE UNIQUE INDEX sandboxes_by_uid_slot ON sandboxes(uid_slot);",
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
