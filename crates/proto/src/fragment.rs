//! Requests too big for one frame (an exec with a huge argv or environment:
//! Linux takes up to ~2 MiB of them) travel as `HostMsg::Fragment`s: the
//! pieces of the request's postcard encoding, reassembled by the guest.

use crate::frame::{FrameError, HEADER, MAX_FRAME};
use crate::{HostMsg, CHUNK};

/// Largest message that may travel in fragments.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The messages to send for `msg`: `msg` itself when it fits in a frame,
/// else its fragments. Fails with [`FrameError::TooLarge`] beyond
/// [`MAX_MESSAGE`].
pub fn fragments(msg: HostMsg) -> Result<Vec<HostMsg>, FrameError> {
    let body = postcard::to_allocvec(&msg)?;
    if body.len() + HEADER - 4 <= MAX_FRAME {
        return Ok(vec![msg]);
    }
    split_encoded(&body)
}

/// The fragments of `msg`, which the caller found too big for one frame.
pub fn split(msg: &HostMsg) -> Result<Vec<HostMsg>, FrameError> {
    split_encoded(&postcard::to_allocvec(msg)?)
}

fn split_encoded(body: &[u8]) -> Result<Vec<HostMsg>, FrameError> {
    if body.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge(body.len()));
    }
    let n = body.len().div_ceil(CHUNK);
    Ok(body
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, piece)| HostMsg::Fragment {
            last: i + 1 == n,
            bytes: piece.to_vec(),
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ReassemblyError {
    #[error("request of more than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("malformed fragmented request: {0}")]
    Decode(#[from] postcard::Error),
}

/// Collects one stream's fragments.
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Vec<u8>,
}

impl Reassembler {
    /// Add a fragment; returns the message once the last one is in.
    pub fn push(&mut self, last: bool, bytes: &[u8]) -> Result<Option<HostMsg>, ReassemblyError> {
        if self.buf.len() + bytes.len() > MAX_MESSAGE {
            self.buf = Vec::new();
            return Err(ReassemblyError::TooLarge);
        }
        self.buf.extend_from_slice(bytes);
        if !last {
            return Ok(None);
        }
        let buf = std::mem::take(&mut self.buf);
        Ok(Some(postcard::from_bytes(&buf)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecRequest;

    fn exec(args: usize, len: usize) -> HostMsg {
        HostMsg::Exec(ExecRequest {
            argv: (0..args).map(|i| format!("{i:0len$}")).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn small_messages_go_whole() {
        let m = exec(3, 10);
        assert_eq!(fragments(m.clone()).unwrap(), vec![m]);
    }

    #[test]
    fn big_requests_are_fragmented_and_reassembled() {
        let m = exec(8192, 256); // 2 MiB of argv
        let parts = fragments(m.clone()).unwrap();
        assert!(parts.len() > 1);
        let mut r = Reassembler::default();
        let mut got = None;
        for (i, p) in parts.iter().enumerate() {
            let HostMsg::Fragment { last, bytes } = p else {
                panic!()
            };
            assert!(bytes.len() <= CHUNK);
            assert_eq!(*last, i + 1 == parts.len());
            // Every fragment fits a frame.
            assert!(postcard::to_allocvec(p).unwrap().len() + 4 <= MAX_FRAME);
            got = r.push(*last, bytes).unwrap();
        }
        assert_eq!(got, Some(m));
    }

    #[test]
    fn oversized_requests_are_refused() {
        assert!(matches!(
            fragments(exec(20_000, 256)),
            Err(FrameError::TooLarge(_))
        ));
        let mut r = Reassembler::default();
        let piece = vec![0u8; CHUNK];
        let mut res = Ok(None);
        for _ in 0..=(MAX_MESSAGE / CHUNK) {
            res = r.push(false, &piece);
            if res.is_err() {
                break;
            }
        }
        assert!(matches!(res, Err(ReassemblyError::TooLarge)));
    }
}
