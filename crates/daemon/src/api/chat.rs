//! Sessions and the streaming chat WebSocket.

use axum::extract::ws::{Message as WsMessage, WebSocket};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use ironclaw_agent::TurnEvent;
use ironclaw_api as api;
use tokio::sync::mpsc;

use super::convert;
use crate::auth::Caller;
use crate::error::{ApiError, OptionalJson, Query, WebSocketUpgrade};
use crate::AppState;

#[utoipa::path(get, path = "/v1/sessions", operation_id = "listSessions", tag = "sessions",
    summary = "The caller's chat sessions, newest first",
    responses((status = 200, description = "success", body = api::SessionList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<api::SessionList>, ApiError> {
    let sessions = st.manager.store.sessions(&caller.user)?;
    Ok(axum::Json(api::SessionList {
        sessions: sessions.into_iter().map(convert::session).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/sessions", operation_id = "createSession", tag = "sessions",
    summary = "Start a session (body optional)",
    request_body = Option<api::NewSession>,
    responses((status = 201, description = "success", body = api::Session),
        (status = "default", description = "error", body = api::Error)))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    OptionalJson(body): OptionalJson<api::NewSession>,
) -> Result<(StatusCode, axum::Json<api::Session>), ApiError> {
    let agent = body.and_then(|b| b.agent);
    let s = st.chat.new_session(&caller.user, agent.as_deref())?;
    Ok((StatusCode::CREATED, axum::Json(convert::session(s))))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", operation_id = "getSession", tag = "sessions",
    summary = "A session with its full history and usage",
    params(("id" = String, Path)),
    responses((status = 200, description = "success", body = api::SessionHistory),
        (status = "default", description = "error", body = api::Error)))]
pub async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<api::SessionHistory>, ApiError> {
    let session = st.manager.store.session(&caller.user, &id)?;
    let messages = st.manager.store.messages(&id)?;
    let usage = st.manager.store.usage_for_session(&id)?;
    Ok(axum::Json(api::SessionHistory {
        session: convert::session(session),
        messages: messages.into_iter().map(convert::message).collect(),
        usage: convert::usage(usage),
    }))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", operation_id = "deleteSession", tag = "sessions",
    summary = "Delete a session",
    params(("id" = String, Path)),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Only the owner's session: someone else's id is a 404 and stops nothing.
    st.manager.store.session(&caller.user, &id)?;
    st.chat.stop(&id);
    st.manager.store.delete_session(&caller.user, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the client sends (`/stop` and `/new` as message text work too).
type ClientMsg = api::ChatCommand;

#[utoipa::path(get, path = "/v1/chat/ws", operation_id = "chatWebSocket", tag = "sessions",
    summary = "Streaming chat over WebSocket (see docs/api.md); a plain GET is a 400",
    params(api::ChatWsQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn ws(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<api::ChatWsQuery>,
    WebSocketUpgrade(upgrade): WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let session = match q.session {
        Some(id) => st.manager.store.session(&caller.user, &id)?,
        None => match st
            .manager
            .store
            .latest_session(&caller.user, &st.chat.agents()[0].name)?
        {
            Some(s) => s,
            None => st.chat.new_session(&caller.user, None)?,
        },
    };
    Ok(upgrade.on_upgrade(move |socket| run_ws(socket, st, caller, session)))
}

fn event(v: serde_json::Value) -> WsMessage {
    WsMessage::Text(v.to_string())
}

/// A frame of the chat WebSocket's own (not a turn event of the agent's).
fn chat_event(ev: api::ChatEvent) -> WsMessage {
    WsMessage::Text(serde_json::to_string(&ev).unwrap_or_default())
}

fn error_event(message: impl Into<String>) -> WsMessage {
    chat_event(api::ChatEvent::Error {
        message: message.into(),
    })
}

async fn run_ws(
    socket: WebSocket,
    st: AppState,
    caller: Caller,
    mut session: ironclaw_store::SessionRecord,
) {
    use futures::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    // One writer: turn events and replies to commands both go through it.
    let (out_tx, mut out_rx) = mpsc::channel::<WsMessage>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if ws_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });
    let session_event = |s: &ironclaw_store::SessionRecord| {
        chat_event(api::ChatEvent::Session {
            id: s.id.clone(),
            title: s.title.clone(),
            agent: s.agent.clone(),
        })
    };
    let _ = out_tx.send(session_event(&session)).await;

    while let Some(Ok(msg)) = ws_rx.next().await {
        let parsed = match msg {
            WsMessage::Text(t) => {
                serde_json::from_str::<ClientMsg>(&t).map_err(|e| format!("invalid message: {e}"))
            }
            WsMessage::Close(_) => break,
            _ => continue,
        };
        let cmd = match parsed {
            Ok(ClientMsg::Message { text, .. }) if text.trim() == "/stop" => ClientMsg::Stop,
            Ok(ClientMsg::Message { text, .. }) if text.trim() == "/new" => ClientMsg::New,
            Ok(c) => c,
            Err(e) => {
                let _ = out_tx.send(error_event(e)).await;
                continue;
            }
        };
        match cmd {
            ClientMsg::Stop => {
                st.chat.stop(&session.id);
            }
            ClientMsg::New => match st.chat.new_session(&caller.user, Some(&session.agent)) {
                Ok(s) => {
                    session = s;
                    let _ = out_tx.send(session_event(&session)).await;
                }
                Err(e) => {
                    let _ = out_tx.send(error_event(e.to_string())).await;
                }
            },
            ClientMsg::Message { text, model } => {
                // The turn runs on its own task so this loop keeps reading (for stop).
                let (st, user, session, out) = (
                    st.clone(),
                    caller.user.clone(),
                    session.clone(),
                    out_tx.clone(),
                );
                tokio::spawn(async move {
                    let (ev_tx, mut ev_rx) = mpsc::channel::<TurnEvent>(256);
                    let fwd_out = out.clone();
                    let forward = tokio::spawn(async move {
                        while let Some(ev) = ev_rx.recv().await {
                            let v = serde_json::to_value(&ev).unwrap_or_default();
                            if fwd_out.send(event(v)).await.is_err() {
                                break;
                            }
                        }
                    });
                    let result = st
                        .chat
                        .turn(&user, &session, &text, model.as_deref(), ev_tx)
                        .await;
                    let _ = forward.await;
                    let done = match result {
                        Ok(r) => {
                            if let Some(err) = &r.error {
                                let _ = out.send(error_event(err.clone())).await;
                            }
                            api::ChatEvent::Done {
                                stopped: serde_json::to_value(r.outcome.stopped)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string)),
                                usage: serde_json::to_value(r.outcome.usage).ok(),
                                cost_usd: r.outcome.cost_usd,
                                error: r.error,
                            }
                        }
                        // Bad input: nothing ran; the turn still ends with `done`.
                        Err(e) => {
                            let _ = out.send(error_event(e.to_string())).await;
                            api::ChatEvent::Done {
                                stopped: None,
                                usage: None,
                                cost_usd: 0.0,
                                error: Some(e.to_string()),
                            }
                        }
                    };
                    let _ = out.send(chat_event(done)).await;
                });
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
}
