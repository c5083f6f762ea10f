//! The port proxy: a request for `PORT-NAME.<base_domain>` is forwarded to
//! PORT of sandbox NAME. Bodies stream both ways (nothing is buffered
//! whole), WebSocket and other upgrades become a byte pipe, and the
//! upstream always speaks HTTP/1.1 whatever the client spoke, so a client's
//! HTTP/2 request works against any server in the sandbox.
//!
//! Who may reach which exposure is the daemon's business; this module only
//! names hosts and moves bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the proxy answers with: the upstream's body, or its own text.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long dialling the sandbox's port may take before a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The host label of port `port` of sandbox `name`.
pub fn label(port: u16, name: &str) -> String {
    format!("{port}-{name}")
}

/// `PORT-NAME` of a `Host` header `PORT-NAME.<base_domain>[:listen-port]`
/// (case and a trailing dot ignored). `None` for any other host, the base
/// domain itself included, so the API stays reachable under it.
pub fn parse_host(host: &str, base_domain: &str) -> Option<(u16, String)> {
    let host = match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    if base.is_empty() {
        return None;
    }
    let first = host.strip_suffix(&base)?.strip_suffix('.')?;
    let (port, name) = first.split_once('-')?;
    // One canonical spelling per exposure: no leading zero, no sign.
    if port.is_empty() || port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    ironclaw_sandbox::name::validate(name).ok()?;
    Some((port, name.to_string()))
}

/// The default base domain: an sslip.io name that resolves to `ip`
/// (`8080-dev.127-0-0-1.sslip.io` is 127.0.0.1), so a single host needs no
/// DNS of its own.
pub fn sslip_domain(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        other => other,
    };
    format!("{}.sslip.io", ip.to_string().replace([':', '.'], "-"))
}

/// Where a proxied request came from, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub client: Option<IpAddr>,
    /// `http` or `https`: what the client spoke to the daemon.
    pub proto: &'static str,
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// plus `Proxy-*`: never passed on.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Remove hop-by-hop headers, those the `Connection` header names included.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// The protocol a request asks to switch to (`Upgrade: websocket`), if
/// its `Connection` header really asks for an upgrade.
fn upgrade_of(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// A short text answer of the proxy itself.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into() + "\n"))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

type Pool = Client<HttpConnector, UnsyncBoxBody<Bytes, BoxError>>;

/// Kept-alive HTTP/1.1 connections to sandboxes' ports, shared by every
/// request (a fresh connection per request costs several times the proxy's
/// own work).
fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .set_host(false)
            .build(c)
    })
}

/// The 502 (or 504) for a request the sandbox did not answer, saying why.
fn upstream_error(e: &hyper_util::client::legacy::Error, port: u16) -> Response<ProxyBody> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "nothing listens on port {port} of the sandbox (connection refused)"
                        ),
                    )
                }
                std::io::ErrorKind::TimedOut => {
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "port {port} of the sandbox did not answer within {CONNECT_TIMEOUT:?}"
                        ),
                    )
                }
                _ => {}
            }
        }
        src = s.source();
    }
    let what = if e.is_connect() {
        "cannot reach"
    } else {
        "no answer from"
    };
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = format!("{detail}: {s}");
        src = s.source();
    }
    text(
        StatusCode::BAD_GATEWAY,
        format!("{what} port {port} of the sandbox: {detail}"),
    )
}

/// Forward `req` to `target` over a pooled HTTP/1.1 connection. Hop-by-hop
/// headers go, `X-Forwarded-For/Proto/Host` are set, the `Host` header is
/// kept (the sandbox's server sees the public name). A refused connection
/// or a dead upstream is a 502 that says so.
pub async fn proxy<B>(req: Request<B>, target: SocketAddr, fwd: &Forwarded) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    proxy_held(req, target, fwd, ()).await
}

/// [`proxy`], holding `guard` for as long as the exchange lasts: until the
/// response body is consumed or dropped, or an upgraded connection closes
/// (the daemon counts a sandbox busy while it is held).
pub async fn proxy_held<B, G>(
    mut req: Request<B>,
    target: SocketAddr,
    fwd: &Forwarded,
    guard: G,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    G: Send + Sync + 'static,
{
    let upgrade = upgrade_of(req.headers());
    // Taken before the request is consumed: resolves once we answered 101.
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let h = &mut parts.headers;
    if let Some(up) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, up.clone());
    }
    if let Some(host) = &host {
        h.insert(header::HOST, host.clone());
        h.insert("x-forwarded-host", host.clone());
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(fwd.proto));
    if let Some(ip) = fwd.client {
        // Appended, so a chain of proxies stays readable.
        let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert("x-forwarded-for", v);
        }
    }
    // HTTP/1.1 upstream whatever the client spoke; the pool dials the
    // URI's authority and sends the origin form.
    parts.version = Version::HTTP_11;
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = match format!("http://{target}{pq}").parse() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "unusable request target"),
    };
    let upstream_req = Request::from_parts(parts, body);

    let upstream_req = upstream_req.map(|b| b.map_err(Into::into).boxed_unsync());
    let mut resp = match pool().request(upstream_req).await {
        Ok(r) => r,
        Err(e) => return upstream_error(&e, target.port()),
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = client_side else {
            return text(
                StatusCode::BAD_GATEWAY,
                "the sandbox switched protocols unasked",
            );
        };
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _guard = guard;
            let (Ok(client), Ok(upstream)) = (client_side.await, upstream_side.await) else {
                tracing::debug!("port proxy: upgrade did not complete");
                return;
            };
            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        let (mut parts, _) = resp.into_parts();
        let up = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(up) = up {
            parts.headers.insert(header::UPGRADE, up);
        }
        let empty = Full::new(Bytes::new()).map_err(|e| match e {}).boxed();
        return Response::from_parts(parts, empty);
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = body
        .map_frame(move |f| {
            let _ = &guard;
            f
        })
        .map_err(BoxError::from)
        .boxed();
    Response::from_parts(parts, body)
}

/// Wait until `addr` accepts a TCP connection or `timeout` passes (a
/// woken sandbox's server needs a moment after its init is up).
pub async fn wait_accepting(addr: SocketAddr, timeout: Duration) -> Result<(), std::io::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last = match tokio::time::timeout(left, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        };
        if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_port_and_sandbox() {
        let b = "127-0-0-1.sslip.io";
        assert_eq!(
            parse_host("8080-dev.127-0-0-1.sslip.io:7777", b),
            Some((8080, "dev".into()))
        );
        assert_eq!(
            parse_host("80-my-app.127-0-0-1.SSLIP.io.", b),
            Some((80, "my-app".into()))
        );
        for bad in [
            "127-0-0-1.sslip.io",
            "dev.127-0-0-1.sslip.io",
            "0-dev.127-0-0-1.sslip.io",
            "080-dev.127-0-0-1.sslip.io",
            "70000-dev.127-0-0-1.sslip.io",
            "8080-.127-0-0-1.sslip.io",
            "8080-dev-.127-0-0-1.sslip.io",
            "a.8080-dev.127-0-0-1.sslip.io",
            "8080-dev.x127-0-0-1.sslip.io",
            "8080-dev.example.com",
            "8080-DEV_X.127-0-0-1.sslip.io",
        ] {
            assert_eq!(parse_host(bad, b), None, "{bad}");
        }
        assert_eq!(sslip_domain("127.0.0.1".parse().unwrap()), b);
        assert_eq!(sslip_domain("0.0.0.0".parse().unwrap()), b);
        assert_eq!(sslip_domain("::1".parse().unwrap()), "--1.sslip.io");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
