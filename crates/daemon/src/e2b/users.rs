//! Who an envd request acts as. The SDK names a user per call (`user=`):
//! on Connect RPCs as HTTP Basic auth (`Authorization: Basic
//! base64(NAME:)`), on `/files` as the `username` query parameter. With
//! none (what SDK 2.x sends to an envd of 0.4.0 and later) envd's default
//! user applies, `user`, as in E2B's own templates; an image without a
//! `user` account (the busybox one) falls back to root.
//!
//! The user's home, from the sandbox's /etc/passwd, is where relative
//! paths point, as in envd.

use axum::http::{header, HeaderMap};
use base64::Engine;
use ironclaw_sandbox::AgentClient;

use super::connect::ConnectError;

/// envd's default user.
pub const DEFAULT_USER: &str = "user";
/// Longest /etc/passwd read.
const MAX_PASSWD: usize = 4 << 20;

/// The user an envd request runs or writes as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvdUser {
    pub name: String,
    pub home: String,
}

impl EnvdUser {
    /// What the guest is asked for: `None` for root, today's default, so
    /// a root request works with any agent.
    pub fn for_guest(&self) -> Option<&str> {
        (self.name != "root").then_some(self.name.as_str())
    }

    /// A path from the request: relative ones (and `~`) are under the
    /// user's home.
    pub fn path(&self, path: &str) -> Result<String, ConnectError> {
        if path.contains('\0') {
            return Err(ConnectError::invalid("path contains a NUL byte"));
        }
        let home = self.home.trim_end_matches('/');
        Ok(if path.starts_with('/') {
            path.to_string()
        } else if path.is_empty() || path == "~" {
            self.home.clone()
        } else if let Some(rest) = path.strip_prefix("~/") {
            format!("{home}/{rest}")
        } else {
            format!("{home}/{path}")
        })
    }
}

/// The user named by a Connect request's Basic credentials, if any.
pub fn from_basic_auth(headers: &HeaderMap) -> Result<Option<String>, ConnectError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Some(b64) = v.to_str().ok().and_then(|h| h.strip_prefix("Basic ")) else {
        // A bearer token is a credential, not a user.
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| ConnectError::invalid("the Basic credentials are not base64"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConnectError::invalid("the Basic credentials are not UTF-8"))?;
    let name = text.split(':').next().unwrap_or("");
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// The home of `name` in passwd(5) text.
fn passwd_home(passwd: &str, name: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| f[5].to_string())
    })
}

/// Resolve the request's user (`explicit`, else the default) against the
/// sandbox's /etc/passwd.
pub async fn resolve(
    agent: &AgentClient,
    explicit: Option<String>,
) -> Result<EnvdUser, ConnectError> {
    // A file that cannot be read has no users but root.
    let passwd = agent
        .read_file("/etc/passwd", MAX_PASSWD)
        .await
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .unwrap_or_default();
    let root = || EnvdUser {
        name: "root".into(),
        home: passwd_home(&passwd, "root").unwrap_or_else(|| "/root".into()),
    };
    match explicit {
        Some(name) if name == "root" => Ok(root()),
        Some(name) => match passwd_home(&passwd, &name) {
            Some(home) => Ok(EnvdUser { name, home }),
            None => Err(ConnectError::invalid(format!(
                "no user {name} in the sandbox's /etc/passwd"
            ))),
        },
        // A guest that cannot switch users runs everything as root, as
        // it did before users existed.
        None if !agent.honours_users() => Ok(root()),
        None => Ok(match passwd_home(&passwd, DEFAULT_USER) {
            Some(home) => EnvdUser {
                name: DEFAULT_USER.into(),
                home,
            },
            None => root(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_name_the_user() {
        let mut h = HeaderMap::new();
        assert_eq!(from_basic_auth(&h).unwrap(), None);
        // What the SDK sends for user="root": base64("root:").
        h.insert(header::AUTHORIZATION, "Basic cm9vdDo=".parse().unwrap());
        assert_eq!(from_basic_auth(&h).unwrap().as_deref(), Some("root"));
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(from_basic_auth(&h).unwrap(), None);
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(from_basic_auth(&h).is_err());
    }

    #[test]
    fn relative_paths_are_under_the_users_home() {
        let u = EnvdUser {
            name: "user".into(),
            home: "/home/user".into(),
        };
        assert_eq!(u.path("/etc/x").unwrap(), "/etc/x");
        assert_eq!(u.path("a/b").unwrap(), "/home/user/a/b");
        assert_eq!(u.path("~/a").unwrap(), "/home/user/a");
        assert_eq!(u.path("").unwrap(), "/home/user");
        assert!(u.path("a\0b").is_err());
        assert_eq!(u.for_guest(), Some("user"));
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
        assert_eq!(passwd_home(passwd, "user").as_deref(), Some("/home/user"));
        assert_eq!(passwd_home(passwd, "nobody"), None);
    }
}
