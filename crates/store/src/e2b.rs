//! What the E2B-compatible API keeps about its sandboxes (migration 12):
//! the E2B sandbox id, template, metadata, env vars, envd access token and
//! the time the sandbox times out.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2bRecord {
    /// The IronClaw sandbox (`sandboxes.id`).
    pub sandbox_id: String,
    /// The sandboxID E2B clients see.
    pub e2b_id: String,
    pub template_id: String,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub access_token: String,
    /// Unix seconds.
    pub end_at: i64,
    /// `kill` or `pause`.
    pub on_timeout: String,
}

const COLUMNS: &str =
    "sandbox_id, e2b_id, template_id, metadata, env_vars, access_token, end_at, on_timeout";

fn map(s: String) -> BTreeMap<String, String> {
    serde_json::from_str(&s).unwrap_or_default()
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<E2bRecord> {
    Ok(E2bRecord {
        sandbox_id: r.get(0)?,
        e2b_id: r.get(1)?,
        template_id: r.get(2)?,
        metadata: map(r.get(3)?),
        env_vars: map(r.get(4)?),
        access_token: r.get(5)?,
        end_at: r.get(6)?,
        on_timeout: r.get(7)?,
    })
}

impl Store {
    pub fn insert_e2b(&self, rec: &E2bRecord) -> Result<(), StoreError> {
        let json = |m: &BTreeMap<String, String>| serde_json::to_string(m).unwrap_or_default();
        let r = self.conn().execute(
            &format!(
                "INSERT INTO e2b_sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                rec.sandbox_id,
                rec.e2b_id,
                rec.template_id,
                json(&rec.metadata),
                json(&rec.env_vars),
                rec.access_token,
                rec.end_at,
                rec.on_timeout
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("sandbox {}", rec.e2b_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn e2b_by_id(&self, e2b_id: &str) -> Result<Option<E2bRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM e2b_sandboxes WHERE e2b_id = ?1"
            ))?
            .query_row([e2b_id], from_row)
            .optional()?)
    }

    /// Every E2B sandbox of `owner`, oldest first.
    pub fn e2b_of(&self, owner: &str) -> Result<Vec<E2bRecord>, StoreError> {
        let conn = self.read();
        let cols = COLUMNS
            .split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = conn.prepare(&format!(
            "SELECT {cols} FROM e2b_sandboxes e JOIN sandboxes s ON s.id = e.sandbox_id
             WHERE s.owner = ?1 ORDER BY s.created_at, e.e2b_id"
        ))?;
        let rows = st.query_map([owner], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The E2B sandboxes whose end time is at or before `now` (unix s).
    pub fn e2b_due(&self, now: i64) -> Result<Vec<E2bRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM e2b_sandboxes WHERE end_at <= ?1 ORDER BY end_at"
        ))?;
        let rows = st.query_map([now], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_e2b_end(&self, sandbox_id: &str, end_at: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE e2b_sandboxes SET end_at = ?2 WHERE sandbox_id = ?1",
            params![sandbox_id, end_at],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{now, SandboxRecord, SandboxState};

    fn sandbox(store: &Store, owner: &str, id: &str) {
        store
            .insert_sandbox(&SandboxRecord {
                id: id.into(),
                name: id.into(),
                backend: "namespace".into(),
                image: "mini".into(),
                vcpus: 1,
                memory_mib: 512,
                disk_mib: 2048,
                pids: 1024,
                state: SandboxState::Running,
                state_reason: None,
                desired_running: true,
                runtime: None,
                created_at: now(),
                started_at: None,
                updated_at: now(),
                owner: owner.into(),
                uid_slot: 0,
                agent_of: None,
                mounts: Vec::new(),
                network: "none".into(),
                egress: "{}".into(),
                net_group: None,
            })
            .unwrap();
    }

    #[test]
    fn records_round_trip_and_go_with_their_sandbox() {
        let store = Store::open_in_memory().unwrap();
        store.add_user("alice", false).unwrap();
        sandbox(&store, "alice", "s1");
        let rec = E2bRecord {
            sandbox_id: "s1".into(),
            e2b_id: "ix1".into(),
            template_id: "base".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
            env_vars: BTreeMap::new(),
            access_token: "t".into(),
            end_at: 100,
            on_timeout: "kill".into(),
        };
        store.insert_e2b(&rec).unwrap();
        assert!(matches!(
            store.insert_e2b(&rec),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.e2b_by_id("ix1").unwrap().unwrap(), rec);
        assert_eq!(store.e2b_of("alice").unwrap(), vec![rec.clone()]);
        assert!(store.e2b_of("bob").unwrap().is_empty());
        assert!(store.e2b_due(99).unwrap().is_empty());
        store.set_e2b_end("s1", 50).unwrap();
        assert_eq!(store.e2b_due(99).unwrap().len(), 1);
        store.delete_sandbox("s1").unwrap();
        assert!(store.e2b_by_id("ix1").unwrap().is_none());
    }
}
