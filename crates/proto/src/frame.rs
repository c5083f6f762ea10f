//! Length-delimited frames: `u32 BE length | u32 BE stream id | postcard body`.
//! The length counts the stream id and the body.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Upper bound of one frame, so a corrupt length cannot make a side allocate
/// without limit.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Bytes before a frame's body: length and stream id.
pub const HEADER: usize = 8;

/// Encode one whole frame (header and body), ready for
/// [`FrameWriter::write_encoded`]. Encoding is done by whoever sends, so a
/// connection's writer only copies bytes; a message too big for a frame is
/// refused here, before it could reach the connection.
pub fn encode<M: Serialize>(stream: u32, msg: &M) -> Result<Vec<u8>, FrameError> {
    // Sized first: growing the buffer as postcard writes would copy a
    // 64 KiB chunk over and over.
    let size = postcard::experimental::serialized_size(msg)?;
    if size + 4 > MAX_FRAME {
        return Err(FrameError::TooLarge(size + 4));
    }
    encode_into(Vec::with_capacity(HEADER + size), stream, msg)
}

fn encode_into<M: Serialize>(
    mut buf: Vec<u8>,
    stream: u32,
    msg: &M,
) -> Result<Vec<u8>, FrameError> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    let mut buf = postcard::to_extend(msg, buf)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    buf[4..8].copy_from_slice(&stream.to_be_bytes());
    Ok(buf)
}

/// Encode a frame whose message ends with a byte string, straight from
/// `payload` (no intermediate `Vec` for the message): `empty` is the
/// message with an empty byte string as its last field, e.g.
/// `GuestMsg::Stdout(Vec::new())`.
pub fn encode_with_bytes<M: Serialize>(
    stream: u32,
    empty: &M,
    payload: &[u8],
) -> Result<Vec<u8>, FrameError> {
    let size = postcard::experimental::serialized_size(empty)?;
    let total = size + 4 + payload.len() + 4;
    if total > MAX_FRAME {
        return Err(FrameError::TooLarge(total));
    }
    let mut buf = encode_into(Vec::with_capacity(HEADER + total), stream, empty)?;
    // An empty byte string is its length, a varint 0: replace it.
    debug_assert_eq!(buf.last(), Some(&0));
    buf.pop();
    let mut n = payload.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            break;
        }
        buf.push(byte | 0x80);
    }
    buf.extend_from_slice(payload);
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Body length of an encoded frame: what it costs in flow-control credit.
pub fn body_len(frame: &[u8]) -> usize {
    frame.len().saturating_sub(HEADER)
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Read-ahead buffer: small frames (credit grants, control, short replies)
/// arrive many to a system call. A big body is read straight into place
/// past what the buffer already holds, so data is not copied twice.
const READ_AHEAD: usize = 8 * 1024;

pub struct FrameReader<R> {
    inner: R,
    ahead: Box<[u8]>,
    start: usize,
    end: usize,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            ahead: vec![0; READ_AHEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            buf: Vec::new(),
        }
    }

    /// Fill `out` from the read-ahead buffer, then from the transport.
    /// `Ok(false)` on end of stream before the first byte.
    async fn read_exact_buffered(&mut self, out: &mut [u8]) -> std::io::Result<bool> {
        let mut done = 0;
        while done < out.len() {
            if self.start == self.end {
                let rest = out.len() - done;
                if rest >= self.ahead.len() {
                    // Straight into place.
                    let n = self.inner.read(&mut out[done..]).await?;
                    if n == 0 {
                        return eof(done);
                    }
                    done += n;
                    continue;
                }
                self.start = 0;
                self.end = self.inner.read(&mut self.ahead).await?;
                if self.end == 0 {
                    return eof(done);
                }
            }
            let n = (self.end - self.start).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.ahead[self.start..self.start + n]);
            self.start += n;
            done += n;
        }
        Ok(true)
    }

    /// Next frame, or [`FrameError::Closed`] on a clean end of stream.
    pub async fn read<M: DeserializeOwned>(&mut self) -> Result<(u32, M), FrameError> {
        self.read_sized().await.map(|(id, msg, _)| (id, msg))
    }

    /// Next frame with its body length (its flow-control cost).
    pub async fn read_sized<M: DeserializeOwned>(&mut self) -> Result<(u32, M, usize), FrameError> {
        let mut head = [0u8; 8];
        match self.read_exact_buffered(&mut head[..4]).await {
            Ok(true) => {}
            Ok(false) => return Err(FrameError::Closed),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if len < 4 {
            return Err(FrameError::Decode(
                postcard::Error::DeserializeUnexpectedEnd,
            ));
        }
        self.read_exact_buffered(&mut head[4..8])
            .await
            .and_then(truncated)?;
        let stream = u32::from_be_bytes(head[4..8].try_into().unwrap());
        let mut body = std::mem::take(&mut self.buf);
        body.resize(len - 4, 0);
        let r = self.read_exact_buffered(&mut body).await;
        self.buf = body;
        r.and_then(truncated)?;
        let msg = postcard::from_bytes(&self.buf)?;
        Ok((stream, msg, len - 4))
    }

    /// The transport; bytes read ahead of the last frame are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// End of stream after `done` bytes of a read.
fn eof(done: usize) -> std::io::Result<bool> {
    if done == 0 {
        Ok(false)
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

/// A frame cut short by the end of the stream.
fn truncated(ok: bool) -> std::io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::with_capacity(crate::CHUNK + 64),
        }
    }

    /// Encode and write one frame, then flush.
    pub async fn write<M: Serialize>(&mut self, stream: u32, msg: &M) -> Result<(), FrameError> {
        self.buf = encode_into(std::mem::take(&mut self.buf), stream, msg)?;
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Write a frame made by [`encode`], then flush.
    pub async fn write_encoded(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        self.inner.write_all(frame).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Write frames made by [`encode`] with as few system calls as the
    /// transport allows, then flush.
    pub async fn write_encoded_batch(&mut self, frames: &[Vec<u8>]) -> Result<(), FrameError> {
        if let [one] = frames {
            return self.write_encoded(one).await;
        }
        let mut i = 0;
        let mut off = 0;
        while i < frames.len() {
            let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&frames[i][off..])
                .chain(frames[i + 1..].iter().map(|f| &f[..]))
                .take(64)
                .map(std::io::IoSlice::new)
                .collect();
            let mut n = self.inner.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            while i < frames.len() && n >= frames[i].len() - off {
                n -= frames[i].len() - off;
                off = 0;
                i += 1;
            }
            off += n;
        }
        self.inner.flush().await?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecRequest, GuestMsg, HostMsg};

    #[tokio::test]
    async fn round_trip_many_frames() {
        let (a, b) = tokio::io::duplex(1024);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let sent = vec![
            (
                1,
                HostMsg::Exec(ExecRequest {
                    argv: vec!["true".into()],
                    ..Default::default()
                }),
            ),
            (3, HostMsg::Data(vec![7; 200_000])),
            (5, HostMsg::Signal(9)),
        ];
        let expect = sent.clone();
        let writer = tokio::spawn(async move {
            for (id, m) in &sent {
                w.write(*id, m).await.unwrap();
            }
        });
        for (id, m) in expect {
            let (rid, rm): (u32, HostMsg) = r.read().await.unwrap();
            assert_eq!((rid, rm), (id, m));
        }
        writer.await.unwrap();
        drop(r.into_inner());
    }

    #[tokio::test]
    async fn encoded_frames_batch_and_report_their_size() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let frames: Vec<Vec<u8>> = (0..100u32)
            .map(|i| encode(i, &GuestMsg::Stdout(vec![i as u8; i as usize * 10])).unwrap())
            .collect();
        w.write_encoded_batch(&frames).await.unwrap();
        for (i, f) in frames.iter().enumerate() {
            let (id, m, len): (u32, GuestMsg, usize) = r.read_sized().await.unwrap();
            assert_eq!(id, i as u32);
            assert_eq!(m, GuestMsg::Stdout(vec![i as u8; i * 10]));
            assert_eq!(len, body_len(f));
        }
        assert!(matches!(
            encode(1, &GuestMsg::Stdout(vec![0; MAX_FRAME])),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn small_and_big_frames_through_a_narrow_pipe_and_a_cut() {
        let (a, b) = tokio::io::duplex(7);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let msgs: Vec<GuestMsg> = (0..40)
            .map(|i| match i % 3 {
                0 => GuestMsg::Credit(i),
                1 => GuestMsg::Stdout(vec![i as u8; 70_000]),
                _ => GuestMsg::Stderr(vec![i as u8; 3_000]),
            })
            .collect();
        let expect = msgs.clone();
        let writer = tokio::spawn(async move {
            for m in &msgs {
                w.write(9, m).await.unwrap();
            }
            // Half a frame, then the end.
            let mut inner = w.into_inner();
            inner.write_all(&[0, 0, 0, 20, 0, 0]).await.unwrap();
        });
        for m in expect {
            assert_eq!(r.read::<GuestMsg>().await.unwrap(), (9, m));
        }
        writer.await.unwrap();
        assert!(matches!(r.read::<GuestMsg>().await, Err(FrameError::Io(_))));
    }

    #[test]
    fn encoding_from_a_slice_matches_the_message() {
        for n in [0, 1, 127, 128, 16_383, 16_384, 65_536] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            for (empty, full) in [
                (GuestMsg::Stdout(vec![]), GuestMsg::Stdout(payload.clone())),
                (GuestMsg::Data(vec![]), GuestMsg::Data(payload.clone())),
            ] {
                assert_eq!(
                    encode_with_bytes(5, &empty, &payload).unwrap(),
                    encode(5, &full).unwrap(),
                    "{n}"
                );
            }
            assert_eq!(
                encode_with_bytes(5, &HostMsg::Data(vec![]), &payload).unwrap(),
                encode(5, &HostMsg::Data(payload.clone())).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn rejects_oversized_length() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<GuestMsg>().await,
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn clean_eof_is_closed() {
        let (a, b) = tokio::io::duplex(64);
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<GuestMsg>().await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn garbage_body_is_a_decode_error() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 6, 0, 0, 0, 1, 0xff, 0xff])
            .await
            .unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<HostMsg>().await,
            Err(FrameError::Decode(_))
        ));
    }
}
