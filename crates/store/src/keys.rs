//! Users' SSH public keys (the SSH endpoint's publickey logins). The store
//! keeps what the daemon parsed and checked; it never parses keys itself.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::{now, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshKey {
    pub id: String,
    pub user: String,
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub algorithm: String,
    /// `ALGORITHM BASE64`, without the comment.
    pub public_key: String,
    pub label: Option<String>,
    pub created_at: String,
}

const COLUMNS: &str = "id, user, fingerprint, algorithm, public_key, label, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SshKey> {
    Ok(SshKey {
        id: r.get(0)?,
        user: r.get(1)?,
        fingerprint: r.get(2)?,
        algorithm: r.get(3)?,
        public_key: r.get(4)?,
        label: r.get(5)?,
        created_at: r.get(6)?,
    })
}

impl Store {
    /// Register a key for `user`. A fingerprint already registered (by
    /// anyone) is a conflict that does not say by whom.
    pub fn add_ssh_key(
        &self,
        user: &str,
        fingerprint: &str,
        algorithm: &str,
        public_key: &str,
        label: Option<&str>,
    ) -> Result<SshKey, StoreError> {
        self.user(user)?;
        let key = SshKey {
            id: format!("key_{:016x}", crate::users::rand_u64()),
            user: user.into(),
            fingerprint: fingerprint.into(),
            algorithm: algorithm.into(),
            public_key: public_key.into(),
            label: label.map(str::to_string),
            created_at: now(),
        };
        let r = self.conn().execute(
            &format!("INSERT INTO ssh_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                key.id,
                key.user,
                key.fingerprint,
                key.algorithm,
                key.public_key,
                key.label,
                key.created_at
            ],
        );
        match r {
            Ok(_) => Ok(key),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("SSH key {fingerprint}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn ssh_keys(&self, user: &str) -> Result<Vec<SshKey>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM ssh_keys WHERE user = ?1 ORDER BY created_at, id"
        ))?;
        let rows = st.query_map([user], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The key with this fingerprint, whoever owns it.
    pub fn ssh_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<SshKey>, StoreError> {
        Ok(self
            .read()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM ssh_keys WHERE fingerprint = ?1"
            ))?
            .query_row([fingerprint], row)
            .optional()?)
    }

    /// Remove one of `user`'s keys; another user's key id is not found.
    pub fn remove_ssh_key(&self, user: &str, id: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "DELETE FROM ssh_keys WHERE user = ?1 AND id = ?2",
            params![user, id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("SSH key '{id}'")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_user_unique_and_removable() {
        let s = Store::open_in_memory().unwrap();
        s.add_user("bob", false).unwrap();
        let k = s
            .add_ssh_key(
                "bob",
                "SHA256:abc",
                "ssh-ed25519",
                "ssh-ed25519 AAAA",
                Some("laptop"),
            )
            .unwrap();
        assert_eq!(s.ssh_keys("bob").unwrap(), vec![k.clone()]);
        assert!(s.ssh_keys("admin").unwrap().is_empty());
        // The same key for anyone else is refused, without naming bob.
        let e = s
            .add_ssh_key(
                "admin",
                "SHA256:abc",
                "ssh-ed25519",
                "ssh-ed25519 AAAA",
                None,
            )
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Conflict(m) if !m.contains("bob")),
            "{e}"
        );
        assert!(s.add_ssh_key("nobody", "SHA256:x", "a", "b", None).is_err());
        assert_eq!(
            s.ssh_key_by_fingerprint("SHA256:abc")
                .unwrap()
                .unwrap()
                .user,
            "bob"
        );
        // admin cannot remove bob's key through their own namespace.
        assert!(s.remove_ssh_key("admin", &k.id).is_err());
        s.remove_user("bob").unwrap();
        assert!(s.ssh_key_by_fingerprint("SHA256:abc").unwrap().is_none());
    }
}
