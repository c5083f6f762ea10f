//! Where the daemon and the token come from.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// Where a token was found (for the 401 hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `IRONCLAW_TOKEN`
    FlagOrEnv,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub source: TokenSource,
}

/// The daemon's default data directory (ironclawd's `--data-dir` default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ironclaw";

/// The daemon's admin token file: `$IRONCLAW_DATA_DIR/admin.token` when
/// `IRONCLAW_DATA_DIR` is set (the same variable ironclawd reads for its
/// `--data-dir`), else `/var/lib/ironclaw/admin.token`.
pub fn admin_token_file(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let dir = env("IRONCLAW_DATA_DIR")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    Path::new(&dir).join("admin.token")
}

/// Candidate token files, in lookup order, given environment lookups.
pub fn token_file_candidates(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = env("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        v.push(Path::new(&p).join("ironclaw/token"));
    } else if let Some(h) = env("HOME").filter(|s| !s.is_empty()) {
        v.push(Path::new(&h).join(".config/ironclaw/token"));
    }
    v.push(admin_token_file(env));
    v
}

/// Token lookup order: `--token`/`IRONCLAW_TOKEN` (clap passes either as
/// `flag`), then `IRONCLAW_TOKEN_FILE` (an error if set but unreadable), then
/// `$XDG_CONFIG_HOME/ironclaw/token` (or `~/.config/ironclaw/token`), then
/// the daemon's `admin.token` (`$IRONCLAW_DATA_DIR/admin.token`, default
/// `/var/lib/ironclaw/admin.token`). Missing default files are skipped; `None`
/// when nothing is found (the daemon will answer 401 and we print a hint).
pub fn resolve_token(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Option<Token>> {
    if let Some(t) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(Token {
            value: t.to_string(),
            source: TokenSource::FlagOrEnv,
        }));
    }
    if let Some(f) = env("IRONCLAW_TOKEN_FILE").filter(|s| !s.is_empty()) {
        let p = PathBuf::from(f);
        let s = read(&p).map_err(|e| {
            anyhow!(
                "cannot read token file {} (IRONCLAW_TOKEN_FILE): {e}",
                p.display()
            )
        })?;
        let value = s.trim().to_string();
        if value.is_empty() {
            return Err(anyhow!("token file {} is empty", p.display()));
        }
        return Ok(Some(Token {
            value,
            source: TokenSource::File(p),
        }));
    }
    for p in token_file_candidates(env) {
        if let Ok(s) = read(&p) {
            let value = s.trim().to_string();
            if !value.is_empty() {
                return Ok(Some(Token {
                    value,
                    source: TokenSource::File(p),
                }));
            }
        }
    }
    Ok(None)
}

/// Normalise `--host`: add `http://` if there is no scheme, drop trailing `/`.
pub fn normalize_host(h: &str) -> String {
    let h = h.trim().trim_end_matches('/');
    if h.contains("://") {
        h.to_string()
    } else {
        format!("http://{h}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn fs_of(files: &[(&str, &str)]) -> impl Fn(&Path) -> io::Result<String> {
        let m: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        move |p| {
            m.get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn flag_wins() {
        let env = env_of(&[("IRONCLAW_TOKEN_FILE", "/t")]);
        let fs = fs_of(&[("/t", "filetok")]);
        let t = resolve_token(Some(" flagtok\n"), &env, &fs)
            .unwrap()
            .unwrap();
        assert_eq!(t.value, "flagtok");
        assert_eq!(t.source, TokenSource::FlagOrEnv);
    }

    #[test]
    fn token_file_env_next() {
        let env = env_of(&[("IRONCLAW_TOKEN_FILE", "/t"), ("XDG_CONFIG_HOME", "/xdg")]);
        let fs = fs_of(&[("/t", "filetok\n"), ("/xdg/ironclaw/token", "xdgtok")]);
        let t = resolve_token(None, &env, &fs).unwrap().unwrap();
        assert_eq!(t.value, "filetok");
        assert_eq!(t.source, TokenSource::File("/t".into()));
        // Explicit file that is missing is an error, not a silent fallback.
        let fs = fs_of(&[("/xdg/ironclaw/token", "xdgtok")]);
        assert!(resolve_token(None, &env, &fs).is_err());
        // Empty flag is ignored.
        let fs = fs_of(&[("/t", "filetok")]);
        assert_eq!(
            resolve_token(Some(""), &env, &fs).unwrap().unwrap().value,
            "filetok"
        );
    }

    #[test]
    fn xdg_then_home_then_var_lib() {
        let fs = fs_of(&[
            ("/xdg/ironclaw/token", "xdgtok"),
            ("/home/u/.config/ironclaw/token", "hometok"),
            ("/var/lib/ironclaw/admin.token", "admintok"),
        ]);
        let env = env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(
            resolve_token(None, &env, &fs).unwrap().unwrap().value,
            "xdgtok"
        );
        let env = env_of(&[("HOME", "/home/u")]);
        assert_eq!(
            resolve_token(None, &env, &fs).unwrap().unwrap().value,
            "hometok"
        );
        // XDG set but file missing: falls through to /var/lib (not $HOME).
        let env = env_of(&[("XDG_CONFIG_HOME", "/nope"), ("HOME", "/home/u")]);
        assert_eq!(
            resolve_token(None, &env, &fs).unwrap().unwrap().value,
            "admintok"
        );
        let fs = fs_of(&[]);
        assert_eq!(resolve_token(None, &env, &fs).unwrap(), None);
    }

    #[test]
    fn data_dir_env_moves_the_admin_token() {
        let fs = fs_of(&[
            ("/var/lib/ironclaw/admin.token", "hosttok"),
            ("/tmp/d/admin.token", "dirtok"),
        ]);
        let env = env_of(&[("IRONCLAW_DATA_DIR", "/tmp/d")]);
        let t = resolve_token(None, &env, &fs).unwrap().unwrap();
        assert_eq!(t.value, "dirtok");
        assert_eq!(t.source, TokenSource::File("/tmp/d/admin.token".into()));
        // With IRONCLAW_DATA_DIR set, /var/lib/ironclaw is never read.
        let env = env_of(&[("IRONCLAW_DATA_DIR", "/tmp/empty")]);
        assert_eq!(resolve_token(None, &env, &fs).unwrap(), None);
        assert_eq!(
            token_file_candidates(&env),
            vec![PathBuf::from("/tmp/empty/admin.token")]
        );
        // Empty means unset.
        let env = env_of(&[("IRONCLAW_DATA_DIR", "")]);
        assert_eq!(
            resolve_token(None, &env, &fs).unwrap().unwrap().value,
            "hosttok"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("http://127.0.0.1:7777/"),
            "http://127.0.0.1:7777"
        );
        assert_eq!(normalize_host("localhost:7777"), "http://localhost:7777");
    }
}
