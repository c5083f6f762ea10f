//! Shared test setup: a real guest agent in `serve` mode (commands run on
//! the host, so tests confine their files to a temporary directory), the
//! mock LLM server, and providers pointed at it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ironclaw_agent::config::ModelInfo;
use ironclaw_agent::mock::MockLlm;
use ironclaw_agent::provider::{anthropic::Anthropic, openai::OpenAi};
use ironclaw_agent::{Provider, RetryPolicy, TurnContext, TurnEvent};
use ironclaw_sandbox::AgentClient;

/// The guest binary: `IRONCLAW_GUEST_BIN`, else the static release build.
pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONCLAW_GUEST_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("x86_64-unknown-linux-gnu/release/ironclaw-guest");
    assert!(
        p.exists(),
        "guest binary not found at {}: build it with\n  RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p ironclaw-guest --target x86_64-unknown-linux-gnu\nor set IRONCLAW_GUEST_BIN",
        p.display()
    );
    p
}

/// A guest agent serving on a socket, and a scratch directory for the
/// files tests make it touch.
pub struct Guest {
    child: Child,
    _sockdir: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub agent: AgentClient,
}

impl Guest {
    pub async fn start() -> Guest {
        let sockdir = tempfile::tempdir().unwrap();
        let sock = sockdir.path().join("agent.sock");
        let mut child = Command::new(guest_bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the guest agent");
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
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the guest agent did not get ready");
        let agent = AgentClient::connect_unix(&sock).await.unwrap();
        Guest {
            child,
            _sockdir: sockdir,
            work: tempfile::tempdir().unwrap(),
            agent,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.work.path().join(name).display().to_string()
    }

    pub fn workdir(&self) -> String {
        self.work.path().display().to_string()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SIGTERM lets the agent stop its children too.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quick retries so tests do not wait on backoff.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(20),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

pub const BOTH: [Wire; 2] = [Wire::OpenAi, Wire::Anthropic];
pub const KEY: &str = "sk-test-secret-key-123";

pub fn provider(mock: &MockLlm, wire: Wire, policy: RetryPolicy) -> Arc<dyn Provider> {
    match wire {
        Wire::OpenAi => Arc::new(OpenAi::new(
            "mock-openai",
            mock.openai_base(),
            Some(KEY.into()),
            policy,
        )),
        Wire::Anthropic => Arc::new(Anthropic::new(
            "mock-anthropic",
            mock.anthropic_base(),
            Some(KEY.into()),
            policy,
        )),
    }
}

pub fn model(context_window: u32) -> ModelInfo {
    ModelInfo {
        provider: "mock".into(),
        name: "mock-model".into(),
        id: "mock-model-v1".into(),
        context_window,
        max_output_tokens: 512,
        input_price_per_mtok: 2.0,
        output_price_per_mtok: 10.0,
        cache_read_price_per_mtok: 0.2,
        cache_write_price_per_mtok: 2.5,
    }
}

pub fn context(mock: &MockLlm, wire: Wire, guest: &Guest) -> TurnContext {
    let mut ctx = TurnContext::new(
        provider(mock, wire, fast_retry()),
        model(128_000),
        Arc::new(guest.agent.clone()),
    );
    ctx.tools.workdir = guest.workdir();
    ctx.memory_path = Some(guest.path("MEMORY.md"));
    ctx
}

/// Collect every event of a turn.
pub fn collector() -> (
    tokio::sync::mpsc::Sender<TurnEvent>,
    tokio::task::JoinHandle<Vec<TurnEvent>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let h = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    (tx, h)
}

pub mod scripted;
