//! The host bridge every networked sandbox is a port of, and the generic
//! link operations (lookup, delete, join as an isolated port) that the
//! veth and tap paths share. Everything goes over rtnetlink in the network
//! namespace of the calling thread.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec};

use super::{NetAttachment, NetdevError};

/// Create bridge `name` if missing, give it `gateway/prefix_len` if it
/// lacks it and set it up. Idempotent: a second call (or a daemon restart)
/// changes nothing. An existing link of that name that is not a bridge is
/// an error, never repurposed.
///
/// Also turns on IPv4 forwarding (`/proc/sys/net/ipv4/ip_forward`), which
/// NAT for the sandboxes needs. That switch is host-wide (for the network
/// namespace of the caller); what is forwarded is then decided by the
/// daemon's nft table.
pub async fn ensure_bridge(
    name: &str,
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetdevError> {
    check_ifname(name)?;
    if prefix_len > 32 {
        return Err(NetdevError::Invalid(format!(
            "bad prefix length {prefix_len} for bridge {name}"
        )));
    }
    let h = connect().await?;
    let link = match get_link(&h, name).await? {
        Some(link) => link,
        None => {
            // A fixed MAC: otherwise the bridge takes the lowest MAC of its
            // ports, which changes as sandboxes come and go and leaves
            // their ARP entry for the gateway stale.
            let msg = LinkBridge::new(name)
                .address(NetAttachment::mac_for(gateway).to_vec())
                .build();
            match h.link().add(msg).execute().await {
                Ok(()) => {}
                // Another caller made it in between: fine, it is checked below.
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetdevError::netlink(format!("creating bridge {name}"), e)),
            }
            get_link(&h, name).await?.ok_or_else(|| {
                NetdevError::Invalid(format!("bridge {name} vanished after creation"))
            })?
        }
    };
    if kind(&link) != Some(InfoKind::Bridge) {
        return Err(NetdevError::Invalid(format!(
            "link {name} exists and is not a bridge"
        )));
    }
    let index = link.header.index;
    ensure_address(&h, name, index, gateway, prefix_len).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetdevError::netlink(format!("setting bridge {name} up"), e))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| NetdevError::io("enabling IPv4 forwarding", e))
}

/// Delete link `name` (for a veth end: the pair). Missing is fine.
pub async fn delete_link(name: &str) -> Result<(), NetdevError> {
    let h = connect().await?;
    delete_with(&h, name).await
}

/// Whether link `name` exists in the caller's network namespace.
pub async fn link_exists(name: &str) -> Result<bool, NetdevError> {
    let h = connect().await?;
    Ok(get_link(&h, name).await?.is_some())
}

/// Make `ifname` a port of `bridge`, isolated (isolated ports cannot send
/// to each other, only to the bridge itself, i.e. the host: sandboxes
/// never meet at layer 2), and set it up. Used for veth host ends and VM
/// taps alike.
pub async fn join(ifname: &str, bridge: &str) -> Result<(), NetdevError> {
    let h = connect().await?;
    let br = get_link(&h, bridge)
        .await?
        .ok_or_else(|| NetdevError::Invalid(format!("bridge {bridge} does not exist")))?;
    join_with(&h, ifname, br.header.index).await
}

pub(crate) async fn join_with(
    h: &Handle,
    ifname: &str,
    bridge_index: u32,
) -> Result<(), NetdevError> {
    let link = get_link(h, ifname)
        .await?
        .ok_or_else(|| NetdevError::Invalid(format!("link {ifname} does not exist")))?;
    let index = link.header.index;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetdevError::netlink(format!("adding {ifname} to the bridge"), e))?;
    // Port options need RTM_NEWLINK with port data, hence set_port.
    h.link()
        .set_port(LinkBridgePort::new(index).isolated(true).build())
        .execute()
        .await
        .map_err(|e| NetdevError::netlink(format!("isolating bridge port {ifname}"), e))?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetdevError::netlink(format!("setting {ifname} up"), e))
}

/// A netlink connection in the caller's network namespace, driven by a
/// task on the current tokio runtime (it ends when the handle is dropped).
pub(crate) async fn connect() -> Result<Handle, NetdevError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetdevError::io("opening a netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

pub(crate) async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, NetdevError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetdevError::netlink(format!("looking up link {name}"), e)),
    }
}

pub(crate) async fn delete_with(h: &Handle, name: &str) -> Result<(), NetdevError> {
    let Some(link) = get_link(h, name).await? else {
        return Ok(());
    };
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        // Gone in between (a veth whose namespace just died).
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetdevError::netlink(format!("deleting link {name}"), e)),
    }
}

pub(crate) fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub(crate) fn check_ifname(name: &str) -> Result<(), NetdevError> {
    // IFNAMSIZ is 16 with the NUL.
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.contains(['/', ' ', ':'])
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(NetdevError::Invalid(format!(
            "bad interface name {name:?} (1 to 15 bytes, no '/', ':' or space)"
        )))
    }
}

pub(crate) fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

pub(crate) fn kind(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// Give the bridge `gateway/prefix_len`; the same address with another
/// prefix (a changed subnet) is replaced, other addresses are left alone.
async fn ensure_address(
    h: &Handle,
    name: &str,
    index: u32,
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetdevError> {
    let ctx = || format!("reading the addresses of bridge {name}");
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetdevError::netlink(ctx(), e))?;
    let mut present = false;
    for a in addrs {
        // The dump filter is applied by the library, but be sure.
        if a.header.index != index {
            continue;
        }
        let is_gw = a
            .attributes
            .iter()
            .any(|at| matches!(at, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == gateway));
        if !is_gw {
            continue;
        }
        if a.header.prefix_len == prefix_len {
            present = true;
        } else {
            h.address().del(a).execute().await.map_err(|e| {
                NetdevError::netlink(format!("removing a stale address of {name}"), e)
            })?;
        }
    }
    if present {
        return Ok(());
    }
    match h
        .address()
        .add(index, IpAddr::V4(gateway), prefix_len)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(NetdevError::netlink(
            format!("adding {gateway}/{prefix_len} to bridge {name}"),
            e,
        )),
    }
}
