//! A VM's host-side link: a tap device on the sandbox bridge, opened by the
//! daemon and handed to the VMM as a descriptor (`-netdev tap,fd=N`). QEMU
//! runs unprivileged under seccomp and could not create it itself.
//!
//! QEMU's tap is not persistent: the kernel deletes it when the last
//! descriptor closes, i.e. when the VMM exits, however it exits. So a
//! crashed VM or daemon leaves no device behind, and there is nothing to
//! clean up on stop.
//!
//! Firecracker takes no descriptor: it opens its tap by name. For it the
//! daemon makes a persistent tap owned by the jailer's uid and gid (so the
//! unprivileged VMM may attach to that one device and no other), and
//! deletes it when the VM has stopped ([`delete_persistent`]); the
//! daemon's network release deletes any that a crash left.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::NetAttachment;

/// `SIOCBRADDIF` (linux/sockios.h): add the interface `ifr_ifindex` to the
/// bridge `ifr_name`. The classic bridge ioctl, so no netlink is needed here.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("bad interface name {0:?}: 1 to 15 bytes, no '/', ':' or whitespace")]
    Name(String),
    #[error("opening /dev/net/tun: {0}")]
    Open(io::Error),
    #[error("creating tap {name}: {source}")]
    Create { name: String, source: io::Error },
    #[error("adding {name} to bridge {bridge}: {source}")]
    Bridge {
        name: String,
        bridge: String,
        source: io::Error,
    },
    #[error("bringing {name} up: {source}")]
    Up { name: String, source: io::Error },
}

/// Open the tap `att.host_ifname` (creating it), join it to `att.bridge`
/// and bring it up. The descriptor is close-on-exec; the VMM launcher
/// clears that for its child only. Dropping it (before or after the VMM
/// has its copy) is all the cleanup there is.
pub fn open_tap(att: &NetAttachment) -> Result<OwnedFd, TapError> {
    let tun = attach(&att.host_ifname)?;
    join_and_up(att)?;
    Ok(tun)
}

/// Make the persistent tap `att.host_ifname` for a VMM that opens it by
/// name as `uid`/`gid`, joined to `att.bridge` and up. A device of that
/// name left by a crash is replaced.
pub fn make_persistent(att: &NetAttachment, uid: u32, gid: u32) -> Result<(), TapError> {
    let name = &att.host_ifname;
    delete_persistent(name)?;
    let tun = attach(name)?;
    let fail = |source| TapError::Create {
        name: name.clone(),
        source,
    };
    // SAFETY: these ioctls take an integer argument by value.
    unsafe {
        if libc::ioctl(tun.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong) < 0
            || libc::ioctl(tun.as_raw_fd(), libc::TUNSETGROUP, gid as libc::c_ulong) < 0
            || libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) < 0
        {
            return Err(fail(io::Error::last_os_error()));
        }
    }
    drop(tun);
    if let Err(e) = join_and_up(att) {
        let _ = delete_persistent(name);
        return Err(e);
    }
    Ok(())
}

/// Delete the persistent tap `name` if there is one (attach, clear the
/// flag, close). Nothing happens to a missing device or to another kind
/// of link of that name.
pub fn delete_persistent(name: &str) -> Result<(), TapError> {
    if !exists(name) {
        return Ok(());
    }
    // A non-tun link of that name refuses TUNSETIFF; it is not ours.
    let Ok(tun) = attach(name) else {
        return Ok(());
    };
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) } < 0 {
        return Err(TapError::Create {
            name: name.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Open `/dev/net/tun` and attach to (or create) the tap `name`.
fn attach(name: &str) -> Result<OwnedFd, TapError> {
    let req = ifreq(name)?;
    // std opens close-on-exec.
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    let tun = OwnedFd::from(tun);
    let mut set = req;
    // IFF_VNET_HDR: QEMU probes the descriptor for it and, when present,
    // lets the guest hand over unchecksummed and large (TSO) frames, which
    // saves per-packet work that is expensive under TCG.
    set.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads an ifreq we own.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &set) } < 0 {
        return Err(TapError::Create {
            name: name.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(tun)
}

fn join_and_up(att: &NetAttachment) -> Result<(), TapError> {
    let name = &att.host_ifname;
    let req = ifreq(name)?;
    let ctl = control_socket().map_err(|source| TapError::Create {
        name: name.clone(),
        source,
    })?;
    let index = ifindex(name).map_err(|source| TapError::Create {
        name: name.clone(),
        source,
    })?;
    let mut br = ifreq(&att.bridge)?;
    br.ifr_ifru.ifru_ifindex = index;
    // SAFETY: SIOCBRADDIF reads an ifreq we own.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), SIOCBRADDIF, &br) } < 0 {
        return Err(TapError::Bridge {
            name: name.clone(),
            bridge: att.bridge.clone(),
            source: io::Error::last_os_error(),
        });
    }
    set_up(&ctl, req).map_err(|source| TapError::Up {
        name: name.clone(),
        source,
    })
}

/// Whether a network interface of this name exists (in our namespace).
pub fn exists(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
}

fn ifreq(name: &str) -> Result<libc::ifreq, TapError> {
    let bad = name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(TapError::Name(name.into()));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new descriptor we then own.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

fn ifindex(name: &str) -> io::Result<libc::c_int> {
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i as libc::c_int),
    }
}

fn set_up(ctl: &OwnedFd, mut req: libc::ifreq) -> io::Result<()> {
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(bridge: &str, tap: &str) -> NetAttachment {
        NetAttachment {
            bridge: bridge.into(),
            host_ifname: tap.into(),
            address: "10.214.0.2".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.214.0.1".parse().unwrap(),
            mac: NetAttachment::mac_for("10.214.0.2".parse().unwrap()),
            trust_ca: None,
        }
    }

    #[test]
    fn names_are_checked_before_anything_is_created() {
        for bad in ["", "a-name-of-16-byt", "a/b", "a b", "a:0"] {
            assert!(
                matches!(open_tap(&att("br0", bad)), Err(TapError::Name(_))),
                "{bad:?}"
            );
        }
        assert!(!exists("../lo"));
    }

    /// Root only: a tap on a missing bridge fails and leaves no device.
    #[test]
    fn a_failed_join_leaves_no_device() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        let tap = format!("ictu{}", rand::random::<u32>() % 100_000);
        match open_tap(&att("icnobr-none", &tap)) {
            Err(TapError::Bridge { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!exists(&tap), "{tap} left behind");
    }
}
