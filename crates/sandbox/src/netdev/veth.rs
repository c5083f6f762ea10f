//! A namespace sandbox's network card: a veth pair whose host end is an
//! isolated port of the bridge and whose other end is `eth0` in the
//! sandbox's network namespace.
//!
//! Nothing needs cleaning up when the sandbox dies: the kernel deletes a
//! veth pair with either end, and the sandbox's end dies with its
//! namespace (when its last process exits). Deleting the host end by name
//! ([`super::bridge::delete_link`]) is only needed to detach a live one.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::bridge::{check_ifname, connect, delete_with, get_link, join_with, kind, mtu};
use super::{NetAttachment, NetdevError};

/// The sandbox's end of the pair, inside its namespace.
pub const GUEST_IFNAME: &str = "eth0";

/// Give the process `pid`'s network namespace its card: a veth pair with
/// host end `att.host_ifname` on `att.bridge` (isolated port, the bridge's
/// MTU), and inside the namespace `eth0` with `att.mac`,
/// `att.address/att.prefix_len`, up, and a default route via
/// `att.gateway`. On failure the pair is deleted again.
///
/// Not cancellation safe: a future dropped midway may leave the host end
/// behind (delete it by name, or it goes with the namespace).
pub async fn attach(pid: i32, att: &NetAttachment) -> Result<(), NetdevError> {
    check_ifname(&att.host_ifname)?;
    check_ifname(&att.bridge)?;
    if att.prefix_len > 32 {
        return Err(NetdevError::Invalid(format!(
            "bad prefix length {}",
            att.prefix_len
        )));
    }
    let h = connect().await?;
    let bridge = get_link(&h, &att.bridge)
        .await?
        .ok_or_else(|| NetdevError::Invalid(format!("bridge {} does not exist", att.bridge)))?;
    let mtu = mtu(&bridge).unwrap_or(1500);
    // A restarted sandbox reuses its host end's name while its previous
    // namespace may still be dying (kept by lingering sockets): a veth of
    // that name is such a leftover and goes; anything else is refused.
    if let Some(old) = get_link(&h, &att.host_ifname).await? {
        if kind(&old) != Some(InfoKind::Veth) {
            return Err(NetdevError::Invalid(format!(
                "link {} exists and is not a veth",
                att.host_ifname
            )));
        }
        delete_with(&h, &att.host_ifname).await?;
    }
    // By fd, so the namespace cannot change under us between the steps.
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| NetdevError::io(format!("opening the network namespace of pid {pid}"), e))?;
    // Unique in the host namespace for the moment the peer lives here.
    let peer = format!("icp{:08x}", rand::random::<u32>());
    h.link()
        .add(LinkVeth::new(&att.host_ifname, &peer).mtu(mtu).build())
        .execute()
        .await
        .map_err(|e| {
            NetdevError::netlink(format!("creating veth pair {}/{peer}", att.host_ifname), e)
        })?;
    let result = async {
        h.link()
            .set(
                LinkUnspec::new_with_name(&peer)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                NetdevError::netlink(format!("moving {peer} into the namespace of pid {pid}"), e)
            })?;
        configure_inside(ns, peer, att.clone(), mtu)
            .await
            .map_err(|e| in_ns(pid, e))?;
        join_with(&h, &att.host_ifname, bridge.header.index).await
    }
    .await;
    if let Err(e) = result {
        // Deleting the host end deletes the pair, wherever the peer is.
        if let Err(del) = delete_with(&h, &att.host_ifname).await {
            tracing::warn!(error = %del, "cleaning up after a failed attach");
        }
        return Err(e);
    }
    Ok(())
}

fn in_ns(pid: i32, e: NetdevError) -> NetdevError {
    match e {
        NetdevError::Netlink { context, source } => NetdevError::Netlink {
            context: format!("in the network namespace of pid {pid}: {context}"),
            source,
        },
        NetdevError::Io { context, source } => NetdevError::Io {
            context: format!("in the network namespace of pid {pid}: {context}"),
            source,
        },
        other => other,
    }
}

/// Configure `peer` inside namespace `ns`. setns only moves the calling
/// thread, so this runs on a thread of its own with its own runtime, and
/// the netlink socket it opens stays bound to that namespace.
async fn configure_inside(
    ns: File,
    peer: String,
    att: NetAttachment,
    mtu: u32,
) -> Result<(), NetdevError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netdev-setns".into())
        .spawn(move || {
            let r = (|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetdevError::io("entering the namespace", e.into()))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| NetdevError::io("starting a runtime", e))?;
                rt.block_on(configure_here(&peer, &att, mtu))
            })();
            let _ = tx.send(r);
        })
        .map_err(|e| NetdevError::io("starting a thread", e))?;
    rx.await
        .map_err(|_| NetdevError::Invalid("the namespace thread panicked".into()))?
}

async fn configure_here(peer: &str, att: &NetAttachment, mtu: u32) -> Result<(), NetdevError> {
    let h = connect().await?;
    let link = get_link(&h, peer)
        .await?
        .ok_or_else(|| NetdevError::Invalid(format!("{peer} did not arrive in the namespace")))?;
    let index = link.header.index;
    // Rename while still down (a renamed link must be down).
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(GUEST_IFNAME)
                .address(att.mac.to_vec())
                .mtu(mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetdevError::netlink(format!("renaming {peer} to {GUEST_IFNAME}"), e))?;
    // Sandboxes speak IPv4 only (the ruleset drops IPv6 from the bridge):
    // no link-local address, no router solicitations. /proc/sys/net is
    // this thread's namespace's. Missing: IPv6 is off in the kernel.
    let v6 = format!("/proc/sys/net/ipv6/conf/{GUEST_IFNAME}/disable_ipv6");
    match std::fs::write(&v6, "1") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(NetdevError::io(format!("writing {v6}"), e))
        }
        _ => {}
    }
    h.address()
        .add(index, IpAddr::V4(att.address), att.prefix_len)
        .execute()
        .await
        .map_err(|e| {
            NetdevError::netlink(
                format!(
                    "adding {}/{} to {GUEST_IFNAME}",
                    att.address, att.prefix_len
                ),
                e,
            )
        })?;
    // Up before the route: the gateway must be reachable on a live link.
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetdevError::netlink(format!("setting {GUEST_IFNAME} up"), e))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(att.gateway)
        .output_interface(index)
        .build();
    h.route().add(route).execute().await.map_err(|e| {
        NetdevError::netlink(format!("adding the default route via {}", att.gateway), e)
    })
}
