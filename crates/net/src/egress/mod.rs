//! The transparent egress proxy. nftables redirects a sandbox's TCP 80 and
//! 443 here; the proxy attributes the connection to a sandbox by its source
//! address, reads the name it wants (Host per HTTP request, SNI per TLS
//! connection), checks it against the sandbox's policy, resolves it itself
//! and dials only addresses the policy allows. The sandbox's own idea of
//! the address (which it got from our resolver anyway) is never trusted.

mod ca;
mod http;
mod sni;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

pub use ca::{Ca, CaError, CERT_FILE};
pub use http::serve_http;
pub use sni::{parse_client_hello, Hello, SniError};
pub use tls::serve_tls;

use crate::policy::{SharedDeny, Verdict};
use crate::upstream::Upstream;
use crate::{Attached, Table};

/// Where a redirected connection was going, from the socket (tests inject
/// their own).
pub type OriginalDst = Arc<dyn Fn(&TcpStream) -> Option<SocketAddr> + Send + Sync>;

/// A header the proxy sets on requests to matching domains, so the sandbox
/// never holds the secret it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// `api.example.com` or `*.example.com`, as in policies.
    pub domain: String,
    pub header: String,
    pub value: String,
}

impl std::fmt::Debug for HeaderRule {
    // The value is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderRule")
            .field("domain", &self.domain)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl HeaderRule {
    /// The same matching as policy domains (`*.x`: the names under x).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let pat = self.domain.trim_end_matches('.').to_ascii_lowercase();
        crate::policy::pattern_matches(&pat, &host)
    }
}

/// Everything the proxies share.
pub struct EgressContext {
    pub table: Table,
    pub upstream: Arc<Upstream>,
    pub always: SharedDeny,
    /// Replaceable at run time (secrets change).
    pub header_rules: RwLock<Vec<HeaderRule>>,
    /// Signs the leaf certificates of intercepted HTTPS; None: HTTPS is
    /// never intercepted and HTTPS rules do not apply.
    pub ca: Option<Arc<Ca>>,
    /// Extra CAs (PEM) trusted for upstream HTTPS of intercepted
    /// connections, besides the webpki roots.
    pub upstream_ca_pems: Vec<String>,
    pub original_dst: OriginalDst,
    pub connect_timeout: Duration,
    /// Built on first use from the roots above.
    client_tls: OnceLock<Arc<ClientConfig>>,
}

impl EgressContext {
    pub fn new(table: Table, upstream: Arc<Upstream>, always: impl Into<SharedDeny>) -> Self {
        EgressContext {
            table,
            upstream,
            always: always.into(),
            header_rules: RwLock::new(Vec::new()),
            ca: None,
            upstream_ca_pems: Vec::new(),
            original_dst: Arc::new(so_original_dst),
            connect_timeout: Duration::from_secs(10),
            client_tls: OnceLock::new(),
        }
    }

    /// The TLS client of intercepted connections: webpki roots plus
    /// `upstream_ca_pems` (unparsable PEM is logged and skipped).
    pub(crate) fn client_tls(&self) -> Arc<ClientConfig> {
        self.client_tls
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                for pem in &self.upstream_ca_pems {
                    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                        match c.map(|c| roots.add(c)) {
                            Ok(Ok(())) => {}
                            _ => tracing::warn!("egress: an upstream CA does not parse"),
                        }
                    }
                }
                let mut c = ClientConfig::builder_with_provider(ca::provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(c)
            })
            .clone()
    }

    pub fn set_header_rules(&self, rules: Vec<HeaderRule>) {
        *self.header_rules.write().unwrap() = rules;
    }

    pub(crate) fn rules_for(&self, host: &str) -> Vec<HeaderRule> {
        self.header_rules
            .read()
            .unwrap()
            .iter()
            .filter(|r| r.matches(host))
            .cloned()
            .collect()
    }
}

/// Why the proxy refused; the Display text is what the sandbox is told.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("ironclaw egress: {0} is not an attached sandbox")]
    UnknownSource(IpAddr),
    #[error("ironclaw egress: {0} is not allowed by this sandbox's policy")]
    Name(String),
    #[error("ironclaw egress: {ip} is refused: {why}")]
    Address { ip: IpAddr, why: &'static str },
    #[error("ironclaw egress: {name} did not resolve: {err}")]
    Resolve { name: String, err: String },
    #[error("ironclaw egress: {name} has no address this sandbox may reach ({why})")]
    NoAddress { name: String, why: &'static str },
    #[error("ironclaw egress: no destination name or address")]
    NoDestination,
    #[error("ironclaw egress: could not connect to {name}: {err}")]
    Connect { name: String, err: String },
}

/// What a client wants to reach, as it named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Name(String),
    Ip(IpAddr),
}

impl Dest {
    /// A Host header value or SNI: the port is stripped, brackets of an
    /// IPv6 literal removed.
    pub fn parse(host: &str) -> Option<Dest> {
        let host = host.trim();
        let bare = if let Some(rest) = host.strip_prefix('[') {
            rest.split(']').next()?
        } else if host.matches(':').count() == 1 {
            host.split(':').next()?
        } else {
            host
        };
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Dest::Ip(ip));
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        ok.then_some(Dest::Name(name))
    }

    pub fn label(&self) -> String {
        match self {
            Dest::Name(n) => n.clone(),
            Dest::Ip(ip) => ip.to_string(),
        }
    }
}

/// The addresses the sandbox at `src` may reach for `dest`, in order.
pub async fn decide(
    ctx: &EgressContext,
    src: IpAddr,
    dest: &Dest,
) -> Result<(Arc<Attached>, Vec<IpAddr>), Denied> {
    let att = ctx.table.lookup(src).ok_or(Denied::UnknownSource(src))?;
    let always = ctx.always.get();
    let addrs = match dest {
        Dest::Ip(ip) => match att.policy.ip_verdict(*ip, &always) {
            Verdict::Allow => vec![*ip],
            Verdict::Deny(why) => return Err(Denied::Address { ip: *ip, why }),
        },
        Dest::Name(name) => {
            if !att.policy.allows_name(name) {
                return Err(Denied::Name(name.clone()));
            }
            let all = ctx
                .upstream
                .lookup(name)
                .await
                .map_err(|e| Denied::Resolve {
                    name: name.clone(),
                    err: e.to_string(),
                })?;
            let mut why = "it has none";
            let ok: Vec<IpAddr> = all
                .into_iter()
                .filter(|ip| match att.policy.resolved_verdict(*ip, &always) {
                    Verdict::Allow => true,
                    Verdict::Deny(w) => {
                        why = w;
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                return Err(Denied::NoAddress {
                    name: name.clone(),
                    why,
                });
            }
            ok
        }
    };
    Ok((att, addrs))
}

/// Connect to the first of `addrs` that answers.
pub(crate) async fn connect(
    ctx: &EgressContext,
    dest: &Dest,
    addrs: &[IpAddr],
    port: u16,
) -> Result<TcpStream, Denied> {
    let mut err = String::from("no address");
    for ip in addrs {
        let sa = SocketAddr::new(*ip, port);
        match tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => err = format!("{sa}: {e}"),
            Err(_) => err = format!("{sa}: timed out"),
        }
    }
    Err(Denied::Connect {
        name: dest.label(),
        err,
    })
}

/// The pre-NAT destination of a connection nftables redirected to us
/// (SO_ORIGINAL_DST); None when it was not redirected.
pub fn so_original_dst(s: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    let local = s.local_addr().ok()?;
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a valid fd and a buffer of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            &mut addr as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || i32::from(addr.sin_family) != libc::AF_INET {
        return None;
    }
    let sa = SocketAddr::new(
        IpAddr::V4(u32::from_be(addr.sin_addr.s_addr).into()),
        u16::from_be(addr.sin_port),
    );
    // Conntrack answers for unredirected connections too: that is us.
    (sa != local).then_some(sa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_with_ports_and_literals() {
        let n = |s: &str| Some(Dest::Name(s.into()));
        assert_eq!(Dest::parse("Example.COM:8080"), n("example.com"));
        assert_eq!(Dest::parse("example.com."), n("example.com"));
        assert_eq!(
            Dest::parse("127.0.0.1:80"),
            Some(Dest::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            Dest::parse("[::1]:443"),
            Some(Dest::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            Dest::parse("::ffff:169.254.169.254"),
            Some(Dest::Ip("::ffff:169.254.169.254".parse().unwrap()))
        );
        assert_eq!(Dest::parse(""), None);
        assert_eq!(Dest::parse("a b"), None);
        assert_eq!(Dest::parse("a..b"), None);
    }

    #[test]
    fn header_rules_match_like_policies() {
        let r = HeaderRule {
            domain: "*.api.test".into(),
            header: "authorization".into(),
            value: "secret".into(),
        };
        assert!(r.matches("v1.api.test"));
        assert!(r.matches("V1.API.test."));
        assert!(!r.matches("api.test"));
        assert!(!r.matches("evilapi.test"));
        assert!(!format!("{r:?}").contains("secret"));
    }
}
