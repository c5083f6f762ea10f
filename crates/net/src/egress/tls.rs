//! TLS through the egress proxy (port 443 redirected). The ClientHello is
//! read, not answered: its SNI is decided like a Host, and the connection
//! is passed through untouched to an address the proxy resolved itself.
//! Only names with header rules (and a CA configured) are intercepted.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::http::{serve_conn, Conn};
use super::sni::{parse_client_hello, Hello, MAX_HELLO};
use super::{connect, decide, Denied, Dest, EgressContext};

/// A client gets this long to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS alert record: fatal, access_denied (RFC 8446 6.2).
const ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// Serve redirected port-443 connections until the task is aborted.
pub async fn serve_tls(listener: TcpListener, ctx: Arc<EgressContext>) {
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("egress tls accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let orig = (ctx.original_dst)(&s);
            if let Err(e) = handle(s, peer.ip(), orig, ctx).await {
                tracing::info!(src = %peer.ip(), "egress tls: {e}");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum TlsError {
    #[error("{0}")]
    Denied(#[from] Denied),
    #[error("reading the ClientHello: {0}")]
    Hello(String),
    #[error("interception: {0}")]
    Intercept(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

async fn read_hello(s: &mut TcpStream) -> Result<(Vec<u8>, Option<String>), TlsError> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s
                .read(&mut chunk[..(MAX_HELLO - buf.len()).min(4096)])
                .await?;
            if n == 0 {
                return Err(TlsError::Hello(
                    "closed before the ClientHello ended".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_client_hello(&buf) {
                Ok(Hello::Complete { sni }) => return Ok(sni),
                Ok(Hello::Incomplete) => {}
                Err(e) => return Err(TlsError::Hello(e.to_string())),
            }
        }
    };
    let sni = tokio::time::timeout(HELLO_TIMEOUT, read)
        .await
        .map_err(|_| TlsError::Hello("timed out".into()))??;
    Ok((buf, sni))
}

async fn handle(
    mut s: TcpStream,
    src: IpAddr,
    orig: Option<SocketAddr>,
    ctx: Arc<EgressContext>,
) -> Result<(), TlsError> {
    let (hello, sni) = read_hello(&mut s).await?;
    let dest = match sni.as_deref() {
        Some(n) => match Dest::parse(n) {
            Some(d) => d,
            None => return Err(deny(&mut s, Denied::Name(n.to_string())).await),
        },
        // No name: all that is known is the address the sandbox dialled.
        None => match orig {
            Some(a) => Dest::Ip(a.ip()),
            None => return Err(deny(&mut s, Denied::NoDestination).await),
        },
    };
    let (att, addrs) = match decide(&ctx, src, &dest).await {
        Ok(x) => x,
        Err(d) => return Err(deny(&mut s, d).await),
    };
    let port = orig.map_or(443, |a| a.port());
    if let (Dest::Name(name), Some(ca)) = (&dest, &ctx.ca) {
        if !ctx.rules_for(name).is_empty() {
            tracing::debug!(sandbox = %att.sandbox_id, %name, "egress tls: intercepted");
            let config = ca
                .server_config(name)
                .map_err(|e| TlsError::Intercept(e.to_string()))?;
            let replay = Replay {
                head: hello,
                pos: 0,
                inner: s,
            };
            let tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(replay)
                .await
                .map_err(|e| TlsError::Intercept(e.to_string()))?;
            let conn = Arc::new(Conn {
                ctx: ctx.clone(),
                src,
                port,
                tls: true,
            });
            serve_conn(tls, conn).await;
            return Ok(());
        }
    }
    tracing::debug!(sandbox = %att.sandbox_id, dest = %dest.label(), "egress tls: passthrough");
    let mut up = connect(&ctx, &dest, &addrs, port).await?;
    up.write_all(&hello).await?;
    tokio::io::copy_bidirectional(&mut s, &mut up).await?;
    Ok(())
}

/// Tell the client why, in TLS terms (an access_denied alert), and give
/// the error to log.
async fn deny(s: &mut TcpStream, d: Denied) -> TlsError {
    let _ = s.write_all(&ACCESS_DENIED).await;
    d.into()
}

/// A stream whose first bytes are the ones already read from it.
struct Replay<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
