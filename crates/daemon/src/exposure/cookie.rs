//! The browser cookie of an exposure: `USER.EXPIRY.MAC`, where MAC is
//! HMAC-SHA256 over the host label, the user and the expiry under a
//! per-daemon key. Bound to one label, so a cookie for one exposure opens
//! no other even if the browser sent it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

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

    fn mac(&self, label: &str, user: &str, expiry: u64) -> [u8; 32] {
        hmac_sha256(&self.0, format!("{label}\n{user}\n{expiry}").as_bytes())
    }

    /// A cookie value for `user` on `label`, valid for [`LIFETIME_SECS`].
    pub fn issue(&self, label: &str, user: &str) -> String {
        let expiry = unix_now() + LIFETIME_SECS;
        format!("{user}.{expiry}.{}", hex(&self.mac(label, user, expiry)))
    }

    /// The user a cookie value names, if it is ours, for `label`, unexpired.
    pub fn verify(&self, label: &str, value: &str) -> Option<String> {
        let mut it = value.rsplitn(3, '.');
        let (mac, expiry, user) = (it.next()?, it.next()?, it.next()?);
        let expiry: u64 = expiry.parse().ok()?;
        let mac = from_hex(mac)?;
        let want = self.mac(label, user, expiry);
        let same = mac.iter().zip(want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        (same && expiry > unix_now()).then(|| user.to_string())
    }
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

/// RFC 2104 over SHA-256 (the block is 64 bytes; our key is shorter).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
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
    fn hmac_matches_rfc4231_case_1() {
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            hex(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn cookies_are_bound_to_label_user_and_key() {
        let k = Key::fixed(1);
        let c = k.issue("8080-dev", "alice");
        assert_eq!(k.verify("8080-dev", &c).as_deref(), Some("alice"));
        assert_eq!(k.verify("9090-dev", &c), None, "another label");
        assert_eq!(Key::fixed(2).verify("8080-dev", &c), None, "another key");
        let forged = c.replacen("alice", "admin", 1);
        assert_eq!(k.verify("8080-dev", &forged), None, "another user");
        let mut parts: Vec<&str> = c.split('.').collect();
        let later = (unix_now() + 10 * LIFETIME_SECS).to_string();
        parts[1] = &later;
        assert_eq!(
            k.verify("8080-dev", &parts.join(".")),
            None,
            "a later expiry"
        );
        assert_eq!(k.verify("8080-dev", "garbage"), None);
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
