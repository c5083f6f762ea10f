//! Pairings of chat senders to users, and the session each channel scope
//! (sender, chat, thread) talks in.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::channels::{insert_parts, NewPart};
use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pairing {
    pub channel: String,
    pub sender: String,
    pub code: String,
    pub user: Option<String>,
    pub created_at: String,
}

impl Store {
    pub fn pairing(&self, channel: &str, sender: &str) -> Result<Option<Pairing>, StoreError> {
        Ok(self
            .read()
            .prepare_cached("SELECT channel, sender, code, user, created_at FROM channel_pairings WHERE channel = ?1 AND sender = ?2")?
            .query_row(params![channel, sender],
                |r| {
                    Ok(Pairing {
                        channel: r.get(0)?,
                        sender: r.get(1)?,
                        code: r.get(2)?,
                        user: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// A pending pairing of `sender` with `code`, and the reply telling it
    /// the code, in one transaction. A taken code is a `Conflict`.
    pub fn create_pairing(
        &self,
        channel: &str,
        sender: &str,
        code: &str,
        reply: &NewPart<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match tx.execute(
            "INSERT INTO channel_pairings (channel, sender, code, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![channel, sender, code, now()],
        ) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::Conflict(format!("pairing code {code}")))
            }
            r => r?,
        };
        insert_parts(&tx, channel, None, std::slice::from_ref(reply), now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Link the sender waiting with `code` to `user`.
    pub fn approve_pairing(&self, code: &str, user: &str) -> Result<Pairing, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE channel_pairings SET user = ?2, approved_at = ?3 WHERE code = ?1 AND user IS NULL",
            params![code, user, now()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "pending pairing code '{code}'"
            )));
        }
        Ok(conn.query_row(
            "SELECT channel, sender, code, user, created_at FROM channel_pairings WHERE code = ?1",
            [code],
            |r| {
                Ok(Pairing {
                    channel: r.get(0)?,
                    sender: r.get(1)?,
                    code: r.get(2)?,
                    user: r.get(3)?,
                    created_at: r.get(4)?,
                })
            },
        )?)
    }

    /// The session a scope talks in.
    pub fn channel_session(&self, channel: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(
                "SELECT session_id FROM channel_sessions WHERE channel = ?1 AND scope_key = ?2",
            )?
            .query_row(params![channel, key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_channel_session(
        &self,
        channel: &str,
        key: &str,
        session: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO channel_sessions (channel, scope_key, session_id) VALUES (?1, ?2, ?3)",
            params![channel, key, session],
        )?;
        Ok(())
    }
}
