//! Host networking for sandboxes. Each networked sandbox is a port of one
//! host bridge with an address from the store; nftables NATs and filters
//! what leaves; the daemon's resolver answers the sandboxes' DNS; ports 80
//! and 443 go through the egress proxy, which decides by name; and exposed
//! ports are served by the port proxy.

pub mod policy;

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
