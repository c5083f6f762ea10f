//! Local terminal handling: raw mode (always restored), size, tty checks.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::{Mutex, Once};

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};

/// The attributes to restore; shared with the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static HOOK: Once = Once::new();

pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Terminal size as (rows, cols): tries stdout, stdin, stderr; None if none
/// of them is a terminal.
pub fn size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO, libc::STDERR_FILENO] {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into the pointer we pass.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Size or 24x80.
pub fn size_or_default() -> (u16, u16) {
    size().unwrap_or((24, 80))
}

fn restore_saved() {
    if let Ok(mut g) = SAVED.lock() {
        if let Some(t) = g.take() {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSAFLUSH, &t);
        }
    }
}

/// Puts stdin's terminal into raw mode; restores it on drop, and also from a
/// panic hook (so a panic anywhere never leaves the terminal raw).
pub struct RawGuard {
    _private: (),
}

impl RawGuard {
    pub fn enter() -> Result<RawGuard> {
        let stdin = std::io::stdin();
        let orig = termios::tcgetattr(stdin.as_fd()).context("reading terminal attributes")?;
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(orig);
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                prev(info);
            }));
        });
        if let Err(e) = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw) {
            restore_saved();
            return Err(e).context("switching the terminal to raw mode");
        }
        Ok(RawGuard { _private: () })
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        restore_saved();
    }
}
