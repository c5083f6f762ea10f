//! Network interface setup. Only loopback for now: a fresh network
//! namespace or VM has `lo` down, and plenty of software assumes
//! 127.0.0.1 works.

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bring {iface} up: {source}")]
    Up {
        iface: &'static str,
        source: std::io::Error,
    },
}

/// Set IFF_UP on the loopback interface with the classic ioctls (no
/// netlink needed for a flag flip).
pub fn loopback_up() -> Result<(), NetError> {
    let err = |source| NetError::Up {
        iface: "lo",
        source,
    };
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut res = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if res == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            res = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let e = std::io::Error::last_os_error();
        libc::close(sock);
        if res < 0 {
            return Err(err(e));
        }
    }
    Ok(())
}
