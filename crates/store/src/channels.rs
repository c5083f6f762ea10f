//! Chat channels: their settings, inbound messages (stored before they are
//! acknowledged, unique per channel message id), the outbound delivery
//! queue with its log, pairings of senders to users, and the session each
//! scope (sender, chat, thread) talks in.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelRecord {
    pub name: String,
    pub kind: String,
    pub owner: String,
    /// JSON settings.
    pub config: serde_json::Value,
    pub cursor: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboundRecord {
    pub id: i64,
    pub channel: String,
    pub message_id: String,
    pub sender: String,
    pub chat: String,
    pub body: serde_json::Value,
    pub state: String,
    pub note: Option<String>,
    pub user: Option<String>,
    pub session_id: Option<String>,
    pub received_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboundRecord {
    pub id: i64,
    pub channel: String,
    pub inbound_id: Option<i64>,
    pub chat: String,
    pub thread: Option<String>,
    pub part: i64,
    pub text: String,
    pub plain: bool,
    /// `queued`, `sending`, `sent`, `failed` or `unknown`.
    pub state: String,
    pub attempts: i64,
    pub next_at: i64,
    pub remote_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryAttempt {
    pub outbound_id: i64,
    pub attempt: i64,
    pub outcome: String,
    pub detail: Option<String>,
    pub at: String,
}

/// One reply part to queue.
#[derive(Debug, Clone)]
pub struct NewPart<'a> {
    pub chat: &'a str,
    pub thread: Option<&'a str>,
    pub text: &'a str,
}

fn channel_row(r: &Row<'_>) -> rusqlite::Result<ChannelRecord> {
    let config: String = r.get(3)?;
    Ok(ChannelRecord {
        name: r.get(0)?,
        kind: r.get(1)?,
        owner: r.get(2)?,
        config: serde_json::from_str(&config).unwrap_or_default(),
        cursor: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const CHANNEL_COLUMNS: &str = "name, kind, owner, config, cursor, created_at";

fn inbound_row(r: &Row<'_>) -> rusqlite::Result<InboundRecord> {
    let body: String = r.get(5)?;
    Ok(InboundRecord {
        id: r.get(0)?,
        channel: r.get(1)?,
        message_id: r.get(2)?,
        sender: r.get(3)?,
        chat: r.get(4)?,
        body: serde_json::from_str(&body).unwrap_or_default(),
        state: r.get(6)?,
        note: r.get(7)?,
        user: r.get(8)?,
        session_id: r.get(9)?,
        received_at: r.get(10)?,
    })
}

const INBOUND_COLUMNS: &str =
    "id, channel, message_id, sender, chat, body, state, note, user, session_id, received_at";

fn outbound_row(r: &Row<'_>) -> rusqlite::Result<OutboundRecord> {
    Ok(OutboundRecord {
        id: r.get(0)?,
        channel: r.get(1)?,
        inbound_id: r.get(2)?,
        chat: r.get(3)?,
        thread: r.get(4)?,
        part: r.get(5)?,
        text: r.get(6)?,
        plain: r.get::<_, i64>(7)? != 0,
        state: r.get(8)?,
        attempts: r.get(9)?,
        next_at: r.get(10)?,
        remote_id: r.get(11)?,
        last_error: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

const OUTBOUND_COLUMNS: &str = "id, channel, inbound_id, chat, thread, part, text, plain, state, attempts, next_at, remote_id, last_error, created_at, updated_at";

fn log(
    conn: &rusqlite::Connection,
    id: i64,
    attempt: i64,
    outcome: &str,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO channel_delivery_log (outbound_id, attempt, outcome, detail, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, attempt, outcome, detail, now()],
    )?;
    Ok(())
}

pub(crate) fn insert_parts(
    conn: &rusqlite::Connection,
    channel: &str,
    inbound: Option<i64>,
    parts: &[NewPart<'_>],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let t = now();
    for (i, p) in parts.iter().enumerate() {
        conn.execute(
            "INSERT INTO channel_outbound (channel, inbound_id, chat, thread, part, text, state, next_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?8)",
            params![channel, inbound, p.chat, p.thread, i as i64, p.text, now_ms, t],
        )?;
        log(conn, conn.last_insert_rowid(), 0, "queued", None)?;
    }
    Ok(())
}

impl Store {
    pub fn add_channel(
        &self,
        name: &str,
        kind: &str,
        owner: &str,
        config: &serde_json::Value,
    ) -> Result<ChannelRecord, StoreError> {
        let r = self.conn().execute(
            "INSERT INTO channels (name, kind, owner, config, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, kind, owner, config.to_string(), now()],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::Conflict(format!("channel '{name}'")))
            }
            r => r?,
        };
        self.channel(name)
    }

    pub fn channel(&self, name: &str) -> Result<ChannelRecord, StoreError> {
        self.read()
            .prepare_cached(&format!(
                "SELECT {CHANNEL_COLUMNS} FROM channels WHERE name = ?1"
            ))?
            .query_row([name], channel_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("channel '{name}'")))
    }

    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY name"
        ))?;
        let rows = st.query_map([], channel_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remove a channel with its messages, queue, pairings and scopes.
    pub fn remove_channel(&self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM channels WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("channel '{name}'")));
        }
        Ok(())
    }

    pub fn set_channel_cursor(&self, name: &str, cursor: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE channels SET cursor = ?2 WHERE name = ?1",
            params![name, cursor],
        )?;
        Ok(())
    }

    /// Store an inbound message; None when (channel, message_id) was stored
    /// before (a redelivery).
    pub fn insert_inbound(
        &self,
        channel: &str,
        message_id: &str,
        sender: &str,
        chat: &str,
        body: &serde_json::Value,
    ) -> Result<Option<i64>, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO channel_inbound (channel, message_id, sender, chat, body, state, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
            params![channel, message_id, sender, chat, body.to_string(), now()],
        )?;
        Ok((n == 1).then(|| conn.last_insert_rowid()))
    }

    pub fn inbound(&self, id: i64) -> Result<InboundRecord, StoreError> {
        self.read()
            .prepare_cached(&format!(
                "SELECT {INBOUND_COLUMNS} FROM channel_inbound WHERE id = ?1"
            ))?
            .query_row([id], inbound_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("message {id}")))
    }

    /// A channel's inbound messages, newest first.
    pub fn inbound_list(
        &self,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<InboundRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {INBOUND_COLUMNS} FROM channel_inbound WHERE channel = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![channel, limit], inbound_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Messages not yet answered (`pending`, or `running` when a crash cut
    /// the turn), oldest first.
    pub fn unfinished_inbound(&self, channel: &str) -> Result<Vec<InboundRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {INBOUND_COLUMNS} FROM channel_inbound WHERE channel = ?1 AND state IN ('pending', 'running') ORDER BY id"
        ))?;
        let rows = st.query_map([channel], inbound_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_inbound_state(
        &self,
        id: i64,
        state: &str,
        note: Option<&str>,
        user: Option<&str>,
        session: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE channel_inbound SET state = ?2, note = COALESCE(?3, note), user = COALESCE(?4, user),
                session_id = COALESCE(?5, session_id) WHERE id = ?1",
            params![id, state, note, user, session],
        )?;
        Ok(())
    }

    /// Finish an inbound message and queue its reply parts in one
    /// transaction: a crash leaves either both or neither.
    pub fn finish_inbound(
        &self,
        id: i64,
        channel: &str,
        state: &str,
        note: Option<&str>,
        parts: &[NewPart<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_parts(&tx, channel, Some(id), parts, now_ms)?;
        tx.execute(
            "UPDATE channel_inbound SET state = ?2, note = COALESCE(?3, note) WHERE id = ?1",
            params![id, state, note],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The oldest due part of `channel` whose chat has no older part still
    /// queued or sending (parts of one chat go out in order).
    pub fn next_due_outbound(
        &self,
        channel: &str,
        now_ms: i64,
    ) -> Result<Option<OutboundRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT {OUTBOUND_COLUMNS} FROM channel_outbound o
                     WHERE o.channel = ?1 AND o.state = 'queued' AND o.next_at <= ?2
                       AND NOT EXISTS (SELECT 1 FROM channel_outbound p WHERE p.channel = o.channel
                           AND p.chat = o.chat AND p.id < o.id AND p.state IN ('queued', 'sending'))
                     ORDER BY o.id LIMIT 1"
            ))?
            .query_row(params![channel, now_ms], outbound_row)
            .optional()?)
    }

    /// The earliest `next_at` among queued parts of `channel`.
    pub fn next_outbound_at(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(
                "SELECT MIN(next_at) FROM channel_outbound WHERE channel = ?1 AND state = 'queued'",
            )?
            .query_row([channel], |r| r.get(0))?)
    }

    /// Record the attempt before calling the service.
    pub fn mark_sending(&self, id: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let attempt: i64 = tx.query_row(
            "UPDATE channel_outbound SET state = 'sending', attempts = attempts + 1, updated_at = ?2
             WHERE id = ?1 RETURNING attempts",
            params![id, now()],
            |r| r.get(0),
        )?;
        log(&tx, id, attempt, "sending", None)?;
        tx.commit()?;
        Ok(attempt)
    }

    /// The attempt's end: `state` is `sent`, `failed`, `unknown`, or
    /// `queued` again (a retry at `next_at`, as plain text when `plain`).
    #[allow(clippy::too_many_arguments)]
    pub fn mark_outbound(
        &self,
        id: i64,
        attempt: i64,
        state: &str,
        outcome: &str,
        detail: Option<&str>,
        remote_id: Option<&str>,
        next_at: Option<i64>,
        plain: Option<bool>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE channel_outbound SET state = ?2, last_error = COALESCE(?3, last_error),
                remote_id = COALESCE(?4, remote_id), next_at = COALESCE(?5, next_at),
                plain = COALESCE(?6, plain), updated_at = ?7 WHERE id = ?1",
            params![
                id,
                state,
                if state == "sent" { None } else { detail },
                remote_id,
                next_at,
                plain.map(i64::from),
                now()
            ],
        )?;
        log(&tx, id, attempt, outcome, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// After a restart: parts a crash left `sending`. With an idempotent
    /// channel they are queued again (the service drops a repeat); without,
    /// they become `unknown` (maybe delivered; never sent twice).
    pub fn reclaim_sending(&self, channel: &str, idempotent: bool) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<(i64, i64)> = {
            let mut st = tx.prepare(
                "SELECT id, attempts FROM channel_outbound WHERE channel = ?1 AND state = 'sending'",
            )?;
            let rows = st.query_map([channel], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let (state, outcome) = if idempotent {
            (
                "queued",
                "interrupted: retried with the same idempotency key",
            )
        } else {
            (
                "unknown",
                "interrupted: may have been delivered; not resent",
            )
        };
        for (id, attempt) in &ids {
            tx.execute(
                "UPDATE channel_outbound SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state, now()],
            )?;
            log(&tx, *id, *attempt, outcome, None)?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// Parts queued or being sent.
    pub fn queue_depth(&self, channel: &str) -> Result<u64, StoreError> {
        Ok(self.read().prepare_cached("SELECT COUNT(*) FROM channel_outbound WHERE channel = ?1 AND state IN ('queued', 'sending')")?.query_row([channel],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// The reply parts of an inbound message (or all of a channel's, newest
    /// first, when `inbound` is None).
    pub fn outbound_list(
        &self,
        channel: &str,
        inbound: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboundRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {OUTBOUND_COLUMNS} FROM channel_outbound WHERE channel = ?1
               AND (?2 IS NULL OR inbound_id = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![channel, inbound, limit], outbound_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delivery_log(&self, outbound: i64) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(
            "SELECT outbound_id, attempt, outcome, detail, at FROM channel_delivery_log WHERE outbound_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([outbound], |r| {
            Ok(DeliveryAttempt {
                outbound_id: r.get(0)?,
                attempt: r.get(1)?,
                outcome: r.get(2)?,
                detail: r.get(3)?,
                at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.add_channel("tg", "telegram", "admin", &serde_json::json!({}))
            .unwrap();
        s
    }

    #[test]
    fn redelivered_inbound_is_stored_once() {
        let s = store();
        let b = serde_json::json!({"text": "hi"});
        let a = s.insert_inbound("tg", "1:5", "u1", "1", &b).unwrap();
        assert!(a.is_some());
        assert_eq!(s.insert_inbound("tg", "1:5", "u1", "1", &b).unwrap(), None);
        assert_eq!(s.unfinished_inbound("tg").unwrap().len(), 1);
        assert!(matches!(
            s.add_channel("tg", "telegram", "admin", &b),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn queue_orders_parts_per_chat_and_reclaims_after_a_crash() {
        let s = store();
        let id = s
            .insert_inbound("tg", "m1", "u", "c1", &serde_json::json!({}))
            .unwrap()
            .unwrap();
        let parts = [
            NewPart {
                chat: "c1",
                thread: None,
                text: "one",
            },
            NewPart {
                chat: "c1",
                thread: None,
                text: "two",
            },
        ];
        s.finish_inbound(id, "tg", "done", None, &parts, 0).unwrap();
        assert_eq!(s.queue_depth("tg").unwrap(), 2);
        let first = s.next_due_outbound("tg", 10).unwrap().unwrap();
        assert_eq!(first.text, "one");
        let attempt = s.mark_sending(first.id).unwrap();
        // "two" waits for "one".
        assert_eq!(s.next_due_outbound("tg", 10).unwrap(), None);
        // A crash mid-send: not idempotent, so not resent.
        assert_eq!(s.reclaim_sending("tg", false).unwrap(), 1);
        let second = s.next_due_outbound("tg", 10).unwrap().unwrap();
        assert_eq!(second.text, "two");
        let log = s.delivery_log(first.id).unwrap();
        let outcomes: Vec<_> = log.iter().map(|l| l.outcome.as_str()).collect();
        assert_eq!(outcomes[..2], ["queued", "sending"]);
        assert!(outcomes[2].starts_with("interrupted"));
        assert_eq!(attempt, 1);
        s.mark_outbound(second.id, 1, "sent", "sent", None, Some("77"), None, None)
            .unwrap();
        assert_eq!(s.queue_depth("tg").unwrap(), 0);
    }
}
