//! Users of the sandbox: a request's `user` (a name or a numeric uid)
//! resolved in the sandbox's own /etc/passwd and /etc/group.
//!
//! The static agent has no NSS (glibc's getpwnam would load modules that
//! are not there), and the files that count are the image's, not the
//! host's: they are parsed here, in the format passwd(5) and group(5)
//! define. Resolution happens before a process is cloned, so the child
//! only makes the setgroups/setgid/setuid calls with plain ids.

use std::path::{Path, PathBuf};

use ironclaw_proto::ErrorKind;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
/// Longest passwd or group file read: a sandbox's own file may be
/// anything, the agent's memory is not.
const MAX_FILE: u64 = 4 << 20;
/// Most supplementary groups one user gets (the kernel's NGROUPS_MAX is
/// 65536; nobody needs that many, and the list is copied per spawn).
const MAX_GROUPS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no user {0} in the sandbox's /etc/passwd")]
    Unknown(String),
    #[error("invalid user name {0:?}")]
    Invalid(String),
    /// (uid_t)-1 means "leave unchanged" to setresuid: it would run the
    /// command as root.
    #[error("user {0}: uid and gid 4294967295 are not ids")]
    NoId(String),
    #[error("{path}: {source}")]
    Io {
        path: &'static str,
        source: std::io::Error,
    },
}

impl UserError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The request's fault (a 400), not a missing object (a 404
            // would read as "no such sandbox").
            UserError::Unknown(_) | UserError::Invalid(_) | UserError::NoId(_) => {
                ErrorKind::InvalidInput
            }
            UserError::Io { source, .. } => crate::errors::kind_of(source),
        }
    }
}

/// Who a process runs as, or who owns what a file operation makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary one plus every group in
    /// /etc/group that lists the user, as initgroups(3) builds them.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// One line of passwd(5): `name:password:uid:gid:gecos:home:shell`.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0].is_empty() || f[0].starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// Supplementary groups of `name` (primary `gid` first) from group(5)
/// lines: `name:password:gid:member,member`.
fn groups_of(text: &str, name: &str, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0].starts_with('#') {
            continue;
        }
        let Ok(g) = f[2].parse::<u32>() else { continue };
        if g == u32::MAX {
            continue;
        }
        if f[3].split(',').any(|m| m.trim() == name) && !groups.contains(&g) {
            groups.push(g);
            if groups.len() == MAX_GROUPS {
                break;
            }
        }
    }
    groups
}

/// Resolve `spec` (a name, or a uid in decimal) against the passwd and
/// group files under `root` (`/` in a sandbox). A uid with no passwd line
/// is still a user, as for `docker run --user 1234`: its group is the
/// same number and its home `/`.
pub fn resolve_in(root: &Path, spec: &str) -> Result<Identity, UserError> {
    if spec.is_empty() || spec.len() > 256 || spec.contains([':', '\0', '\n', '/']) {
        let mut shown = spec.to_string();
        ironclaw_proto::truncate(&mut shown, 64);
        return Err(UserError::Invalid(shown));
    }
    let passwd = read(root, PASSWD)?;
    let numeric = spec.parse::<u32>().ok();
    let entry = passwd_entries(&passwd).find(|e| match numeric {
        Some(uid) => e.uid == uid,
        None => e.name == spec,
    });
    let (name, uid, gid, home) = match (entry, numeric) {
        (Some(e), _) => (e.name.to_string(), e.uid, e.gid, e.home.to_string()),
        (None, Some(uid)) => (spec.to_string(), uid, uid, "/".to_string()),
        (None, None) => return Err(UserError::Unknown(spec.to_string())),
    };
    if uid == u32::MAX || gid == u32::MAX {
        return Err(UserError::NoId(name));
    }
    // A missing /etc/group means no supplementary groups, not an error.
    let groups = match read(root, GROUP) {
        Ok(text) => groups_of(&text, &name, gid),
        Err(UserError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            vec![gid]
        }
        Err(e) => return Err(e),
    };
    let home = if home.is_empty() { "/".into() } else { home };
    Ok(Identity {
        name,
        uid,
        gid,
        groups,
        home: PathBuf::from(home),
    })
}

/// [`resolve_in`] the sandbox's own root.
pub fn resolve(spec: &str) -> Result<Identity, UserError> {
    resolve_in(Path::new("/"), spec)
}

fn read(root: &Path, path: &'static str) -> Result<String, UserError> {
    use std::io::Read;
    let full = root.join(path.trim_start_matches('/'));
    let io = |source| UserError::Io { path, source };
    let file = std::fs::File::open(&full).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut bytes).map_err(io)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(passwd: &str, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        broken line\n\
        user:x:1000:1000::/home/user:/bin/bash\n\
        svc:x:999:999:Service:/:/usr/sbin/nologin\n";
    const GROUP_TEXT: &str = "root:x:0:\nuser:x:1000:\nsudo:x:27:user,other\n\
        docker:x:998:other, user\nbad:x:notanumber:user\n";

    #[test]
    fn names_and_uids_resolve_with_their_groups() {
        let r = root(PASSWD_TEXT, Some(GROUP_TEXT));
        let u = resolve_in(r.path(), "user").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 27, 998]);
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert_eq!(resolve_in(r.path(), "1000").unwrap(), u);
        let root_id = resolve_in(r.path(), "root").unwrap();
        assert_eq!((root_id.uid, root_id.groups.clone()), (0, vec![0]));
        assert_eq!(root_id.home, PathBuf::from("/root"));
    }

    #[test]
    fn an_unlisted_uid_is_its_own_group_and_a_name_must_exist() {
        let r = root(PASSWD_TEXT, None);
        let u = resolve_in(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (4242, 4242, vec![4242]));
        assert_eq!(u.home, PathBuf::from("/"));
        let e = resolve_in(r.path(), "nobody-here").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no user nobody-here in the sandbox's /etc/passwd"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let r = root("minus:x:4294967295:0::/:/bin/sh\n", None);
        for spec in ["minus", "4294967295"] {
            assert_eq!(
                resolve_in(r.path(), spec).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
        for bad in ["", "a:b", "a\0", "../x"] {
            assert_eq!(
                resolve_in(r.path(), bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }
}
