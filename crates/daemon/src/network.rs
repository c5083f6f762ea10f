//! The manager's side of sandbox networking: which sandboxes get a port on
//! the bridge, their egress policies, and keeping the host network in step
//! with the sandboxes' lifecycle (attach at boot, release at stop, crash and
//! removal, re-attach after a daemon restart).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use ironclaw_net::{host::HostNetwork, EgressPolicy, NetworkMode};
use ironclaw_sandbox::netdev::NetAttachment;
use ironclaw_sandbox::BackendKind;
use ironclaw_store::SandboxRecord;

use ironclaw_net::egress::{Ca, HeaderRule};

use crate::config::Config;
use crate::error::ApiError;
use crate::manager::Manager;

impl From<ironclaw_net::host::HostNetError> for ApiError {
    fn from(e: ironclaw_net::host::HostNetError) -> Self {
        match e {
            ironclaw_net::host::HostNetError::SubnetFull(..) => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::Internal(format!("sandbox network: {other}")),
        }
    }
}

impl From<ironclaw_net::policy::PolicyError> for ApiError {
    fn from(e: ironclaw_net::policy::PolicyError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// The network part of a create request, checked.
pub struct NetworkChoice {
    pub mode: NetworkMode,
    pub policy: EgressPolicy,
    pub group: Option<String>,
}

/// The egress proxy's header rules with their secrets filled in. Err: a
/// referenced secret is missing (the daemon refuses to start).
pub fn egress_rules(config: &Config) -> Result<Vec<HeaderRule>, String> {
    if config.network.egress_headers.is_empty() {
        return Ok(Vec::new());
    }
    let secrets = match &config.secrets_file {
        Some(p) => ironclaw_agent::Secrets::load(p).map_err(|e| e.to_string())?,
        None => ironclaw_agent::Secrets::env_only(),
    };
    config
        .network
        .egress_headers
        .iter()
        .map(|h| h.resolve(|name| secrets.get(name)))
        .collect()
}

/// The host network of this daemon, from its config. Header rules need
/// the per-daemon CA (HTTPS to their domains is intercepted); it is made
/// once, in the data dir.
pub fn host_network(config: &Config, data_dir: &Path) -> Result<Arc<HostNetwork>, String> {
    let net = &config.network;
    let mut egress = ironclaw_net::egress::EgressContext::new(
        ironclaw_net::Table::default(),
        Arc::new(ironclaw_net::upstream::Upstream::new(
            net.upstream_dns.clone(),
        )),
        Arc::new(HostNetwork::always_deny(net)),
    );
    let rules = egress_rules(config)?;
    let mut trust_ca = None;
    if !rules.is_empty() {
        let dir = data_dir.join("egress-ca");
        let ca = Ca::load_or_create(&dir).map_err(|e| format!("the egress CA: {e}"))?;
        egress.ca = Some(Arc::new(ca));
        trust_ca = Some(dir.join(ironclaw_net::egress::CERT_FILE));
    }
    for f in &net.upstream_ca_files {
        egress.upstream_ca_pems.push(
            std::fs::read_to_string(f)
                .map_err(|e| format!("upstream_ca_files: {}: {e}", f.display()))?,
        );
    }
    egress.set_header_rules(rules);
    let host = HostNetwork::new(net.clone(), egress);
    Ok(Arc::new(match trust_ca {
        Some(cert) => host.with_trust_ca(cert),
        None => host,
    }))
}

impl Manager {
    /// Check `--network` and the policy of a create request against the
    /// config.
    pub(crate) fn network_choice(
        &self,
        mode: Option<&str>,
        policy: Option<EgressPolicy>,
        join: Option<String>,
    ) -> Result<NetworkChoice, ApiError> {
        let mode = match mode {
            Some(m) => m.parse().map_err(ApiError::BadRequest)?,
            None => self.config.network.default_mode,
        };
        let policy = policy
            .unwrap_or_else(|| self.config.network.default_policy.clone())
            .normalized()?;
        if let Some(g) = &join {
            ironclaw_sandbox::name::validate(g)
                .map_err(|e| ApiError::InvalidName(format!("network name: {e}")))?;
            if mode != NetworkMode::Internet {
                return Err(ApiError::BadRequest(
                    "join needs a network: drop --network none".into(),
                ));
            }
        }
        Ok(NetworkChoice {
            mode,
            policy,
            group: join,
        })
    }

    /// The sandbox's port on the bridge, if it has a network.
    pub(crate) fn attachment(&self, r: &SandboxRecord) -> Option<NetAttachment> {
        if r.network != NetworkMode::Internet.as_str() {
            return None;
        }
        self.net.attachment(&r.id, r.uid_slot).ok()
    }

    /// Its address on the bridge (what the port proxy connects to).
    pub fn sandbox_address(&self, r: &SandboxRecord) -> Option<Ipv4Addr> {
        self.attachment(r).map(|a| a.address)
    }

    /// The sandbox's egress policy as stored.
    pub fn egress_of(r: &SandboxRecord) -> EgressPolicy {
        serde_json::from_str(&r.egress).unwrap_or_default()
    }

    /// Before a backend starts a networked sandbox.
    pub(crate) async fn net_prepare(&self, r: &SandboxRecord) -> Result<(), ApiError> {
        if r.network != NetworkMode::Internet.as_str() {
            return Ok(());
        }
        let att = self.net.attachment(&r.id, r.uid_slot)?;
        let guest_owns_link = r.backend != BackendKind::Namespace.as_str();
        self.net.prepare(&att, guest_owns_link).await?;
        Ok(())
    }

    /// The sandbox is running: its link is an isolated port of the bridge
    /// (a VM's tap joined it without the flag; after a daemon restart the
    /// bridge may be new) and its egress is open as its policy says.
    pub(crate) async fn net_activate(&self, r: &SandboxRecord) -> Result<(), ApiError> {
        let Some(att) = self.attachment(r) else {
            return Ok(());
        };
        // Named networks are per owner: alice's "backend" is not bob's.
        let group = r.net_group.as_ref().map(|g| format!("{}/{g}", r.owner));
        self.net
            .activate(&att, &r.id, Self::egress_of(r), group)
            .await?;
        Ok(())
    }

    /// The sandbox is no longer running (stopped, crashed, failed to start).
    pub(crate) async fn net_release(&self, r: &SandboxRecord) {
        let Some(att) = self.attachment(r) else {
            return;
        };
        // A Firecracker VM's tap is persistent: its backend deletes it at
        // stop, but a crash (of the VM or of the daemon) leaves it.
        if let Err(e) = ironclaw_sandbox::netdev::tap::delete_persistent(&att.host_ifname) {
            tracing::warn!(sandbox = %r.name, "deleting its tap: {e}");
        }
        if let Err(e) = self.net.release(att.address).await {
            tracing::warn!(sandbox = %r.name, "releasing its network: {e}");
        }
    }

    /// Replace a sandbox's egress policy, applied at once when it runs.
    pub async fn set_egress(
        &self,
        id: &str,
        policy: EgressPolicy,
    ) -> Result<SandboxRecord, ApiError> {
        let policy = policy.normalized()?;
        // Not while it boots: the boot would attach it with the old policy.
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let r = self.by_id(id)?;
        if r.network != NetworkMode::Internet.as_str() {
            return Err(ApiError::BadRequest(format!(
                "sandbox '{}' has no network (created with --network none); its egress policy cannot apply",
                r.name
            )));
        }
        let json = serde_json::to_string(&policy).map_err(|e| ApiError::Internal(e.to_string()))?;
        let previous = r.egress.clone();
        self.store.set_sandbox_egress(id, &json)?;
        if let Some(att) = self.attachment(&r) {
            if let Err(e) = self.net.set_policy(att.address, policy).await {
                // Nothing acknowledged that is not in force.
                let _ = self.store.set_sandbox_egress(id, &previous);
                return Err(e.into());
            }
        }
        self.by_id(id)
    }
}
