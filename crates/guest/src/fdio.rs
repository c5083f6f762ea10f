//! Non-blocking I/O on raw descriptors (pipes, PTY masters) through the
//! tokio reactor. `tokio::process` is not used because the agent reaps
//! every child itself (see `reaper`), so it drives the child's pipes
//! directly.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

pub struct FdIo {
    fd: AsyncFd<OwnedFd>,
    /// A PTY master reports EIO once no slave descriptor is open: that is
    /// its end of file.
    eio_is_eof: bool,
}

impl FdIo {
    pub fn new(fd: OwnedFd) -> io::Result<FdIo> {
        set_nonblocking(&fd)?;
        // SAFETY: the OwnedFd is moved in and owned by the AsyncFd for its
        // whole life, so the descriptor stays open and the same.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(FdIo {
            fd,
            eio_is_eof: false,
        })
    }

    pub fn pty_master(fd: OwnedFd) -> io::Result<FdIo> {
        Ok(FdIo {
            eio_is_eof: true,
            ..FdIo::new(fd)?
        })
    }

    pub fn raw(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }

    /// Cancel-safe: dropping the future before it completes loses no data.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: buf is valid for buf.len() writable bytes.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Err(e)) if self.eio_is_eof && e.raw_os_error() == Some(libc::EIO) => {
                    return Ok(0)
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: buf is valid for buf.len() readable bytes.
                let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
