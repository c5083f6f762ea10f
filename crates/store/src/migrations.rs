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
    // 4: sandbox names are unique per owner, not globally; a user's agent
    // sandbox is bound to the user (`agent_of`), never found by name.
    // SQLite cannot drop a table constraint: rebuild the table.
    "CREATE TABLE sandboxes_v4 (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        backend      TEXT NOT NULL,
        image        TEXT NOT NULL,
        vcpus        INTEGER NOT NULL,
        memory_mib   INTEGER NOT NULL,
        disk_mib     INTEGER NOT NULL,
        pids         INTEGER NOT NULL,
        state        TEXT NOT NULL,
        state_reason TEXT,
        desired      TEXT NOT NULL,
        runtime      TEXT,
        created_at   TEXT NOT NULL,
        started_at   TEXT,
        updated_at   TEXT NOT NULL,
        owner        TEXT NOT NULL DEFAULT 'admin',
        uid_slot     INTEGER,
        -- set on the agent sandbox of that user (at most one per user)
        agent_of     TEXT UNIQUE,
        UNIQUE (owner, name)
     );
     INSERT INTO sandboxes_v4 (id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state,
            state_reason, desired, runtime, created_at, started_at, updated_at, owner, uid_slot, agent_of)
        SELECT id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state,
            state_reason, desired, runtime, created_at, started_at, updated_at, owner, uid_slot,
            -- the agent sandbox used to be found by the name `agent-<user>`; only
            -- the user's own sandbox of that name was theirs
            CASE WHEN name = 'agent-' || owner THEN owner END
        FROM sandboxes;
     DROP TABLE sandboxes;
     ALTER TABLE sandboxes_v4 RENAME TO sandboxes;
     CREATE UNIQUE INDEX sandboxes_by_uid_slot ON sandboxes(uid_slot);",
    // 5: host directories bound into the sandbox (`--mount`), a JSON array
    // of `{"host","guest","read_only"}` as requested (re-resolved at every
    // start).
    "ALTER TABLE sandboxes ADD COLUMN mounts TEXT NOT NULL DEFAULT '[]';",
    // 6: networking. `network` is 'none' (loopback only, as every sandbox
    // made before was) or 'internet'; `egress` the sandbox's egress policy
    // (JSON, read by the net crate). The address derives from uid_slot.
    "ALTER TABLE sandboxes ADD COLUMN network TEXT NOT NULL DEFAULT 'none';
     ALTER TABLE sandboxes ADD COLUMN egress TEXT NOT NULL DEFAULT '{}';",
    // 7: exposed ports. `label` is the host label PORT-NAME; names are
    // unique only per owner, so it is unique here: one host, one sandbox.
    "CREATE TABLE exposures (
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
        port        INTEGER NOT NULL,
        label       TEXT NOT NULL UNIQUE,
        public      INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (sandbox_id, port)
     );",
    // 8: the named network a sandbox joined (NULL: none); members of one
    // (owner, name) reach each other.
    "ALTER TABLE sandboxes ADD COLUMN net_group TEXT;",
    // 9: users' SSH public keys for the SSH endpoint. A key belongs to one
    // user only (the fingerprint says whose sandboxes a login may reach).
    "CREATE TABLE ssh_keys (
        id          TEXT PRIMARY KEY,
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        -- SHA256:base64 as OpenSSH prints it
        fingerprint TEXT NOT NULL UNIQUE,
        algorithm   TEXT NOT NULL,
        -- `ALGORITHM BASE64` without the comment
        public_key  TEXT NOT NULL,
        label       TEXT,
        created_at  TEXT NOT NULL
     );
     CREATE INDEX ssh_keys_user ON ssh_keys(user);",
    // 10: git-push deploy. `deploy_apps` is a sandbox's deploy target (the
    // app port its URL serves); `releases` its pushed releases, numbered
    // per sandbox. `port` is the port the release's web process listens
    // on inside the sandbox (the app port is proxied to the live one).
    "CREATE TABLE deploy_apps (
        sandbox_id  TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
        port        INTEGER NOT NULL,
        created_at  TEXT NOT NULL
     );
     CREATE TABLE releases (
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
        number      INTEGER NOT NULL,
        commit_sha  TEXT NOT NULL,
        status      TEXT NOT NULL,
        port        INTEGER NOT NULL,
        web         TEXT NOT NULL DEFAULT '',
        log_tail    TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        PRIMARY KEY (sandbox_id, number)
     );",
    // 11: scheduled tasks and their runs. `next_slot` is the unix time of
    // the next due slot (NULL: none left). A run is claimed by inserting
    // its row before the turn starts; UNIQUE (task_id, slot) makes a slot
    // run at most once, across restarts too.
    "CREATE TABLE tasks (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        prompt      TEXT NOT NULL,
        -- 'at' (spec: RFC 3339), 'every' (spec: seconds), 'cron' (spec: expression)
        kind        TEXT NOT NULL,
        spec        TEXT NOT NULL,
        tz          TEXT,
        next_slot   INTEGER,
        created_at  TEXT NOT NULL,
        UNIQUE (owner, name)
     );
     CREATE INDEX tasks_by_next_slot ON tasks(next_slot);
     CREATE TABLE task_runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        slot        INTEGER NOT NULL,
        -- 'running', 'ok' or 'failed'
        state       TEXT NOT NULL,
        result      TEXT,
        error       TEXT,
        -- the run's own conversation (JSON messages), apart from chat sessions
        messages    TEXT,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE (task_id, slot)
     );",
    // 12: prompt-cache tokens of each turn's usage (part of input_tokens)
    "ALTER TABLE usage ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;",
    // 13: sandboxes made through the E2B-compatible API. `e2b_id` is the
    // sandboxID E2B clients use (global, unlike names); `access_token` is
    // the envd access token handed out at create; `end_at` (unix seconds)
    // is when the sandbox times out, `on_timeout` 'kill' or 'pause'.
    "CREATE TABLE e2b_sandboxes (
        sandbox_id   TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
        e2b_id       TEXT NOT NULL UNIQUE,
        template_id  TEXT NOT NULL,
        metadata     TEXT NOT NULL DEFAULT '{}',
        env_vars     TEXT NOT NULL DEFAULT '{}',
        access_token TEXT NOT NULL,
        end_at       INTEGER NOT NULL,
        on_timeout   TEXT NOT NULL DEFAULT 'kill'
     );
     CREATE INDEX e2b_sandboxes_by_end ON e2b_sandboxes(end_at);",
    // 14: chat channels. `channels.config` is the channel's JSON settings
    // (env var names of its credentials, never the credentials). Inbound
    // messages are stored before they are acknowledged, UNIQUE per
    // (channel, message_id) so a redelivery is processed once. Outbound
    // parts are a durable queue ('queued' -> 'sending' -> 'sent'/'failed'/
    // 'unknown'); 'sending' is recorded before the service is called, so a
    // crash mid-send is known on restart. Every attempt is logged.
    "CREATE TABLE channels (
        name        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        owner       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        config      TEXT NOT NULL,
        cursor      TEXT,
        created_at  TEXT NOT NULL
     );
     CREATE TABLE channel_inbound (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        channel     TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
        message_id  TEXT NOT NULL,
        sender      TEXT NOT NULL,
        chat        TEXT NOT NULL,
        -- the normalized message (JSON)
        body        TEXT NOT NULL,
        -- 'pending', 'running', 'done', 'ignored' or 'failed'
        state       TEXT NOT NULL,
        note        TEXT,
        user        TEXT,
        session_id  TEXT,
        received_at TEXT NOT NULL,
        UNIQUE (channel, message_id)
     );
     CREATE INDEX channel_inbound_by_state ON channel_inbound(state);
     CREATE TABLE channel_outbound (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        channel     TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
        inbound_id  INTEGER REFERENCES channel_inbound(id) ON DELETE SET NULL,
        chat        TEXT NOT NULL,
        thread      TEXT,
        part        INTEGER NOT NULL,
        text        TEXT NOT NULL,
        plain       INTEGER NOT NULL DEFAULT 0,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        -- unix milliseconds of the next attempt
        next_at     INTEGER NOT NULL,
        remote_id   TEXT,
        last_error  TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
     );
     CREATE INDEX channel_outbound_due ON channel_outbound(channel, state, next_at);
     CREATE TABLE channel_delivery_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        outbound_id INTEGER NOT NULL REFERENCES channel_outbound(id) ON DELETE CASCADE,
        attempt     INTEGER NOT NULL,
        outcome     TEXT NOT NULL,
        detail      TEXT,
        at          TEXT NOT NULL
     );
     CREATE INDEX channel_delivery_log_by_outbound ON channel_delivery_log(outbound_id);
     CREATE TABLE channel_pairings (
        channel     TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
        sender      TEXT NOT NULL,
        code        TEXT NOT NULL UNIQUE,
        user        TEXT REFERENCES users(name) ON DELETE CASCADE,
        created_at  TEXT NOT NULL,
        approved_at TEXT,
        PRIMARY KEY (channel, sender)
     );
     CREATE TABLE channel_sessions (
        channel     TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
        scope_key   TEXT NOT NULL,
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        PRIMARY KEY (channel, scope_key)
     );",
    // 15: where a task's results go besides its run records: the chat it
    // was scheduled from (JSON {"channel", "chat", "thread"}), or NULL.
    "ALTER TABLE tasks ADD COLUMN deliver_to TEXT;",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by the release before per-owner names (version 3)
    /// keeps every row and column; the owner's `agent-<owner>` becomes their
    /// bound agent sandbox, someone else's sandbox of that name does not.
    #[test]
    fn v3_database_migrates_to_per_owner_names() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        for (i, sql) in MIGRATIONS.iter().take(3).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        for (id, name, owner, slot) in [
            ("i1", "dev", "admin", 0),
            ("i2", "agent-alice", "alice", 1),
            ("i3", "agent-carol", "bob", 2),
        ] {
            conn.execute(
                "INSERT INTO sandboxes (id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state,
                    desired, runtime, created_at, updated_at, owner, uid_slot)
                 VALUES (?1, ?2, 'namespace', 'mini', 2, 256, 1024, 512, 'running', 'running', '{\"pid\":1}',
                    't0', 't1', ?3, ?4)",
                rusqlite::params![id, name, owner, slot],
            )
            .unwrap();
        }
        apply(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        type Row = (String, String, String, i64, Option<String>, String, i64);
        let rows: Vec<Row> = conn
            .prepare("SELECT id, name, owner, uid_slot, agent_of, runtime, vcpus FROM sandboxes ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].4, None);
        assert_eq!(rows[1].4.as_deref(), Some("alice"));
        assert_eq!(rows[2].4, None, "bob's agent-carol is not carol's agent");
        assert_eq!(
            (rows[2].3, rows[2].5.as_str(), rows[2].6),
            (2, "{\"pid\":1}", 2)
        );
        // Same name under another owner now works; the uid slot stays unique.
        conn.execute(
            "INSERT INTO sandboxes (id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state,
                desired, created_at, updated_at, owner, uid_slot)
             VALUES ('i4', 'dev', 'namespace', 'mini', 1, 1, 1, 1, 'stopped', 'stopped', 't', 't', 'bob', 3)",
            [],
        )
        .unwrap();
        assert!(conn
            .execute(
                "INSERT INTO sandboxes (id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state,
                    desired, created_at, updated_at, owner, uid_slot)
                 VALUES ('i5', 'other', 'namespace', 'mini', 1, 1, 1, 1, 'stopped', 'stopped', 't', 't', 'bob', 3)",
                [],
            )
            .is_err());
    }
}
