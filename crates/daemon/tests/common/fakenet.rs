//! The "fake internet": a network namespace this test creates, joined to
//! the host by a veth pair, with its own DNS, HTTP and TCP servers on
//! addresses of a random /24 of 198.18.0.0/15 (benchmarking space: nobody's
//! real network). Sandboxes' egress reaches it through the host's
//! connected route; no traffic leaves for any other address. Removed on drop.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// What the fake HTTP servers saw: (server address, Host, headers).
pub type Seen = Arc<Mutex<Vec<(Ipv4Addr, String, HashMap<String, String>)>>>;

pub struct FakeInternet {
    pub ns: String,
    host_if: String,
    /// The /24's first three octets.
    pub net: [u8; 3],
    pub seen: Seen,
    /// Datagrams the UDP sink (.20:9002) received: (source, payload).
    pub udp_seen: Arc<Mutex<Vec<(SocketAddr, String)>>>,
    /// Name -> address the fake DNS answers.
    pub names: HashMap<String, Ipv4Addr>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FakeInternet {
    /// Host end of the veth: .1. The fake side: .2 (its router), .10 and .20
    /// (web servers), .53 (DNS).
    pub fn addr(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], last)
    }

    pub fn dns(&self) -> SocketAddr {
        SocketAddr::new(self.addr(53).into(), 53)
    }

    pub fn start() -> FakeInternet {
        let r = super::rand_u16() % 512;
        let net = [198, 18 + (r >> 8) as u8, (r & 0xff) as u8];
        let tag = format!("{:x}{:x}", std::process::id(), r);
        let ns = format!("icfake{tag}");
        let host_if = format!("icfh{tag}");
        let peer = format!("icfp{tag}");
        let me = FakeInternet {
            ns: ns.clone(),
            host_if: host_if.clone(),
            net,
            seen: Seen::default(),
            udp_seen: Default::default(),
            names: HashMap::new(),
        };
        let a = |last: u8| format!("{}.{}.{}.{last}", net[0], net[1], net[2]);
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{}/24", a(1)), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for last in [2, 10, 20, 53] {
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", a(last)),
                "dev",
                &peer,
            ]);
        }
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        me
    }

    /// Serve DNS for `names` and HTTP (80) and TCP (9000) on .10 and .20,
    /// from a thread that lives in the namespace.
    pub fn serve(&mut self, names: &[(&str, Ipv4Addr)]) {
        self.names = names.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let (ns, net, seen, table, udp_seen) = (
            self.ns.clone(),
            self.net,
            self.seen.clone(),
            self.names.clone(),
            self.udp_seen.clone(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let at = |last: u8| Ipv4Addr::new(net[0], net[1], net[2], last);
                let udp = tokio::net::UdpSocket::bind((at(53), 53)).await.unwrap();
                tokio::spawn(dns_server(udp, table));
                for last in [10, 20] {
                    let l = tokio::net::TcpListener::bind((at(last), 80)).await.unwrap();
                    tokio::spawn(http_server(l, at(last), seen.clone()));
                    let l = tokio::net::TcpListener::bind((at(last), 9000))
                        .await
                        .unwrap();
                    tokio::spawn(tcp_server(l, at(last)));
                }
                let l = tokio::net::TcpListener::bind((at(10), 9001)).await.unwrap();
                tokio::spawn(bulk_tcp_server(l));
                let sink = tokio::net::UdpSocket::bind((at(20), 9002)).await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1500];
                    while let Ok((n, from)) = sink.recv_from(&mut buf).await {
                        let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                        udp_seen.lock().unwrap().push((from, text));
                    }
                });
                ready_tx.send(()).unwrap();
                // Lives until the process ends; the namespace goes on drop.
                std::future::pending::<()>().await;
            });
        });
        ready_rx.recv().unwrap();
    }

    pub fn seen_by(&self, last: u8) -> Vec<(String, HashMap<String, String>)> {
        let at = self.addr(last);
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, ..)| *a == at)
            .map(|(_, h, m)| (h.clone(), m.clone()))
            .collect()
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Bytes the bulk endpoints send (`GET /bulk` on port 80, and port 9001).
pub const BULK_BYTES: usize = 256 << 20;

fn bulk_chunks() -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let chunk = bytes::Bytes::from(vec![0u8; 256 << 10]);
    futures::stream::iter((0..BULK_BYTES / chunk.len()).map(move |_| Ok(chunk.clone())))
}

/// BULK_BYTES of zeros to anyone who connects, then close.
async fn bulk_tcp_server(l: tokio::net::TcpListener) {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let mut chunks = std::pin::pin!(bulk_chunks());
            while let Some(Ok(c)) = chunks.next().await {
                if s.write_all(&c).await.is_err() {
                    return;
                }
            }
            let _ = s.shutdown().await;
        });
    }
}

/// `fake-internet ADDR host=HOST` for every request; headers recorded.
/// `GET /bulk` streams BULK_BYTES.
async fn http_server(l: tokio::net::TcpListener, me: Ipv4Addr, seen: Seen) {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    let bulk = axum::Router::new().route(
        "/bulk",
        axum::routing::get(|| async {
            axum::body::Body::from_stream(bulk_chunks()).into_response()
        }),
    );
    let app = bulk.fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            seen.lock().unwrap().push((me, host.clone(), headers));
            format!("fake-internet {me} host={host}\n")
        }
    });
    let _ = axum::serve(l, app).await;
}

/// `tcp-ok ADDR` to anyone who connects.
async fn tcp_server(l: tokio::net::TcpListener, me: Ipv4Addr) {
    use tokio::io::AsyncWriteExt;
    while let Ok((mut s, _)) = l.accept().await {
        let _ = s.write_all(format!("tcp-ok {me}\n").as_bytes()).await;
    }
}

/// A minimal authoritative answerer: A records from `names`, NXDOMAIN for
/// the rest, empty answers for other types.
async fn dns_server(udp: tokio::net::UdpSocket, names: HashMap<String, Ipv4Addr>) {
    let mut buf = [0u8; 1500];
    while let Ok((n, from)) = udp.recv_from(&mut buf).await {
        if let Some(resp) = dns_answer(&buf[..n], &names) {
            let _ = udp.send_to(&resp, from).await;
        }
    }
}

pub fn dns_answer(q: &[u8], names: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = &q[12..i + 4];
    let name = labels.join(".");
    let found = names.get(&name);
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]);
    let rcode = if found.is_some() { 0 } else { 3 };
    r.extend_from_slice(&[0x81 | (q[2] & 0x01), 0x80 | rcode]);
    let answers = u16::from(found.is_some() && qtype == 1);
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    if let (Some(a), 1) = (found, answers) {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}
