//! Exposed ports: port PORT of a sandbox served at host label PORT-NAME.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExposureRecord {
    pub sandbox_id: String,
    pub port: u16,
    /// `PORT-NAME`, unique among all exposures (see migration 7).
    pub label: String,
    /// Reachable without a token.
    pub public: bool,
    pub created_at: String,
}

const COLUMNS: &str = "sandbox_id, port, label, public, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ExposureRecord> {
    Ok(ExposureRecord {
        sandbox_id: r.get(0)?,
        port: r.get(1)?,
        label: r.get(2)?,
        public: r.get::<_, i64>(3)? != 0,
        created_at: r.get(4)?,
    })
}

impl Store {
    /// Expose `port` of the sandbox under `label`, or change whether an
    /// existing exposure is public. `true` when it is new. A label another
    /// sandbox holds is a `Conflict`.
    pub fn put_exposure(
        &self,
        sandbox_id: &str,
        port: u16,
        label: &str,
        public: bool,
    ) -> Result<(ExposureRecord, bool), StoreError> {
        let conn = self.conn();
        let updated = conn.execute(
            "UPDATE exposures SET public = ?3 WHERE sandbox_id = ?1 AND port = ?2",
            params![sandbox_id, port, public as i64],
        )?;
        let created = updated == 0;
        if created {
            let r = conn.execute(
                &format!("INSERT INTO exposures ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![sandbox_id, port, label, public as i64, now()],
            );
            match r {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::Conflict(format!("exposure '{label}'")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let rec = conn.query_row(
            &format!("SELECT {COLUMNS} FROM exposures WHERE sandbox_id = ?1 AND port = ?2"),
            params![sandbox_id, port],
            from_row,
        )?;
        Ok((rec, created))
    }

    /// The exposure served at host label `label`, if any.
    pub fn exposure_by_label(&self, label: &str) -> Result<Option<ExposureRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM exposures WHERE label = ?1"))?
            .query_row([label], from_row)
            .optional()?)
    }

    /// The sandbox's exposures by port.
    pub fn exposures_of(&self, sandbox_id: &str) -> Result<Vec<ExposureRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM exposures WHERE sandbox_id = ?1 ORDER BY port"
        ))?;
        let rows = st.query_map([sandbox_id], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every exposure (the idle reaper's list).
    pub fn exposures(&self) -> Result<Vec<ExposureRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM exposures ORDER BY sandbox_id, port"
        ))?;
        let rows = st.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Unexpose; `false` when that port was not exposed.
    pub fn delete_exposure(&self, sandbox_id: &str, port: u16) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM exposures WHERE sandbox_id = ?1 AND port = ?2",
            params![sandbox_id, port],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::{now, SandboxRecord, SandboxState, Store, StoreError};

    fn sandbox(store: &Store, owner: &str, name: &str) -> String {
        let id = format!("id-{owner}-{name}");
        store
            .insert_sandbox(&SandboxRecord {
                id: id.clone(),
                name: name.into(),
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
                network: "internet".into(),
                egress: "{}".into(),
                net_group: None,
            })
            .unwrap();
        id
    }

    #[test]
    fn labels_are_global_and_go_with_their_sandbox() {
        let s = Store::open_in_memory().unwrap();
        let a = sandbox(&s, "alice", "dev");
        let b = sandbox(&s, "bob", "dev");
        let (e, created) = s.put_exposure(&a, 8080, "8080-dev", false).unwrap();
        assert!(created && !e.public);
        let (e, created) = s.put_exposure(&a, 8080, "8080-dev", true).unwrap();
        assert!(!created && e.public, "re-exposing updates `public`");
        assert!(matches!(
            s.put_exposure(&b, 8080, "8080-dev", false),
            Err(StoreError::Conflict(_))
        ));
        s.put_exposure(&b, 9090, "9090-dev", false).unwrap();
        assert_eq!(
            s.exposure_by_label("8080-dev").unwrap().unwrap().sandbox_id,
            a
        );
        assert_eq!(s.exposures().unwrap().len(), 2);
        assert!(s.delete_exposure(&a, 8080).unwrap());
        assert!(!s.delete_exposure(&a, 8080).unwrap());
        // Removing the sandbox removes its exposures.
        s.delete_sandbox(&b).unwrap();
        assert!(s.exposures().unwrap().is_empty());
        assert!(s.exposures_of(&b).unwrap().is_empty());
    }
}
