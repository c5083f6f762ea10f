//! Users and their API tokens. Tokens are stored as SHA-256 hashes only.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub created_at: String,
    pub tokens: u32,
}

/// The caller a token authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub token_id: String,
    pub user: String,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub label: Option<String>,
    pub created_at: String,
}

pub fn hash_token(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

impl Store {
    pub fn add_user(&self, name: &str, admin: bool) -> Result<User, StoreError> {
        let created_at = now();
        let r = self.conn().execute(
            "INSERT INTO users (name, admin, created_at) VALUES (?1, ?2, ?3)",
            params![name, admin, created_at],
        );
        match r {
            Ok(_) => Ok(User {
                name: name.into(),
                admin,
                created_at,
                tokens: 0,
            }),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("user '{name}'")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(
            "SELECT u.name, u.admin, u.created_at, (SELECT COUNT(*) FROM tokens t WHERE t.user = u.name)
             FROM users u ORDER BY u.name",
        )?;
        let rows = st.query_map([], user_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn user(&self, name: &str) -> Result<User, StoreError> {
        self.read()
            .prepare_cached("SELECT u.name, u.admin, u.created_at, (SELECT COUNT(*) FROM tokens t WHERE t.user = u.name)
                 FROM users u WHERE u.name = ?1")?
            .query_row([name],
                user_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("user '{name}'")))
    }

    /// Remove a user with their tokens, sessions and history.
    pub fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user '{name}'")));
        }
        Ok(())
    }

    /// Record a new token for `user`; the caller generated it and shows it once.
    pub fn add_token(
        &self,
        user: &str,
        token: &str,
        label: Option<&str>,
    ) -> Result<TokenInfo, StoreError> {
        self.user(user)?;
        let id: String = format!("tok_{:016x}", rand_u64());
        let created_at = now();
        self.conn().execute(
            "INSERT INTO tokens (id, hash, user, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, hash_token(token), user, label, created_at],
        )?;
        Ok(TokenInfo {
            id,
            user: user.into(),
            label: label.map(str::to_string),
            created_at,
        })
    }

    pub fn tokens(&self, user: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(
            "SELECT id, user, label, created_at FROM tokens WHERE user = ?1 ORDER BY created_at",
        )?;
        let rows = st
            .query_map([user], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    label: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Revoke one token (by id) or all of a user's tokens (id None).
    pub fn revoke_tokens(&self, user: &str, id: Option<&str>) -> Result<usize, StoreError> {
        let n = match id {
            Some(id) => self.conn().execute(
                "DELETE FROM tokens WHERE user = ?1 AND id = ?2",
                params![user, id],
            )?,
            None => self
                .conn()
                .execute("DELETE FROM tokens WHERE user = ?1", [user])?,
        };
        if n == 0 && id.is_some() {
            return Err(StoreError::NotFound(format!(
                "token '{}' of user '{user}'",
                id.unwrap_or_default()
            )));
        }
        Ok(n)
    }

    /// Who a valid token belongs to: one lookup through the token hash's
    /// unique index, since every authenticated request makes it.
    pub fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(
                "SELECT t.id, u.name, u.admin FROM tokens t JOIN users u ON u.name = t.user
                 WHERE t.hash = ?1",
            )?
            .query_row([hash_token(token)], |r| {
                Ok(TokenOwner {
                    token_id: r.get(0)?,
                    user: r.get(1)?,
                    admin: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Whether `user` still has the token `id` (not revoked).
    pub fn token_exists(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .read()
            .prepare_cached("SELECT COUNT(*) FROM tokens WHERE user = ?1 AND id = ?2")?
            .query_row(params![user, id], |r| r.get(0))?;
        Ok(n > 0)
    }
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// A [`User`] from the columns name, admin, created_at and token count.
fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        admin: r.get(1)?,
        created_at: r.get(2)?,
        tokens: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_tokens() {
        let s = Store::open_in_memory().unwrap();
        assert!(s.user("admin").unwrap().admin);
        s.add_user("alice", false).unwrap();
        assert!(matches!(
            s.add_user("alice", false),
            Err(StoreError::Conflict(_))
        ));
        let t = s.add_token("alice", "secret-1", Some("laptop")).unwrap();
        s.add_token("alice", "secret-2", None).unwrap();
        let owner = s.token_owner("secret-1").unwrap().unwrap();
        assert_eq!(
            (owner.user.as_str(), owner.admin, owner.token_id.as_str()),
            ("alice", false, t.id.as_str())
        );
        assert!(s.token_owner("nope").unwrap().is_none());
        assert_eq!(s.user("alice").unwrap().tokens, 2);
        s.revoke_tokens("alice", Some(&t.id)).unwrap();
        assert!(s.token_owner("secret-1").unwrap().is_none());
        assert!(s.token_owner("secret-2").unwrap().is_some());
        assert!(matches!(
            s.add_token("bob", "x", None),
            Err(StoreError::NotFound(_))
        ));
        s.remove_user("alice").unwrap();
        assert!(
            s.token_owner("secret-2").unwrap().is_none(),
            "tokens go with their user"
        );
    }
}
