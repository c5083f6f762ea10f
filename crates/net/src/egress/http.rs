//! HTTP through the egress proxy: plain port 80, and the requests inside
//! intercepted HTTPS. Every request on a connection is decided on its own
//! Host (a keep-alive connection cannot smuggle a second, disallowed host),
//! dialled fresh, and streamed both ways.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{connect, decide, Dest, EgressContext};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// How long a client gets to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection's requests reach their servers.
pub(crate) struct Conn {
    pub ctx: Arc<EgressContext>,
    pub src: IpAddr,
    /// The port the sandbox dialled.
    pub port: u16,
    /// Intercepted HTTPS: requests go out over TLS again.
    pub tls: bool,
}

/// Serve redirected port-80 connections until the task is aborted.
pub async fn serve_http(listener: TcpListener, ctx: Arc<EgressContext>) {
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("egress http accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let port = (ctx.original_dst)(&s).map_or(80, |a| a.port());
        let conn = Arc::new(Conn {
            ctx: ctx.clone(),
            src: peer.ip(),
            port,
            tls: false,
        });
        tokio::spawn(serve_conn(s, conn));
    }
}

/// One client connection, any number of requests.
pub(crate) async fn serve_conn<IO>(io: IO, conn: Arc<Conn>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // A sandbox cannot hold connections open by dribbling headers.
        .header_read_timeout(HEADER_TIMEOUT)
        // A client may shut down its write side and wait for the answer
        // (`printf ... | nc host 80` does): that is not a hang-up.
        .half_close(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!("egress http connection: {e}");
    }
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Conn {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        if req.method() == hyper::Method::CONNECT {
            // Transparent: the sandbox thinks it talks to the server itself,
            // so a tunnel request is meaningless here.
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "ironclaw egress: CONNECT is not served on this port".into(),
            );
        }
        let authority = req.uri().authority().map(|a| a.as_str().to_string());
        let hosts = req.headers().get_all(HOST).iter().count();
        let host = authority.clone().or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        });
        let dest = match host.as_deref().map(Dest::parse) {
            Some(Some(d)) if hosts <= 1 => d,
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "ironclaw egress: the request needs exactly one valid Host".into(),
                )
            }
        };
        let (att, addrs) = match decide(&self.ctx, self.src, &dest).await {
            Ok(x) => x,
            Err(d) => {
                tracing::info!(src = %self.src, dest = %dest.label(), "egress http refused: {d}");
                return text(StatusCode::FORBIDDEN, d.to_string());
            }
        };
        tracing::debug!(sandbox = %att.sandbox_id, dest = %dest.label(), "egress http");
        if let Some(a) = authority {
            // The server routes by Host: it must be the name we decided on.
            if let Ok(v) = HeaderValue::from_str(&a) {
                req.headers_mut().insert(HOST, v);
            }
        }
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("/"));
        *req.uri_mut() = pq;
        if let Dest::Name(name) = &dest {
            for rule in self.ctx.rules_for(name) {
                match (
                    HeaderName::from_bytes(rule.header.as_bytes()),
                    HeaderValue::from_str(&rule.value),
                ) {
                    (Ok(n), Ok(mut v)) => {
                        v.set_sensitive(true);
                        req.headers_mut().insert(n, v);
                    }
                    _ => tracing::warn!(header = %rule.header, "egress: unusable header rule"),
                }
            }
        }
        let stream = match connect(&self.ctx, &dest, &addrs, self.port).await {
            Ok(s) => s,
            Err(d) => {
                tracing::info!(sandbox = %att.sandbox_id, "egress http: {d}");
                return text(StatusCode::BAD_GATEWAY, d.to_string());
            }
        };
        let client_upgrade = hyper::upgrade::on(&mut req);
        let sent = if self.tls {
            let name = match &dest {
                Dest::Name(n) => ServerName::try_from(n.clone()).ok(),
                Dest::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
            };
            let Some(name) = name else {
                return text(StatusCode::BAD_REQUEST, "ironclaw egress: bad name".into());
            };
            let connector = tokio_rustls::TlsConnector::from(self.ctx.client_tls());
            match connector.connect(name, stream).await {
                Ok(tls) => send(tls, req).await,
                Err(e) => {
                    let msg = format!("ironclaw egress: TLS to {} failed: {e}", dest.label());
                    tracing::info!(sandbox = %att.sandbox_id, "{msg}");
                    return text(StatusCode::BAD_GATEWAY, msg);
                }
            }
        } else {
            send(stream, req).await
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!("ironclaw egress: {}: {e}", dest.label()),
                )
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // WebSocket and friends: once both sides switched, bytes.
            let server_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(s)) = tokio::join!(client_upgrade, server_upgrade) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(s))
                            .await;
                }
            });
        }
        resp.map(|b| b.boxed())
    }
}

/// One request on a fresh upstream connection.
async fn send<IO>(io: IO, req: Request<Incoming>) -> Result<Response<Incoming>, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("egress upstream connection: {e}");
        }
    });
    sender.send_request(req).await
}
