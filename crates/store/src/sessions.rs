//! Chat sessions, their message history and token usage.
//!
//! Message content is stored as provider-neutral JSON chosen by the agent
//! crate; the store does not interpret it. Compaction never deletes: the
//! summary is appended as a message and the messages it covers are marked
//! `summarized_by` it, so the full history stays browsable.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub user: String,
    pub agent: String,
    pub title: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub messages: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageRecord {
    pub id: i64,
    pub session_id: String,
    pub role: String,
    /// JSON content blocks.
    pub content: serde_json::Value,
    pub summarized_by: Option<i64>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    pub turns: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Of `input_tokens`, written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// The tokens of one turn. `input_tokens` is the whole prompt; the cache
/// counts are the parts of it the provider read from or wrote to its
/// prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        agent: r.get(2)?,
        title: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        messages: r.get::<_, i64>(6)? as u64,
    })
}

const SESSION_COLUMNS: &str =
    "s.id, s.user, s.agent, s.title, s.created_at, s.updated_at, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id)";

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let content: String = r.get(3)?;
    Ok(MessageRecord {
        id: r.get(0)?,
        session_id: r.get(1)?,
        role: r.get(2)?,
        content: serde_json::from_str(&content).unwrap_or(serde_json::Value::String(content)),
        summarized_by: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// One model's usage over a turn (or a task run), to record.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub user: String,
    pub model: String,
    pub tokens: TokenCounts,
    pub cost_usd: f64,
}

/// What a finished turn stores, in one transaction ([`Store::end_turn`]).
#[derive(Debug, Clone)]
pub struct TurnEnd {
    pub session_id: String,
    /// A compaction: the summary message and the ids of the messages it covers.
    pub summary: Option<((String, serde_json::Value), Vec<i64>)>,
    /// (role, content) of each new message, in order.
    pub messages: Vec<(String, serde_json::Value)>,
    pub usage: Option<UsageRecord>,
}

fn insert_messages(
    c: &Connection,
    session_id: &str,
    messages: &[(String, serde_json::Value)],
) -> Result<Vec<i64>, StoreError> {
    let t = now();
    let touched = c
        .prepare_cached("UPDATE sessions SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![session_id, t])?;
    if touched == 0 {
        return Err(StoreError::NotFound(format!("session '{session_id}'")));
    }
    let mut ids = Vec::with_capacity(messages.len());
    let mut insert = c.prepare_cached(
        "INSERT INTO messages (session_id, role, content, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (role, content) in messages {
        insert.execute(params![session_id, role, content.to_string(), t])?;
        ids.push(c.last_insert_rowid());
    }
    Ok(ids)
}

fn insert_summary(
    c: &Connection,
    session_id: &str,
    summary: &(String, serde_json::Value),
    covered: &[i64],
) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO messages (session_id, role, content, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![session_id, summary.0, summary.1.to_string(), now()],
    )?;
    let id = c.last_insert_rowid();
    for m in covered {
        c.execute(
            "UPDATE messages SET summarized_by = ?1 WHERE id = ?2 AND session_id = ?3",
            params![id, m, session_id],
        )?;
    }
    Ok(id)
}

fn insert_usage(c: &Connection, session_id: &str, u: &UsageRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO usage (session_id, user, model, input_tokens, output_tokens,
                            cache_read_tokens, cache_write_tokens, cost_usd, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        session_id,
        u.user,
        u.model,
        u.tokens.input_tokens as i64,
        u.tokens.output_tokens as i64,
        u.tokens.cache_read_tokens as i64,
        u.tokens.cache_write_tokens as i64,
        u.cost_usd,
        now()
    ])?;
    Ok(())
}

impl Store {
    pub fn create_session(
        &self,
        id: &str,
        user: &str,
        agent: &str,
    ) -> Result<SessionRecord, StoreError> {
        let t = now();
        self.conn().execute(
            "INSERT INTO sessions (id, user, agent, title, created_at, updated_at) VALUES (?1, ?2, ?3, NULL, ?4, ?4)",
            params![id, user, agent, t],
        )?;
        self.session(user, id)
    }

    /// A session of `user`; another user's session is reported as not found.
    pub fn session(&self, user: &str, id: &str) -> Result<SessionRecord, StoreError> {
        self.read()
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1 AND s.user = ?2"
            ))?
            .query_row(params![id, user], session_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("session '{id}'")))
    }

    pub fn sessions(&self, user: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user = ?1 ORDER BY s.updated_at DESC, s.id"
        ))?;
        let rows = st
            .query_map([user], session_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The most recently used session of `user` with `agent`.
    pub fn latest_session(
        &self,
        user: &str,
        agent: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user = ?1 AND s.agent = ?2
                     ORDER BY s.updated_at DESC, s.rowid DESC LIMIT 1"
            ))?
            .query_row(params![user, agent], session_row)
            .optional()?)
    }

    pub fn set_session_title(&self, id: &str, title: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET title = ?2 WHERE id = ?1",
            params![id, title],
        )?;
        Ok(())
    }

    pub fn delete_session(&self, user: &str, id: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "DELETE FROM sessions WHERE id = ?1 AND user = ?2",
            params![id, user],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("session '{id}'")));
        }
        Ok(())
    }

    /// Append messages in one transaction (all or nothing); returns their ids.
    pub fn append_messages(
        &self,
        session_id: &str,
        messages: &[(String, serde_json::Value)],
    ) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids = insert_messages(&tx, session_id, messages)?;
        tx.commit()?;
        Ok(ids)
    }

    /// The start of a turn, in one transaction: the user's message (none
    /// when a turn cut off by a crash runs again on the stored one), and
    /// `title` if the session has none yet. Returns the message's id.
    pub async fn begin_turn(
        &self,
        session_id: &str,
        message: Option<(String, serde_json::Value)>,
        title: String,
    ) -> Result<Option<i64>, StoreError> {
        let session_id = session_id.to_string();
        self.write(move |c| {
            let id = match message {
                Some(m) => insert_messages(c, &session_id, std::slice::from_ref(&m))?
                    .first()
                    .copied(),
                None => None,
            };
            c.execute(
                "UPDATE sessions SET title = ?2 WHERE id = ?1 AND title IS NULL",
                params![session_id, title],
            )?;
            Ok(id)
        })
        .await
    }

    /// The end of a turn, in one transaction: its compaction, the messages
    /// it produced and its usage. Returns the messages' ids.
    pub async fn end_turn(&self, turn: TurnEnd) -> Result<Vec<i64>, StoreError> {
        self.write(move |c| {
            if let Some((summary, covered)) = &turn.summary {
                insert_summary(c, &turn.session_id, summary, covered)?;
            }
            let ids = insert_messages(c, &turn.session_id, &turn.messages)?;
            if let Some(u) = &turn.usage {
                insert_usage(c, &turn.session_id, u)?;
            }
            Ok(ids)
        })
        .await
    }

    /// How many messages of a session are newer than message `after_id`:
    /// a history read up to `after_id` is still the store's exactly when
    /// this is 0, because ids only grow (AUTOINCREMENT) and every change to
    /// a history is a new row (a compaction adds its summary row in the
    /// transaction that marks what it covers). One index range, however
    /// long the session.
    pub fn messages_after(&self, session_id: &str, after_id: i64) -> Result<u64, StoreError> {
        let n: i64 = self
            .read()
            .prepare_cached("SELECT COUNT(*) FROM messages WHERE session_id = ?1 AND id > ?2")?
            .query_row(params![session_id, after_id], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Every message of a session, oldest first (summarised ones included).
    pub fn messages(&self, session_id: &str) -> Result<Vec<MessageRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(
            "SELECT id, session_id, role, content, summarized_by, created_at FROM messages WHERE session_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([session_id], message_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Store a compaction: the summary message is appended and the messages
    /// with ids in `covered` are marked as summarised by it.
    pub fn record_summary(
        &self,
        session_id: &str,
        summary: (String, serde_json::Value),
        covered: &[i64],
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = insert_summary(&tx, session_id, &summary, covered)?;
        tx.commit()?;
        Ok(id)
    }

    pub fn record_usage(
        &self,
        session_id: &str,
        user: &str,
        model: &str,
        tokens: TokenCounts,
        cost_usd: f64,
    ) -> Result<(), StoreError> {
        let usage = UsageRecord {
            user: user.to_string(),
            model: model.to_string(),
            tokens,
            cost_usd,
        };
        insert_usage(&self.read(), session_id, &usage)
    }

    fn usage_where(&self, clause: &str, arg: &str) -> Result<UsageTotals, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0),
                        COALESCE(SUM(cost_usd),0), COALESCE(SUM(cache_read_tokens),0),
                        COALESCE(SUM(cache_write_tokens),0)
                 FROM usage WHERE {clause} = ?1"
            ))?
            .query_row([arg], |r| {
                Ok(UsageTotals {
                    turns: r.get::<_, i64>(0)? as u64,
                    input_tokens: r.get::<_, i64>(1)? as u64,
                    output_tokens: r.get::<_, i64>(2)? as u64,
                    cost_usd: r.get(3)?,
                    cache_read_tokens: r.get::<_, i64>(4)? as u64,
                    cache_write_tokens: r.get::<_, i64>(5)? as u64,
                })
            })?)
    }

    pub fn usage_for_user(&self, user: &str) -> Result<UsageTotals, StoreError> {
        self.usage_where("user", user)
    }

    /// What `user`'s LLM calls cost since `since` (an RFC 3339 UTC timestamp).
    pub fn cost_since(&self, user: &str, since: &str) -> Result<f64, StoreError> {
        Ok(self
            .read()
            .prepare_cached(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE user = ?1 AND created_at >= ?2",
            )?
            .query_row(params![user, since], |r| r.get(0))?)
    }

    pub fn usage_for_session(&self, session_id: &str) -> Result<UsageTotals, StoreError> {
        self.usage_where("session_id", session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sessions_messages_summary_usage() {
        let s = Store::open_in_memory().unwrap();
        s.add_user("alice", false).unwrap();
        s.add_user("bob", false).unwrap();
        s.create_session("s1", "alice", "default").unwrap();
        assert!(
            matches!(s.session("bob", "s1"), Err(StoreError::NotFound(_))),
            "other users' sessions are invisible"
        );
        let ids = s
            .append_messages(
                "s1",
                &[
                    ("user".into(), json!([{"type":"text","text":"hi"}])),
                    ("assistant".into(), json!([])),
                ],
            )
            .unwrap();
        assert_eq!(ids.len(), 2);
        let sum = s
            .record_summary("s1", ("user".into(), json!("summary")), &ids)
            .unwrap();
        let all = s.messages("s1").unwrap();
        assert_eq!(all.len(), 3, "nothing is dropped");
        assert_eq!(all[0].summarized_by, Some(sum));
        assert_eq!(all[2].summarized_by, None);
        let t = |input_tokens, output_tokens, cache_read_tokens| TokenCounts {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens: 2,
        };
        s.record_usage("s1", "alice", "m", t(10, 5, 7), 0.01)
            .unwrap();
        s.record_usage("s1", "alice", "m", t(1, 1, 0), 0.02)
            .unwrap();
        let u = s.usage_for_user("alice").unwrap();
        assert_eq!((u.turns, u.input_tokens, u.output_tokens), (2, 11, 6));
        assert_eq!((u.cache_read_tokens, u.cache_write_tokens), (7, 4));
        assert!((u.cost_usd - 0.03).abs() < 1e-9);
        assert_eq!(
            s.latest_session("alice", "default").unwrap().unwrap().id,
            "s1"
        );
        assert_eq!(s.sessions("alice").unwrap()[0].messages, 3);
        s.delete_session("alice", "s1").unwrap();
        assert!(
            s.messages("s1").unwrap().is_empty(),
            "messages go with their session"
        );
    }
}
