//! A turn's writes are group-committed by the store's commit thread: many
//! sessions' turns share one transaction. What a client was told is done
//! (`done` on the socket) must survive a SIGKILL of the daemon right after,
//! for every one of the concurrent sessions, with nothing half-written.

mod common;

use common::chat::{self, connect, turn};
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};

const SESSIONS: usize = 24;
const TURNS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_acknowledged_survive_a_sigkill() {
    let mock = MockLlm::start([MockReply::text("warm")]).await;
    for _ in 0..SESSIONS * TURNS {
        mock.push(MockReply::text("noted"));
    }
    let mut d = chat::mock_daemon(&mock, "").await;
    // The first turn creates the user's sandbox; the rest run at once.
    let (mut ws, _) = connect(&d, &d.token, None).await;
    turn(&mut ws, "warm up").await;
    let mut sockets = Vec::new();
    for _ in 0..SESSIONS {
        let (mut ws, _) = connect(&d, &d.token, None).await;
        ws_new_session(&mut ws).await;
        sockets.push(ws);
    }
    let runs: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(s, mut ws)| {
            tokio::spawn(async move {
                for t in 0..TURNS {
                    let events = turn(&mut ws, &format!("session {s} turn {t}")).await;
                    let done = events.last().unwrap();
                    assert_eq!(done["type"], "done", "{events:?}");
                    assert!(done["error"].is_null(), "{done}");
                }
                // Kept open: the crash comes with the sockets still up.
                ws
            })
        })
        .collect();
    let mut open = Vec::new();
    for r in runs {
        open.push(r.await.unwrap());
    }
    // Every `done` has been read: crash now, before anything else happens.
    d.kill_daemon();
    d.spawn();

    let (st, v) = d.get("/v1/sessions").await;
    assert_eq!(st, 200, "{v}");
    let sessions = v["sessions"].as_array().unwrap();
    let mut complete = 0;
    for s in sessions {
        let id = s["id"].as_str().unwrap();
        let (st, full) = d.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(st, 200, "{full}");
        let texts: Vec<String> = full["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| text_of(&m["content"]))
            .collect();
        let Some(first) = texts.first() else { continue };
        let Some(s_no) = first
            .strip_prefix("session ")
            .and_then(|r| r.split(' ').next())
        else {
            continue;
        };
        // Each turn: the user's message, then the answer, in order.
        let want: Vec<String> = (0..TURNS)
            .flat_map(|t| [format!("session {s_no} turn {t}"), "noted".to_string()])
            .collect();
        assert_eq!(texts, want, "session {id}");
        let usage = &full["usage"];
        assert_eq!(usage["turns"], json!(TURNS), "session {id}: {usage}");
        complete += 1;
    }
    assert_eq!(complete, SESSIONS, "{sessions:?}");
    drop(open);
}

async fn ws_new_session(ws: &mut chat::Ws) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "new"}).to_string(),
    ))
    .await
    .unwrap();
    let ev = chat::next_event(ws).await;
    assert_eq!(ev["type"], "session", "{ev}");
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}
