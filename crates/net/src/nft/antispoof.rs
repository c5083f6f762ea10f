//! Bridge-level anti-spoofing: each sandbox port may send only frames from
//! its own MAC, IPv4 from its own address and ARP claiming only that
//! address. A namespace sandbox cannot forge packets anyway (no
//! CAP_NET_RAW or CAP_NET_ADMIN over its network namespace), but a VM's
//! guest kernel can: without this, a VM could take another sandbox's
//! address and with it that sandbox's egress policy, or poison the host's
//! neighbour cache.
//!
//! A table of the bridge family, `bridge <table>`, replaced in the same
//! transaction as the inet table. Its rules match on the port's name
//! (`ic` and the sandbox's random id), so other bridges on the host (other
//! daemons') are not touched. (`meta ibrname` would scope them to our
//! bridge, but the nftables crate spells it `ibridgename`, which nft 1.0.6
//! refuses.) Only host root adds ports to the bridge, so ports without
//! rules are the host's own business.

use nftables::batch::Batch;
use nftables::expr::{Expression as E, MetaKey, NamedExpression as N, SetItem};
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{Operator, Statement as S};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{eq, m, meta, payload, string, verdict_drop, RulesetSpec};

const CHAIN: &str = "antispoof";

pub(super) fn table_obj(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::Bridge,
        name: name.to_string().into(),
        handle: None,
    }
}

/// Add the whole bridge table (after an add+delete that empties it).
pub(super) fn render(b: &mut Batch<'static>, spec: &RulesetSpec) {
    let table = spec.table.to_string();
    b.add(NfListObject::Table(table_obj(&table)));
    b.delete(NfListObject::Table(table_obj(&table)));
    b.add(NfListObject::Table(table_obj(&table)));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::Bridge,
        table: table.clone().into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Prerouting),
        // Before anything else sees the frame.
        prio: Some(-300),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    let mut rule = |stmts: Vec<S<'static>>| {
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::Bridge,
            table: table.clone().into(),
            chain: CHAIN.into(),
            expr: stmts.into(),
            ..Rule::default()
        }));
    };
    for p in spec.ports {
        let port = || eq(meta(MetaKey::Iifname), string(&p.ifname));
        let ne = |left, right| m(left, right, Operator::NEQ);
        rule(vec![
            port(),
            ne(payload("ether", "saddr"), string(mac(&p.mac))),
            verdict_drop(),
        ]);
        rule(vec![
            port(),
            eq(meta(MetaKey::Protocol), string("ip")),
            ne(payload("ip", "saddr"), string(p.address)),
            verdict_drop(),
        ]);
        rule(vec![
            port(),
            eq(meta(MetaKey::Protocol), string("arp")),
            ne(payload("arp", "saddr ip"), string(p.address)),
            verdict_drop(),
        ]);
        // IPv4 and ARP only: sandboxes have no IPv6, and nothing else is
        // theirs to send.
        let ours = E::Named(N::Set(vec![
            SetItem::Element(string("ip")),
            SetItem::Element(string("arp")),
        ]));
        rule(vec![
            port(),
            ne(meta(MetaKey::Protocol), ours),
            verdict_drop(),
        ]);
    }
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
