//! Chat over the daemon's WebSocket against the scripted mock LLM, shared
//! by the tests that need agent turns.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ironclaw_agent::mock::MockLlm;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::Daemon;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The provider key the mock-backed daemons are given.
pub const MOCK_KEY: &str = "sk-test-secret-4f1c9e27";

/// A daemon whose one provider is `mock` (OpenAI wire format), with extra
/// config lines, and the busybox image built.
pub async fn mock_daemon(mock: &MockLlm, config: &str) -> Daemon {
    let base = mock.openai_base();
    let d = Daemon::start_env(
        config,
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
        ],
    )
    .await;
    d.build_image("mini", "busybox").await;
    d
}

/// The next JSON event, within 30 s.
pub async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no event within 30 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Events of one turn, up to and including `done` (every turn ends with
/// one, failed ones too, after an `error` event).
pub async fn turn(ws: &mut Ws, text: &str) -> Vec<Value> {
    ws.send(Message::Text(
        json!({"type": "message", "text": text}).to_string(),
    ))
    .await
    .unwrap();
    let mut events = Vec::new();
    loop {
        let e = next_event(ws).await;
        let done = e["type"] == "done";
        events.push(e);
        if done {
            return events;
        }
    }
}

/// A chat WebSocket as `token` (optionally resuming `session`), past its
/// first event: the socket and the session id.
pub async fn connect(d: &Daemon, token: &str, session: Option<&str>) -> (Ws, String) {
    let mut url = format!(
        "{}/v1/chat/ws?token={token}",
        d.url.replacen("http", "ws", 1)
    );
    if let Some(s) = session {
        url.push_str(&format!("&session={s}"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = next_event(&mut ws).await;
    assert_eq!(first["type"], "session", "{first}");
    (ws, first["id"].as_str().unwrap().to_string())
}

/// One turn in a new session: its id and the turn's events.
pub async fn chat_turn(d: &Daemon, token: &str, text: &str) -> (String, Vec<Value>) {
    let (mut ws, session) = connect(d, token, None).await;
    (session, turn(&mut ws, text).await)
}
