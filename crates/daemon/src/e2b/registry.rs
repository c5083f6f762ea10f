//! The processes started through envd, by sandbox and pid: each one's
//! control and the clients its output fans out to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ironclaw_sandbox::guest_process::ProcessControl;
use serde_json::Value;
use tokio::sync::mpsc;

use super::connect::{Code, ConnectError};
use super::process::Selector;

/// What a process's clients receive.
#[derive(Debug, Clone)]
pub enum Ev {
    /// `stdout`, `stderr` or `pty`, and the bytes.
    Data(&'static str, Vec<u8>),
    /// The end event's JSON.
    End(Value),
}

pub struct Proc {
    pub pid: u32,
    pub tag: Option<String>,
    /// `ProcessConfig` as JSON, for List.
    pub config: Value,
    pub control: ProcessControl,
    pub pty: bool,
    pub subscribers: Mutex<Vec<mpsc::UnboundedSender<Ev>>>,
}

impl Proc {
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Ev> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    pub fn publish(&self, ev: Ev) {
        self.subscribers
            .lock()
            .unwrap()
            .retain(|s| s.send(ev.clone()).is_ok());
    }
}

#[derive(Default)]
struct SandboxProcs {
    by_pid: HashMap<u32, Arc<Proc>>,
    /// Whether the sandbox has /bin/bash (the SDK runs everything with it).
    has_bash: Option<bool>,
}

/// The running processes of every E2B sandbox, by sandbox id.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, SandboxProcs>>,
}

impl Registry {
    pub fn insert(&self, sandbox: &str, p: Arc<Proc>) {
        let mut g = self.inner.lock().unwrap();
        g.entry(sandbox.to_string())
            .or_default()
            .by_pid
            .insert(p.pid, p);
    }

    pub fn remove(&self, sandbox: &str, pid: u32) {
        if let Some(s) = self.inner.lock().unwrap().get_mut(sandbox) {
            s.by_pid.remove(&pid);
        }
    }

    pub fn find(&self, sandbox: &str, sel: &Selector) -> Result<Arc<Proc>, ConnectError> {
        let g = self.inner.lock().unwrap();
        let found = g.get(sandbox).and_then(|s| match sel {
            Selector { pid: Some(pid), .. } => s.by_pid.get(pid).cloned(),
            Selector { tag: Some(t), .. } => s
                .by_pid
                .values()
                .find(|p| p.tag.as_deref() == Some(t.as_str()))
                .cloned(),
            _ => None,
        });
        found.ok_or_else(|| {
            ConnectError::new(
                Code::NotFound,
                format!("process with {} not found", sel.describe()),
            )
        })
    }

    pub fn list(&self, sandbox: &str) -> Vec<Arc<Proc>> {
        let g = self.inner.lock().unwrap();
        let mut v: Vec<_> = g
            .get(sandbox)
            .map(|s| s.by_pid.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|p| p.pid);
        v
    }

    pub fn has_bash(&self, sandbox: &str) -> Option<bool> {
        self.inner.lock().unwrap().get(sandbox)?.has_bash
    }

    pub fn set_has_bash(&self, sandbox: &str, yes: bool) {
        self.inner
            .lock()
            .unwrap()
            .entry(sandbox.to_string())
            .or_default()
            .has_bash = Some(yes);
    }

    /// Forget a sandbox that stops or goes away (its processes end with it).
    pub fn forget_sandbox(&self, sandbox: &str) {
        self.inner.lock().unwrap().remove(sandbox);
    }
}
