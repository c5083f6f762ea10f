//! The real guest agent in `serve` mode on a Unix socket, for tests of the
//! host client against it (agent_flow.rs, agent_files.rs): started, ready
//! when it says so, stopped on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Deadline of every step: a hang fails the test.
pub const STEP: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

pub fn guest_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IRONCLAW_GUEST_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| {
            target
                .join("x86_64-unknown-linux-gnu")
                .join(p)
                .join("ironclaw-guest")
        })
        .chain([target.join("debug").join("ironclaw-guest")])
        .find(|p| p.exists())
}

pub struct Guest {
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Guest {
    pub fn start(bin: &std::path::Path) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                if line.unwrap_or_default() == "ironclaw-guest: ready" {
                    let _ = tx.send(());
                    break;
                }
            }
            for _ in lines {}
        });
        rx.recv_timeout(STEP).expect("agent ready line");
        Guest {
            child,
            _dir: dir,
            sock,
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our own child; SIGTERM stops its children too.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic bytes that are not all alike.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}
