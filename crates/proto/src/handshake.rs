//! Connection start and resynchronisation.
//!
//! The host writes `IRONCLAW-SYNC <nonce> <version>\n`. The guest scans its
//! input for that line (skipping anything before it: stale bytes from an
//! earlier connection), then answers `IRONCLAW-READY <nonce> <version>
//! <agent-version>\n`. The host likewise discards everything until the ready
//! line that echoes its nonce. Frames follow on both sides.
//!
//! The ready line may end with a comma-separated list of features the
//! agent has beyond its protocol version ([`FEATURES`]): additions an
//! older agent would silently ignore (a field appended to a request), so
//! the host must know before it relies on them. Older hosts read only
//! the first three words.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped on any incompatible change to [`crate::msg`] or the framing.
///
/// 2: per-stream flow control (`Credit`), fragmented requests
/// (`HostMsg::Fragment`), listings in parts (`GuestMsg::EntriesPart`).
pub const PROTOCOL_VERSION: u32 = 2;

/// What this agent offers beyond [`PROTOCOL_VERSION`]: `users` is
/// running execs, PTYs and file writes as a named user of the sandbox.
pub const FEATURES: &str = "users";

const SYNC: &[u8] = b"IRONCLAW-SYNC ";
const READY: &[u8] = b"IRONCLAW-READY ";
/// Longest handshake line accepted; anything longer is noise.
const MAX_LINE: usize = 256;
/// Bytes of noise the host tolerates before giving up.
const MAX_NOISE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection closed during handshake")]
    Closed,
    #[error(
        "guest agent speaks protocol version {guest}, the host speaks {host}: \
         the sandbox's image has a different ironclaw-guest; rebuild the image"
    )]
    Version { host: u32, guest: u32 },
    #[error("no handshake reply within {0} bytes of noise")]
    Noise(usize),
    #[error("i/o during handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// What the guest told the host in its ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub protocol_version: u32,
    pub agent_version: String,
    /// The agent honours the `user` of a request (see [`FEATURES`]).
    pub users: bool,
}

/// Read one byte at a time: the handshake must not consume bytes past its
/// line, because those belong to the frames that follow.
async fn read_byte<R: AsyncRead + Unpin>(r: &mut R) -> Result<u8, HandshakeError> {
    let mut b = [0u8; 1];
    match r.read(&mut b).await? {
        0 => Err(HandshakeError::Closed),
        _ => Ok(b[0]),
    }
}

/// Scan for a line starting with `prefix` and return the rest of it.
async fn scan_line<R: AsyncRead + Unpin>(
    r: &mut R,
    prefix: &[u8],
    max_noise: usize,
) -> Result<String, HandshakeError> {
    let mut matched = 0;
    let mut skipped = 0usize;
    loop {
        let b = read_byte(r).await?;
        if b == prefix[matched] {
            matched += 1;
            if matched == prefix.len() {
                break;
            }
        } else {
            skipped += matched + 1;
            matched = usize::from(b == prefix[0]);
            if skipped > max_noise {
                return Err(HandshakeError::Noise(skipped));
            }
        }
    }
    let mut line = Vec::new();
    loop {
        let b = read_byte(r).await?;
        if b == b'\n' {
            break;
        }
        if line.len() >= MAX_LINE {
            return Err(HandshakeError::Noise(line.len()));
        }
        line.push(b);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Host side: send the sync line and wait for the matching ready line.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    nonce: u64,
) -> Result<Ready, HandshakeError> {
    s.write_all(format!("IRONCLAW-SYNC {nonce:016x} {PROTOCOL_VERSION}\n").as_bytes())
        .await?;
    s.flush().await?;
    let want = format!("{nonce:016x}");
    loop {
        let line = scan_line(s, READY, MAX_NOISE).await?;
        let mut parts = line.split(' ');
        if parts.next() != Some(want.as_str()) {
            continue; // a ready line for an earlier connection
        }
        let guest: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if guest != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                host: PROTOCOL_VERSION,
                guest,
            });
        }
        let agent_version = parts.next().unwrap_or("unknown").to_string();
        let features = parts.next().unwrap_or("");
        return Ok(Ready {
            protocol_version: guest,
            agent_version,
            users: features.split(',').any(|f| f == "users"),
        });
    }
}

/// Guest side: wait for a sync line (skipping any noise) and answer it.
/// Returns the host's protocol version; on a mismatch the guest still
/// answers (with its own version) so the host can report it, then fails.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    agent_version: &str,
) -> Result<u32, HandshakeError> {
    let line = scan_line(s, SYNC, usize::MAX).await?;
    let mut parts = line.split(' ');
    let nonce = parts.next().unwrap_or("");
    let host: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    s.write_all(
        format!("IRONCLAW-READY {nonce} {PROTOCOL_VERSION} {agent_version} {FEATURES}\n")
            .as_bytes(),
    )
    .await?;
    s.flush().await?;
    if host != PROTOCOL_VERSION {
        return Err(HandshakeError::Version {
            host,
            guest: PROTOCOL_VERSION,
        });
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshake_skips_stale_bytes() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        // Stale output from an earlier connection, including an old ready line.
        guest
            .write_all(b"\x00\x01garbage IRONCLAW-READY 00000000000000aa 1 old\nIRONCLAW-RE")
            .await
            .unwrap();
        host.write_all(b"half a frame\x00\x07IRONCLAW-SY")
            .await
            .unwrap();
        let g = tokio::spawn(async move {
            server(&mut guest, "9.9.9").await.unwrap();
            guest
        });
        let ready = client(&mut host, 0xbeef).await.unwrap();
        assert_eq!(ready.agent_version, "9.9.9");
        assert_eq!(ready.protocol_version, PROTOCOL_VERSION);
        assert!(ready.users);
        g.await.unwrap();
    }

    #[tokio::test]
    async fn an_agent_without_the_feature_word_has_no_users() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        guest
            .write_all(
                format!("IRONCLAW-READY 0000000000000001 {PROTOCOL_VERSION} 0.1.0\n").as_bytes(),
            )
            .await
            .unwrap();
        let ready = client(&mut host, 1).await.unwrap();
        assert_eq!(ready.agent_version, "0.1.0");
        assert!(!ready.users);
    }

    #[tokio::test]
    async fn version_mismatch_is_reported() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        guest
            .write_all(b"IRONCLAW-READY 0000000000000001 99 x\n")
            .await
            .unwrap();
        let err = client(&mut host, 1).await.unwrap_err();
        assert!(
            matches!(err, HandshakeError::Version { guest: 99, .. }),
            "{err}"
        );
    }
}
