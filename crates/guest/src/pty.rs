//! Pseudo-terminal pairs.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use ironclaw_proto::TtySize;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("pseudo-terminal: {0}")]
    Sys(#[from] nix::Error),
}

impl From<PtyError> for std::io::Error {
    fn from(e: PtyError) -> Self {
        match e {
            PtyError::Sys(errno) => std::io::Error::from(errno),
        }
    }
}

pub struct Pair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Open a master/slave pair of the given size. Both ends are close-on-exec
/// from the start so concurrent spawns cannot inherit another session's
/// terminal.
pub fn open(size: TtySize) -> Result<Pair, PtyError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    // SAFETY: into_raw_fd hands over ownership of a valid descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_size(master.as_raw_fd(), size)?;
    Ok(Pair { master, slave })
}

/// Resize; the kernel sends SIGWINCH to the terminal's foreground group.
pub fn set_size(fd: i32, size: TtySize) -> Result<(), PtyError> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(PtyError::Sys(nix::Error::last()));
    }
    Ok(())
}
