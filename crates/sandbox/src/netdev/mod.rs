//! A sandbox's network device on the host side: what the daemon's network
//! gives each sandbox ([`NetAttachment`]), and the links that carry it:
//! the host bridge ([`bridge`]), a veth pair per namespace sandbox
//! ([`veth`]) and a tap per VM ([`tap`]). No link is made by running `ip`.

pub mod bridge;
pub mod tap;
pub mod veth;

use std::net::Ipv4Addr;

/// Why a link operation failed; `context` says which step on which link.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl NetdevError {
    pub(crate) fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetdevError::Netlink {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetdevError::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno the kernel answered with, if it was a netlink refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetdevError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(m.raw_code().abs()),
            NetdevError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One sandbox's place on the host bridge. The daemon's network allocates
/// it; the backend makes the device (a veth pair into the sandbox's network
/// namespace, or a tap for a VM) and the guest side gets the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttachment {
    /// The host bridge the host end joins (as an isolated port: sandboxes
    /// never reach each other at layer 2).
    pub bridge: String,
    /// Name of the host end (at most 15 bytes), unique per sandbox.
    pub host_ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The bridge's address: default route, and the resolver.
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
    /// A CA certificate (PEM, host path) the sandbox should trust: the
    /// egress proxy's, when it intercepts HTTPS to add secrets.
    pub trust_ca: Option<std::path::PathBuf>,
}

impl NetAttachment {
    /// Locally administered, unicast, derived from the address so a
    /// restarted sandbox keeps its MAC (and neighbours' caches stay right).
    pub fn mac_for(address: Ipv4Addr) -> [u8; 6] {
        let o = address.octets();
        [0x02, 0x1c, o[0], o[1], o[2], o[3]]
    }

    /// `ADDR/PREFIX,GATEWAY` as the guest reads it (`ironclaw.net=` on a
    /// VM's kernel command line, `--net` of ns-init).
    pub fn guest_arg(&self) -> String {
        format!("{}/{},{}", self.address, self.prefix_len, self.gateway)
    }
}

/// `ironclaw.ca=BASE64` for a VM's kernel command line: the PEM's body
/// without its lines (an EC certificate's ~600 characters fit the 2048-byte
/// x86 command line). None when the file is unreadable or not one PEM
/// certificate.
pub fn ca_cmdline(pem_file: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(pem_file).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    (text.matches("BEGIN CERTIFICATE").count() == 1 && body.len() <= 1200)
        .then(|| format!("ironclaw.ca={body}"))
}
