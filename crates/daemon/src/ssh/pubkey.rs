//! Users' public keys as they register them: one OpenSSH line
//! (`ssh-ed25519 AAAA... comment`), checked and fingerprinted.

use russh::keys::{HashAlg, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty; give one line of a .pub file (ssh-ed25519 AAAA... comment)")]
    Empty,
    #[error("give exactly one public key (one line), not {0}")]
    Several(usize),
    #[error("that is a private key; register the .pub file next to it")]
    Private,
    #[error(
        "not an OpenSSH public key ({0}); give one line of a .pub file, e.g. ~/.ssh/id_ed25519.pub"
    )]
    Parse(String),
}

/// A checked key: what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub fingerprint: String,
    pub algorithm: String,
    /// `ALGORITHM BASE64` without the comment.
    pub public_key: String,
    /// The comment, when the line had one.
    pub comment: Option<String>,
}

pub fn parse(text: &str) -> Result<ParsedKey, KeyError> {
    if text.contains("PRIVATE KEY") {
        return Err(KeyError::Private);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let line = match lines.as_slice() {
        [] => return Err(KeyError::Empty),
        [one] => *one,
        more => return Err(KeyError::Several(more.len())),
    };
    let key = PublicKey::from_openssh(line).map_err(|e| KeyError::Parse(e.to_string()))?;
    let mut bare = key.clone();
    bare.set_comment("");
    let public_key = bare
        .to_openssh()
        .map_err(|e| KeyError::Parse(e.to_string()))?;
    let comment = Some(key.comment().as_str_lossy().trim().to_string()).filter(|c| !c.is_empty());
    Ok(ParsedKey {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().as_str().to_string(),
        public_key,
        comment,
    })
}

/// The fingerprint of a key a client proved it holds.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINirtGn5vhAOJzflj3mf2+ftKfMrW03+u+yQxSMpVFfE alice@laptop";

    #[test]
    fn parses_and_fingerprints_like_openssh() {
        let k = parse(&format!("{ED}\n")).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment.as_deref(), Some("alice@laptop"));
        // What `ssh-keygen -lf` prints for this key.
        assert_eq!(
            k.fingerprint,
            "SHA256:fWotIl88Q4zUnwtbR2Tyd1SNrD/cmLUl6IFov3dRO0s"
        );
        assert!(!k.public_key.contains("alice"));
        assert_eq!(parse(&k.public_key).unwrap().fingerprint, k.fingerprint);
    }

    #[test]
    fn refuses_garbage_clearly() {
        assert!(matches!(parse(""), Err(KeyError::Empty)));
        assert!(matches!(parse("hello world"), Err(KeyError::Parse(_))));
        assert!(matches!(
            parse("ssh-ed25519 AAAAnotbase64!!"),
            Err(KeyError::Parse(_))
        ));
        assert!(matches!(
            parse(&format!("{ED}\n{ED}\n")),
            Err(KeyError::Several(2))
        ));
        assert!(matches!(
            parse("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"),
            Err(KeyError::Private)
        ));
    }
}
