//! The recursive resolvers the daemon asks on behalf of sandboxes: the
//! resolver forwards queries to them, and the egress proxy looks names up
//! through them. Exactly the configured servers are used (or the host's
//! /etc/resolv.conf ones), nothing is cached, so a policy or record change
//! is seen on the next query.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream DNS server configured and none in /etc/resolv.conf")]
    NoServers,
    #[error("no upstream DNS server answered ({0})")]
    Unreachable(String),
    #[error("bad DNS message: {0}")]
    Message(String),
    #[error("bad name {0:?}")]
    Name(String),
    #[error("{0} does not exist")]
    NxDomain(String),
    #[error("lookup of {0} failed: {1}")]
    Failed(String, ResponseCode),
}

/// How long one server gets to answer one try.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries over the whole server list.
const ROUNDS: usize = 2;
/// Longest CNAME chain followed in an answer.
const MAX_CHAIN: usize = 16;
/// Longest a lookup() answer is kept, whatever its TTL.
const MAX_CACHE_TTL: u32 = 300;
/// Names kept; past it the cache starts over.
const MAX_CACHED: usize = 4096;

#[derive(Debug)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// lookup()'s answers until their TTL ends (the proxy looks names up
    /// per request). forward() never caches: the resolver passes TTLs on.
    cache: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl Upstream {
    /// `servers` empty: the nameservers of the host's /etc/resolv.conf.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        let servers = if servers.is_empty() {
            std::fs::read_to_string("/etc/resolv.conf")
                .map(|s| parse_resolv_conf(&s))
                .unwrap_or_default()
        } else {
            servers
        };
        Upstream {
            servers,
            timeout: TRY_TIMEOUT,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Per-try timeout (tests shorten it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Send a wire-format query and return the wire-format answer: UDP
    /// first, the next server on timeout, TCP to the same server when the
    /// UDP answer is truncated.
    pub async fn forward(&self, query: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if self.servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        if query.len() < 12 {
            return Err(UpstreamError::Message("shorter than a header".into()));
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        let mut last = String::new();
        for _ in 0..ROUNDS {
            for &server in &self.servers {
                match self.udp(server, id, query).await {
                    Ok(answer) if truncated(&answer) => match self.tcp(server, query).await {
                        Ok(answer) => return Ok(answer),
                        Err(e) => last = format!("{server} over TCP: {e}"),
                    },
                    Ok(answer) => return Ok(answer),
                    Err(e) => last = format!("{server}: {e}"),
                }
            }
        }
        Err(UpstreamError::Unreachable(last))
    }

    async fn udp(&self, server: SocketAddr, id: u16, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let bind: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind).await?;
        // connect() makes the kernel drop datagrams from anyone else.
        sock.connect(server).await?;
        sock.send(query).await?;
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
            // A stale or forged answer with another id is skipped.
            if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0 {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn tcp(&self, server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let io = async {
            let mut s = TcpStream::connect(server).await?;
            let len = u16::try_from(query.len())
                .map_err(|_| std::io::Error::other("query too long for TCP"))?;
            let mut out = Vec::with_capacity(query.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(query);
            s.write_all(&out).await?;
            read_framed(&mut s).await
        };
        tokio::time::timeout(self.timeout * 2, io)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
    }

    /// The IPv4 then IPv6 addresses of `name`, following the CNAME chain in
    /// the recursive server's answers. An existing name without addresses
    /// gives an empty list.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, UpstreamError> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some((until, addrs)) = self.cache.lock().unwrap().get(&key) {
            if Instant::now() < *until {
                return Ok(addrs.clone());
            }
        }
        // Absolute, so no search domain applies and it compares equal to
        // the answer's owner names.
        let qname =
            Name::from_ascii(format!("{key}.")).map_err(|_| UpstreamError::Name(name.into()))?;
        let (a, aaaa) = tokio::join!(
            self.lookup_type(&qname, RecordType::A),
            self.lookup_type(&qname, RecordType::AAAA)
        );
        let (addrs, ttl) = match (a, aaaa) {
            (Ok((mut a, t1)), Ok((aaaa, t2))) => {
                a.extend(aaaa);
                (a, t1.min(t2))
            }
            // One family failing (a server refusing AAAA) still gives the other.
            (Ok((a, t)), Err(_)) | (Err(_), Ok((a, t))) if !a.is_empty() => (a, t),
            (Err(e), _) => return Err(e),
            (_, Err(e)) => return Err(e),
        };
        let ttl = Duration::from_secs(ttl.min(MAX_CACHE_TTL).into());
        if !addrs.is_empty() && !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, (Instant::now() + ttl, addrs.clone()));
        }
        Ok(addrs)
    }

    async fn lookup_type(
        &self,
        qname: &Name,
        rtype: RecordType,
    ) -> Result<(Vec<IpAddr>, u32), UpstreamError> {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(qname.clone(), rtype));
        let wire = msg
            .to_vec()
            .map_err(|e| UpstreamError::Message(e.to_string()))?;
        let answer = self.forward(&wire).await?;
        let answer =
            Message::from_vec(&answer).map_err(|e| UpstreamError::Message(e.to_string()))?;
        if answer.metadata.message_type != MessageType::Response
            || answer.metadata.op_code != OpCode::Query
        {
            return Err(UpstreamError::Message("not a query response".into()));
        }
        match answer.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Err(UpstreamError::NxDomain(qname.to_ascii())),
            rc => return Err(UpstreamError::Failed(qname.to_ascii(), rc)),
        }
        Ok(addresses(&answer, qname))
    }
}

/// The addresses an answer gives for `qname`, and the least TTL of the
/// records that gave them: records of the name itself or of a name the
/// CNAME chain from it reaches (others are ignored, so an answer cannot
/// slip in addresses for unrelated names).
pub(crate) fn addresses(answer: &Message, qname: &Name) -> (Vec<IpAddr>, u32) {
    let mut chain = vec![qname.clone()];
    for _ in 0..MAX_CHAIN {
        let last = chain.last().expect("never empty").clone();
        let next = answer.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == last => Some(c.0.clone()),
            _ => None,
        });
        match next {
            Some(n) if !chain.contains(&n) => chain.push(n),
            _ => break,
        }
    }
    let mut ttl = u32::MAX;
    let mut addrs = Vec::new();
    for r in answer.answers.iter().filter(|r| chain.contains(&r.name)) {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            RData::CNAME(_) => {
                ttl = ttl.min(r.ttl);
                continue;
            }
            _ => continue,
        };
        ttl = ttl.min(r.ttl);
        addrs.push(ip);
    }
    // No records: no limit (the other family's TTL decides).
    (addrs, ttl)
}

fn truncated(answer: &[u8]) -> bool {
    answer.len() >= 3 && answer[2] & 0x02 != 0
}

/// One DNS message with its 2-byte length prefix (RFC 1035 4.2.2).
pub(crate) async fn read_framed<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The `nameserver` lines of a resolv.conf, on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) is not usable here.
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::Record;

    #[test]
    fn resolv_conf_nameservers() {
        let s = "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(s),
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[test]
    fn only_the_cname_chain_counts() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let mut m = Message::response(1, OpCode::Query);
        m.add_answer(Record::from_rdata(
            n("www.a.test."),
            60,
            RData::CNAME(CNAME(n("cdn.b.test."))),
        ));
        m.add_answer(Record::from_rdata(
            n("cdn.b.test."),
            30,
            RData::A(A::new(203, 0, 113, 7)),
        ));
        m.add_answer(Record::from_rdata(
            n("other.test."),
            60,
            RData::A(A::new(203, 0, 113, 8)),
        ));
        assert_eq!(
            addresses(&m, &n("www.a.test.")),
            (vec![IpAddr::from([203, 0, 113, 7])], 30)
        );
    }
}
