//! The host side of sandbox networking as one service: the bridge, the nft
//! table, the resolver and the egress proxies come up with the first
//! networked sandbox and go with the last one. Each attached sandbox is a
//! row of the [`Table`]; every change re-renders the whole nft table in one
//! transaction, so the kernel's rules always match the table.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ironclaw_sandbox::netdev::{self, NetAttachment};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::{nft, AlwaysDeny, Attached, EgressPolicy, NetworkConfig, Table};

#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    #[error("sandbox slot {0} has no address in the subnet {1}; use a larger [network] subnet")]
    SubnetFull(u32, ipnet::Ipv4Net),
    #[error("bridge {bridge}: {source}")]
    Bridge {
        bridge: String,
        source: netdev::NetdevError,
    },
    #[error("nftables: {0}")]
    Nft(#[from] nft::NftError),
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What `ironclaw doctor` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetStatus {
    pub bridge: String,
    pub subnet: String,
    pub gateway: Ipv4Addr,
    /// The bridge, nft table and listeners exist (they do while any
    /// networked sandbox runs).
    pub up: bool,
    pub bridge_exists: bool,
    pub nft_table: bool,
    pub attached: usize,
    pub dns: Option<SocketAddr>,
    pub http_proxy: Option<SocketAddr>,
    pub tls_proxy: Option<SocketAddr>,
}

struct Services {
    dns: SocketAddr,
    http: SocketAddr,
    tls: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Default)]
struct State {
    services: Option<Services>,
    /// Addresses handed out to sandboxes that are starting (their device
    /// joins the bridge before they are attached): the bridge must stay.
    starting: HashSet<Ipv4Addr>,
    /// Every sandbox port, starting or attached, by address: what each may
    /// send from (the anti-spoofing rules).
    ports: HashMap<Ipv4Addr, nft::Port>,
}

fn port_of(att: &NetAttachment) -> nft::Port {
    nft::Port {
        ifname: att.host_ifname.clone(),
        mac: att.mac,
        address: att.address,
    }
}

pub struct HostNetwork {
    pub config: NetworkConfig,
    table: Table,
    egress: Arc<crate::egress::EgressContext>,
    state: tokio::sync::Mutex<State>,
    /// The egress CA's certificate file, which sandboxes are told to trust.
    trust_ca: Option<std::path::PathBuf>,
}

impl HostNetwork {
    pub fn new(config: NetworkConfig, egress: crate::egress::EgressContext) -> Self {
        HostNetwork {
            table: egress.table.clone(),
            egress: Arc::new(egress),
            config,
            state: Default::default(),
            trust_ca: None,
        }
    }

    /// Sandboxes attached from now on trust this CA (PEM file).
    pub fn with_trust_ca(mut self, cert: std::path::PathBuf) -> Self {
        self.trust_ca = Some(cert);
        self
    }

    /// The always-denied set of this host right now (its addresses can
    /// change; read them afresh).
    pub fn always_deny(config: &NetworkConfig) -> AlwaysDeny {
        AlwaysDeny::new(ipnet::IpNet::V4(config.subnet), host_addresses())
    }

    /// The sandbox's place on the bridge (pure: its address derives from its
    /// store slot).
    pub fn attachment(&self, sandbox_id: &str, slot: u32) -> Result<NetAttachment, HostNetError> {
        let address = self
            .config
            .address_for(slot)
            .ok_or(HostNetError::SubnetFull(slot, self.config.subnet))?;
        Ok(NetAttachment {
            bridge: self.config.bridge.clone(),
            host_ifname: host_ifname(sandbox_id),
            address,
            prefix_len: self.config.subnet.prefix_len(),
            gateway: self.config.gateway(),
            mac: NetAttachment::mac_for(address),
            trust_ca: self.trust_ca.clone(),
        })
    }

    /// Before a sandbox's device is made: the bridge and services are up,
    /// and stay up until [`HostNetwork::release`]. `guard_at_boot`: the
    /// guest controls its own link (a VM's kernel), so its port's
    /// anti-spoofing rules go in now, before it sends anything; a namespace
    /// sandbox cannot forge packets and gets them with [`Self::activate`].
    pub async fn prepare(
        &self,
        att: &NetAttachment,
        guard_at_boot: bool,
    ) -> Result<(), HostNetError> {
        let mut st = self.state.lock().await;
        self.ensure_up(&mut st).await?;
        st.starting.insert(att.address);
        st.ports.insert(att.address, port_of(att));
        if guard_at_boot {
            self.apply(&st)?;
        }
        Ok(())
    }

    /// The sandbox runs: its link is an isolated port of the bridge (a VM's
    /// tap joined it without the flag; after a daemon restart the bridge
    /// may be new) and its traffic is allowed as its policy says.
    pub async fn activate(
        &self,
        att: &NetAttachment,
        sandbox_id: &str,
        policy: EgressPolicy,
        group: Option<String>,
    ) -> Result<(), HostNetError> {
        let mut st = self.state.lock().await;
        self.ensure_up(&mut st).await?;
        st.ports.insert(att.address, port_of(att));
        netdev::bridge::join(&att.host_ifname, &att.bridge)
            .await
            .map_err(|source| HostNetError::Bridge {
                bridge: att.bridge.clone(),
                source,
            })?;
        st.starting.remove(&att.address);
        self.replace(
            &st,
            Attached {
                sandbox_id: sandbox_id.to_string(),
                address: att.address,
                policy,
                group,
            },
        )
    }

    /// Replace the policy of a sandbox if it is attached (a stopped
    /// sandbox gets it at its next start). Applied at once: every packet is
    /// judged by the current policy, open connections included.
    pub async fn set_policy(
        &self,
        address: Ipv4Addr,
        policy: EgressPolicy,
    ) -> Result<(), HostNetError> {
        let st = self.state.lock().await;
        let Some(a) = self.table.lookup(IpAddr::V4(address)) else {
            return Ok(());
        };
        self.replace(
            &st,
            Attached {
                policy,
                ..(*a).clone()
            },
        )
    }

    /// Put `a` in the table and the kernel, or neither.
    fn replace(&self, st: &State, a: Attached) -> Result<(), HostNetError> {
        let address = a.address;
        let previous = self.table.lookup(IpAddr::V4(address));
        self.table.insert(a);
        if let Err(e) = self.apply(st) {
            match previous {
                Some(p) => self.table.insert((*p).clone()),
                None => {
                    self.table.remove(address);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The sandbox stopped (or never started): its rules go, and with the
    /// last sandbox the bridge, the table and the listeners.
    pub async fn release(&self, address: Ipv4Addr) -> Result<(), HostNetError> {
        let mut st = self.state.lock().await;
        st.starting.remove(&address);
        let had_port = st.ports.remove(&address).is_some();
        let was = self.table.remove(address);
        if self.table.is_empty() && st.starting.is_empty() {
            return self.teardown(&mut st).await;
        }
        if (was.is_some() || had_port) && st.services.is_some() {
            self.apply(&st)?;
        }
        Ok(())
    }

    /// Remove everything this daemon's network made (no sandbox uses it).
    async fn teardown(&self, st: &mut State) -> Result<(), HostNetError> {
        st.services = None;
        st.ports.clear();
        nft::remove(&self.config.bridge)?;
        netdev::bridge::delete_link(&self.config.bridge)
            .await
            .map_err(|source| HostNetError::Bridge {
                bridge: self.config.bridge.clone(),
                source,
            })
    }

    /// At daemon start, with no sandbox attached yet: what a crashed run
    /// left (table, bridge) goes; adopted sandboxes bring it back.
    pub async fn reset(&self) -> Result<(), HostNetError> {
        let mut st = self.state.lock().await;
        if self.table.is_empty() && st.starting.is_empty() {
            self.teardown(&mut st).await?;
        }
        Ok(())
    }

    async fn ensure_up(&self, st: &mut State) -> Result<(), HostNetError> {
        if st.services.is_some() {
            // Up since the first sandbox of this run; made idempotently then.
            return Ok(());
        }
        let gateway = self.config.gateway();
        netdev::bridge::ensure_bridge(
            &self.config.bridge,
            gateway,
            self.config.subnet.prefix_len(),
        )
        .await
        .map_err(|source| HostNetError::Bridge {
            bridge: self.config.bridge.clone(),
            source,
        })?;
        route_between_ports(&self.config.bridge);
        st.services = Some(self.start_services(gateway).await?);
        self.apply(st)
    }

    /// The resolver and the proxies on ephemeral ports of the gateway
    /// address (nft redirects 53, 80 and 443 to them): nothing else on the
    /// host needs to leave those ports free.
    async fn start_services(&self, gateway: Ipv4Addr) -> Result<Services, HostNetError> {
        let any = SocketAddr::new(IpAddr::V4(gateway), 0);
        let bind_err = |what| {
            move |source| HostNetError::Bind {
                what,
                addr: any,
                source,
            }
        };
        let udp = UdpSocket::bind(any)
            .await
            .map_err(bind_err("the resolver (udp)"))?;
        let dns = udp.local_addr().map_err(bind_err("the resolver (udp)"))?;
        let tcp = TcpListener::bind(dns)
            .await
            .map_err(bind_err("the resolver (tcp)"))?;
        let http = TcpListener::bind(any)
            .await
            .map_err(bind_err("the http proxy"))?;
        let tls = TcpListener::bind(any)
            .await
            .map_err(bind_err("the tls proxy"))?;
        let (http_addr, tls_addr) = (
            http.local_addr().map_err(bind_err("the http proxy"))?,
            tls.local_addr().map_err(bind_err("the tls proxy"))?,
        );
        let ctx = self.egress.clone();
        let tasks = vec![
            tokio::spawn(crate::dns::serve(
                udp,
                tcp,
                ctx.table.clone(),
                ctx.upstream.clone(),
                ctx.always.clone(),
            )),
            tokio::spawn(crate::egress::serve_http(http, ctx.clone())),
            tokio::spawn(crate::egress::serve_tls(tls, ctx.clone())),
            tokio::spawn(renew_always_deny(self.config.clone(), ctx)),
        ];
        tracing::info!(bridge = %self.config.bridge, %dns, http = %http_addr, tls = %tls_addr, "sandbox network up");
        Ok(Services {
            dns,
            http: http_addr,
            tls: tls_addr,
            tasks,
        })
    }

    fn apply(&self, st: &State) -> Result<(), HostNetError> {
        let Some(s) = &st.services else {
            return Ok(());
        };
        let always = Self::always_deny(&self.config);
        self.egress.always.set(always.clone());
        let sandboxes: Vec<Attached> = self
            .table
            .snapshot()
            .iter()
            .map(|a| (**a).clone())
            .collect();
        nft::apply(&nft::RulesetSpec {
            table: &self.config.bridge,
            bridge: &self.config.bridge,
            gateway: self.config.gateway(),
            subnet: self.config.subnet,
            dns_port: s.dns.port(),
            http_port: s.http.port(),
            tls_port: s.tls.port(),
            always: &always,
            sandboxes: &sandboxes,
            ports: &st.ports.values().cloned().collect::<Vec<_>>(),
        })?;
        Ok(())
    }

    pub async fn status(&self) -> NetStatus {
        let st = self.state.lock().await;
        let s = st.services.as_ref();
        NetStatus {
            bridge: self.config.bridge.clone(),
            subnet: self.config.subnet.to_string(),
            gateway: self.config.gateway(),
            up: s.is_some(),
            bridge_exists: netdev::bridge::link_exists(&self.config.bridge)
                .await
                .unwrap_or(false),
            nft_table: nft::exists(&self.config.bridge).unwrap_or(false),
            attached: self.table.snapshot().len(),
            dns: s.map(|s| s.dns),
            http_proxy: s.map(|s| s.http),
            tls_proxy: s.map(|s| s.tls),
        }
    }
}

/// Ports are isolated, so sandboxes never reach each other at layer 2;
/// members of one named network reach each other through the host instead:
/// it answers ARP for the whole subnet (private-VLAN proxy ARP) and routes
/// between ports, where the forward chain decides. No redirects: "go
/// direct" is exactly what must not happen. Per-bridge settings, gone with
/// the bridge.
fn route_between_ports(bridge: &str) {
    for (key, value) in [
        ("proxy_arp", "1"),
        ("proxy_arp_pvlan", "1"),
        ("send_redirects", "0"),
    ] {
        let path = format!("/proc/sys/net/ipv4/conf/{bridge}/{key}");
        if let Err(e) = std::fs::write(&path, value) {
            tracing::warn!("{path}: {e}");
        }
    }
}

/// The host end of a sandbox's link: `ic` and the sandbox id (ids are 12
/// hex digits; interface names are at most 15 bytes).
pub fn host_ifname(sandbox_id: &str) -> String {
    let id: String = sandbox_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(13)
        .collect();
    format!("ic{id}")
}

/// How often the proxies' always-denied set is read afresh. nft needs no
/// renewal: a sandbox's packets to any host address, new or old, meet the
/// input chain; only what the proxies dial for a sandbox could land on an
/// address the host gained since.
const RENEW_ALWAYS_DENY: std::time::Duration = std::time::Duration::from_secs(10);

async fn renew_always_deny(config: NetworkConfig, ctx: Arc<crate::egress::EgressContext>) {
    let mut tick = tokio::time::interval(RENEW_ALWAYS_DENY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = HostNetwork::always_deny(&config);
        let host = now.host.clone();
        if ctx.always.set(now) {
            tracing::info!(
                ?host,
                "the host's addresses changed: sandboxes' always-denied set renewed"
            );
        }
    }
}

/// Every address of every interface of the host (the sandboxes' always-deny
/// set includes them all: the daemon's API listens on one of them).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(v4) = sa.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                out.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
