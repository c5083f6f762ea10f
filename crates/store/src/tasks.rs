//! Scheduled tasks and their runs.
//!
//! A task is a prompt plus a schedule (`kind`, `spec`, `tz`); the daemon
//! computes slots, the store only keeps `next_slot` (unix seconds) and
//! guarantees each slot is claimed once: [`Store::claim_run`] inserts the
//! run row (UNIQUE (task_id, slot)) and advances `next_slot` in one
//! transaction, before the turn starts.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub prompt: String,
    /// `at`, `every` or `cron`.
    pub kind: String,
    /// RFC 3339 time, seconds, or a cron expression.
    pub spec: String,
    pub tz: Option<String>,
    /// Unix seconds of the next slot; None when none is left.
    pub next_slot: Option<i64>,
    pub created_at: String,
    /// The chat its results are posted to, if it was scheduled from one.
    pub deliver_to: Option<TaskDelivery>,
}

/// A chat of a channel that a task's results are posted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TaskDelivery {
    pub channel: String,
    pub chat: String,
    pub thread: Option<String>,
}

/// What creating a task needs.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub name: &'a str,
    pub prompt: &'a str,
    pub kind: &'a str,
    pub spec: &'a str,
    pub tz: Option<&'a str>,
    pub next_slot: Option<i64>,
    pub deliver_to: Option<&'a TaskDelivery>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRunRecord {
    pub id: i64,
    pub task_id: String,
    /// Unix seconds of the slot this run is for.
    pub slot: i64,
    /// `running`, `ok` or `failed`.
    pub state: String,
    /// The final text of the turn.
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

/// Runs kept per task, newest first; older ones are deleted at each claim.
pub const KEEP_RUNS: u32 = 100;

const COLUMNS: &str = "id, owner, name, prompt, kind, spec, tz, next_slot, created_at, deliver_to";

fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        prompt: r.get(3)?,
        kind: r.get(4)?,
        spec: r.get(5)?,
        tz: r.get(6)?,
        next_slot: r.get(7)?,
        created_at: r.get(8)?,
        deliver_to: r
            .get::<_, Option<String>>(9)?
            .and_then(|j| serde_json::from_str(&j).ok()),
    })
}

const RUN_COLUMNS: &str = "id, task_id, slot, state, result, error, started_at, finished_at";

fn run_row(r: &Row<'_>) -> rusqlite::Result<TaskRunRecord> {
    Ok(TaskRunRecord {
        id: r.get(0)?,
        task_id: r.get(1)?,
        slot: r.get(2)?,
        state: r.get(3)?,
        result: r.get(4)?,
        error: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
    })
}

/// Why [`Store::create_task`] refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateTaskError {
    #[error("the owner has {0} tasks")]
    OwnerLimit(u64),
    #[error("there are {0} tasks in all")]
    TotalLimit(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Insert a task unless its owner has `max_per_owner` or everyone has
    /// `max_total` already (checked in the same transaction, so two racing
    /// creates cannot both pass). A taken name is a `Conflict`.
    pub fn create_task(
        &self,
        t: &NewTask<'_>,
        max_per_owner: u64,
        max_total: u64,
    ) -> Result<TaskRecord, CreateTaskError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
            Ok(tx.query_row(sql, p, |r| r.get::<_, i64>(0))? as u64)
        };
        let mine = count("SELECT COUNT(*) FROM tasks WHERE owner = ?1", &[&t.owner])?;
        if mine >= max_per_owner {
            return Err(CreateTaskError::OwnerLimit(mine));
        }
        let all = count("SELECT COUNT(*) FROM tasks", &[])?;
        if all >= max_total {
            return Err(CreateTaskError::TotalLimit(all));
        }
        let r = tx.execute(
            &format!(
                "INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                t.id,
                t.owner,
                t.name,
                t.prompt,
                t.kind,
                t.spec,
                t.tz,
                t.next_slot,
                now(),
                t.deliver_to
                    .map(|d| serde_json::to_string(d).unwrap_or_default())
            ],
        );
        match r {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::Conflict(format!("task '{}'", t.name)).into());
            }
            Err(e) => return Err(StoreError::from(e).into()),
        }
        tx.commit().map_err(StoreError::from)?;
        drop(conn);
        Ok(self.task(t.owner, t.name)?)
    }

    /// `owner`'s task `name`; another owner's is not found.
    pub fn task(&self, owner: &str, name: &str) -> Result<TaskRecord, StoreError> {
        self.read()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM tasks WHERE owner = ?1 AND name = ?2"
            ))?
            .query_row(params![owner, name], task_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("task '{name}'")))
    }

    pub fn task_by_id(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?
            .query_row([id], task_row)
            .optional()?)
    }

    pub fn tasks(&self, owner: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE owner = ?1 ORDER BY name"
        ))?;
        let rows = st
            .query_map([owner], task_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Remove `owner`'s task and its runs.
    pub fn delete_task(&self, owner: &str, name: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "DELETE FROM tasks WHERE owner = ?1 AND name = ?2",
            params![owner, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("task '{name}'")));
        }
        Ok(())
    }

    /// Tasks with a slot at or before `until`, earliest first.
    pub fn due_tasks(&self, until: i64) -> Result<Vec<TaskRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE next_slot IS NOT NULL AND next_slot <= ?1 ORDER BY next_slot"
        ))?;
        let rows = st
            .query_map([until], task_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The earliest slot of any task.
    pub fn earliest_slot(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .read()
            .prepare_cached("SELECT MIN(next_slot) FROM tasks")?
            .query_row([], |r| r.get(0))?)
    }

    /// Claim `slot` of the task and move its `next_slot` from `slot` to
    /// `next`, atomically. `Some(run id)` when this call claimed it; None
    /// when the slot was claimed before or the task moved on or is gone
    /// (then nothing changes).
    pub fn claim_run(
        &self,
        task_id: &str,
        slot: i64,
        next: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let moved = tx.execute(
            "UPDATE tasks SET next_slot = ?3 WHERE id = ?1 AND next_slot = ?2",
            params![task_id, slot, next],
        )?;
        if moved == 0 {
            return Ok(None);
        }
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO task_runs (task_id, slot, state, started_at) VALUES (?1, ?2, 'running', ?3)",
            params![task_id, slot, now()],
        )?;
        let id = (inserted == 1).then(|| tx.last_insert_rowid());
        // Keep the newest runs only (a task every second would otherwise
        // grow without end). Safe for exactly-once: `next_slot` only moves
        // forward, so an old slot can never be claimed again.
        tx.execute(
            "DELETE FROM task_runs WHERE task_id = ?1 AND id NOT IN
                (SELECT id FROM task_runs WHERE task_id = ?1 ORDER BY slot DESC LIMIT ?2)",
            params![task_id, KEEP_RUNS],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Move the task's `next_slot` from `slot` to `next` without a run
    /// (a slot skipped while the daemon was down).
    pub fn skip_slot(&self, task_id: &str, slot: i64, next: Option<i64>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE tasks SET next_slot = ?3 WHERE id = ?1 AND next_slot = ?2",
            params![task_id, slot, next],
        )?;
        Ok(())
    }

    /// Record how a claimed run ended and, in the same transaction, queue
    /// `post` (a channel and the parts of the message) so a result is
    /// posted once or not at all, whatever happens to the daemon. A run
    /// whose task was removed meanwhile is gone; that is not an error, and
    /// neither is a channel removed meanwhile (nothing is posted). Whether
    /// the message was queued.
    pub fn finish_run(
        &self,
        run_id: i64,
        result: Result<&str, &str>,
        messages: Option<&serde_json::Value>,
        post: Option<(&str, &[crate::NewPart<'_>])>,
    ) -> Result<bool, StoreError> {
        let (state, text, error) = match result {
            Ok(t) => ("ok", Some(t), None),
            Err(e) => ("failed", None, Some(e)),
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE task_runs SET state = ?2, result = ?3, error = ?4, messages = ?5, finished_at = ?6
             WHERE id = ?1",
            params![run_id, state, text, error, messages.map(|m| m.to_string()), now()],
        )?;
        let mut posted = false;
        if let (1, Some((channel, parts))) = (n, post) {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM channels WHERE name = ?1)",
                [channel],
                |r| r.get(0),
            )?;
            if exists {
                let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
                crate::channels::insert_parts(&tx, channel, None, parts, now_ms)?;
                posted = true;
            }
        }
        tx.commit()?;
        Ok(posted)
    }

    /// Runs still marked running (at start: a daemon died during them) are
    /// failed with `reason`; they are not run again. Returns how many.
    pub fn fail_running_runs(&self, reason: &str) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE task_runs SET state = 'failed', error = ?1, finished_at = ?2 WHERE state = 'running'",
            params![reason, now()],
        )?)
    }

    /// A task's runs, newest first, at most `limit`.
    pub fn task_runs(&self, task_id: &str, limit: u32) -> Result<Vec<TaskRunRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM task_runs WHERE task_id = ?1 ORDER BY slot DESC, id DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![task_id, limit], run_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Run `run_id` of the task, with its stored conversation (JSON
    /// messages; null until it finished). Another task's run is not found.
    pub fn task_run(
        &self,
        task_id: &str,
        run_id: i64,
    ) -> Result<(TaskRunRecord, serde_json::Value), StoreError> {
        self.read()
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS}, messages FROM task_runs WHERE id = ?1 AND task_id = ?2"
            ))?
            .query_row(params![run_id, task_id], |r| {
                let m: Option<String> = r.get(8)?;
                let m = m
                    .and_then(|m| serde_json::from_str(&m).ok())
                    .unwrap_or(serde_json::Value::Null);
                Ok((run_row(r)?, m))
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task<'a>(name: &'a str, owner: &'a str, id: &'a str) -> NewTask<'a> {
        NewTask {
            id,
            owner,
            name,
            prompt: "hi",
            kind: "every",
            spec: "60",
            tz: None,
            next_slot: Some(100),
            deliver_to: None,
        }
    }

    /// A run's result is queued on its task's channel with the run record,
    /// once; with the channel gone, the run is still recorded.
    #[test]
    fn a_finished_run_posts_its_result_with_the_record() {
        let s = Store::open_in_memory().unwrap();
        s.add_channel("tg", "telegram", "admin", &serde_json::json!({}))
            .unwrap();
        let to = TaskDelivery {
            channel: "tg".into(),
            chat: "42".into(),
            thread: None,
        };
        let new = NewTask {
            deliver_to: Some(&to),
            ..task("a", "admin", "t1")
        };
        let t = s.create_task(&new, 10, 10).unwrap();
        assert_eq!(s.task("admin", "a").unwrap().deliver_to, Some(to.clone()));
        let part = |text| crate::NewPart {
            chat: "42",
            thread: None,
            text,
        };
        let run = s.claim_run(&t.id, 100, Some(160)).unwrap().unwrap();
        let parts = [part("one"), part("two")];
        assert!(s
            .finish_run(run, Ok("one two"), None, Some(("tg", &parts)))
            .unwrap());
        let queued = s.outbound_list("tg", None, 10).unwrap();
        assert_eq!(queued.len(), 2);
        assert!(queued.iter().all(|p| p.chat == "42" && p.state == "queued"));

        s.remove_channel("tg").unwrap();
        let run = s.claim_run(&t.id, 160, Some(220)).unwrap().unwrap();
        assert!(!s
            .finish_run(run, Err("boom"), None, Some(("tg", &parts)))
            .unwrap());
        assert_eq!(s.task_runs(&t.id, 10).unwrap()[0].state, "failed");
    }

    #[test]
    fn a_slot_is_claimed_once_and_limits_hold() {
        let s = Store::open_in_memory().unwrap();
        s.add_user("bob", false).unwrap();
        let t = s.create_task(&task("a", "bob", "t1"), 2, 3).unwrap();
        assert!(matches!(
            s.create_task(&task("a", "bob", "t2"), 2, 3),
            Err(CreateTaskError::Store(StoreError::Conflict(_)))
        ));
        s.create_task(&task("b", "bob", "t3"), 2, 3).unwrap();
        assert!(matches!(
            s.create_task(&task("c", "bob", "t4"), 2, 3),
            Err(CreateTaskError::OwnerLimit(2))
        ));
        s.create_task(&task("c", "admin", "t5"), 2, 3).unwrap();
        assert!(matches!(
            s.create_task(&task("d", "admin", "t6"), 2, 3),
            Err(CreateTaskError::TotalLimit(3))
        ));

        assert_eq!(s.due_tasks(99).unwrap().len(), 0);
        assert_eq!(s.due_tasks(100).unwrap().len(), 3);
        let run = s.claim_run(&t.id, 100, Some(160)).unwrap().unwrap();
        // A second claim of the same slot (a stale view) claims nothing.
        assert_eq!(s.claim_run(&t.id, 100, Some(160)).unwrap(), None);
        assert_eq!(s.task("bob", "a").unwrap().next_slot, Some(160));
        assert_eq!(s.fail_running_runs("interrupted").unwrap(), 1);
        let runs = s.task_runs(&t.id, 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].state.as_str(), runs[0].error.as_deref()),
            ("failed", Some("interrupted"))
        );
        s.finish_run(run, Ok("done"), None, None).unwrap();
        assert_eq!(s.task_runs(&t.id, 10).unwrap()[0].state, "ok");
        // Old runs are pruned to KEEP_RUNS, the newest kept.
        let mut slot = 160;
        for _ in 0..KEEP_RUNS + 5 {
            s.claim_run(&t.id, slot, Some(slot + 60)).unwrap().unwrap();
            slot += 60;
        }
        let runs = s.task_runs(&t.id, 1000).unwrap();
        assert_eq!(runs.len(), KEEP_RUNS as usize);
        assert_eq!(runs[0].slot, slot - 60);
        assert!(
            s.task("admin", "a").is_err(),
            "another owner's task is not found"
        );
        s.delete_task("bob", "a").unwrap();
        assert!(s.task_runs(&t.id, 10).unwrap().is_empty());
    }
}
