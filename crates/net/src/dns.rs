//! The sandboxes' resolver. nftables sends every sandbox's port 53 here, so
//! the source address names the sandbox: unknown sources are refused,
//! names the policy does not allow do not exist, and allowed names are
//! answered by the upstream servers minus every address the policy would
//! refuse (a public name pointing at 127.0.0.1 or the metadata service
//! gives nothing usable: DNS-rebinding protection).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::policy::{SharedDeny, Verdict};
use crate::upstream::{read_framed, Upstream};
use crate::Table;

/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// UDP queries being answered at once.
const MAX_INFLIGHT: usize = 256;
/// Largest UDP answer to a client that did not advertise EDNS.
const PLAIN_UDP_MAX: usize = 512;

struct Resolver {
    table: Table,
    upstream: Arc<Upstream>,
    always: SharedDeny,
}

/// Answer queries on `udp` and `tcp` until the task is aborted.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    table: Table,
    upstream: Arc<Upstream>,
    always: impl Into<SharedDeny>,
) {
    let r = Arc::new(Resolver {
        table,
        upstream,
        always: always.into(),
    });
    tokio::join!(serve_udp(Arc::new(udp), r.clone()), serve_tcp(tcp, r));
}

async fn serve_udp(sock: Arc<UdpSocket>, r: Arc<Resolver>) {
    let mut buf = vec![0u8; 65535];
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT));
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends show up here; keep serving.
                tracing::debug!("dns udp recv: {e}");
                continue;
            }
        };
        // A flood is dropped, not queued: clients retry.
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, r) = (sock.clone(), r.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(answer) = r.answer(&query, src.ip(), true).await {
                if let Err(e) = sock.send_to(&answer, src).await {
                    tracing::debug!("dns udp send to {src}: {e}");
                }
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, r: Arc<Resolver>) {
    loop {
        match listener.accept().await {
            Ok((s, src)) => {
                tokio::spawn(tcp_client(s, src, r.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: back off, do not spin.
                tracing::warn!("dns tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_client(mut s: TcpStream, src: SocketAddr, r: Arc<Resolver>) {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut s)).await {
            Ok(Ok(q)) => q,
            _ => return,
        };
        let Some(answer) = r.answer(&query, src.ip(), false).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

impl Resolver {
    /// The answer to one wire-format query, None to stay silent (garbage
    /// too short to carry an id).
    async fn answer(&self, query: &[u8], src: IpAddr, udp: bool) -> Option<Vec<u8>> {
        let Ok(msg) = Message::from_vec(query) else {
            return formerr(query);
        };
        let reply = self.decide(&msg, src).await;
        let mut wire = reply.to_vec().ok()?;
        let max = match &msg.edns {
            Some(e) => usize::from(e.max_payload()).max(PLAIN_UDP_MAX),
            None => PLAIN_UDP_MAX,
        };
        if udp && wire.len() > max {
            // The client retries over TCP.
            wire = reply.truncate().to_vec().ok()?;
        }
        Some(wire)
    }

    async fn decide(&self, msg: &Message, src: IpAddr) -> Message {
        let md = &msg.metadata;
        let error = |rc: ResponseCode| {
            let mut m = Message::error_msg(md.id, md.op_code, rc);
            m.metadata.recursion_desired = md.recursion_desired;
            m.metadata.recursion_available = true;
            m.add_queries(msg.queries.iter().cloned());
            m
        };
        if md.message_type != MessageType::Query {
            return error(ResponseCode::FormErr);
        }
        if md.op_code != OpCode::Query {
            return error(ResponseCode::NotImp);
        }
        let Some(att) = self.table.lookup(src) else {
            tracing::debug!(%src, "dns query from an unknown source refused");
            return error(ResponseCode::Refused);
        };
        let [q] = msg.queries.as_slice() else {
            return error(ResponseCode::FormErr);
        };
        let name = q.name.to_ascii();
        if !att.policy.allows_name(&name) {
            tracing::debug!(sandbox = %att.sandbox_id, %name, "dns name not allowed");
            return error(ResponseCode::NXDomain);
        }
        // Our own id upstream: a client-chosen one would make forged
        // answers easier to land.
        let mut up = msg.clone();
        up.metadata.id = rand::random();
        let Ok(wire) = up.to_vec() else {
            return error(ResponseCode::FormErr);
        };
        let answer = match self.upstream.forward(&wire).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%name, "dns upstream: {e}");
                return error(ResponseCode::ServFail);
            }
        };
        let Ok(mut answer) = Message::from_vec(&answer) else {
            return error(ResponseCode::ServFail);
        };
        answer.metadata.id = md.id;
        let always = self.always.get();
        let keep = |r: &Record| match &r.data {
            RData::A(a) => att.policy.resolved_verdict(IpAddr::V4(a.0), &always) == Verdict::Allow,
            RData::AAAA(a) => {
                att.policy.resolved_verdict(IpAddr::V6(a.0), &always) == Verdict::Allow
            }
            _ => true,
        };
        let before = answer.answers.len();
        answer.answers.retain(keep);
        answer.additionals.retain(keep);
        if answer.answers.len() != before {
            tracing::info!(sandbox = %att.sandbox_id, %name, "dns: dropped addresses the policy refuses");
        }
        answer
    }
}

/// FORMERR for a message that does not parse, if it has a header's id.
fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        // Too short, or itself a response (answering those loops).
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gets_formerr_or_silence() {
        assert_eq!(formerr(&[1, 2, 3]), None);
        let mut junk = vec![0xab, 0xcd, 0x01, 0x00];
        junk.extend_from_slice(&[0xff; 20]);
        let m = Message::from_vec(&formerr(&junk).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered.
        junk[2] = 0x81;
        assert_eq!(formerr(&junk), None);
    }
}
