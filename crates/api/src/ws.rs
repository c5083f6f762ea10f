//! The JSON text frames of the exec and console WebSockets
//! (`.../exec/ws`, `.../console/ws`; docs/api.md). Binary frames carry
//! the bytes: stdin up, `1`+stdout or `2`+stderr down.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// The first frame of an exec: what to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecStart {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Binary frames from the client are the command's stdin.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Run under a terminal of this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Run as this user of the sandbox (a name or uid; default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What the client sends during an exec or console session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    /// End of stdin.
    Eof,
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal {
        signal: i32,
    },
}

/// A signal as the daemon reports it: a number, or a name (`SIGKILL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignalId {
    Number(i64),
    Name(String),
}

/// What the daemon sends as text during an exec or console session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SessionEvent {
    /// The command (or the console's shell) ended.
    Exit {
        #[serde(default)]
        exit_code: Option<i64>,
        #[serde(default)]
        signal: Option<SignalId>,
        #[serde(default)]
        timed_out: bool,
    },
    /// A console session was attached (`created`: it is new).
    Attached {
        #[serde(default)]
        created: bool,
        #[serde(default)]
        pid: Option<i64>,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BuildEvent, ChatEvent};
    use serde_json::json;

    /// The frames read as the daemon writes them, and what a newer daemon
    /// may add does not break an older client.
    #[test]
    fn frames_as_on_the_wire() {
        let exit: SessionEvent = serde_json::from_value(
            json!({"type": "exit", "exit_code": null, "signal": "SIGKILL", "timed_out": true}),
        )
        .unwrap();
        assert_eq!(
            exit,
            SessionEvent::Exit {
                exit_code: None,
                signal: Some(SignalId::Name("SIGKILL".into())),
                timed_out: true
            }
        );
        assert_eq!(
            serde_json::to_value(Control::Resize {
                rows: 40,
                cols: 120
            })
            .unwrap(),
            json!({"type": "resize", "rows": 40, "cols": 120})
        );
        let ev: ChatEvent =
            serde_json::from_value(json!({"type": "something_new", "x": 1})).unwrap();
        assert_eq!(ev, ChatEvent::Other);
        let ev: ChatEvent = serde_json::from_value(
            json!({"type": "done", "stopped": "cancelled", "usage": null, "cost_usd": 0.5, "error": null}),
        )
        .unwrap();
        assert!(matches!(ev, ChatEvent::Done { stopped: Some(s), .. } if s == "cancelled"));
        let b: BuildEvent = serde_json::from_value(
            json!({"type": "progress", "step": "kernel", "message": "", "done": 1, "total": 0}),
        )
        .unwrap();
        assert!(matches!(b, BuildEvent::Progress { total: 0, .. }));
    }
}
