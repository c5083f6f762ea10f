//! A private "internet" per test: a fresh network namespace (it dies with
//! the test's thread) with the test addresses on its loopback, a
//! fake recursive DNS server, a fake web server on 80 and 443 (its own test
//! CA), and the resolver and egress proxies under test on the gateway
//! address. Nothing leaves the namespace.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ironclaw_net::egress::EgressContext;
use ironclaw_net::upstream::Upstream;
use ironclaw_net::{AlwaysDeny, Attached, EgressPolicy, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio_rustls::rustls;

pub const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const DNS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// Nothing listens here: a dead upstream.
pub const DEAD: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
pub const SANDBOX: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// A source the table does not know.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);

pub const RESOLVER_PORT: u16 = 5353;
pub const HTTP_PORT: u16 = 8080;
pub const TLS_PORT: u16 = 8443;

/// Names in the fake DNS, all under the test TLD.
pub const NAMES: &[&str] = &[
    "allowed.test",
    "alias.test",
    "rebind.test",
    "mixed.test",
    "big.test",
    "secret.test",
    "denied.test",
];

/// Run `f` in a network namespace of its own, on a current-thread runtime.
pub fn netns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): the tests run as root");
        // Children inherit this thread's namespace. The test addresses sit
        // on lo (a dummy interface needs a kernel module not every host
        // has): all of them are local, nothing is routed anywhere.
        for cmd in [
            "link set lo up",
            "addr add 203.0.113.10/32 dev lo",
            "addr add 203.0.113.53/32 dev lo",
            "addr add 203.0.113.54/32 dev lo",
            "addr add 198.51.100.10/32 dev lo",
            "addr add 198.51.100.11/32 dev lo",
            "addr add 10.88.0.1/32 dev lo",
        ] {
            let st = std::process::Command::new("ip")
                .args(cmd.split(' '))
                .status()
                .expect("ip");
            assert!(st.success(), "ip {cmd}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), f())
                .await
                .expect("test timed out")
        });
    });
    if let Err(p) = t.join() {
        std::panic::resume_unwind(p);
    }
}

/// The policy of the test sandbox.
pub fn policy() -> EgressPolicy {
    EgressPolicy {
        allow_domains: vec![
            "allowed.test".into(),
            "alias.test".into(),
            "rebind.test".into(),
            "mixed.test".into(),
            "big.test".into(),
            "secret.test".into(),
        ],
        ..Default::default()
    }
    .normalized()
    .unwrap()
}

pub fn attach(table: &Table, policy: EgressPolicy) {
    table.insert(Attached {
        sandbox_id: "sb-test".into(),
        address: SANDBOX,
        policy,
        group: None,
    });
}

pub fn always() -> Arc<AlwaysDeny> {
    Arc::new(AlwaysDeny::new("10.88.0.0/16".parse().unwrap(), vec![]))
}

pub fn upstream() -> Arc<Upstream> {
    Arc::new(
        Upstream::new(vec![SocketAddr::from((DNS, 53))]).with_timeout(Duration::from_millis(500)),
    )
}

/// Records of the fake DNS for (name, type).
fn zone(name: &str, rtype: RecordType) -> Option<Vec<Record>> {
    let n = |s: &str| Name::from_ascii(format!("{s}.")).unwrap();
    let a =
        |s: &str, ip: [u8; 4]| Record::from_rdata(n(s), 60, RData::A(A::from(Ipv4Addr::from(ip))));
    let name = name.trim_end_matches('.');
    if !NAMES.contains(&name) {
        return None;
    }
    if rtype != RecordType::A {
        return Some(vec![]);
    }
    Some(match name {
        "alias.test" => vec![
            Record::from_rdata(n("alias.test"), 60, RData::CNAME(CNAME(n("allowed.test")))),
            a("allowed.test", WEB.octets()),
        ],
        "rebind.test" => vec![a(name, [127, 0, 0, 1]), a(name, [169, 254, 169, 254])],
        "mixed.test" => vec![a(name, [10, 1, 2, 3]), a(name, WEB.octets())],
        // Too big for 512-byte UDP: forces TCP.
        "big.test" => (1..=40).map(|i| a(name, [203, 0, 113, i])).collect(),
        _ => vec![a(name, WEB.octets())],
    })
}

fn fake_answer(query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.clone());
    let question = q.queries.first()?;
    match zone(&question.name.to_ascii(), question.query_type) {
        Some(records) => {
            m.add_answers(records);
        }
        None => m.metadata.response_code = ResponseCode::NXDomain,
    }
    let wire = m.to_vec().ok()?;
    if udp && wire.len() > 512 {
        return m.truncate().to_vec().ok();
    }
    Some(wire)
}

/// The fake recursive server on DNS:53, UDP and TCP.
async fn fake_dns() {
    let udp = UdpSocket::bind((DNS, 53)).await.unwrap();
    let tcp = TcpListener::bind((DNS, 53)).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let (n, src) = udp.recv_from(&mut buf).await.unwrap();
            if let Some(a) = fake_answer(&buf[..n], true) {
                let _ = udp.send_to(&a, src).await;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tcp.accept().await.unwrap();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut q = vec![0u8; u16::from_be_bytes(len).into()];
                    s.read_exact(&mut q).await.unwrap();
                    let a = fake_answer(&q, false).unwrap();
                    s.write_all(&(a.len() as u16).to_be_bytes()).await.unwrap();
                    s.write_all(&a).await.unwrap();
                }
            });
        }
    });
}

/// The web server's reply: the request line and headers, one per line.
async fn echo(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut text = format!("{} {}\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    if req.headers().get("upgrade").is_some() {
        // An echo protocol after 101, like a WebSocket would be.
        tokio::spawn(async move {
            let up = hyper::upgrade::on(req).await.unwrap();
            let mut io = TokioIo::new(up);
            let mut buf = [0u8; 64];
            let n = io.read(&mut buf).await.unwrap();
            io.write_all(&buf[..n]).await.unwrap();
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    text.push_str(&format!("body: {} bytes\n", body.len()));
    Ok(Response::new(Full::new(Bytes::from(text))))
}

async fn serve_echo<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), hyper::service::service_fn(echo))
        .with_upgrades()
        .await;
}

/// The test CA (the web server's, not the daemon's) and the server config.
pub struct TestCa {
    pub pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_ca() -> TestCa {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test upstream CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![
        "allowed.test".into(),
        "alias.test".into(),
        "secret.test".into(),
        WEB.to_string(),
    ])
    .unwrap()
    .signed_by(&key, &ca)
    .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestCa {
        pem: ca.pem(),
        server: Arc::new(server),
    }
}

async fn fake_web(ca: &TestCa) {
    let http = TcpListener::bind((WEB, 80)).await.unwrap();
    let https = TcpListener::bind((WEB, 443)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = http.accept().await.unwrap();
            tokio::spawn(serve_echo(s));
        }
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = https.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve_echo(tls).await;
                }
            });
        }
    });
}

pub struct World {
    pub table: Table,
    pub ctx: Arc<EgressContext>,
    pub test_ca: TestCa,
}

/// The fake internet and the services under test; `tune` adjusts the
/// egress context before the proxies start.
pub async fn world(tune: impl FnOnce(&mut EgressContext, &TestCa)) -> World {
    let test_ca = test_ca();
    fake_dns().await;
    fake_web(&test_ca).await;
    let table = Table::default();
    attach(&table, policy());
    let mut ctx = EgressContext::new(table.clone(), upstream(), always());
    // No nft redirect here: the proxies are dialled directly.
    ctx.original_dst = Arc::new(|_| None);
    tune(&mut ctx, &test_ca);
    let ctx = Arc::new(ctx);
    let udp = UdpSocket::bind((GATEWAY, RESOLVER_PORT)).await.unwrap();
    let tcp = TcpListener::bind((GATEWAY, RESOLVER_PORT)).await.unwrap();
    tokio::spawn(ironclaw_net::dns::serve(
        udp,
        tcp,
        table.clone(),
        upstream(),
        ctx.always.clone(),
    ));
    let l = TcpListener::bind((GATEWAY, HTTP_PORT)).await.unwrap();
    tokio::spawn(ironclaw_net::egress::serve_http(l, ctx.clone()));
    let l = TcpListener::bind((GATEWAY, TLS_PORT)).await.unwrap();
    tokio::spawn(ironclaw_net::egress::serve_tls(l, ctx.clone()));
    World {
        table,
        ctx,
        test_ca,
    }
}

/// A TCP connection from `from`, as a sandbox at that address makes it.
pub async fn dial(from: Ipv4Addr, port: u16) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    s.connect(SocketAddr::from((GATEWAY, port))).await.unwrap()
}

pub type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 keep-alive connection to the egress proxy.
pub async fn http_conn(from: Ipv4Addr) -> Sender {
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(dial(from, HTTP_PORT).await))
            .await
            .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// GET / with `host` on an open connection: status and body.
pub async fn get(
    sender: &mut Sender,
    host: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut b = Request::get("/path?q=1").header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    sender.ready().await.unwrap();
    let resp = sender
        .send_request(b.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One query to the resolver under test from `from`, over UDP or TCP.
pub async fn ask(from: Ipv4Addr, name: &str, rtype: RecordType, tcp: bool) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let id = q.metadata.id;
    let wire = q.to_vec().unwrap();
    let answer = if tcp {
        let mut s = dial(from, RESOLVER_PORT).await;
        s.write_all(&(wire.len() as u16).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&wire).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut a = vec![0u8; u16::from_be_bytes(len).into()];
        s.read_exact(&mut a).await.unwrap();
        a
    } else {
        udp_exchange(from, &wire).await.expect("an answer")
    };
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(m.metadata.id, id, "the answer carries the query's id");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    m
}

/// Raw datagram to the resolver; None if nothing comes back soon.
pub async fn udp_exchange(from: Ipv4Addr, wire: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((from, 0)).await.unwrap();
    s.send_to(wire, (GATEWAY, RESOLVER_PORT)).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_millis(700), s.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    buf.truncate(n);
    Some(buf)
}

pub fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// A rustls client trusting exactly `ca_pem`.
pub fn tls_client(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(c))
}

/// GET over TLS through the proxy; Err when the TLS handshake fails.
pub async fn https_get(
    from: Ipv4Addr,
    ca_pem: &str,
    sni: rustls::pki_types::ServerName<'static>,
    host: &str,
) -> std::io::Result<String> {
    let s = dial(from, TLS_PORT).await;
    let mut tls = tls_client(ca_pem).connect(sni, s).await?;
    let req = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether a TLS attempt failed on the proxy's access_denied alert (not on
/// a certificate or a connection problem).
pub fn refused_by_proxy(r: &std::io::Result<String>) -> bool {
    let Err(e) = r else { return false };
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::AccessDenied
        ))
    )
}

/// Whether a TLS attempt failed on the server's certificate.
pub fn bad_certificate(r: &std::io::Result<String>) -> bool {
    let Err(e) = r else { return false };
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}
