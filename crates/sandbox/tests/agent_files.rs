//! The typed whole-file calls of the host client (`AgentClient::read_file`,
//! `AgentClient::write_file`) against the real guest agent in `serve`
//! mode. Its own test binary: agent_flow.rs measures its process's memory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw_proto::CHUNK;
use ironclaw_sandbox::{AgentClient, AgentError};

const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

fn guest_bin() -> Option<PathBuf> {
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

struct Guest {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    sock: PathBuf,
}

impl Guest {
    fn start(bin: &std::path::Path) -> Guest {
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

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// A round trip of several chunks with parents created, a read cut at its
/// cap, and the guest's refusals as typed errors; the connection stays
/// usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_file_calls_round_trip_and_stop_at_their_cap() {
    let Some(bin) = guest_bin() else {
        eprintln!("skipped: needs the guest binary (IRONCLAW_GUEST_BIN)");
        return;
    };
    let g = Guest::start(&bin);
    let c = within("connect", AgentClient::connect_unix(&g.sock))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/data.bin").display().to_string();
    let data = pattern(3 * CHUNK + 17);
    let st = within("write_file", c.write_file(&path, 0o640, true, &data))
        .await
        .unwrap();
    assert_eq!((st.size, st.mode & 0o777), (data.len() as u64, 0o640));
    let got = within("read_file", c.read_file(&path, 1 << 30))
        .await
        .unwrap();
    assert!(!got.truncated);
    assert!(got.data == data, "the bytes came back unchanged");
    let got = within("read_file capped", c.read_file(&path, 1000))
        .await
        .unwrap();
    assert!(got.truncated);
    assert_eq!(got.data, data[..1000]);
    // Not a regular file: refused, never read without end.
    assert!(matches!(
        within("read /dev/zero", c.read_file("/dev/zero", 1 << 20)).await,
        Err(AgentError::Guest { .. })
    ));
    let missing = dir.path().join("nope").display().to_string();
    match within("read missing", c.read_file(&missing, 10)).await {
        Err(AgentError::Guest { kind, .. }) => {
            assert_eq!(kind, ironclaw_proto::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    let orphan = dir.path().join("x/y/z").display().to_string();
    assert!(matches!(
        within(
            "write without parents",
            c.write_file(&orphan, 0o644, false, b"x")
        )
        .await,
        Err(AgentError::Guest { .. })
    ));
    assert!(!std::path::Path::new(&orphan).exists());
    within("ping after", c.ping(STEP)).await.unwrap();
}
