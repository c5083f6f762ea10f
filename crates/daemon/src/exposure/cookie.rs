//! The browser cookie of an exposure: `USER.CREDENTIAL.EXPIRY.MAC`, where
//! MAC is HMAC-SHA256 (ring) over the host label, the user, the credential
//! and the expiry under a per-daemon key. Bound to one label, so a cookie
//! for one exposure opens no other even if the browser sent it; bound to
//! the token that logged in (its id), so revoking that token ends the
//! cookie too.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

/// The cookie's name; stripped from every request before it is forwarded.
pub const NAME: &str = "ironclaw_port";
/// How long a login lasts.
pub const LIFETIME_SECS: u64 = 24 * 3600;

/// The signing key, 32 random bytes kept in DATA_DIR/port-cookie.key
/// (0600), so cookies survive a daemon restart.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Key> {
        let path = data_dir.join("port-cookie.key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some(k) = from_hex(text.trim()) {
                return Ok(Key(k));
            }
        }
        let k: [u8; 32] = rand::random();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(f, "{}", hex(&k))?;
        f.sync_all()?;
        Ok(Key(k))
    }

    #[cfg(test)]
    fn fixed(b: u8) -> Key {
        Key([b; 32])
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    fn message(label: &str, login: &Login, expiry: u64) -> String {
        format!("{label}\n{}\n{}\n{expiry}", login.user, login.credential)
    }

    /// A cookie value for `login` on `label`, valid for [`LIFETIME_SECS`].
    pub fn issue(&self, label: &str, login: &Login) -> String {
        let expiry = unix_now() + LIFETIME_SECS;
        let tag = hmac::sign(&self.key(), Self::message(label, login, expiry).as_bytes());
        format!(
            "{}.{}.{expiry}.{}",
            login.user,
            login.credential,
            hex(tag.as_ref())
        )
    }

    /// Who a cookie value names, if it is ours, for `label`, unexpired.
    /// The caller still checks that the credential is valid now.
    pub fn verify(&self, label: &str, value: &str) -> Option<Login> {
        let mut it = value.rsplitn(4, '.');
        let (mac, expiry, credential, user) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let expiry: u64 = expiry.parse().ok()?;
        let mac = from_hex(mac)?;
        let login = Login {
            user: user.to_string(),
            credential: credential.to_string(),
        };
        // Constant time.
        hmac::verify(
            &self.key(),
            Self::message(label, &login, expiry).as_bytes(),
            &mac,
        )
        .ok()?;
        (expiry > unix_now()).then_some(login)
    }
}

/// Who logged in, and with which token: a stored token's id, or a tag of
/// the daemon's own admin token (see `auth::credential_of`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub credential: String,
}

/// Our cookie's value in a request's `Cookie` headers.
pub fn find(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == NAME)
        .map(|(_, v)| v.to_string())
}

/// The `Cookie` headers without ours (the sandbox never sees it); `None`
/// when nothing is left.
pub fn without_ours(headers: &axum::http::HeaderMap) -> Option<String> {
    let rest: Vec<&str> = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(NAME))
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_bound_to_label_user_credential_and_key() {
        let k = Key::fixed(1);
        let alice = Login {
            user: "alice".into(),
            credential: "tok_0123456789abcdef".into(),
        };
        let c = k.issue("8080-dev", &alice);
        assert_eq!(k.verify("8080-dev", &c), Some(alice.clone()));
        assert_eq!(k.verify("9090-dev", &c), None, "another label");
        assert_eq!(Key::fixed(2).verify("8080-dev", &c), None, "another key");
        let forged = c.replacen("alice", "admin", 1);
        assert_eq!(k.verify("8080-dev", &forged), None, "another user");
        let forged = c.replacen("tok_0123456789abcdef", "tok_fedcba9876543210", 1);
        assert_eq!(k.verify("8080-dev", &forged), None, "another token");
        let mut parts: Vec<&str> = c.split('.').collect();
        let later = (unix_now() + 10 * LIFETIME_SECS).to_string();
        parts[2] = &later;
        assert_eq!(
            k.verify("8080-dev", &parts.join(".")),
            None,
            "a later expiry"
        );
        assert_eq!(k.verify("8080-dev", "garbage"), None);
        assert_eq!(k.verify("8080-dev", "a.b.c.d.e"), None);
    }

    #[test]
    fn our_cookie_is_found_and_stripped() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; ironclaw_port=x.1.ff".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        assert_eq!(find(&h).as_deref(), Some("x.1.ff"));
        assert_eq!(without_ours(&h).as_deref(), Some("a=1; b=2"));
    }
}
