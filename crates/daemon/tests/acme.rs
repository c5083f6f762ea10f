//! ACME certificates for exposed ports against a real local CA: Debian's
//! `pebble`, on loopback, validating HTTP-01 against the daemon's own
//! listener for real (no PEBBLE_VA_ALWAYS_VALID). Pebble resolves the
//! test's names through a small DNS server this test runs, which answers
//! 127.0.0.1 for names under the test's base domain and nothing else.
//! Traffic goes only to loopback and to the sandboxes these tests create.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{json, Value};

const BASE: &str = "ironclaw.test";
/// Names of this exposed port do not resolve: the CA cannot validate them.
const UNRESOLVED: &str = "9091-";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pebble_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/pebble");
    p.is_file().then_some(p)
}

/// Pebble's own HTTPS (directory and management API) needs a certificate:
/// a throwaway CA and a leaf for 127.0.0.1, made before the daemon starts
/// so the daemon can be told to trust it.
struct PebbleSetup {
    dir: tempfile::TempDir,
    listen: u16,
    mgmt: u16,
    /// Lifetime of the certificates pebble issues (its default: 5 years).
    validity_secs: Option<u64>,
}

impl PebbleSetup {
    fn new() -> PebbleSetup {
        let dir = tempfile::tempdir().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test TLS CA");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("tls-ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        PebbleSetup {
            dir,
            listen: free_port(),
            mgmt: free_port(),
            validity_secs: None,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen)
    }

    fn tls_ca(&self) -> PathBuf {
        self.dir.path().join("tls-ca.pem")
    }

    /// Start pebble validating HTTP-01 on `http_port` (the daemon's) and
    /// resolving names through `dns`.
    fn start(self, http_port: u16, dns: SocketAddr) -> Pebble {
        self.write_config(http_port);
        Self::run(self, dns)
    }

    fn write_config(&self, http_port: u16) {
        let d = self.dir.path();
        let mut config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.listen),
            "managementListenAddress": format!("127.0.0.1:{}", self.mgmt),
            "certificate": d.join("cert.pem"),
            "privateKey": d.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        if let Some(v) = self.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = json!(v);
        }
        std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
    }

    fn run(self, dns: SocketAddr) -> Pebble {
        let d = self.dir.path();
        let log = d.join("pebble.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(pebble_bin().expect("pebble"))
            .arg("-config")
            .arg(d.join("pebble.json"))
            .arg("-dnsserver")
            .arg(dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn pebble");
        let pebble = Pebble {
            child,
            setup: self,
            log,
            dns,
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", pebble.setup.mgmt)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", pebble.setup.listen)).is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "pebble did not start: {}",
                pebble.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }
}

struct Pebble {
    child: Child,
    setup: PebbleSetup,
    log: PathBuf,
    dns: SocketAddr,
}

impl Pebble {
    /// A fresh pebble on the same ports: a new root, no accounts, an empty
    /// log.
    fn restart(mut self) -> Pebble {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dns = self.dns;
        // Keep the setup (its directory) for the new process.
        let setup = std::mem::replace(
            &mut self.setup,
            PebbleSetup {
                dir: tempfile::tempdir().unwrap(),
                listen: 0,
                mgmt: 0,
                validity_secs: None,
            },
        );
        drop(self);
        PebbleSetup::run(setup, dns)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Certificates pebble issued so far (one log line each).
    fn issued(&self) -> usize {
        self.log_text().matches("Issued certificate serial").count()
    }

    /// Pebble's issuing root (made afresh at each pebble start).
    async fn root(&self) -> String {
        let ca = std::fs::read(self.setup.tls_ca()).unwrap();
        let c = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let r = c
            .get(format!("https://127.0.0.1:{}/roots/0", self.setup.mgmt))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DNS server on loopback: A 127.0.0.1 for names under [`BASE`], no
/// records of other types, NXDOMAIN for every other name and for
/// [`UNRESOLVED`] ports' names. Stops on drop.
struct Dns {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn dns_server() -> Dns {
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            let name = query
                .name
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let ours = (name == BASE || name.ends_with(&format!(".{BASE}")))
                && !name.starts_with(UNRESOLVED);
            let code = if ours {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            let mut m = Message::error_msg(q.metadata.id, OpCode::Query, code);
            m.metadata.message_type = MessageType::Response;
            m.metadata.recursion_desired = q.metadata.recursion_desired;
            m.metadata.recursion_available = true;
            m.metadata.authoritative = true;
            m.add_query(query.clone());
            if ours && query.query_type() == RecordType::A {
                m.add_answer(Record::from_rdata(
                    query.name.clone(),
                    60,
                    RData::A(A(Ipv4Addr::LOCALHOST)),
                ));
            }
            if let Ok(wire) = m.to_vec() {
                let _ = sock.send_to(&wire, src).await;
            }
        }
    });
    Dns { addr, task }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// busybox httpd in a networked sandbox, serving `body` at /index.html.
async fn web_sandbox(d: &Daemon, name: &str, port: u16, body: &str) {
    d.sandbox(name, json!({"network": "internet"})).await;
    let script = format!(
        "mkdir -p /tmp/www && printf %s '{body}' > /tmp/www/index.html && \
         httpd -p {port} -h /tmp/www && echo started"
    );
    let v = d.exec(name, &["sh", "-c", &script]).await;
    assert_eq!(v["exit_code"], 0, "{v}");
}

/// `host`'s entry in the daemon's ACME report.
async fn acme_state(d: &Daemon, host: &str) -> Value {
    let (st, v) = d.get("/v1/host").await;
    assert_eq!(st, 200, "{v}");
    v["acme"]["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["host"] == host)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Wait until `host`'s state is `want`; another settled state fails.
async fn wait_acme(d: &Daemon, host: &str, want: &str, within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let s = acme_state(d, host).await;
        if s["state"] == want {
            return s;
        }
        let settled = ["issued", "failed"];
        assert!(
            !settled.contains(&s["state"].as_str().unwrap_or("")),
            "{host}: wanted {want}, got {s}"
        );
        assert!(
            t0.elapsed() < within,
            "{host} not {want} within {within:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client trusting only `root_pem`, sending `name` to 127.0.0.1:`port`.
fn client_trusting(root_pem: &str, name: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(name, ([127, 0, 0, 1], port).into())
        .tls_info(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("the server's certificate")
        .to_vec()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn acme_config(directory: &str, ca: Option<&Path>) -> String {
    let mut c = format!(
        "ports_tls_listen = \"127.0.0.1:0\"\nports_acme_directory = \"{directory}\"\n\
         ports_acme_email = \"ops@example.com\"\n"
    );
    if let Some(ca) = ca {
        c.push_str(&format!("ports_acme_ca_file = \"{}\"\n", ca.display()));
    }
    c.push_str(&format!("[network]\nbase_domain = \"{BASE}\"\n"));
    c
}

#[tokio::test]
async fn acme_certificates_are_issued_by_pebble_served_and_reused_after_restart() {
    if pebble_bin().is_none() {
        panic!("pebble is not installed: apt-get install pebble (scripts/setup-host.sh)");
    }
    let setup = PebbleSetup::new();
    let mut d = Daemon::start_with(&acme_config(&setup.directory(), Some(&setup.tls_ca()))).await;
    // Pebble validates against the daemon's real HTTP port, through our DNS.
    let dns = dns_server().await;
    let pebble = setup.start(port_of(&d.url), dns.addr);

    web_sandbox(&d, "web", 8080, "hello over acme").await;
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let name = format!("8080-web.{BASE}");
    let url = v["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("https://{name}:")), "{url}");
    let t0 = Instant::now();
    let s = wait_acme(&d, &name, "issued", Duration::from_secs(90)).await;
    let took = t0.elapsed();
    eprintln!("ACME certificate for {name} issued in {took:?}: {s}");
    assert!(
        s["not_after"].is_string() && s["renew_at"].is_string(),
        "{s}"
    );
    assert_eq!(pebble.issued(), 1, "{}", pebble.log_text());

    // Served by SNI and chained to pebble's issuing root, the request
    // reaching the sandbox.
    let root = pebble.root().await;
    let c = client_trusting(&root, &name, port_of(&url));
    let r = c
        .get(format!("{url}/index.html"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    let served = peer_cert(&r);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello over acme");
    // A name with no ACME certificate gets the self-signed fallback, which
    // this client refuses: the check above can fail.
    let other = format!("9090-web.{BASE}");
    let c2 = client_trusting(&root, &other, port_of(&url));
    let e = c2
        .get(format!("https://{other}:{}/", port_of(&url)))
        .send()
        .await;
    assert!(e.is_err(), "the fallback must not chain to pebble's root");

    // A name the CA cannot validate (it does not resolve): failed, with
    // the CA's reason, and HTTPS for it still answers (the fallback).
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 9091}))
        .await;
    assert_eq!(st, 201, "{v}");
    let bad = format!("9091-web.{BASE}");
    let s = wait_acme(&d, &bad, "failed", Duration::from_secs(60)).await;
    let err = s["last_error"].as_str().unwrap();
    eprintln!("ACME failure for {bad}: {err}");
    assert!(
        err.contains("could not resolve") && err.contains("acme:error:connection"),
        "{s}"
    );
    assert_eq!(pebble.issued(), 1);
    let insecure = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .resolve(&bad, ([127, 0, 0, 1], port_of(&url)).into())
        .build()
        .unwrap();
    let r = insecure
        .get(format!("https://{bad}:{}/", port_of(&url)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Saved: certificate, key 0600, account 0600; challenges withdrawn.
    let acme_dir = d.data_dir().join("acme");
    let pem = acme_dir.join(format!("{name}.pem"));
    assert_eq!(mode(&acme_dir.join(format!("{name}.key"))), 0o600);
    assert_eq!(mode(&acme_dir.join("account.json")), 0o600);
    assert_eq!(mode(&acme_dir), 0o700);
    let mtime = std::fs::metadata(&pem).unwrap().modified().unwrap();
    let account = std::fs::read(acme_dir.join("account.json")).unwrap();
    let r = d
        .http
        .get(d.u("/.well-known/acme-challenge/nothing-pending"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // On an exposure host an unknown token is no way past the gate.
    let listen = port_of(&d.url);
    let r = d
        .http
        .get(d.u("/.well-known/acme-challenge/nothing-pending"))
        .header("host", format!("{name}:{listen}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // doctor shows it.
    let out = d.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "ACME certificates from {}",
            pebble.setup.directory()
        )) && text.contains(&format!("  issued   {name}  valid until ")),
        "{text}"
    );

    // Restart (on a new HTTP port pebble does not know: a new order would
    // fail validation): the saved certificate serves, no new order.
    d.stop_daemon();
    d.spawn();
    let (_, ports) = d.get("/v1/sandboxes/web/ports").await;
    let url2 = ports["ports"][0]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{ports}"))
        .to_string();
    wait_acme(&d, &name, "issued", Duration::from_secs(10)).await;
    let c = client_trusting(&root, &name, port_of(&url2));
    let r = c
        .get(format!("{url2}/index.html"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(peer_cert(&r), served, "the same certificate after restart");
    assert_eq!(r.text().await.unwrap(), "hello over acme");
    assert_eq!(pebble.issued(), 1, "no new order after restart");
    assert_eq!(std::fs::metadata(&pem).unwrap().modified().unwrap(), mtime);
    assert_eq!(
        std::fs::read(acme_dir.join("account.json")).unwrap(),
        account
    );
    // Unexposed: no longer kept (nor listed).
    let (st, _) = d
        .req(
            reqwest::Method::DELETE,
            "/v1/sandboxes/web/ports/9091",
            None,
        )
        .await;
    assert_eq!(st, 204);
    let t0 = Instant::now();
    while !acme_state(&d, &bad).await.is_null() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{bad} still listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(pebble);
    drop(dns);
}

#[tokio::test]
async fn a_failing_acme_directory_shows_in_doctor_while_https_serves_the_fallback() {
    // Nothing listens there.
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    let d = Daemon::start_with(
        &acme_config(&dead, None).replace("[network]", "ports_acme_base_domain = true\n[network]"),
    )
    .await;
    d.sandbox("web", json!({})).await;
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let name = format!("8080-web.{BASE}");
    let s = wait_acme(&d, &name, "failed", Duration::from_secs(30)).await;
    // The base domain is wanted too (ports_acme_base_domain).
    wait_acme(&d, BASE, "failed", Duration::from_secs(30)).await;
    let err = s["last_error"].as_str().unwrap_or_default();
    assert!(err.starts_with("ACME: "), "{s}");
    assert!(
        s["failures"].as_u64() >= Some(1) && s["retry_at"].is_string(),
        "{s}"
    );
    let (_, host) = d.get("/v1/host").await;
    let check = host["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "acme")
        .cloned()
        .unwrap();
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains("2 failed"),
        "{check}"
    );
    // Another user sees nothing of the admin's names.
    let alice = d.add_user("alice").await;
    let (st, v) = d
        .call_as(&alice, reqwest::Method::GET, "/v1/host", None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["acme"]["certificates"], json!([]), "{v}");
    assert!(!v.to_string().contains(&name), "{v}");
    let out = d.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "  failed   {name}  self-signed fallback until issued; "
        )) && text.contains(err),
        "{text}"
    );
    // HTTPS still answers, with the self-signed certificate.
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .resolve(&name, ([127, 0, 0, 1], port_of(&url)).into())
        .tls_info(true)
        .build()
        .unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let fallback = std::fs::read(d.data_dir().join("ports-tls.pem")).unwrap();
    let fallback = rustls_pemfile_der(&fallback);
    assert_eq!(peer_cert(&r), fallback);
}

/// The DER of the first PEM certificate.
fn rustls_pemfile_der(pem: &[u8]) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn certificates_are_renewed_when_a_third_of_their_lifetime_is_left() {
    let mut setup = PebbleSetup::new();
    // 30 s certificates: renewed once 20 s have passed.
    setup.validity_secs = Some(30);
    let d = Daemon::start_with(&acme_config(&setup.directory(), Some(&setup.tls_ca()))).await;
    let dns = dns_server().await;
    let pebble = setup.start(port_of(&d.url), dns.addr);
    d.sandbox("web", json!({})).await;
    let (st, v) = d
        .post("/v1/sandboxes/web/ports", json!({"port": 8080}))
        .await;
    assert_eq!(st, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let name = format!("8080-web.{BASE}");
    let first = wait_acme(&d, &name, "issued", Duration::from_secs(60)).await;
    let root = pebble.root().await;
    let c = client_trusting(&root, &name, port_of(&url));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "past TLS: the gate wants a token");
    let before = peer_cert(&r);
    assert_eq!(pebble.issued(), 1);
    // Renewed in the background before expiry, then served.
    let t0 = Instant::now();
    while pebble.issued() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not renewed: {first}\n{}",
            pebble.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t0 = Instant::now();
    loop {
        let s = acme_state(&d, &name).await;
        let c = client_trusting(&root, &name, port_of(&url));
        let r = c.get(&url).send().await.unwrap();
        if peer_cert(&r) != before {
            assert_eq!(s["state"], "issued", "{s}");
            assert_ne!(s["not_after"], first["not_after"], "{s}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the renewed certificate is not served: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The CA loses its accounts (a fresh pebble, a new root): the next
    // renewal fails with accountDoesNotExist, the daemon registers anew,
    // and the certificate after that chains to the new root.
    let account = std::fs::read(d.data_dir().join("acme/account.json")).unwrap();
    let pebble = pebble.restart();
    let root2 = pebble.root().await;
    assert_ne!(root, root2);
    let t0 = Instant::now();
    loop {
        let c = client_trusting(&root2, &name, port_of(&url));
        if let Ok(r) = c.get(&url).send().await {
            assert_eq!(r.status(), 401);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no certificate from the new CA: {}\n{}",
            acme_state(&d, &name).await,
            pebble.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pebble.issued(), 1);
    let account2 = std::fs::read(d.data_dir().join("acme/account.json")).unwrap();
    assert_ne!(account, account2, "a new account was registered and saved");
    drop(pebble);
    drop(dns);
}
