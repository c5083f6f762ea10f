//! Host networking for sandboxes. Each networked sandbox is a port of one
//! host bridge with an address from the store; nftables NATs and filters
//! what leaves; the daemon's resolver answers the sandboxes' DNS; ports 80
//! and 443 go through the egress proxy, which decides by name; and exposed
//! ports are served by the port proxy.

pub mod dns;
pub mod egress;
pub mod host;
pub mod nft;
pub mod policy;
pub mod ports;
pub mod upstream;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

pub use policy::{AlwaysDeny, EgressPolicy, Verdict};

/// A networked sandbox as the resolver, the proxies and the ruleset see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub sandbox_id: String,
    pub address: Ipv4Addr,
    pub policy: EgressPolicy,
    /// The named network it joined (owner-scoped key, e.g. `alice/backend`):
    /// sandboxes of one named network reach each other, on any port.
    pub group: Option<String>,
}

/// The attached sandboxes by address: traffic from the bridge is
/// attributed to a sandbox by its source address (sandboxes cannot spoof
/// it: their network namespace belongs to the host, and VMs' ports are
/// checked by the ruleset).
#[derive(Debug, Clone, Default)]
pub struct Table(Arc<RwLock<HashMap<Ipv4Addr, Arc<Attached>>>>);

impl Table {
    pub fn lookup(&self, src: IpAddr) -> Option<Arc<Attached>> {
        let v4 = match policy::canonical(src) {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => return None,
        };
        self.0.read().unwrap().get(&v4).cloned()
    }

    /// Add or replace (a policy change replaces).
    pub fn insert(&self, a: Attached) {
        self.0.write().unwrap().insert(a.address, Arc::new(a));
    }

    pub fn remove(&self, address: Ipv4Addr) -> Option<Arc<Attached>> {
        self.0.write().unwrap().remove(&address)
    }

    /// Every attached sandbox, ordered by address.
    pub fn snapshot(&self) -> Vec<Arc<Attached>> {
        let mut v: Vec<_> = self.0.read().unwrap().values().cloned().collect();
        v.sort_by_key(|a| a.address);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().unwrap().is_empty()
    }
}

/// Whether a sandbox gets a network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// A port on the bridge, egress under the sandbox's policy.
    #[default]
    Internet,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Internet => "internet",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NetworkMode::None),
            "internet" => Ok(NetworkMode::Internet),
            _ => Err(format!("unknown network {s:?} (expected internet or none)")),
        }
    }
}

/// The `[network]` table of the daemon's config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The host bridge; also names the daemon's nft table.
    pub bridge: String,
    /// The sandboxes' subnet; the bridge takes its first address.
    pub subnet: ipnet::Ipv4Net,
    /// `--network` of a create that names none.
    pub default_mode: NetworkMode,
    /// Policy of a sandbox created without one.
    pub default_policy: EgressPolicy,
    /// Resolvers the daemon asks (its own resolver and the egress proxy);
    /// empty: the host's /etc/resolv.conf.
    pub upstream_dns: Vec<std::net::SocketAddr>,
    /// Exposed ports are served at `PORT-NAME.<base_domain>`; None: an
    /// sslip.io name of the listen address.
    pub base_domain: Option<String>,
    /// Stop an exposed sandbox after this long without a request (0: never).
    pub expose_idle_stop_secs: u64,
    /// How long a request to a stopped exposed sandbox waits for it to boot.
    pub wake_timeout_secs: u64,
    /// Headers the egress proxy adds to requests for a domain
    /// (`[[network.egress_headers]]`); `${NAME}` in a value is the host's
    /// secret NAME, which never enters a sandbox.
    pub egress_headers: Vec<EgressHeader>,
    /// Extra CA certificates (PEM files) the egress proxy trusts when it
    /// re-encrypts intercepted HTTPS (a private upstream, or a test's).
    pub upstream_ca_files: Vec<std::path::PathBuf>,
}

/// One `[[network.egress_headers]]` entry as configured.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressHeader {
    /// `api.example.com` or `*.example.com`.
    pub domain: String,
    pub header: String,
    /// e.g. `Bearer ${GITHUB_TOKEN}`.
    pub value: String,
}

impl EgressHeader {
    /// The rule with `${NAME}` replaced by `secret(NAME)`; Err names a
    /// secret that is not set.
    pub fn resolve(
        &self,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<egress::HeaderRule, String> {
        let mut out = String::new();
        let mut rest = self.value.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in the value for {}", self.domain))?;
            let name = &after[..end];
            out.push_str(&secret(name).ok_or_else(|| {
                format!(
                    "egress header {} for {}: secret {name} is not set (environment or secrets_file)",
                    self.header, self.domain
                )
            })?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        let domain = policy::normalize_pattern(&self.domain)
            .map_err(|e| format!("egress header {}: {e}", self.header))?;
        Ok(egress::HeaderRule {
            domain,
            header: self.header.clone(),
            value: out,
        })
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "ironclaw0".into(),
            subnet: "10.88.0.0/16".parse().unwrap(),
            default_mode: NetworkMode::Internet,
            default_policy: EgressPolicy::allow_all(),
            upstream_dns: Vec::new(),
            base_domain: None,
            expose_idle_stop_secs: 0,
            wake_timeout_secs: 30,
            egress_headers: Vec::new(),
            upstream_ca_files: Vec::new(),
        }
    }
}

impl NetworkConfig {
    /// The bridge's own address: gateway and resolver of every sandbox.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The address of the sandbox in store slot `slot` (the slot that also
    /// picks its block of host uids), stable for the sandbox's life.
    pub fn address_for(&self, slot: u32) -> Option<Ipv4Addr> {
        let a = u32::from(self.subnet.network())
            .checked_add(2)?
            .checked_add(slot)?;
        (a < u32::from(self.subnet.broadcast())).then(|| Ipv4Addr::from(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_slots_inside_the_subnet() {
        let c = NetworkConfig {
            subnet: "10.5.0.0/29".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 5, 0, 1));
        assert_eq!(c.address_for(0), Some(Ipv4Addr::new(10, 5, 0, 2)));
        assert_eq!(c.address_for(4), Some(Ipv4Addr::new(10, 5, 0, 6)));
        assert_eq!(
            c.address_for(5),
            None,
            "the broadcast address is no sandbox's"
        );
    }

    #[test]
    fn header_values_take_secrets() {
        let h = EgressHeader {
            domain: "api.example.com".into(),
            header: "Authorization".into(),
            value: "Bearer ${TOKEN}-${X}".into(),
        };
        let get = |n: &str| (n == "TOKEN").then(|| "s3cret".to_string());
        assert!(h.resolve(get).unwrap_err().contains("secret X is not set"));
        let rule = h.resolve(|n| Some(n.to_lowercase())).unwrap();
        assert_eq!(rule.value, "Bearer token-x");
        assert!(
            !format!("{rule:?}").contains("token-x"),
            "values never in Debug"
        );
    }
}
