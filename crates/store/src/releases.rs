//! Git-push deploy: a sandbox's deploy target ([`DeployApp`]) and its
//! numbered releases ([`ReleaseRecord`]).

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployApp {
    pub sandbox_id: String,
    /// The port the app's URL serves (the live release behind it).
    pub port: u16,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStatus {
    Building,
    Live,
    Failed,
    RolledBack,
    Superseded,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Building => "building",
            ReleaseStatus::Live => "live",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::RolledBack => "rolled-back",
            ReleaseStatus::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> ReleaseStatus {
        match s {
            "building" => ReleaseStatus::Building,
            "live" => ReleaseStatus::Live,
            "rolled-back" => ReleaseStatus::RolledBack,
            "superseded" => ReleaseStatus::Superseded,
            _ => ReleaseStatus::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseRecord {
    pub sandbox_id: String,
    pub number: u32,
    pub commit_sha: String,
    pub status: ReleaseStatus,
    /// Where its web process listens inside the sandbox.
    pub port: u16,
    /// The Procfile's `web:` command.
    pub web: String,
    pub log_tail: String,
    pub created_at: String,
}

const COLUMNS: &str = "sandbox_id, number, commit_sha, status, port, web, log_tail, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ReleaseRecord> {
    Ok(ReleaseRecord {
        sandbox_id: r.get(0)?,
        number: r.get(1)?,
        commit_sha: r.get(2)?,
        status: ReleaseStatus::parse(&r.get::<_, String>(3)?),
        port: r.get(4)?,
        web: r.get(5)?,
        log_tail: r.get(6)?,
        created_at: r.get(7)?,
    })
}

impl Store {
    /// Make the sandbox a deploy target serving `port` (idempotent; an
    /// existing target keeps its port, which is returned).
    pub fn put_deploy_app(&self, sandbox_id: &str, port: u16) -> Result<DeployApp, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO deploy_apps (sandbox_id, port, created_at) VALUES (?1, ?2, ?3)",
            params![sandbox_id, port, now()],
        )?;
        Ok(conn.query_row(
            "SELECT sandbox_id, port, created_at FROM deploy_apps WHERE sandbox_id = ?1",
            [sandbox_id],
            |r| {
                Ok(DeployApp {
                    sandbox_id: r.get(0)?,
                    port: r.get(1)?,
                    created_at: r.get(2)?,
                })
            },
        )?)
    }

    pub fn deploy_app(&self, sandbox_id: &str) -> Result<Option<DeployApp>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(
                "SELECT sandbox_id, port, created_at FROM deploy_apps WHERE sandbox_id = ?1",
            )?
            .query_row([sandbox_id], |r| {
                Ok(DeployApp {
                    sandbox_id: r.get(0)?,
                    port: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Record a new release (status `building`) numbered one past the last.
    pub fn new_release(
        &self,
        sandbox_id: &str,
        commit_sha: &str,
        port_base: u16,
    ) -> Result<ReleaseRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let last: u32 = tx.query_row(
            "SELECT COALESCE(MAX(number), 0) FROM releases WHERE sandbox_id = ?1",
            [sandbox_id],
            |r| r.get(0),
        )?;
        let number = last + 1;
        // Ports cycle through 1000 so a long history never overflows.
        let port = port_base + (number % 1000) as u16;
        tx.execute(
            &format!(
                "INSERT INTO releases ({COLUMNS}) VALUES (?1, ?2, ?3, 'building', ?4, '', '', ?5)"
            ),
            params![sandbox_id, number, commit_sha, port, now()],
        )?;
        let r = tx.query_row(
            &format!("SELECT {COLUMNS} FROM releases WHERE sandbox_id = ?1 AND number = ?2"),
            params![sandbox_id, number],
            from_row,
        )?;
        tx.commit()?;
        Ok(r)
    }

    pub fn set_release(
        &self,
        sandbox_id: &str,
        number: u32,
        status: ReleaseStatus,
        web: Option<&str>,
        log_tail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE releases SET status = ?3, web = COALESCE(?4, web), log_tail = COALESCE(?5, log_tail)
             WHERE sandbox_id = ?1 AND number = ?2",
            params![sandbox_id, number, status.as_str(), web, log_tail],
        )?;
        Ok(())
    }

    /// Make `number` the live release: the live one before becomes
    /// `previous` (superseded or rolled back), in one transaction.
    pub fn switch_release(
        &self,
        sandbox_id: &str,
        number: u32,
        previous: ReleaseStatus,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE releases SET status = ?2 WHERE sandbox_id = ?1 AND status = 'live'",
            params![sandbox_id, previous.as_str()],
        )?;
        tx.execute(
            "UPDATE releases SET status = 'live' WHERE sandbox_id = ?1 AND number = ?2",
            params![sandbox_id, number],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Releases of a sandbox, oldest first.
    pub fn releases(&self, sandbox_id: &str) -> Result<Vec<ReleaseRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM releases WHERE sandbox_id = ?1 ORDER BY number"
        ))?;
        let rows = st.query_map([sandbox_id], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn live_release(&self, sandbox_id: &str) -> Result<Option<ReleaseRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM releases WHERE sandbox_id = ?1 AND status = 'live'"
            ))?
            .query_row([sandbox_id], from_row)
            .optional()?)
    }

    /// Releases left `building` by a daemon that stopped mid-push.
    pub fn fail_building_releases(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE releases SET status = 'failed', log_tail = log_tail || 'the daemon stopped during the release'
             WHERE status = 'building'",
            [],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_number_and_switch() {
        let s = Store::open_in_memory().unwrap();
        s.conn()
            .execute(
                "INSERT INTO sandboxes (id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state,
                    desired, created_at, updated_at, owner, uid_slot)
                 VALUES ('i1', 'app', 'namespace', 'mini', 1, 1, 1, 1, 'stopped', 'stopped', 't', 't', 'bob', 1)",
                [],
            )
            .unwrap();
        assert_eq!(s.put_deploy_app("i1", 8000).unwrap().port, 8000);
        assert_eq!(s.put_deploy_app("i1", 9000).unwrap().port, 8000);
        let a = s.new_release("i1", "aaa", 20000).unwrap();
        let b = s.new_release("i1", "bbb", 20000).unwrap();
        assert_eq!((a.number, b.number, b.port), (1, 2, 20002));
        s.switch_release("i1", 1, ReleaseStatus::Superseded)
            .unwrap();
        s.switch_release("i1", 2, ReleaseStatus::Superseded)
            .unwrap();
        let all = s.releases("i1").unwrap();
        assert_eq!(all[0].status, ReleaseStatus::Superseded);
        assert_eq!(s.live_release("i1").unwrap().unwrap().number, 2);
        assert_eq!(s.fail_building_releases().unwrap(), 0);
    }
}
