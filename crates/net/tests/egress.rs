//! The egress proxies end to end, each test in a network namespace of its
//! own (see common).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use hickory_proto::rr::RecordType;
use hyper::StatusCode;
use ironclaw_net::egress::{so_original_dst, Ca, HeaderRule};
use ironclaw_net::{AlwaysDeny, EgressPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;

fn name(s: &str) -> ServerName<'static> {
    ServerName::try_from(s.to_string()).unwrap()
}

#[test]
fn every_request_on_a_keepalive_connection_is_decided() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let mut c = http_conn(SANDBOX).await;
        let (st, body) = get(&mut c, "allowed.test", &[]).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(body.starts_with("GET /path?q=1\n"), "{body}");
        assert!(body.contains("host: allowed.test\n"), "{body}");
        // The same connection, now to a name the policy does not allow.
        let (st, body) = get(&mut c, "denied.test", &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert!(
            body.contains("denied.test is not allowed by this sandbox's policy"),
            "{body}"
        );
        // ... and the connection still serves allowed requests.
        let (st, _) = get(&mut c, "alias.test:80", &[]).await;
        assert_eq!(st, StatusCode::OK);
    });
}

#[test]
fn rebinding_names_and_forbidden_literals_are_refused() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let mut c = http_conn(SANDBOX).await;
        let (st, body) = get(&mut c, "rebind.test", &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert!(body.contains("no address this sandbox may reach"), "{body}");
        // A name with a private and a public address uses the public one.
        assert_eq!(get(&mut c, "mixed.test", &[]).await.0, StatusCode::OK);
        for host in [
            "127.0.0.1",
            "169.254.169.254",
            "[::ffff:127.0.0.1]",
            "10.88.0.1:8080",
            "10.1.2.3",
            // Public, but a domain-only policy opens no literal address.
            "203.0.113.10",
        ] {
            let (st, body) = get(&mut c, host, &[]).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{host}: {body}");
        }
    });
}

#[test]
fn an_address_the_host_gains_is_refused_from_then_on() {
    netns(|| async {
        let w = world(|_, _| {}).await;
        let mut c = http_conn(SANDBOX).await;
        assert_eq!(get(&mut c, "allowed.test", &[]).await.0, StatusCode::OK);
        let before = ask(SANDBOX, "allowed.test", RecordType::A, false).await;
        assert!(!addrs(&before).is_empty());
        // The host now has allowed.test's address (as after a DHCP change):
        // the running resolver and proxy refuse it without a restart.
        let host = vec!["203.0.113.10".parse().unwrap()];
        assert!(w
            .ctx
            .always
            .set(AlwaysDeny::new("10.88.0.0/16".parse().unwrap(), host)));
        let (st, body) = get(&mut c, "allowed.test", &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
        let after = ask(SANDBOX, "allowed.test", RecordType::A, false).await;
        assert!(addrs(&after).is_empty(), "{after:?}");
    });
}

#[test]
fn policy_changes_apply_to_the_next_request() {
    netns(|| async {
        let w = world(|_, _| {}).await;
        let mut c = http_conn(SANDBOX).await;
        assert_eq!(get(&mut c, "allowed.test", &[]).await.0, StatusCode::OK);
        assert_eq!(
            get(&mut c, "203.0.113.10", &[]).await.0,
            StatusCode::FORBIDDEN
        );
        attach(&w.table, EgressPolicy::allow_all());
        assert_eq!(get(&mut c, "203.0.113.10", &[]).await.0, StatusCode::OK);
        attach(&w.table, EgressPolicy::deny_all());
        assert_eq!(
            get(&mut c, "allowed.test", &[]).await.0,
            StatusCode::FORBIDDEN
        );
        w.table.remove(SANDBOX);
        let (st, body) = get(&mut c, "allowed.test", &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert!(body.contains("not an attached sandbox"), "{body}");
    });
}

#[test]
fn unknown_sources_are_refused() {
    netns(|| async {
        let w = world(|_, _| {}).await;
        let mut c = http_conn(STRANGER).await;
        let (st, body) = get(&mut c, "allowed.test", &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert!(
            body.contains("198.51.100.11 is not an attached sandbox"),
            "{body}"
        );
        let r = https_get(
            STRANGER,
            &w.test_ca.pem,
            name("allowed.test"),
            "allowed.test",
        )
        .await;
        assert!(refused_by_proxy(&r), "TLS from a stranger: {r:?}");
    });
}

#[test]
fn header_rules_reach_the_server_and_replace_the_sandboxs_value() {
    netns(|| async {
        let w = world(|_, _| {}).await;
        w.ctx.set_header_rules(vec![
            HeaderRule {
                domain: "allowed.test".into(),
                header: "X-Api-Key".into(),
                value: "s3cret".into(),
            },
            HeaderRule {
                domain: "*.elsewhere.test".into(),
                header: "x-other".into(),
                value: "nope".into(),
            },
        ]);
        let mut c = http_conn(SANDBOX).await;
        let (st, body) = get(&mut c, "allowed.test", &[("x-api-key", "forged")]).await;
        assert_eq!(st, StatusCode::OK);
        assert!(body.contains("x-api-key: s3cret\n"), "{body}");
        assert!(
            !body.contains("forged") && !body.contains("x-other"),
            "{body}"
        );
        // Another name gets no secret.
        let (_, body) = get(&mut c, "alias.test", &[]).await;
        assert!(!body.contains("s3cret"), "{body}");
    });
}

#[test]
fn upgrades_become_a_byte_stream() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let mut s = dial(SANDBOX, HTTP_PORT).await;
        s.write_all(
            b"GET /ws HTTP/1.1\r\nhost: allowed.test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
    });
}

#[test]
fn request_bodies_reach_the_server() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let mut s = dial(SANDBOX, HTTP_PORT).await;
        let body = vec![b'x'; 1 << 20];
        let head = format!(
            "POST /up HTTP/1.1\r\nhost: allowed.test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("body: 1048576 bytes"), "{out}");
    });
}

#[test]
fn connect_requests_are_refused() {
    netns(|| async {
        let _w = world(|_, _| {}).await;
        let mut s = dial(SANDBOX, HTTP_PORT).await;
        s.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\nhost: allowed.test:443\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"HTTP/1.1 405");
    });
}

#[test]
fn tls_passes_through_to_allowed_names_only() {
    netns(|| async {
        let w = world(|_, _| {}).await;
        // The client verifies the real server's certificate: untouched bytes.
        let body = https_get(
            SANDBOX,
            &w.test_ca.pem,
            name("allowed.test"),
            "allowed.test",
        )
        .await
        .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("host: allowed.test"), "{body}");
        for sni in ["denied.test", "rebind.test"] {
            let r = https_get(SANDBOX, &w.test_ca.pem, name(sni), sni).await;
            assert!(refused_by_proxy(&r), "{sni}: {r:?}");
        }
        // Policy changes apply to the next connection.
        attach(&w.table, EgressPolicy::deny_all());
        let r = https_get(
            SANDBOX,
            &w.test_ca.pem,
            name("allowed.test"),
            "allowed.test",
        )
        .await;
        assert!(refused_by_proxy(&r), "{r:?}");
    });
}

#[test]
fn tls_without_sni_is_decided_on_the_original_address() {
    netns(|| async {
        let orig = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let o = orig.clone();
        let w = world(move |ctx, _| ctx.original_dst = Arc::new(move |_| *o.lock().unwrap())).await;
        let ip = ServerName::IpAddress(WEB.into());
        // Unknown original destination: nothing to decide on.
        let r = https_get(SANDBOX, &w.test_ca.pem, ip.clone(), "x").await;
        assert!(refused_by_proxy(&r), "{r:?}");
        *orig.lock().unwrap() = Some((WEB, 443).into());
        // A domain-only policy opens no address.
        let r = https_get(SANDBOX, &w.test_ca.pem, ip.clone(), "x").await;
        assert!(refused_by_proxy(&r), "{r:?}");
        attach(&w.table, EgressPolicy::allow_all());
        let body = https_get(SANDBOX, &w.test_ca.pem, ip.clone(), "x")
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        // Never the hard-denied set, even with allow-all.
        *orig.lock().unwrap() = Some(([127, 0, 0, 1], 443).into());
        let r = https_get(SANDBOX, &w.test_ca.pem, ip, "x").await;
        assert!(refused_by_proxy(&r), "{r:?}");
    });
}

#[test]
fn https_to_a_domain_with_rules_is_intercepted_and_gets_the_header() {
    netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::load_or_create(dir.path()).unwrap());
        let daemon_ca = ca.cert_pem().to_string();
        let w = world(move |ctx, test_ca| {
            ctx.ca = Some(ca);
            ctx.upstream_ca_pems = vec![test_ca.pem.clone()];
        })
        .await;
        w.ctx.set_header_rules(vec![HeaderRule {
            domain: "secret.test".into(),
            header: "authorization".into(),
            value: "Bearer s3cret".into(),
        }]);
        // The sandbox trusts the daemon's CA, and sees the server's answer.
        let body = https_get(SANDBOX, &daemon_ca, name("secret.test"), "secret.test")
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("authorization: Bearer s3cret"), "{body}");
        // Inside the interception every request is still decided.
        let body = https_get(SANDBOX, &daemon_ca, name("secret.test"), "denied.test")
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 403"), "{body}");
        // Names without rules are passed through: the real certificate.
        let body = https_get(
            SANDBOX,
            &w.test_ca.pem,
            name("allowed.test"),
            "allowed.test",
        )
        .await
        .unwrap();
        assert!(!body.contains("s3cret"), "{body}");
        let r = https_get(SANDBOX, &daemon_ca, name("allowed.test"), "allowed.test").await;
        assert!(bad_certificate(&r), "{r:?}");
        // Interception follows rule changes too.
        w.ctx.set_header_rules(vec![]);
        let r = https_get(SANDBOX, &daemon_ca, name("secret.test"), "secret.test").await;
        assert!(bad_certificate(&r), "{r:?}");
    });
}

/// With a real nft redirect (in the test's namespace, like the daemon's
/// ruleset does on the bridge) the proxy learns where the sandbox was going
/// from SO_ORIGINAL_DST.
#[test]
fn redirected_connections_report_their_original_destination() {
    netns(|| async {
        let w = world(|ctx, _| ctx.original_dst = Arc::new(so_original_dst)).await;
        let rules = "table ip test_redirect {
            chain output {
                type nat hook output priority -100;
                ip saddr 198.51.100.10 tcp dport 80 dnat to 10.88.0.1:8080;
                ip saddr 198.51.100.10 tcp dport 443 dnat to 10.88.0.1:8443;
            }
        }";
        let mut nft = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft (package nftables) is needed by this test");
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(nft.wait().unwrap().success(), "nft -f");
        attach(&w.table, EgressPolicy::allow_all());
        // A client that knows nothing of the proxy: it dials the server.
        let dial_web = |port: u16| async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((SANDBOX, 0))).unwrap();
            s.connect(SocketAddr::from((WEB, port))).await.unwrap()
        };
        let s = dial_web(443).await;
        // No SNI: decided on (and connected to) the original address.
        let ip = ServerName::IpAddress(WEB.into());
        let mut tls = tls_client(&w.test_ca.pem).connect(ip, s).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tls.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let mut s = dial_web(80).await;
        s.write_all(b"GET / HTTP/1.1\r\nhost: allowed.test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        // Unredirected connections (straight to the proxy) report none.
        let l = tokio::net::TcpListener::bind((GATEWAY, 9000))
            .await
            .unwrap();
        let _c = tokio::net::TcpStream::connect((GATEWAY, 9000))
            .await
            .unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        assert_eq!(so_original_dst(&accepted), None);
    });
}
