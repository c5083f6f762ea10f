//! A TCP connection inside the sandbox ([`AgentClient::tcp_connect`]) as
//! a tokio byte stream: `AsyncRead` takes the guest's `Data` (and its
//! credit goes back as it is read), `AsyncWrite` sends `Data` under the
//! stream's flow-control window, `shutdown` half-closes the guest's socket.
//!
//! [`AgentClient::tcp_connect`]: super::AgentClient::tcp_connect

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ironclaw_proto::{frame, GuestMsg, HostMsg, CHUNK};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{AgentError, AgentStream, StreamSender};

type Sending = Pin<Box<dyn Future<Output = Result<(), AgentError>> + Send>>;

/// One forwarded connection. Dropping it closes the socket in the sandbox.
pub struct TcpTunnel {
    stream: AgentStream,
    sender: StreamSender,
    /// Received and not yet read.
    pending: Vec<u8>,
    pos: usize,
    read_eof: bool,
    /// The last write, accepted and still waiting for credit or the
    /// writer's queue; the next write, flush or shutdown waits for it.
    sending: Option<Sending>,
    shut: bool,
}

fn io_err(e: AgentError) -> io::Error {
    match e {
        AgentError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()),
        AgentError::Guest { message, .. } => {
            io::Error::new(io::ErrorKind::ConnectionReset, message)
        }
        e => io::Error::other(e.to_string()),
    }
}

impl TcpTunnel {
    pub(super) fn new(stream: AgentStream) -> TcpTunnel {
        let sender = stream.sender();
        TcpTunnel {
            stream,
            sender,
            pending: Vec::new(),
            pos: 0,
            read_eof: false,
            sending: None,
            shut: false,
        }
    }

    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(f) = &mut self.sending {
            let r = std::task::ready!(f.as_mut().poll(cx));
            self.sending = None;
            r.map_err(io_err)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Start sending `frame` (a pre-encoded data frame or an `Eof`).
    fn start(&mut self, cx: &mut Context<'_>, frame: Vec<u8>) -> io::Result<()> {
        let sender = self.sender.clone();
        let mut f: Sending = Box::pin(async move { sender.send_frame(frame, true).await });
        // Polled at once, so it spends credit before the caller's next call.
        match f.as_mut().poll(cx) {
            Poll::Ready(r) => r.map_err(io_err),
            Poll::Pending => {
                self.sending = Some(f);
                Ok(())
            }
        }
    }
}

impl AsyncRead for TcpTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.pos);
                buf.put_slice(&this.pending[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(this.stream.poll_recv(cx)) {
                Ok(GuestMsg::Data(d)) => {
                    this.pending = d;
                    this.pos = 0;
                }
                // `Ok` ends the stream once both sides are done.
                Ok(GuestMsg::TcpEof | GuestMsg::Ok) => this.read_eof = true,
                Ok(GuestMsg::Error { kind, message }) => {
                    this.read_eof = true;
                    return Poll::Ready(Err(io_err(AgentError::Guest { kind, message })));
                }
                Ok(other) => {
                    this.read_eof = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected reply from the guest agent: {other:?}"),
                    )));
                }
                Err(e) => {
                    this.read_eof = true;
                    return Poll::Ready(Err(io_err(e)));
                }
            }
        }
    }
}

impl AsyncWrite for TcpTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_sending(cx))?;
        if this.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tunnel was shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(CHUNK);
        let f = frame::encode_with_bytes(this.sender.id, &HostMsg::Data(Vec::new()), &buf[..n])
            .map_err(|e| io::Error::other(e.to_string()))?;
        this.start(cx, f)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_sending(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_sending(cx))?;
        if !this.shut {
            this.shut = true;
            let f = frame::encode(this.sender.id, &HostMsg::Eof)
                .map_err(|e| io::Error::other(e.to_string()))?;
            this.start(cx, f)?;
        }
        this.poll_sending(cx)
    }
}
