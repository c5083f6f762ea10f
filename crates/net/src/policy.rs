//! Egress policy: what a sandbox may reach, and the addresses no policy
//! opens. Pure decisions, shared by the nft ruleset (direct IP traffic),
//! the resolver (names) and the egress proxy (names, then the addresses
//! they resolve to).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "bad domain pattern {0:?}: expected a name like example.com or a wildcard like *.pypi.org"
    )]
    Domain(String),
    #[error("bad CIDR {0:?}: expected an address with a prefix, like 203.0.113.0/24")]
    Cidr(String),
}

/// A sandbox's egress policy. The default (everything empty) denies all.
///
/// Order of decisions for an address: the always-deny set drops it; then
/// `deny_cidrs`; then `allow_cidrs` accepts it (the only way to open a
/// private range); then private ranges drop; then `allow_all` accepts.
/// Names (through the resolver and the proxy on ports 80/443) are allowed
/// by `allow_all` or a matching `allow_domains` entry, and the addresses
/// they resolve to must still pass the address rules above, except that an
/// allowed name needs no `allow_cidrs` for a public address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    #[serde(default)]
    pub allow_all: bool,
    /// `example.com` (that name only) or `*.example.com` (any name under
    /// it, not the name itself). Lowercase, no trailing dot.
    #[serde(default)]
    pub allow_domains: Vec<String>,
    #[serde(default)]
    pub allow_cidrs: Vec<IpNet>,
    #[serde(default)]
    pub deny_cidrs: Vec<IpNet>,
}

/// What happens to traffic to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused, with the rule that refused it.
    Deny(&'static str),
}

impl EgressPolicy {
    pub fn deny_all() -> Self {
        EgressPolicy::default()
    }

    pub fn allow_all() -> Self {
        EgressPolicy {
            allow_all: true,
            ..Default::default()
        }
    }

    /// Normalise domain patterns (lowercase, no trailing dot) and check
    /// them; a policy that fails here changes nothing.
    pub fn normalized(mut self) -> Result<Self, PolicyError> {
        for d in &mut self.allow_domains {
            *d = normalize_pattern(d)?;
        }
        self.allow_domains.sort();
        self.allow_domains.dedup();
        for c in self
            .allow_cidrs
            .iter_mut()
            .chain(self.deny_cidrs.iter_mut())
        {
            *c = c.trunc();
        }
        Ok(self)
    }

    /// May the sandbox look up and connect to `name`?
    pub fn allows_name(&self, name: &str) -> bool {
        if self.allow_all {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.allow_domains.iter().any(|p| pattern_matches(p, &name))
    }

    /// Traffic straight to `ip` (not through a name).
    pub fn ip_verdict(&self, ip: IpAddr, always: &AlwaysDeny) -> Verdict {
        self.verdict(ip, always, self.allow_all)
    }

    /// Traffic to `ip` that an allowed name resolved to.
    pub fn resolved_verdict(&self, ip: IpAddr, always: &AlwaysDeny) -> Verdict {
        self.verdict(ip, always, true)
    }

    fn verdict(&self, ip: IpAddr, always: &AlwaysDeny, public_ok: bool) -> Verdict {
        let ip = canonical(ip);
        if let Some(why) = always.hard(ip) {
            return Verdict::Deny(why);
        }
        if self.deny_cidrs.iter().any(|c| c.contains(&ip)) {
            return Verdict::Deny("denied by the sandbox's policy");
        }
        if self.allow_cidrs.iter().any(|c| c.contains(&ip)) {
            return Verdict::Allow;
        }
        if is_private(ip) {
            return Verdict::Deny("private address (allow it with --allow-cidr)");
        }
        if public_ok {
            Verdict::Allow
        } else {
            Verdict::Deny("not allowed by the sandbox's policy")
        }
    }

    /// One line for `sandbox show`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        parts.push(
            if self.allow_all {
                "allow all"
            } else {
                "deny all"
            }
            .to_string(),
        );
        if !self.allow_domains.is_empty() {
            parts.push(format!("domains {}", self.allow_domains.join(",")));
        }
        let cidrs = |v: &[IpNet]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        if !self.allow_cidrs.is_empty() {
            parts.push(format!("allow {}", cidrs(&self.allow_cidrs).join(",")));
        }
        if !self.deny_cidrs.is_empty() {
            parts.push(format!("deny {}", cidrs(&self.deny_cidrs).join(",")));
        }
        parts.join("; ")
    }
}

/// Parse a `--allow-cidr` / `--deny-cidr` value; a bare address is /32 (/128).
pub fn parse_cidr(s: &str) -> Result<IpNet, PolicyError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| PolicyError::Cidr(s.to_string()))
}

pub(crate) fn normalize_pattern(p: &str) -> Result<String, PolicyError> {
    let bad = || PolicyError::Domain(p.to_string());
    let lower = p.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 || !name.contains('.') && lower.starts_with("*.") {
        return Err(bad());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(bad());
        }
    }
    Ok(lower)
}

pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}")),
        None => pattern == name,
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address, so `::ffff:127.0.0.1`
/// is loopback.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// RFC 1918, carrier-grade NAT, IPv6 unique-local: reachable only when a
/// policy allows them by CIDR.
pub const PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// Never reachable from a sandbox, whatever its policy: loopback, link-local
/// (cloud metadata at 169.254.169.254), "this network", multicast and
/// reserved space.
pub const HARD_DENIED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

fn is_private(ip: IpAddr) -> bool {
    PRIVATE_RANGES
        .iter()
        .any(|r| r.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)))
}

/// The always-denied set as the resolver and the proxies see it: one
/// shared copy, renewed while they run (the host's addresses can change
/// under a long-lived daemon: DHCP, a new interface).
#[derive(Debug, Clone)]
pub struct SharedDeny(Arc<RwLock<Arc<AlwaysDeny>>>);

impl SharedDeny {
    /// The set now.
    pub fn get(&self) -> Arc<AlwaysDeny> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the set; whether it changed.
    pub fn set(&self, new: AlwaysDeny) -> bool {
        let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = cur.host != new.host || cur.sandboxes != new.sandboxes;
        *cur = Arc::new(new);
        changed
    }
}

impl From<AlwaysDeny> for SharedDeny {
    fn from(a: AlwaysDeny) -> Self {
        SharedDeny(Arc::new(RwLock::new(Arc::new(a))))
    }
}

impl From<Arc<AlwaysDeny>> for SharedDeny {
    fn from(a: Arc<AlwaysDeny>) -> Self {
        SharedDeny(Arc::new(RwLock::new(a)))
    }
}

/// The always-denied set of this host: the fixed ranges, the host's own
/// addresses and the sandboxes' subnet.
#[derive(Debug, Clone)]
pub struct AlwaysDeny {
    fixed: Vec<IpNet>,
    /// The bridge subnet: other sandboxes, and the gateway (the host).
    pub sandboxes: IpNet,
    /// Every address of the host's interfaces.
    pub host: Vec<IpAddr>,
}

impl AlwaysDeny {
    pub fn new(sandboxes: IpNet, host: Vec<IpAddr>) -> Self {
        AlwaysDeny {
            fixed: HARD_DENIED_RANGES
                .iter()
                .map(|r| r.parse().expect("constant CIDR"))
                .collect(),
            sandboxes,
            host: host.into_iter().map(canonical).collect(),
        }
    }

    /// The fixed ranges, as CIDRs (for the nft set).
    pub fn fixed(&self) -> &[IpNet] {
        &self.fixed
    }

    /// Why `ip` is always denied, if it is.
    pub fn hard(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        if self.host.contains(&ip) {
            return Some("an address of the host");
        }
        if self.sandboxes.contains(&ip) {
            return Some("the sandbox network (other sandboxes and the host)");
        }
        if self.fixed.iter().any(|n| n.contains(&ip)) {
            return Some("loopback, link-local (cloud metadata) or reserved address");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn always() -> AlwaysDeny {
        AlwaysDeny::new(
            "10.88.0.0/16".parse().unwrap(),
            vec!["198.51.100.7".parse().unwrap()],
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_denies_everything() {
        let p = EgressPolicy::default();
        assert!(!p.allows_name("example.com"));
        assert!(matches!(
            p.ip_verdict(ip("203.0.113.5"), &always()),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn allow_all_still_refuses_the_always_denied_set() {
        let p = EgressPolicy::allow_all();
        let a = always();
        assert_eq!(p.ip_verdict(ip("203.0.113.5"), &a), Verdict::Allow);
        for bad in [
            "127.0.0.1",
            "169.254.169.254",
            "10.88.0.1",
            "10.88.3.4",
            "198.51.100.7",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(
                matches!(p.ip_verdict(ip(bad), &a), Verdict::Deny(_)),
                "{bad} allowed"
            );
        }
        // Private ranges need an explicit allow.
        assert!(matches!(
            p.ip_verdict(ip("192.168.1.1"), &a),
            Verdict::Deny(_)
        ));
        let p = EgressPolicy {
            allow_cidrs: vec![parse_cidr("192.168.1.0/24").unwrap()],
            ..EgressPolicy::allow_all()
        };
        assert_eq!(p.ip_verdict(ip("192.168.1.1"), &a), Verdict::Allow);
        // ... but never the hard set, even when asked.
        let p = EgressPolicy {
            allow_cidrs: vec![parse_cidr("127.0.0.0/8").unwrap()],
            ..Default::default()
        };
        assert!(matches!(
            p.ip_verdict(ip("127.0.0.1"), &a),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn deny_cidrs_beat_allow_cidrs_and_allow_all() {
        let p = EgressPolicy {
            allow_all: true,
            allow_cidrs: vec![parse_cidr("203.0.113.0/24").unwrap()],
            deny_cidrs: vec![parse_cidr("203.0.113.9").unwrap()],
            ..Default::default()
        };
        let a = always();
        assert_eq!(p.ip_verdict(ip("203.0.113.8"), &a), Verdict::Allow);
        assert!(matches!(
            p.ip_verdict(ip("203.0.113.9"), &a),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn domain_patterns() {
        let p = EgressPolicy {
            allow_domains: vec!["*.PyPI.org.".into(), "example.com".into()],
            ..Default::default()
        }
        .normalized()
        .unwrap();
        assert_eq!(p.allow_domains, vec!["*.pypi.org", "example.com"]);
        assert!(p.allows_name("files.pypi.org"));
        assert!(p.allows_name("a.b.pypi.org."));
        assert!(!p.allows_name("pypi.org"));
        assert!(!p.allows_name("evilpypi.org"));
        assert!(p.allows_name("EXAMPLE.com"));
        assert!(!p.allows_name("www.example.com"));
        // A name allowed by pattern may reach a public address without CIDRs,
        // never a private or hard-denied one.
        let a = always();
        assert_eq!(p.resolved_verdict(ip("203.0.113.5"), &a), Verdict::Allow);
        assert!(matches!(
            p.resolved_verdict(ip("10.0.0.5"), &a),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            p.resolved_verdict(ip("127.0.0.1"), &a),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            p.ip_verdict(ip("203.0.113.5"), &a),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn bad_patterns_and_cidrs_are_refused() {
        for bad in [
            "", "*.", "*.com", "a..b", "-a.com", "a b.com", "*.*.com", "é.com",
        ] {
            let p = EgressPolicy {
                allow_domains: vec![bad.into()],
                ..Default::default()
            };
            assert!(p.normalized().is_err(), "{bad:?} accepted");
        }
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
    }
}
