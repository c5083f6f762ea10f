//! Sandbox records.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Creating,
    Running,
    Stopped,
    Crashed,
    Error,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
            SandboxState::Crashed => "crashed",
            SandboxState::Error => "error",
        }
    }

    fn parse(s: &str) -> SandboxState {
        match s {
            "creating" => SandboxState::Creating,
            "running" => SandboxState::Running,
            "stopped" => SandboxState::Stopped,
            "crashed" => SandboxState::Crashed,
            _ => SandboxState::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub backend: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub pids: u64,
    pub state: SandboxState,
    pub state_reason: Option<String>,
    /// True when the sandbox should be running (it was started and not
    /// stopped by a user); a restarted daemon brings these back.
    pub desired_running: bool,
    /// Backend-specific runtime handle (JSON), present while running.
    pub runtime: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub updated_at: String,
    /// The user the sandbox belongs to ("admin" for ones made through the admin token).
    pub owner: String,
    /// Which block of host uids/gids its user namespace maps to: distinct
    /// for every sandbox, allocated by [`Store::insert_sandbox`] (the value
    /// passed in is ignored) and freed when the record is deleted.
    pub uid_slot: u32,
    /// Set on a user's agent sandbox: the user whose agent works in it (at
    /// most one per user). The agent's sandbox is found through this,
    /// never by name.
    pub agent_of: Option<String>,
    /// Host directories bound into the sandbox, as requested (the host
    /// path is resolved and checked again at every start).
    pub mounts: Vec<SandboxMount>,
    /// `none` or `internet` (see the net crate's `NetworkMode`).
    pub network: String,
    /// The egress policy, JSON (the net crate's `EgressPolicy`).
    pub egress: String,
    /// The named network it joined, within its owner's namespace.
    pub net_group: Option<String>,
}

/// A host directory in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxMount {
    /// The host path as requested (absolute, no `..`).
    pub host: String,
    /// Where it appears inside (absolute, normalized).
    pub guest: String,
    pub read_only: bool,
}

const COLUMNS: &str = "id, name, backend, image, vcpus, memory_mib, disk_mib, pids, state, state_reason, desired, runtime, created_at, started_at, updated_at, owner, agent_of, uid_slot, mounts, network, egress, net_group";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SandboxRecord> {
    Ok(SandboxRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        backend: r.get(2)?,
        image: r.get(3)?,
        vcpus: r.get(4)?,
        memory_mib: r.get::<_, i64>(5)? as u64,
        disk_mib: r.get::<_, i64>(6)? as u64,
        pids: r.get::<_, i64>(7)? as u64,
        state: SandboxState::parse(&r.get::<_, String>(8)?),
        state_reason: r.get(9)?,
        desired_running: r.get::<_, String>(10)? == "running",
        runtime: r.get(11)?,
        created_at: r.get(12)?,
        started_at: r.get(13)?,
        updated_at: r.get(14)?,
        owner: r.get(15)?,
        agent_of: r.get(16)?,
        uid_slot: r.get::<_, Option<u32>>(17)?.unwrap_or(0),
        mounts: serde_json::from_str(&r.get::<_, String>(18)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(18, rusqlite::types::Type::Text, Box::new(e))
        })?,
        network: r.get(19)?,
        egress: r.get(20)?,
        net_group: r.get(21)?,
    })
}

impl Store {
    pub fn insert_sandbox(&self, s: &SandboxRecord) -> Result<(), StoreError> {
        let r = self.conn().execute(
            // The lowest free slot, in the same statement: the unique index
            // makes a concurrent insert fail rather than share a slot.
            &format!(
                "INSERT INTO sandboxes ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,
                 (SELECT MIN(s) FROM (SELECT 0 AS s UNION ALL SELECT uid_slot + 1 FROM sandboxes WHERE uid_slot IS NOT NULL)
                  WHERE s NOT IN (SELECT uid_slot FROM sandboxes WHERE uid_slot IS NOT NULL)), ?18, ?19, ?20, ?21)"
            ),
            params![
                s.id,
                s.name,
                s.backend,
                s.image,
                s.vcpus,
                s.memory_mib as i64,
                s.disk_mib as i64,
                s.pids as i64,
                s.state.as_str(),
                s.state_reason,
                if s.desired_running { "running" } else { "stopped" },
                s.runtime,
                s.created_at,
                s.started_at,
                s.updated_at,
                s.owner,
                s.agent_of,
                serde_json::to_string(&s.mounts).unwrap_or_else(|_| "[]".into()),
                s.network,
                s.egress,
                s.net_group,
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                if let Some(user) = &s.agent_of {
                    if self.agent_sandbox(user)?.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "agent sandbox of user '{user}'"
                        )));
                    }
                }
                Err(StoreError::Conflict(format!("sandbox '{}'", s.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The sandbox `name` in `owner`'s namespace. Another user's sandbox
    /// of that name is "not found", exactly like a name nobody has.
    pub fn sandbox(&self, owner: &str, name: &str) -> Result<SandboxRecord, StoreError> {
        self.read()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM sandboxes WHERE owner = ?1 AND name = ?2"
            ))?
            .query_row([owner, name], from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("sandbox '{name}'")))
    }

    /// A sandbox by its global id (internal: never taken from a request).
    pub fn sandbox_by_id(&self, id: &str) -> Result<SandboxRecord, StoreError> {
        self.read()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"))?
            .query_row([id], from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("sandbox {id}")))
    }

    /// The sandbox bound to `user` as their agent's, if it exists yet.
    pub fn agent_sandbox(&self, user: &str) -> Result<Option<SandboxRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM sandboxes WHERE agent_of = ?1"
            ))?
            .query_row([user], from_row)
            .optional()?)
    }

    /// Every sandbox of every owner (admin listings, reconciliation).
    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sandboxes ORDER BY owner, name"
        ))?;
        let rows = st.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The sandboxes of one owner.
    pub fn sandboxes_of(&self, owner: &str) -> Result<Vec<SandboxRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE owner = ?1 ORDER BY name"
        ))?;
        let rows = st
            .query_map([owner], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn count_sandboxes_using_image(&self, image: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .read()
            .prepare_cached("SELECT COUNT(*) FROM sandboxes WHERE image = ?1")?
            .query_row([image], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Record a state change of the sandbox with that id. `runtime` is kept
    /// only while running.
    pub fn set_sandbox_state(
        &self,
        id: &str,
        state: SandboxState,
        reason: Option<&str>,
        runtime: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now();
        let started = if state == SandboxState::Running {
            Some(now.clone())
        } else {
            None
        };
        let n = self.conn().execute(
            "UPDATE sandboxes SET state = ?2, state_reason = ?3, runtime = ?4,
                 started_at = COALESCE(?5, started_at), updated_at = ?6 WHERE id = ?1",
            params![id, state.as_str(), reason, runtime, started, now],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("sandbox {id}")));
        }
        Ok(())
    }

    pub fn set_sandbox_desired(&self, id: &str, running: bool) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sandboxes SET desired = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, if running { "running" } else { "stopped" }, now()],
        )?;
        Ok(())
    }

    /// Replace the sandbox's egress policy (JSON).
    pub fn set_sandbox_egress(&self, id: &str, egress: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE sandboxes SET egress = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, egress, now()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("sandbox {id}")));
        }
        Ok(())
    }

    /// Delete the sandbox with that id.
    pub fn delete_sandbox(&self, id: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM sandboxes WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("sandbox {id}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> SandboxRecord {
        owned("admin", name)
    }

    fn owned(owner: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: format!("id-{owner}-{name}"),
            name: name.into(),
            backend: "namespace".into(),
            image: "mini".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_mib: 2048,
            pids: 1024,
            state: SandboxState::Creating,
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
        }
    }

    #[test]
    fn mounts_round_trip() {
        let s = Store::open_in_memory().unwrap();
        let m = SandboxMount {
            host: "/srv/data/a".into(),
            guest: "/data".into(),
            read_only: true,
        };
        s.insert_sandbox(&SandboxRecord {
            mounts: vec![m.clone()],
            ..record("dev")
        })
        .unwrap();
        s.insert_sandbox(&record("plain")).unwrap();
        assert_eq!(s.sandbox("admin", "dev").unwrap().mounts, vec![m]);
        assert!(s.sandbox("admin", "plain").unwrap().mounts.is_empty());
    }

    #[test]
    fn crud_and_conflicts() {
        let s = Store::open_in_memory().unwrap();
        s.insert_sandbox(&record("dev")).unwrap();
        assert!(matches!(
            s.insert_sandbox(&SandboxRecord {
                id: "other-id".into(),
                ..record("dev")
            }),
            Err(StoreError::Conflict(_))
        ));
        let id = s.sandbox("admin", "dev").unwrap().id;
        s.set_sandbox_state(&id, SandboxState::Running, None, Some("{}"))
            .unwrap();
        let r = s.sandbox("admin", "dev").unwrap();
        assert_eq!(r.state, SandboxState::Running);
        assert!(r.started_at.is_some());
        assert_eq!(s.sandbox_by_id(&id).unwrap(), r);
        assert_eq!(s.count_sandboxes_using_image("mini").unwrap(), 1);
        s.set_sandbox_desired(&id, false).unwrap();
        assert!(!s.sandbox("admin", "dev").unwrap().desired_running);
        assert!(matches!(
            s.sandbox("admin", "nope"),
            Err(StoreError::NotFound(_))
        ));
        s.delete_sandbox(&id).unwrap();
        assert!(s.sandboxes().unwrap().is_empty());
        assert!(matches!(
            s.delete_sandbox(&id),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn names_are_unique_per_owner() {
        let s = Store::open_in_memory().unwrap();
        s.insert_sandbox(&owned("alice", "dev")).unwrap();
        // Another owner's namespace: the same name is a different sandbox.
        s.insert_sandbox(&owned("bob", "dev")).unwrap();
        assert!(matches!(
            s.insert_sandbox(&SandboxRecord {
                id: "again".into(),
                ..owned("bob", "dev")
            }),
            Err(StoreError::Conflict(_))
        ));
        let a = s.sandbox("alice", "dev").unwrap();
        let b = s.sandbox("bob", "dev").unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!((a.owner.as_str(), b.owner.as_str()), ("alice", "bob"));
        // Another owner's sandbox reads exactly like a missing one.
        let theirs = s.sandbox("carol", "dev").unwrap_err().to_string();
        let missing = s.sandbox("carol", "nope-dev").unwrap_err().to_string();
        assert_eq!(theirs, "sandbox 'dev' not found");
        assert_eq!(missing, "sandbox 'nope-dev' not found");
        assert_eq!(s.sandboxes_of("bob").unwrap(), vec![b.clone()]);
        assert_eq!(s.sandboxes().unwrap().len(), 2);
        // Deleting one leaves the other owner's alone.
        s.delete_sandbox(&a.id).unwrap();
        assert!(s.sandbox("alice", "dev").is_err());
        assert_eq!(s.sandbox("bob", "dev").unwrap(), b);
    }

    #[test]
    fn the_agent_sandbox_is_bound_not_named() {
        let s = Store::open_in_memory().unwrap();
        // Bob names one of his sandboxes after Alice's agent: it stays his.
        s.insert_sandbox(&owned("bob", "agent-alice")).unwrap();
        assert!(s.agent_sandbox("alice").unwrap().is_none());
        assert!(s.agent_sandbox("bob").unwrap().is_none());
        let mine = SandboxRecord {
            agent_of: Some("alice".into()),
            ..owned("alice", "agent-alice")
        };
        s.insert_sandbox(&mine).unwrap();
        let bound = s.agent_sandbox("alice").unwrap().unwrap();
        assert_eq!(
            (bound.owner.as_str(), bound.id.as_str()),
            ("alice", mine.id.as_str())
        );
        // One agent sandbox per user.
        let second = SandboxRecord {
            id: "second".into(),
            agent_of: Some("alice".into()),
            ..owned("alice", "agent-alice-2")
        };
        assert!(matches!(
            s.insert_sandbox(&second),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn uid_slots_are_distinct_and_reused_after_delete() {
        let s = Store::open_in_memory().unwrap();
        for n in ["a", "b", "c"] {
            s.insert_sandbox(&record(n)).unwrap();
        }
        let slot = |n: &str| s.sandbox("admin", n).unwrap().uid_slot;
        assert_eq!((slot("a"), slot("b"), slot("c")), (0, 1, 2));
        s.delete_sandbox(&record("b").id).unwrap();
        s.insert_sandbox(&record("d")).unwrap();
        assert_eq!(slot("d"), 1, "the freed slot is taken first");
        s.insert_sandbox(&record("e")).unwrap();
        assert_eq!(slot("e"), 3);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Store::open(&path)
            .unwrap()
            .insert_sandbox(&record("keep"))
            .unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(s.sandbox("admin", "keep").unwrap().name, "keep");
    }
}
