//! The resolver and the upstream client end to end, each test in a network
//! namespace of its own (see common).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use ironclaw_net::upstream::{Upstream, UpstreamError};
use ironclaw_net::EgressPolicy;
use tokio::net::UdpSocket;

fn web() -> IpAddr {
    IpAddr::V4(WEB)
}

#[test]
fn allowed_names_resolve_and_others_do_not_exist() {
    netns(|| async {
        let w = world(|_, _| {}).await;
        for tcp in [false, true] {
            let m = ask(SANDBOX, "allowed.test.", RecordType::A, tcp).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(addrs(&m), vec![web()]);
            let m = ask(SANDBOX, "denied.test.", RecordType::A, tcp).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            assert!(m.answers.is_empty());
        }
        // The CNAME chain comes along.
        let m = ask(SANDBOX, "alias.test.", RecordType::A, false).await;
        assert!(matches!(m.answers[0].data, RData::CNAME(_)));
        assert_eq!(addrs(&m), vec![web()]);
        // A policy change applies to the next query.
        attach(&w.table, EgressPolicy::deny_all());
        let m = ask(SANDBOX, "allowed.test.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    });
}

#[test]
fn addresses_the_policy_refuses_are_dropped() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let m = ask(SANDBOX, "rebind.test.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            addrs(&m),
            Vec::<IpAddr>::new(),
            "loopback and metadata addresses kept"
        );
        let m = ask(SANDBOX, "mixed.test.", RecordType::A, false).await;
        assert_eq!(addrs(&m), vec![web()], "the private address kept");
    });
}

#[test]
fn strangers_are_refused() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        for tcp in [false, true] {
            let m = ask(STRANGER, "allowed.test.", RecordType::A, tcp).await;
            assert_eq!(m.metadata.response_code, ResponseCode::Refused);
            assert!(m.answers.is_empty());
        }
    });
}

#[test]
fn big_answers_use_tcp_both_upstream_and_to_the_client() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        // Upstream truncated over UDP; the resolver retried over TCP, and
        // now the answer does not fit the client's 512 bytes either.
        let m = ask(SANDBOX, "big.test.", RecordType::A, false).await;
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = ask(SANDBOX, "big.test.", RecordType::A, true).await;
        assert_eq!(addrs(&m).len(), 40);
    });
}

#[test]
fn garbage_never_stops_the_resolver() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        assert_eq!(udp_exchange(SANDBOX, b"\x01\x02").await, None);
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 5, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xc0; 40]);
        let a = udp_exchange(SANDBOX, &junk).await.expect("FORMERR");
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let m = ask(SANDBOX, "allowed.test.", RecordType::A, false).await;
        assert_eq!(addrs(&m), vec![web()]);
    });
}

#[test]
fn upstream_lookup_follows_cnames_fails_over_and_reports_nxdomain() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let up = Upstream::new(vec![
            SocketAddr::from((DEAD, 53)),
            SocketAddr::from((DNS, 53)),
        ])
        .with_timeout(Duration::from_millis(300));
        assert_eq!(up.lookup("alias.test").await.unwrap(), vec![web()]);
        assert_eq!(up.lookup("big.test").await.unwrap().len(), 40);
        assert!(matches!(
            up.lookup("nowhere.test").await,
            Err(UpstreamError::NxDomain(_))
        ));
        let dead = Upstream::new(vec![SocketAddr::from((DEAD, 53))])
            .with_timeout(Duration::from_millis(100));
        assert!(matches!(
            dead.lookup("allowed.test").await,
            Err(UpstreamError::Unreachable(_))
        ));
    });
}

/// A DNS server counting the queries it gets: NAME. has one A record with
/// the TTL its first label gives (t1.test. lives 1 s).
async fn counting_dns(addr: SocketAddr) -> Arc<AtomicUsize> {
    let sock = UdpSocket::bind(addr).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, src) = sock.recv_from(&mut buf).await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.add_queries(q.queries.clone());
            let question = &q.queries[0];
            let ttl: u32 = question.name.to_ascii()[1..2].parse().unwrap();
            if question.query_type == RecordType::A {
                m.add_answer(Record::from_rdata(
                    question.name.clone(),
                    ttl,
                    RData::A(A::from(WEB)),
                ));
            }
            sock.send_to(&m.to_vec().unwrap(), src).await.unwrap();
        }
    });
    count
}

#[test]
fn lookups_are_cached_for_their_ttl_only() {
    netns(|| async {
        let server = SocketAddr::from(([203, 0, 113, 54], 53));
        let count = counting_dns(server).await;
        let up = Upstream::new(vec![server]);
        let queries = || count.load(Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(up.lookup("t9.test").await.unwrap(), vec![web()]);
        }
        assert_eq!(queries(), 2, "one A and one AAAA query, then the cache");
        assert_eq!(up.lookup("t1.test").await.unwrap(), vec![web()]);
        assert_eq!(up.lookup("T1.test.").await.unwrap(), vec![web()]);
        assert_eq!(queries(), 4);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(up.lookup("t1.test").await.unwrap(), vec![web()]);
        assert_eq!(queries(), 6, "asked again once the TTL ran out");
        // A TTL of 0 is never kept.
        up.lookup("t0.test").await.unwrap();
        up.lookup("t0.test").await.unwrap();
        assert_eq!(queries(), 10);
    });
}
