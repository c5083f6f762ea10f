//! The daemon's nftables table: NAT for the sandboxes' subnet, DNS and
//! TCP 80/443 redirected to the daemon's resolver and egress proxy, the
//! host closed to the bridge, and per-sandbox forwarding decided in the
//! order of [`EgressPolicy::ip_verdict`](crate::EgressPolicy::ip_verdict).
//!
//! The daemon owns exactly one table (`inet <table>`) and rewrites all of
//! it in one transaction each time (add, delete, add, then the content),
//! which works whether or not it existed and never shows a half-made
//! ruleset. Rules are JSON objects (nftables crate) fed to `nft -j -f -`;
//! no rule is ever built as a command string.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use ipnet::{IpNet, Ipv4Net};
use nftables::batch::Batch;
use nftables::expr::{
    Expression as E, Meta, MetaKey, NamedExpression as N, Payload, PayloadField, Prefix, SetItem,
    CT,
};
use nftables::schema::{
    self, Chain, NfListObject, Nftables, Rule, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{JumpTarget, Match, Operator, Statement as S, VerdictMap, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::policy::{AlwaysDeny, PRIVATE_RANGES};
use crate::Attached;

mod antispoof;

/// A sandbox's bridge port: its link and what it may send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub ifname: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
}

/// Everything the ruleset is made from.
#[derive(Debug, Clone)]
pub struct RulesetSpec<'a> {
    /// The table's name, e.g. "ironclaw0".
    pub table: &'a str,
    pub bridge: &'a str,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// The resolver listens on gateway:dns_port (UDP and TCP).
    pub dns_port: u16,
    /// The egress proxy for TCP 80, on the gateway.
    pub http_port: u16,
    /// The egress proxy for TCP 443, on the gateway.
    pub tls_port: u16,
    pub always: &'a AlwaysDeny,
    pub sandboxes: &'a [Attached],
    /// Every sandbox port on the bridge, starting ones included (the
    /// bridge table's anti-spoofing rules).
    pub ports: &'a [Port],
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error(transparent)]
    Nft(#[from] nftables::helper::NftablesError),
    #[error("{0}")]
    Invalid(String),
}

/// Name of the named set of addresses no sandbox reaches.
pub const HARD_SET: &str = "hard4";
/// Name of the named set of private ranges (open only by `allow_cidrs`).
pub const PRIVATE_SET: &str = "private4";

/// Replace the table's whole content with the ruleset of `spec`, atomically.
pub fn apply(spec: &RulesetSpec) -> Result<(), NftError> {
    check_name(spec.table, 64)?;
    check_name(spec.bridge, 15)?;
    run(&render(spec))
}

/// Delete the table; a missing table is fine.
pub fn remove(table: &str) -> Result<(), NftError> {
    check_name(table, 64)?;
    let mut b = Batch::new();
    // Adding first makes the delete valid whether or not it existed.
    b.add(NfListObject::Table(table_obj(table)));
    b.delete(NfListObject::Table(table_obj(table)));
    b.add(NfListObject::Table(antispoof::table_obj(table)));
    b.delete(NfListObject::Table(antispoof::table_obj(table)));
    run(&b.to_nftables())
}

/// Whether the table exists (for `doctor`).
pub fn exists(table: &str) -> Result<bool, NftError> {
    let tables = nftables::helper::get_current_ruleset_with_args(None::<&str>, ["list", "tables"])?;
    Ok(tables.objects.iter().any(|o| {
        matches!(o, schema::NfObject::ListObject(NfListObject::Table(t))
            if t.family == NfFamily::INet && t.name == table)
    }))
}

/// The table as nft has it now (`nft -j list table inet TABLE`).
pub fn list(table: &str) -> Result<Nftables<'static>, NftError> {
    check_name(table, 64)?;
    Ok(nftables::helper::get_current_ruleset_with_args(
        None::<&str>,
        ["list", "table", "inet", table],
    )?)
}

/// The chain holding one sandbox's forwarding decisions.
pub fn sandbox_chain(address: Ipv4Addr) -> String {
    let o = address.octets();
    format!("sb_{}-{}-{}-{}", o[0], o[1], o[2], o[3])
}

/// The whole batch for `spec`, pure.
pub fn render(spec: &RulesetSpec) -> Nftables<'static> {
    let mut r = Render {
        table: spec.table.to_string(),
        objects: Batch::new(),
        rules: Vec::new(),
    };
    r.objects.add(NfListObject::Table(table_obj(spec.table)));
    r.objects.delete(NfListObject::Table(table_obj(spec.table)));
    r.objects.add(NfListObject::Table(table_obj(spec.table)));

    let mut hard: Vec<Ipv4Net> = spec.always.fixed().iter().filter_map(v4).collect();
    hard.extend(spec.always.host.iter().filter_map(|ip| match ip {
        IpAddr::V4(a) => Some(Ipv4Net::from(*a)),
        IpAddr::V6(_) => None,
    }));
    hard.extend(v4(&spec.always.sandboxes));
    hard.push(spec.subnet);
    let private: Vec<Ipv4Net> = PRIVATE_RANGES
        .iter()
        .filter_map(|r| r.parse::<IpNet>().ok())
        .filter_map(|n| v4(&n))
        .collect();
    let set = interval_set(&r.table, HARD_SET, &hard);
    r.objects.add(set);
    let set = interval_set(&r.table, PRIVATE_SET, &private);
    r.objects.add(set);

    nat(&mut r, spec);
    input(&mut r, spec);
    forward(&mut r, spec);
    for a in spec.sandboxes {
        sandbox(&mut r, a);
    }

    antispoof::render(&mut r.objects, spec);
    let Render {
        table,
        mut objects,
        rules,
    } = r;
    for (chain, expr) in rules {
        objects.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: table.clone().into(),
            chain: chain.into(),
            expr: expr.into(),
            ..Rule::default()
        }));
    }
    objects.to_nftables()
}

/// A batch being made: chains go in as they come, rules after them all.
struct Render {
    table: String,
    objects: Batch<'static>,
    rules: Vec<(String, Vec<S<'static>>)>,
}

impl Render {
    /// A base chain (with a hook, policy accept) or a regular one.
    fn chain(&mut self, name: &str, hook: Option<(NfChainType, NfHook, i32)>) {
        self.objects.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: name.to_string().into(),
            _type: hook.map(|h| h.0),
            hook: hook.map(|h| h.1),
            prio: hook.map(|h| h.2),
            policy: hook.map(|_| NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }

    fn rule(&mut self, chain: &str, stmts: Vec<S<'static>>) {
        self.rules.push((chain.to_string(), stmts));
    }
}

/// DNS to any address goes to our resolver (a sandbox using 8.8.8.8 still
/// gets it), 80/443 to the egress proxy; sandboxes leave masqueraded.
fn nat(r: &mut Render, spec: &RulesetSpec) {
    let br = spec.bridge;
    r.chain(
        "prerouting",
        Some((NfChainType::NAT, NfHook::Prerouting, -100)),
    );
    for (proto, port, to) in [
        ("udp", 53, spec.dns_port),
        ("tcp", 53, spec.dns_port),
        ("tcp", 80, spec.http_port),
        ("tcp", 443, spec.tls_port),
    ] {
        let redirect = S::Redirect(Some(NAT {
            addr: None,
            family: None,
            port: Some(E::Number(to.into())),
            flags: None,
        }));
        r.rule(
            "prerouting",
            vec![iifname(br), dport(proto, port), redirect],
        );
    }
    r.chain(
        "postrouting",
        Some((NfChainType::NAT, NfHook::Postrouting, 100)),
    );
    let not_bridge = m(meta(MetaKey::Oifname), string(br), Operator::NEQ);
    let from_subnet = eq(payload("ip", "saddr"), prefix(spec.subnet));
    r.rule(
        "postrouting",
        vec![from_subnet, not_bridge, S::Masquerade(None)],
    );
}

/// From the bridge only the resolver and the proxies on the gateway: the
/// host and its API are unreachable.
fn input(r: &mut Render, spec: &RulesetSpec) {
    let br = spec.bridge;
    r.chain("input", Some((NfChainType::Filter, NfHook::Input, 0)));
    r.rule("input", vec![iifname(br), nfproto_ipv6(), verdict_drop()]);
    r.rule(
        "input",
        vec![iifname(br), ct_established(), verdict_accept()],
    );
    let gw = || eq(payload("ip", "daddr"), string(spec.gateway));
    let dns = dport("udp", spec.dns_port);
    r.rule("input", vec![iifname(br), gw(), dns, verdict_accept()]);
    let ports = dedup([spec.dns_port, spec.http_port, spec.tls_port].into_iter())
        .into_iter()
        .map(|p| SetItem::Element(E::Number(p.into())))
        .collect();
    let tcp = eq(payload("tcp", "dport"), E::Named(N::Set(ports)));
    r.rule("input", vec![iifname(br), gw(), tcp, verdict_accept()]);
    r.rule("input", vec![iifname(br), verdict_drop()]);
}

/// Nothing starts a connection into the bridge; what leaves it is decided
/// per sandbox by source address, and a source that is no attached
/// sandbox's gets nothing (anti-spoofing).
fn forward(r: &mut Render, spec: &RulesetSpec) {
    let br = spec.bridge;
    r.chain("forward", Some((NfChainType::Filter, NfHook::Forward, 0)));
    // Members of one named network, to each other (bridge ports are
    // isolated: the host answers ARP for the subnet and routes between
    // them, so this is the only way one sandbox reaches another).
    for a in spec.sandboxes {
        let Some(g) = &a.group else { continue };
        let peers: Vec<Ipv4Net> = spec
            .sandboxes
            .iter()
            .filter(|b| b.address != a.address && b.group.as_ref() == Some(g))
            .map(|b| Ipv4Net::from(b.address))
            .collect();
        if peers.is_empty() {
            continue;
        }
        r.rule(
            "forward",
            vec![
                iifname(br),
                oifname(br),
                eq(payload("ip", "saddr"), string(a.address)),
                eq(payload("ip", "daddr"), anon_set(&peers)),
                verdict_accept(),
            ],
        );
    }
    r.rule(
        "forward",
        vec![oifname(br), ct_established(), verdict_accept()],
    );
    r.rule("forward", vec![oifname(br), verdict_drop()]);
    r.rule("forward", vec![iifname(br), nfproto_ipv6(), verdict_drop()]);
    // An empty verdict map is invalid: no sandbox, no map.
    if !spec.sandboxes.is_empty() {
        let items = spec
            .sandboxes
            .iter()
            .map(|a| {
                let target = sandbox_chain(a.address).into();
                let jump = nftables::expr::Verdict::Jump(JumpTarget { target });
                SetItem::Mapping(string(a.address), E::Verdict(jump))
            })
            .collect();
        let vmap = S::VerdictMap(VerdictMap {
            key: payload("ip", "saddr"),
            data: E::Named(N::Set(items)),
        });
        r.rule("forward", vec![iifname(br), vmap]);
    }
    r.rule("forward", vec![iifname(br), verdict_drop()]);
}

/// One sandbox's chain, in the order of EgressPolicy::ip_verdict. Every
/// packet goes through it (no shortcut for established flows), so a policy
/// change also cuts connections already open.
fn sandbox(r: &mut Render, a: &Attached) {
    let name = sandbox_chain(a.address);
    r.chain(&name, None);
    let daddr = || payload("ip", "daddr");
    let hard = eq(daddr(), string(format!("@{HARD_SET}")));
    r.rule(&name, vec![hard, verdict_drop()]);
    let deny: Vec<Ipv4Net> = a.policy.deny_cidrs.iter().filter_map(v4).collect();
    if !deny.is_empty() {
        r.rule(&name, vec![eq(daddr(), anon_set(&deny)), verdict_drop()]);
    }
    let allow: Vec<Ipv4Net> = a.policy.allow_cidrs.iter().filter_map(v4).collect();
    if !allow.is_empty() {
        r.rule(&name, vec![eq(daddr(), anon_set(&allow)), verdict_accept()]);
    }
    let private = eq(daddr(), string(format!("@{PRIVATE_SET}")));
    r.rule(&name, vec![private, verdict_drop()]);
    let last = if a.policy.allow_all {
        verdict_accept()
    } else {
        verdict_drop()
    };
    r.rule(&name, vec![last]);
}

fn run(batch: &Nftables) -> Result<(), NftError> {
    let json = serde_json::to_string(batch).map_err(|e| NftError::Invalid(e.to_string()))?;
    // As the crate's apply_ruleset, but keeping nft's stderr for the error.
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    let written = child
        .stdin
        .take()
        .expect("piped")
        .write_all(json.as_bytes());
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    written.map_err(NftError::Spawn)
}

fn check_name(name: &str, max: usize) -> Result<(), NftError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(NftError::Invalid(format!("bad name {name:?} for nftables")))
    }
}

fn table_obj(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: name.to_string().into(),
        handle: None,
    }
}

fn v4(n: &IpNet) -> Option<Ipv4Net> {
    match n {
        IpNet::V4(v) => Some(v.trunc()),
        IpNet::V6(_) => None,
    }
}

fn dedup(ports: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut seen = HashSet::new();
    ports.filter(|p| seen.insert(*p)).collect()
}

/// An address or prefix as nft wants it (a bare address for /32).
fn prefix(n: Ipv4Net) -> E<'static> {
    if n.prefix_len() == 32 {
        string(n.addr())
    } else {
        E::Named(N::Prefix(Prefix {
            addr: Box::new(string(n.network())),
            len: n.prefix_len().into(),
        }))
    }
}

/// Interval sets refuse overlapping elements: merge them first.
fn merged(nets: &[Ipv4Net]) -> Vec<E<'static>> {
    Ipv4Net::aggregate(&nets.to_vec())
        .into_iter()
        .map(prefix)
        .collect()
}

fn anon_set(nets: &[Ipv4Net]) -> E<'static> {
    E::Named(N::Set(
        merged(nets).into_iter().map(SetItem::Element).collect(),
    ))
}

fn interval_set(table: &str, name: &str, nets: &[Ipv4Net]) -> NfListObject<'static> {
    let elem = merged(nets);
    NfListObject::Set(Box::new(schema::Set {
        family: NfFamily::INet,
        table: table.to_string().into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        flags: Some(HashSet::from([SetFlag::Interval])),
        elem: (!elem.is_empty()).then(|| Cow::Owned(elem)),
        ..schema::Set::default()
    }))
}

pub(crate) fn m(left: E<'static>, right: E<'static>, op: Operator) -> S<'static> {
    S::Match(Match { left, right, op })
}

pub(crate) fn eq(left: E<'static>, right: E<'static>) -> S<'static> {
    m(left, right, Operator::EQ)
}

pub(crate) fn string(s: impl ToString) -> E<'static> {
    E::String(s.to_string().into())
}

pub(crate) fn meta(key: MetaKey) -> E<'static> {
    E::Named(N::Meta(Meta { key }))
}

pub(crate) fn payload(protocol: &'static str, field: &'static str) -> E<'static> {
    E::Named(N::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

fn iifname(br: &str) -> S<'static> {
    eq(meta(MetaKey::Iifname), string(br))
}

fn oifname(br: &str) -> S<'static> {
    eq(meta(MetaKey::Oifname), string(br))
}

fn dport(proto: &'static str, port: u16) -> S<'static> {
    eq(payload(proto, "dport"), E::Number(port.into()))
}

fn nfproto_ipv6() -> S<'static> {
    eq(meta(MetaKey::Nfproto), string("ipv6"))
}

fn ct_established() -> S<'static> {
    let state = E::Named(N::CT(CT {
        key: "state".into(),
        family: None,
        dir: None,
    }));
    let states = E::List(vec![string("established"), string("related")]);
    m(state, states, Operator::IN)
}

fn verdict_accept() -> S<'static> {
    S::Accept(None)
}

pub(crate) fn verdict_drop() -> S<'static> {
    S::Drop(None)
}
