//! Exposed ports: port PORT of sandbox NAME served at
//! `http://PORT-NAME.<base_domain>:<listen port>` by the daemon itself.
//! [`gate::route_host`] sits in front of the whole API and takes every
//! request whose Host is under the base domain; the API routes that expose
//! and unexpose are in `api/ports.rs`.
//!
//! The record of which ports are exposed is the store's; when each was
//! last used is kept in memory only (after a daemon restart the idle
//! clock of every exposed sandbox starts again).

pub mod acme;
pub mod cookie;
pub mod gate;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclaw_store::{ExposureRecord, SandboxRecord, SandboxState};
use serde::Serialize;

use crate::config::Config;
use crate::manager::Manager;

/// An exposure as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ExposureView {
    pub port: u16,
    pub public: bool,
    pub url: String,
}

/// The daemon's exposure state: the cookie key and the idle clocks.
#[derive(Debug)]
pub struct Ports {
    pub key: cookie::Key,
    /// Last proxied request (or the moment the reaper first saw the
    /// sandbox running) by sandbox id.
    last_used: Mutex<HashMap<String, Instant>>,
    /// Exchanges in flight by sandbox id (a long download or an open
    /// WebSocket is use, not idleness).
    active: Mutex<HashMap<String, usize>>,
}

/// One exchange in flight with a sandbox; its end restarts the idle clock.
pub struct InFlight {
    ports: Arc<Ports>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut active = self.ports.active.lock().unwrap();
        if let Some(n) = active.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.id);
            }
        }
        drop(active);
        self.ports.touch(&self.id);
    }
}

impl Ports {
    pub fn new(key: cookie::Key) -> Ports {
        Ports {
            key,
            last_used: Mutex::default(),
            active: Mutex::default(),
        }
    }

    /// An exchange with the sandbox begins; it lasts until the guard drops.
    pub fn begin(self: &Arc<Self>, sandbox_id: &str) -> InFlight {
        *self
            .active
            .lock()
            .unwrap()
            .entry(sandbox_id.to_string())
            .or_default() += 1;
        self.touch(sandbox_id);
        InFlight {
            ports: self.clone(),
            id: sandbox_id.to_string(),
        }
    }

    fn busy(&self, sandbox_id: &str) -> bool {
        self.active.lock().unwrap().contains_key(sandbox_id)
    }

    /// A request reached the sandbox: its idle clock starts again.
    pub fn touch(&self, sandbox_id: &str) {
        self.last_used
            .lock()
            .unwrap()
            .insert(sandbox_id.to_string(), Instant::now());
    }
}

/// The base domain in force: the configured one, else the sslip.io name
/// of the listen address. [`resolve`] fills it in at start-up.
pub fn base_domain(config: &Config) -> String {
    config
        .network
        .base_domain
        .clone()
        .unwrap_or_else(|| ironclaw_net::ports::sslip_domain(config.listen.ip()))
}

/// Fix the config's base domain (lowercase, no trailing dot, the default
/// filled in) once the daemon knows its real listen address.
pub fn resolve(config: &mut Config) -> anyhow::Result<()> {
    let base = base_domain(config)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let valid = !base.is_empty()
        && base.len() <= 200
        && base.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        anyhow::bail!("base_domain {base:?} is not a DNS name (labels of a-z, 0-9 and '-')");
    }
    config.network.base_domain = Some(base);
    Ok(())
}

/// The URL of an exposure with host label `label`: HTTPS when the ports
/// TLS listener is configured.
pub fn url(config: &Config, label: &str) -> String {
    let (scheme, port, default) = match config.ports_tls_listen {
        Some(a) => ("https", a.port(), 443),
        None => ("http", config.listen.port(), 80),
    };
    let suffix = if port == default {
        String::new()
    } else {
        format!(":{port}")
    };
    format!("{scheme}://{label}.{}{suffix}", base_domain(config))
}

pub fn view(config: &Config, e: &ExposureRecord) -> ExposureView {
    ExposureView {
        port: e.port,
        public: e.public,
        url: url(config, &e.label),
    }
}

/// The hook for sandbox views (`sandbox show`, `ls`): its exposures with
/// their URLs (none when the store cannot say).
pub fn views(m: &Manager, r: &SandboxRecord) -> Vec<ExposureView> {
    m.store
        .exposures_of(&r.id)
        .unwrap_or_default()
        .iter()
        .map(|e| view(&m.config, e))
        .collect()
}

/// Stop exposed sandboxes nobody sent a request to for `idle` (never when
/// zero). A stopped one wakes on its next request.
pub fn spawn_idle_stopper(manager: Arc<Manager>, ports: Arc<Ports>, idle: Duration) {
    if idle.is_zero() {
        return;
    }
    let tick = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            idle_pass(&manager, &ports, idle).await;
        }
    });
}

async fn idle_pass(manager: &Arc<Manager>, ports: &Ports, idle: Duration) {
    let Ok(all) = manager.store.exposures() else {
        return;
    };
    let mut ids: Vec<String> = all.into_iter().map(|e| e.sandbox_id).collect();
    ids.dedup();
    let now = Instant::now();
    for id in ids {
        let Ok(r) = manager.store.sandbox_by_id(&id) else {
            continue;
        };
        let busy = ports.busy(&id);
        let due = {
            let mut last = ports.last_used.lock().unwrap();
            if busy {
                false
            } else if r.state == SandboxState::Running && r.desired_running {
                // First seen running: a full idle period from now.
                now.duration_since(*last.entry(id.clone()).or_insert(now)) >= idle
            } else {
                last.remove(&id);
                false
            }
        };
        if due {
            tracing::info!(sandbox = %r.name, owner = %r.owner, "stopping exposed sandbox idle for {idle:?}");
            ports.last_used.lock().unwrap().remove(&id);
            if let Err(e) = manager.stop(&id).await {
                tracing::warn!(sandbox = %r.name, "idle stop failed: {e}");
            }
        }
    }
}
