//! ACME (RFC 8555) certificates for exposed ports, through instant-acme.
//!
//! A wildcard for `*.<base>` would need DNS-01, which the daemon cannot
//! answer; so every exposure host name `PORT-NAME.<base>` gets its own
//! certificate, validated over HTTP-01: the daemon serves
//! `/.well-known/acme-challenge/{token}` on its plain HTTP listener for
//! any Host from the in-memory map of pending challenges.
//!
//! One task per wanted name keeps its certificate: loads it from
//! `<data_dir>/acme/<host>.pem` (key `<host>.key`, 0600), orders one when
//! there is none, renews when less than a third of its lifetime is left,
//! and retries failures with backoff. The account key is kept in
//! `<data_dir>/acme/account.json` (0600) so restarts reuse the account.
//! Until a name has a certificate the TLS listener serves the fallback
//! (self-signed) one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::manager::Manager;
use crate::AppState;

/// Where HTTP-01 challenges are fetched (RFC 8555 section 8.3).
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("certificate: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
}

/// The `ports_acme_*` settings.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: String,
    pub email: Option<String>,
    /// Trust this CA (PEM) for the directory's own HTTPS instead of the
    /// system's roots (a test CA such as pebble's).
    pub ca_file: Option<PathBuf>,
}

/// A name's certificate state, as `ironclaw doctor` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// `issued`, `pending` (no certificate yet, ordering) or `failed`
    /// (the last order failed; a valid older certificate may still serve).
    pub state: &'static str,
    /// Expiry of the certificate served, RFC 3339.
    pub not_after: Option<String>,
    /// When it will be renewed, RFC 3339.
    pub renew_at: Option<String>,
    pub last_error: Option<String>,
    /// Failed orders in a row.
    pub failures: u32,
    /// When the next order is tried after a failure, RFC 3339.
    pub retry_at: Option<String>,
}

/// A certificate in use: what TLS serves and when to renew it.
struct Held {
    key: Arc<CertifiedKey>,
    not_before: i64,
    not_after: i64,
}

impl Held {
    /// Renew when less than a third of the lifetime is left.
    fn renew_at(&self) -> i64 {
        renew_at(self.not_before, self.not_after)
    }
}

fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before).max(0) / 3
}

/// Wait after the `n`th failure in a row: 10 s doubling up to an hour.
fn backoff(n: u32) -> Duration {
    let secs = 10u64.saturating_mul(1 << n.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(3600))
}

pub struct Acme {
    config: AcmeConfig,
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    /// Pending HTTP-01 challenges: token to key authorization.
    challenges: Mutex<HashMap<String, String>>,
    certs: RwLock<HashMap<String, Held>>,
    status: Mutex<BTreeMap<String, HostStatus>>,
    tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Made (or restored) on first use, once.
    account: tokio::sync::Mutex<Option<Account>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.config.directory)
            .finish_non_exhaustive()
    }
}

/// The account as saved: credentials are only good for their directory.
#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

impl Acme {
    /// Check the settings and make `<data_dir>/acme`; nothing is ordered
    /// before a name is wanted.
    pub fn new(config: AcmeConfig, data_dir: &Path) -> Result<Arc<Acme>, AcmeError> {
        if let Some(p) = &config.ca_file {
            CertificateDer::from_pem_file(p).map_err(|e| {
                AcmeError::Invalid(format!(
                    "ports_acme_ca_file {}: no PEM certificate ({e})",
                    p.display()
                ))
            })?;
        }
        let dir = data_dir.join("acme");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| AcmeError::Io(dir.clone(), e))?;
        }
        Ok(Arc::new(Acme {
            config,
            dir,
            provider: Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
            challenges: Mutex::default(),
            certs: RwLock::default(),
            status: Mutex::default(),
            tasks: Mutex::default(),
            account: tokio::sync::Mutex::new(None),
        }))
    }

    pub fn directory(&self) -> &str {
        &self.config.directory
    }

    /// The certificate for SNI name `host`, if one was issued.
    pub fn cert(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.certs.read().unwrap().get(&host).map(|h| h.key.clone())
    }

    /// The key authorization for a pending HTTP-01 token.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        self.challenges.lock().unwrap().get(token).cloned()
    }

    /// The state of every wanted name `visible` lets through, by name.
    pub fn report(&self, visible: impl Fn(&str) -> bool) -> serde_json::Value {
        let hosts: Vec<HostStatus> = self
            .status
            .lock()
            .unwrap()
            .values()
            .filter(|s| visible(&s.host))
            .cloned()
            .collect();
        serde_json::json!({"directory": self.config.directory, "certificates": hosts})
    }

    /// Keep certificates for exactly `hosts`: start a task for each new
    /// one, stop those no longer wanted (their files stay for a re-expose).
    pub fn want(self: &Arc<Self>, hosts: &BTreeSet<String>) {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|h, t| {
            let keep = hosts.contains(h);
            if !keep {
                t.abort();
                self.status.lock().unwrap().remove(h);
                self.certs.write().unwrap().remove(h);
            }
            keep
        });
        for h in hosts {
            if tasks.contains_key(h) || !file_safe(h) {
                continue;
            }
            self.status.lock().unwrap().insert(
                h.clone(),
                HostStatus {
                    host: h.clone(),
                    state: "pending",
                    not_after: None,
                    renew_at: None,
                    last_error: None,
                    failures: 0,
                    retry_at: None,
                },
            );
            let acme = self.clone();
            let host = h.clone();
            tasks.insert(
                h.clone(),
                tokio::spawn(async move { acme.keep(host).await }),
            );
        }
    }

    /// Hold a valid certificate for `host`, forever.
    async fn keep(self: Arc<Self>, host: String) {
        let mut failures = 0u32;
        if let Err(e) = self.load(&host) {
            tracing::warn!(%host, "ACME: ignoring the saved certificate: {e}");
        }
        loop {
            let due = self.certs.read().unwrap().get(&host).map(Held::renew_at);
            let now = unix_now();
            if let Some(at) = due.filter(|&at| at > now) {
                self.set(&host, |s| {
                    s.state = "issued";
                    s.retry_at = None;
                });
                // Sleep in pieces: a suspended host's clock jumps.
                let wait = (at - now).clamp(1, 6 * 3600) as u64;
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            if due.is_none() {
                self.set(&host, |s| s.state = "pending");
            }
            match self.issue(&host).await {
                Ok(()) => {
                    failures = 0;
                    tracing::info!(%host, "ACME: certificate issued");
                    self.set(&host, |s| {
                        s.failures = 0;
                        s.last_error = None;
                    });
                }
                Err(e) => {
                    let e = detail(&e);
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(%host, "ACME: ordering a certificate failed (attempt {failures}, next in {wait:?}): {e}");
                    self.set(&host, |s| {
                        s.state = "failed";
                        s.failures = failures;
                        s.last_error = Some(e.clone());
                        s.retry_at = Some(rfc3339(unix_now() + wait.as_secs() as i64));
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Update `host`'s status and its certificate dates; nothing once the
    /// name is no longer wanted (its task may run on until its next await).
    fn set(&self, host: &str, f: impl FnOnce(&mut HostStatus)) {
        let dates = self
            .certs
            .read()
            .unwrap()
            .get(host)
            .map(|h| (rfc3339(h.not_after), rfc3339(h.renew_at())));
        if let Some(s) = self.status.lock().unwrap().get_mut(host) {
            (s.not_after, s.renew_at) = dates.unzip();
            f(s);
        }
    }

    fn paths(&self, host: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{host}.pem")),
            self.dir.join(format!("{host}.key")),
        )
    }

    /// The saved certificate of `host`, if there is one.
    fn load(&self, host: &str) -> Result<(), AcmeError> {
        let (cp, kp) = self.paths(host);
        let (Ok(chain), Ok(key)) = (std::fs::read(&cp), std::fs::read(&kp)) else {
            return Ok(());
        };
        let held = self.held(&chain, &key)?;
        self.certs.write().unwrap().insert(host.to_string(), held);
        Ok(())
    }

    fn held(&self, chain: &[u8], key: &[u8]) -> Result<Held, AcmeError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| AcmeError::Invalid(format!("certificate chain: {e}")))?;
        let first = certs
            .first()
            .ok_or_else(|| AcmeError::Invalid("empty certificate chain".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| AcmeError::Invalid(format!("certificate: {e}")))?;
        let (not_before, not_after) = (
            x509.validity().not_before.timestamp(),
            x509.validity().not_after.timestamp(),
        );
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| AcmeError::Invalid(format!("private key: {e}")))?;
        let key = CertifiedKey::from_der(certs, key, &self.provider)?;
        Ok(Held {
            key: Arc::new(key),
            not_before,
            not_after,
        })
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(match &self.config.ca_file {
            Some(p) => Account::builder_with_root(p)?,
            None => Account::builder()?,
        })
    }

    /// The account: restored from `account.json` when it was made on this
    /// directory, else registered (agreeing to the CA's terms) and saved.
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let path = self.dir.join("account.json");
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<SavedAccount>(&b).ok())
            .filter(|s| s.directory == self.config.directory);
        let account = match saved {
            Some(s) => self.builder()?.from_credentials(s.credentials).await?,
            None => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = self
                    .builder()?
                    .create(&new, self.config.directory.clone(), None)
                    .await?;
                let saved = SavedAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                };
                let json =
                    serde_json::to_vec(&saved).map_err(|e| AcmeError::Invalid(e.to_string()))?;
                write_atomic(&path, &json, 0o600)?;
                tracing::info!(id = account.id(), "ACME: account registered");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// One order for `host`, HTTP-01 answered by [`serve_challenge`]; the
    /// certificate is saved and served from then on.
    async fn issue(&self, host: &str) -> Result<(), AcmeError> {
        let r = self.order(host).await;
        if let Err(AcmeError::Acme(instant_acme::Error::Api(p))) = &r {
            if p.r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist"))
            {
                // The CA forgot the account (a reset test CA): the next
                // attempt registers a new one.
                tracing::warn!("ACME: the CA no longer knows our account; registering anew");
                *self.account.lock().await = None;
                let _ = std::fs::remove_file(self.dir.join("account.json"));
            }
        }
        r
    }

    async fn order(&self, host: &str) -> Result<(), AcmeError> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut pending = Tokens {
            acme: self,
            tokens: Vec::new(),
        };
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => {
                    return Err(AcmeError::Invalid(format!(
                        "authorization for {host} is {s:?}"
                    )))
                }
            }
            let mut ch = a.challenge(ChallengeType::Http01).ok_or_else(|| {
                AcmeError::Invalid("the ACME server offers no http-01 challenge".into())
            })?;
            let token = ch.token.clone();
            self.challenges
                .lock()
                .unwrap()
                .insert(token.clone(), ch.key_authorization().as_str().to_string());
            pending.tokens.push(token);
            ch.set_ready().await?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(120));
        let ready = order.poll_ready(&retry).await;
        match ready {
            Ok(OrderStatus::Ready) => {}
            other => {
                let why = match other {
                    Ok(s) => format!("order is {s:?}"),
                    Err(e) => e.to_string(),
                };
                let more = challenge_errors(&mut order, &why).await;
                return Err(AcmeError::Invalid(format!("{why}{more}")));
            }
        }
        drop(pending);
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&retry).await?;
        let held = self.held(chain.as_bytes(), key.as_bytes())?;
        let (cp, kp) = self.paths(host);
        write_atomic(&kp, key.as_bytes(), 0o600)?;
        write_atomic(&cp, chain.as_bytes(), 0o644)?;
        self.certs.write().unwrap().insert(host.to_string(), held);
        Ok(())
    }
}

/// The validation errors the CA gave for the order's challenges (what
/// the validator saw) not already in `said`, each after a "; ".
async fn challenge_errors(order: &mut Order, said: &str) -> String {
    let mut out = String::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if a.refresh().await.is_err() {
            continue;
        }
        for c in &a.challenges {
            match &c.error {
                Some(e) if !said.contains(&e.to_string()) => {
                    out.push_str(&format!("; {:?}: {e}", c.r#type));
                }
                _ => {}
            }
        }
    }
    out
}

/// `e` and its sources (hyper's "client error (Connect)" says why only
/// in its source), each said once.
fn detail(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        next = s.source();
    }
    out
}

/// Challenges published for one order, withdrawn when it is done.
struct Tokens<'a> {
    acme: &'a Acme,
    tokens: Vec<String>,
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        let mut map = self.acme.challenges.lock().unwrap();
        for t in &self.tokens {
            map.remove(t);
        }
    }
}

/// Names become file names: only what [`super::resolve`] lets through.
fn file_safe(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let err = |e| AcmeError::Io(path.to_path_buf(), e);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rfc3339(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Answer HTTP-01 challenges for any Host, ahead of everything else: the
/// token is the secret, so no authentication.
pub async fn serve_challenge(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let answer = match (&st.acme, req.uri().path().strip_prefix(CHALLENGE_PATH)) {
        (Some(acme), Some(token)) if matches!(*req.method(), Method::GET | Method::HEAD) => {
            acme.key_authorization(token)
        }
        _ => None,
    };
    // Unknown tokens go on as any other request (a sandbox's own
    // /.well-known stays its own).
    match answer {
        Some(k) => ([(header::CONTENT_TYPE, "application/octet-stream")], k).into_response(),
        None => next.run(req).await,
    }
}

/// Keep certificates for every exposure's name (and the base domain when
/// `with_base`), following exposes and unexposes.
pub fn spawn_watcher(acme: Arc<Acme>, manager: Arc<Manager>, with_base: bool) {
    tokio::spawn(async move {
        loop {
            let base = super::base_domain(&manager.config);
            if let Ok(all) = manager.store.exposures() {
                let mut hosts: BTreeSet<String> = all
                    .iter()
                    .map(|e| format!("{}.{base}", e.label).to_ascii_lowercase())
                    .collect();
                if with_base {
                    hosts.insert(base.clone());
                }
                acme.want(&hosts);
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    });
}

/// How soon a new exposure's order starts (the store is polled).
const WATCH_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        // 90 days: renewed 30 days before expiry.
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        assert_eq!(renew_at(1000, 1000), 1000);
        assert_eq!(renew_at(2000, 1000), 1000, "bogus dates: renew at once");
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(30), Duration::from_secs(3600));
    }

    #[test]
    fn only_dns_names_become_files() {
        assert!(file_safe("8080-web.example.com"));
        for bad in ["", "../x", ".x", "a/b", "A.example", "x\0"] {
            assert!(!file_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn saved_certificates_load_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let acme = Acme::new(
            AcmeConfig {
                directory: "https://127.0.0.1:1/dir".into(),
                email: None,
                ca_file: None,
            },
            dir.path(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cp, kp) = acme.paths("a.example");
        write_atomic(&cp, cert.pem().as_bytes(), 0o644).unwrap();
        write_atomic(&kp, key.serialize_pem().as_bytes(), 0o600).unwrap();
        acme.load("a.example").unwrap();
        assert!(acme.cert("A.Example.").is_some());
        assert!(acme.cert("b.example").is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A key that is not the certificate's: refused, nothing served.
        let other = rcgen::KeyPair::generate().unwrap();
        write_atomic(&kp, other.serialize_pem().as_bytes(), 0o600).unwrap();
        let (cp, kp2) = acme.paths("b.example");
        std::fs::copy(acme.paths("a.example").0, &cp).unwrap();
        std::fs::copy(&kp, &kp2).unwrap();
        assert!(acme.load("b.example").is_err());
        assert!(acme.cert("b.example").is_none());
    }
}
