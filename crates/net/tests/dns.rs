//! The resolver and the upstream client end to end, each test in a network
//! namespace of its own (see common).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use ironclaw_net::upstream::{Upstream, UpstreamError};
use ironclaw_net::EgressPolicy;

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
