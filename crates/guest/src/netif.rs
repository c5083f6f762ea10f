//! Network interface setup with the classic ioctls (no netlink needed for
//! one address and one route). A fresh network namespace or VM has `lo`
//! down, and plenty of software assumes 127.0.0.1 works; a sandbox with a
//! network also gets its one interface configured from
//! `ADDR/PREFIX,GATEWAY` (`ironclaw.net=` on a VM's kernel command line).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bring {iface} up: {source}")]
    Up {
        iface: &'static str,
        source: std::io::Error,
    },
    #[error("network {iface}: {what}: {source}")]
    Configure {
        iface: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The sandbox's address on the host bridge: `ADDR/PREFIX,GATEWAY`. The
/// gateway is the default route and the DNS resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

impl NetConfig {
    pub fn parse(s: &str) -> Result<NetConfig, String> {
        let bad = || format!("bad network {s:?}: want ADDR/PREFIX,GATEWAY");
        let (cidr, gw) = s.split_once(',').ok_or_else(bad)?;
        let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let cfg = NetConfig {
            address: addr.parse().map_err(|_| bad())?,
            prefix_len: prefix.parse().map_err(|_| bad())?,
            gateway: gw.parse().map_err(|_| bad())?,
        };
        // The default route needs a gateway on the link (no onlink here).
        if !(1..=30).contains(&cfg.prefix_len)
            || cfg.gateway == cfg.address
            || u32::from(cfg.gateway) & u32::from(cfg.netmask())
                != u32::from(cfg.address) & u32::from(cfg.netmask())
        {
            return Err(format!(
                "bad network {s:?}: prefix 1 to 30, gateway another address of the subnet"
            ));
        }
        Ok(cfg)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }

    /// `ironclaw.net=` of a kernel command line: None when absent.
    pub fn from_cmdline(cmdline: &str) -> Option<Result<NetConfig, String>> {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ironclaw.net="))
            .map(NetConfig::parse)
    }
}

/// Set IFF_UP on the loopback interface with the classic ioctls (no
/// netlink needed for a flag flip).
pub fn loopback_up() -> Result<(), NetError> {
    let err = |source| NetError::Up {
        iface: "lo",
        source,
    };
    let sock = socket().map_err(err)?;
    set_up(&sock, "lo").map_err(err)
}

/// Wait up to `timeout` for `iface` to exist: a driver's device can show
/// up a little after its module loaded.
pub fn wait_for(iface: &str, timeout: Duration) -> bool {
    let path = Path::new("/sys/class/net").join(iface);
    let until = Instant::now() + timeout;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait up to `timeout` for `iface` to have a carrier. Until then the
/// kernel queues nothing (the qdisc stays the no-op one), so a sandbox
/// that reported ready before would lose its first packets (a lost first
/// DNS query costs the resolver's whole timeout). Not operstate: that
/// follows the carrier up to a second later (linkwatch is rate limited)
/// while traffic already flows.
pub fn wait_carrier(iface: &str, timeout: Duration) -> bool {
    let path = Path::new("/sys/class/net").join(iface).join("carrier");
    let until = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "1") {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Give `iface` its address and netmask, bring it up, and route
/// everything else through the gateway.
pub fn configure(iface: &str, cfg: &NetConfig) -> Result<(), NetError> {
    let err = |what| {
        move |source| NetError::Configure {
            iface: iface.into(),
            what,
            source,
        }
    };
    let sock = socket().map_err(err("socket"))?;
    let mut req = ifreq(iface).map_err(err("name"))?;
    req.ifr_ifru.ifru_addr = sockaddr(cfg.address);
    ioctl(&sock, libc::SIOCSIFADDR, &req).map_err(err("set address"))?;
    // After the address: SIOCSIFADDR resets the mask to the classful one.
    req.ifr_ifru.ifru_netmask = sockaddr(cfg.netmask());
    ioctl(&sock, libc::SIOCSIFNETMASK, &req).map_err(err("set netmask"))?;
    set_up(&sock, iface).map_err(err("up"))?;
    let dev = std::ffi::CString::new(iface).map_err(|e| err("name")(io::Error::other(e)))?;
    // SAFETY: rtentry is plain data (a null rt_dev is valid); all-zero is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(cfg.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_ptr().cast_mut();
    match ioctl(&sock, libc::SIOCADDRT, &rt) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(err("default route")(e)),
        _ => Ok(()),
    }
}

/// `nameserver GATEWAY`: the daemon's resolver listens on the bridge. An
/// image's resolv.conf is often a symlink into a resolver daemon's runtime
/// dir, naming servers the sandbox cannot reach: replace the link.
pub fn write_resolv_conf(path: &Path, cfg: &NetConfig) -> io::Result<()> {
    if path.is_symlink() {
        std::fs::remove_file(path)?;
    }
    std::fs::write(path, format!("nameserver {}\noptions edns0\n", cfg.gateway))
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new descriptor we then own.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is fresh and nobody else's.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

fn ifreq(iface: &str) -> io::Result<libc::ifreq> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(sock: &OwnedFd, req: libc::c_ulong, arg: &T) -> io::Result<()> {
    // SAFETY: every request used here reads a struct of type T we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, arg as *const T) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, iface: &str) -> io::Result<()> {
    let mut req = ifreq(iface)?;
    // SAFETY: SIOCGIFFLAGS writes into the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(sock, libc::SIOCSIFFLAGS, &req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_from_cmdline() {
        let cfg = NetConfig::from_cmdline("quiet ironclaw.net=10.214.3.7/24,10.214.3.1 panic=-1")
            .unwrap()
            .unwrap();
        assert_eq!(
            cfg,
            NetConfig {
                address: Ipv4Addr::new(10, 214, 3, 7),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 214, 3, 1),
            }
        );
        assert_eq!(cfg.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            NetConfig::parse("10.0.0.2/30,10.0.0.1").unwrap().netmask(),
            Ipv4Addr::new(255, 255, 255, 252)
        );
        assert_eq!(NetConfig::from_cmdline("quiet ironclaw.hostname=x"), None);
        for bad in [
            "",
            "10.0.0.2",
            "10.0.0.2/24",
            "10.0.0.2,10.0.0.1",
            "10.0.0.2/33,10.0.0.1",
            "10.0.0.2/0,10.0.0.1",
            "10.0.0.2/24,10.0.0.2",
            "10.0.0.2/24,10.0.1.1",
            "10.0.0.x/24,10.0.0.1",
            "10.0.0.2/24,",
        ] {
            assert!(NetConfig::parse(bad).is_err(), "{bad:?}");
        }
        assert!(NetConfig::from_cmdline("ironclaw.net=").unwrap().is_err());
    }

    #[test]
    fn resolv_conf_replaces_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("stub-resolv.conf");
        std::fs::write(&target, "nameserver 127.0.0.53\n").unwrap();
        let path = t.path().join("resolv.conf");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let cfg = NetConfig::parse("10.0.0.2/24,10.0.0.1").unwrap();
        write_resolv_conf(&path, &cfg).unwrap();
        assert!(!path.is_symlink());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.0.1\noptions edns0\n"
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "nameserver 127.0.0.53\n"
        );
    }
}
